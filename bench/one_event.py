"""CPU time of one new event: ``append`` then ``Projector.catch_up()``, event by event.

``python -m bench.one_event [--prior 100 10000] [--events 30]``: for each size, a synthetic
NCT03918265 subject with that many prior events is stored and projected, then its next
``--events`` events (in record order: mostly doses, some late results, corrections) are
appended one at a time. Each is timed with ``time.process_time()``, which other processes'
load moves much less than wall-clock time, and printed with its type; the median closes
the line. The benchmark's "incremental" figures time the same thing by wall clock.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import synthetic
from protocolkit.projections import Projector
from protocolkit.rules import default_protocol_path, load_protocol
from protocolkit.store import open_store


def one_event_times(prior: int, events: int, seed: int) -> list[tuple[str, float]]:
    """(event type, CPU ms) for each of ``events`` appends after ``prior`` events."""
    protocol = load_protocol(default_protocol_path())
    history = synthetic.subject_history(90_001, prior + events, seed=seed,
                                        screen_failure=False)
    with tempfile.TemporaryDirectory() as folder, \
            open_store(Path(folder) / "one_event.db") as store:
        for first in range(0, prior, 1000):
            store.append(history[first:min(first + 1000, prior)])
        projector = Projector(store, protocol, at=synthetic.evaluation_time(history))
        projector.catch_up()
        times = []
        for event in history[prior:]:
            start = time.process_time()
            store.append([event])
            projector.catch_up()
            times.append((event.event_type, (time.process_time() - start) * 1e3))
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    args = parser.parse_args(argv)
    for prior in args.prior:
        times = one_event_times(prior, args.events, args.seed)
        shown = " ".join(f"{kind[:8]}:{ms:.0f}" for kind, ms in times)
        print(f"{prior:>7,} prior events: median {statistics.median(t for _, t in times):.1f} "
              f"ms CPU  [{shown}]")


if __name__ == "__main__":
    main()
