"""The benchmark: generate a synthetic NCT03918265 study, store it, measure it, judge the targets.

    python -m bench.run --subjects 200 --events-per-subject 500 [--postgres URL] [--quick]

Every figure is measured in this one run and printed as events/s and as a ratio to its
baseline, also measured in this run (so a slower or faster machine moves both):

======================  =====================================  ==============
figure                  baseline                               target
======================  =====================================  ==============
full evaluation         raw limit (sqlite3/psycopg + orjson)   >= 0.5 x
incremental (large)     incremental (small)                    time <= 1.2 x
batch append            bare eventsourcing save                >= 0.8 x
streamed replay memory  raw streamed read memory               peak < 200 MB
2 processes             1 process                              >= 1.7 x
======================  =====================================  ==============

``store replay`` (decoding only) and ``projector rebuild`` are reported beside them, to show
where time goes. See docs/performance.md for what each figure means and the figures measured.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import pendulum
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench import synthetic
from protocolkit.engine import evaluate
from protocolkit.events import Event
from protocolkit.projections import Projector
from protocolkit.rules import Protocol, default_protocol_path, load_protocol
from protocolkit.store import EventStore, StoreLocation, open_store

ROOT = Path(__file__).resolve().parent.parent

#: Every figure's name, as printed (with " [sqlite]" or " [postgres]" after it).
FIGURES = (
    "raw limit",
    "store replay",
    "full evaluation",
    "incremental (small)",
    "incremental (large)",
    "bare eventsourcing save",
    "batch append",
    "raw streamed read memory",
    "streamed replay memory",
    "1 process",
    "2 processes",
    "projector rebuild",
)
MEMORY_LIMIT_MB = 200.0


# --- figures ---------------------------------------------------------------------------------

@dataclass
class Figure:
    """One measured figure and, when it has one, its baseline and target."""

    name: str
    backend: str
    rate: float | None  # events/s (updates/s for the incremental figures)
    detail: str
    baseline: str | None = None
    baseline_rate: float | None = None
    ratio: float | None = None
    ratio_text: str = ""
    target: str = ""
    met: bool | None = None
    #: What limits the judgement (shown beside met / NOT MET).
    caveat: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} [{self.backend}]"

    def verdict(self) -> str:
        if self.met is None:
            return "-"
        return ("met" if self.met else "NOT MET") + (f" ({self.caveat})" if self.caveat else "")

    def line(self) -> str:
        text = f"{self.label}: {_rate(self.rate)}"
        if self.ratio_text:
            text += f" = {self.ratio_text} {self.baseline}"
        if self.target:
            text += f" (target {self.target}: {self.verdict()})"
        return f"{text}\n    {self.detail}"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f} ev/s" if rate >= 100 else f"{rate:,.2f} ev/s"


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else float("nan")


class Report:
    """Prints each figure as it is measured, and the table at the end."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def note(self, text: str) -> None:
        print(text, flush=True)

    def table(self) -> str:
        header = ("figure", "events/s", "baseline", "ratio", "target", "met")
        rows = [
            (f.label, _rate(f.rate), f.baseline or "-", f.ratio_text or "-", f.target or "-",
             f.verdict())
            for f in self.figures
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(row: Sequence[str]) -> str:
            cells = (c.rjust(w) if i in (1, 3) else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            return "| " + " | ".join(cells) + " |"

        sep = "|" + "|".join(
            "-" * (w + 1) + ":" if i in (1, 3) else "-" * (w + 2) for i, w in enumerate(widths)
        ) + "|"
        return "\n".join([fmt(header), sep, *(fmt(r) for r in rows)])


# --- the bare eventsourcing baseline ----------------------------------------------------------

class BareSubject(Aggregate):
    """The bare eventsourcing baseline: one aggregate per subject, one @event method."""

    @event("Registered")
    def __init__(self, study: str, subject: str) -> None:
        self.recorded = 0

    @event("Recorded")
    def record(self, *, kind: str, occurred_at: dt.datetime, recorded_at: dt.datetime,
               recorded_by: str, value: Decimal, payload: str) -> None:
        self.recorded += 1


class BareApplication(Application[uuid.UUID]):
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        super().__init__(env)


def _plain(when: dt.datetime) -> dt.datetime:
    """A stdlib UTC datetime (eventsourcing's transcoder knows datetime, not its subclasses)."""
    return dt.datetime.fromtimestamp(when.timestamp(), dt.UTC)


def bare_eventsourcing_save(batches: Sequence[Sequence[Event]], env: dict[str, str],
                            name: str) -> tuple[float, int, int]:
    """Save the same events, batch by batch, through eventsourcing alone.

    One aggregate per subject; a subject's first event creates it, every other event is one
    ``@event`` method call carrying the envelope's instants, a Decimal and the event's own
    fields as JSON text (about the size of a protocolkit event). The method calls are made
    before the clock starts; only ``app.save(*touched)`` (encode, insert, commit) is timed,
    as only ``EventStore.append`` is on our side.

    Returns (seconds, events saved, bytes of state stored).
    """
    app = BareApplication(name, env)
    aggregates: dict[str, BareSubject] = {}
    elapsed = 0.0
    saved = 0
    try:
        for batch in batches:
            touched: dict[str, BareSubject] = {}
            for e in batch:
                agg = aggregates.get(e.subject)
                if agg is None:
                    agg = aggregates[e.subject] = BareSubject(e.study, e.subject)
                else:
                    agg.record(kind=e.event_type, occurred_at=_plain(e.occurred_at),
                               recorded_at=_plain(e.recorded_at), recorded_by=e.recorded_by,
                               value=Decimal("1.5"),
                               payload=orjson.dumps(_own_fields(e), default=str).decode())
                touched[e.subject] = agg
            start = time.perf_counter()
            recordings = app.save(*touched.values())
            elapsed += time.perf_counter() - start
            saved += len(recordings)
        size = _stored_bytes(app.recorder)
    finally:
        app.close()
    return elapsed, saved, size


def _own_fields(e: Event) -> dict[str, Any]:
    from protocolkit.serde import converter  # noqa: PLC0415 - only the baseline needs it

    body = converter.unstructure(e)
    for key in ("event_id", "study", "subject", "occurred_at", "recorded_at", "recorded_by"):
        body.pop(key, None)
    return body


def _stored_bytes(recorder: Any) -> int:
    """The bytes of every stored event's state (what a read has to move and decode)."""
    total = 0
    start = 1
    while True:
        page = recorder.select_notifications(start=start, limit=5000)
        if not page:
            return total
        total += sum(len(n.state) for n in page)
        start = page[-1].id + 1


# --- measurements ----------------------------------------------------------------------------

def _batches(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[i:i + size] for i in range(0, len(events), size)]


def timed_append(store: EventStore, batches: Sequence[Sequence[Event]]) -> float:
    """Seconds spent in ``EventStore.append`` for ``batches``."""
    elapsed = 0.0
    for batch in batches:
        start = time.perf_counter()
        store.append(batch)
        elapsed += time.perf_counter() - start
    return elapsed


def _decode_all(rows: Iterable[Any]) -> int:
    """orjson.loads every row's only column; the number of rows."""
    loads = orjson.loads
    count = 0
    for count, (state,) in enumerate(rows, 1):  # noqa: B007 - count is the result
        loads(state)
    return count


def raw_sqlite_read(path: str) -> tuple[int, float]:
    """The raw limit on SQLite: plain sqlite3 and orjson, no mapper, no objects."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        start = time.perf_counter()
        count = _decode_all(conn.execute("SELECT state FROM stored_events ORDER BY rowid"))
        return count, time.perf_counter() - start
    finally:
        conn.close()


def raw_postgres_read(location: StoreLocation) -> tuple[int, float]:
    """The raw limit on PostgreSQL: psycopg (binary rows) and orjson."""
    import psycopg  # noqa: PLC0415 - optional extra

    assert location.conninfo is not None
    table = f'"{location.schema}"."{location.name}_events"'
    with psycopg.connect(location.conninfo) as conn:
        start = time.perf_counter()
        with conn.cursor(binary=True) as cur:
            cur.execute(f"SELECT state FROM {table} ORDER BY notification_id")  # type: ignore[arg-type]
            count = _decode_all(cur)
        return count, time.perf_counter() - start


def best_of(repeats: int, fn: Callable[[], tuple[int, float]]) -> tuple[int, float]:
    runs = [fn() for _ in range(max(1, repeats))]
    return min(runs, key=lambda r: r[1])


def store_replay(store: EventStore) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in store.events())
    return count, time.perf_counter() - start


@dataclass
class FullEvaluation:
    events: int
    read_s: float
    eval_s: float
    counts: dict[tuple[str, str], int]
    eligibility: Counter[str]
    deviations: Counter[str]

    @property
    def seconds(self) -> float:
        return self.read_s + self.eval_s


def full_evaluation(store: EventStore, protocol: Protocol, at: dt.datetime) -> FullEvaluation:
    """Every subject of the study: read its history from the store, evaluate it."""
    read_s = eval_s = 0.0
    counts: dict[tuple[str, str], int] = {}
    eligibility: Counter[str] = Counter()
    deviations: Counter[str] = Counter()
    for study, subject in store.subjects(protocol.id):
        t0 = time.perf_counter()
        history = list(store.history(study, subject))
        t1 = time.perf_counter()
        result = evaluate(protocol, history, at=at)
        t2 = time.perf_counter()
        read_s += t1 - t0
        eval_s += t2 - t1
        counts[(study, subject)] = len(history)
        eligibility[result.eligibility] += 1
        deviations.update(d.code for d in result.deviations)
    return FullEvaluation(sum(counts.values()), read_s, eval_s, counts, eligibility, deviations)


def incremental(location: str, protocol: Protocol, *, sizes: tuple[int, int], repeats: int,
                seed: int, batch: int, report: Report, backend: str) -> None:
    """Append one event and bring its evaluation and projection up to date (median time).

    Two subjects, one with ``sizes[0]`` prior events and one with ``sizes[1]``; each then
    gets ``repeats`` more events (the next ones of its synthetic history), one at a time.
    """
    small, large = sizes
    pending: dict[int, list[Event]] = {}
    last_record = []
    with open_store(location) as store:
        for k, n in enumerate(sizes):
            history = synthetic.subject_history(90_000 + k, n + repeats, seed=seed,
                                                screen_failure=False)
            timed_append(store, _batches(history[:n], batch))
            pending[n] = history[n:]
            last_record.append(synthetic.evaluation_time(history))
            del history
        gc.collect()
        at = max(last_record)
        projector = Projector(store, protocol, at=at, name="bench")
        start = time.perf_counter()
        projector.catch_up()
        first = time.perf_counter() - start
        timings: dict[int, dict[str, float]] = {}
        for n, extra in pending.items():
            totals, appends, catch_ups = [], [], []
            for e in extra:
                t0 = time.perf_counter()
                store.append([e])
                t1 = time.perf_counter()
                projector.catch_up()
                t2 = time.perf_counter()
                appends.append(t1 - t0)
                catch_ups.append(t2 - t1)
                totals.append(t2 - t0)
            history = [r.event for r in store.history(extra[0].study, extra[0].subject)]
            t0 = time.perf_counter()
            evaluate(protocol, history, at=at)
            evaluation = time.perf_counter() - t0
            timings[n] = {"total": statistics.median(totals),
                          "append": statistics.median(appends),
                          "catch_up": statistics.median(catch_ups), "evaluate": evaluation}
    t_small, t_large = timings[small]["total"], timings[large]["total"]

    def detail(n: int) -> str:
        t = timings[n]
        return (f"{n:,} prior events: median of {repeats} x (append 1 event + "
                f"Projector.catch_up) = {t['total'] * 1e3:.1f} ms (append "
                f"{t['append'] * 1e3:.1f} ms, catch_up {t['catch_up'] * 1e3:.1f} ms; "
                f"evaluate() alone {t['evaluate'] * 1e3:.1f} ms)")

    report.add(Figure("incremental (small)", backend, 1 / t_small, detail(small)))
    ratio = t_large / t_small
    report.add(Figure(
        "incremental (large)", backend, 1 / t_large,
        detail(large) + f"; first catch-up of both subjects {first:.1f} s",
        baseline="incremental (small)", baseline_rate=1 / t_small, ratio=ratio,
        ratio_text=f"{ratio:.2f}x the time of", target="time <= 1.2x", met=ratio <= 1.2,
    ))


# --- memory: a streamed replay in a child process -------------------------------------------

def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc (Linux).

    VmHWM, not ``getrusage().ru_maxrss``: Linux carries the parent's high-water mark into
    ``ru_maxrss`` across fork and exec, so a child started by a big parent would report
    the parent's size.
    """
    values = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    if "VmHWM" not in values:  # not Linux: the best there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return values["VmRSS"], values["VmHWM"]


def _child(kind: str, target: str) -> dict[str, Any]:
    """Run in a fresh interpreter: replay the store and report time and memory."""
    if kind == "replay":
        store = open_store(target)
        start_mb, _ = _rss_mb()
        t0 = time.perf_counter()
        count = sum(1 for _ in store.events())
        seconds = time.perf_counter() - t0
        store.close()
    elif kind == "raw-sqlite":
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        start_mb, _ = _rss_mb()
        t0 = time.perf_counter()
        count = _decode_all(conn.execute("SELECT state FROM stored_events ORDER BY rowid"))
        seconds = time.perf_counter() - t0
        conn.close()
    elif kind == "raw-postgres":
        import psycopg  # noqa: PLC0415 - optional extra

        location = StoreLocation.parse(target)
        assert location.conninfo is not None
        with psycopg.connect(location.conninfo) as conn:
            start_mb, _ = _rss_mb()
            t0 = time.perf_counter()
            with conn.cursor(name="bench_stream", binary=True) as cur:  # server-side: streamed
                cur.itersize = 1000
                cur.execute(f'SELECT state FROM "{location.schema}"."{location.name}_events" '  # type: ignore[arg-type]
                            "ORDER BY notification_id")
                count = _decode_all(cur)
            seconds = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown child {kind!r}")
    _, peak_mb = _rss_mb()
    return {"events": count, "seconds": seconds, "start_mb": start_mb, "peak_mb": peak_mb}


def run_child(kind: str, target: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--child", kind, target],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def memory_figures(store_location: str, *, raw_kind: str, raw_target: str, what: str,
                   report: Report, backend: str) -> None:
    raw = run_child(raw_kind, raw_target)
    replay = run_child("replay", store_location)
    raw_rate = raw["events"] / raw["seconds"]
    rate = replay["events"] / replay["seconds"]
    report.add(Figure(
        "raw streamed read memory", backend, raw_rate,
        f"{raw['events']:,} events ({what}) in {raw['seconds']:.1f} s: peak RSS "
        f"{raw['peak_mb']:.0f} MB ({raw['start_mb']:.0f} MB before reading)",
    ))
    ratio = replay["peak_mb"] / raw["peak_mb"]
    report.add(Figure(
        "streamed replay memory", backend, rate,
        f"EventStore.events() over {replay['events']:,} events ({what}) in "
        f"{replay['seconds']:.1f} s: peak RSS {replay['peak_mb']:.0f} MB "
        f"({replay['start_mb']:.0f} MB after imports and opening, so "
        f"+{replay['peak_mb'] - replay['start_mb']:.0f} MB while streaming); "
        f"{_ratio(rate, raw_rate):.3f}x the raw rate",
        baseline="raw streamed read memory", baseline_rate=raw_rate, ratio=ratio,
        ratio_text=f"peak {replay['peak_mb']:.0f} MB, {ratio:.2f}x the peak of",
        target=f"peak < {MEMORY_LIMIT_MB:.0f} MB", met=replay["peak_mb"] < MEMORY_LIMIT_MB,
    ))


def _append_small(location: str, plan: list[tuple[int, int, int]], seed: int) -> int:
    with open_store(location) as store:
        for index, first, count in plan:
            store.append(synthetic.small_batch(index, first, count, seed=seed))
    return sum(count for _, _, count in plan)


def build_memory_store(location: str, total: int, seed: int) -> tuple[int, float]:
    """Fill a store with ``total`` small events through EventStore.append.

    Two processes share the work (each makes and appends the events of every other subject,
    SQLite serialises their transactions): making events costs as much as appending them,
    and this only prepares the store whose replay is measured. Ten subjects (not a thousand):
    the first append of each new subject scans the chain table (see
    :func:`append_latency`), which would make filling a large store quadratic.
    """
    start = time.perf_counter()
    open_store(location).close()  # create the tables once, before the writers start
    plan = synthetic.small_event_plan(total, per_subject=max(1000, -(-total // 10)))
    parts = [[p for p in plan if p[0] % 2 == i] for i in range(2)]
    with mp.get_context("spawn").Pool(2) as pool:
        appended = sum(pool.starmap(_append_small, [(location, part, seed) for part in parts]))
    return appended, time.perf_counter() - start


def append_latency(location: str, seed: int) -> str:
    """One-event appends into a big store: for the subject appended last, and for a new one."""
    with open_store(location) as store:
        last = store.subjects()[-1][1]
        index = int(last.rsplit("-", 1)[1])
        first = store.version(synthetic.STUDY, last)
        times = {}
        for name, (i, k) in {"the subject appended last": (index, first),
                             "a new subject": (999_999, 0)}.items():
            batch = synthetic.small_batch(i, k, 1, seed=seed + 1)
            t0 = time.perf_counter()
            store.append(batch)
            times[name] = time.perf_counter() - t0
        size = store.max_position()
    return (f"one-event append into the {size:,}-event store: "
            + ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in times.items()))


# --- multi-process replay ---------------------------------------------------------------------

def _worker(location: str, subjects: list[tuple[str, str]], at: str, barrier: Any,
            results: Any) -> None:
    store = open_store(location)
    protocol = load_protocol(default_protocol_path())
    when = pendulum.parse(at)
    barrier.wait()
    start = time.perf_counter()
    count = 0
    for study, subject in subjects:
        history = list(store.history(study, subject))
        count += len(history)
        evaluate(protocol, history, at=when)  # type: ignore[arg-type]
    results.put((count, time.perf_counter() - start))
    store.close()


def _spin(n: int) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i % 7
    return time.perf_counter() - start


def cpu_ceiling(loops: int) -> float:
    """How much faster 2 processes run a pure-Python loop than 1, on this machine, now.

    The ceiling for the 2-process replay: other work on the machine (or two virtual CPUs
    sharing one physical core) lowers it below 2.
    """
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # started and warm
        start = time.perf_counter()
        pool.map(_spin, [loops], chunksize=1)
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_spin, [loops // 2, loops // 2], chunksize=1)
        two = time.perf_counter() - start
    return one / two


def _partition(counts: dict[tuple[str, str], int], parts: int) -> list[list[tuple[str, str]]]:
    """Subjects split into ``parts`` sets of about equal event counts (largest first)."""
    bins: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = loads.index(min(loads))
        bins[i].append(key)
        loads[i] += n
    return bins


def parallel_evaluation(location: str, counts: dict[tuple[str, str], int], at: dt.datetime,
                        processes: int) -> tuple[int, float]:
    """Evaluate every subject in ``processes`` processes (spawned and warmed up first)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(location, part, at.isoformat(), barrier, results))
               for part in _partition(counts, processes)]
    for w in workers:
        w.start()
    try:
        barrier.wait(timeout=300)  # every worker has imported, opened the store, loaded rules
        start = time.perf_counter()
        done = [results.get(timeout=3600) for _ in workers]
        wall = time.perf_counter() - start
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.terminate()
    return sum(n for n, _ in done), wall


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Settings:
    subjects: int
    events_per_subject: int
    batch: int
    incremental_sizes: tuple[int, int]
    repeats: int
    memory_events: int
    rebuild_subjects: int
    seed: int
    postgres: str | None
    quick: bool
    profile: bool


def _settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    return Settings(
        subjects=args.subjects or (30 if quick else 200),
        events_per_subject=args.events_per_subject or (200 if quick else 500),
        batch=args.batch,
        incremental_sizes=(100, args.incremental_large or (2_000 if quick else 10_000)),
        repeats=args.repeats or (3 if quick else 5),
        memory_events=args.memory_events or (20_000 if quick else 1_000_000),
        rebuild_subjects=args.rebuild_subjects or (10 if quick else 40),
        seed=args.seed,
        postgres=args.postgres,
        quick=quick,
        profile=args.profile,
    )


def _load() -> str:
    with contextlib.suppress(OSError):
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "load average unknown"


def _header(settings: Settings, argv: Sequence[str]) -> str:
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        commit = head + (" + uncommitted changes" if dirty.strip() else "")
    lines = [
        f"protocolkit benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"command: python -m bench.run {' '.join(argv)}".rstrip(),
        f"protocolkit {commit}; Python {platform.python_version()}; SQLite "
        f"{sqlite3.sqlite_version}; eventsourcing {version('eventsourcing')}; orjson "
        f"{version('orjson')}; {os.cpu_count()} CPUs ({platform.machine()}); {_load()}",
        f"study: {settings.subjects} subjects x {settings.events_per_subject} events "
        f"(seed {settings.seed}), append batches of {settings.batch}; incremental at "
        f"{settings.incremental_sizes[0]:,} and {settings.incremental_sizes[1]:,} prior events; "
        f"streamed replay of {settings.memory_events:,} events"
        + ("  [--quick: sizes scaled down]" if settings.quick else ""),
    ]
    if settings.memory_events != 1_000_000:
        lines.append(f"note: the memory target is for 1,000,000 events; this run streams "
                     f"{settings.memory_events:,}")
    if settings.incremental_sizes[1] != 10_000:
        lines.append(f"note: the incremental target is for 10,000 prior events; this run uses "
                     f"{settings.incremental_sizes[1]:,}")
    return "\n".join(lines)


class Bench:
    """The run: write everything first, then free the generated events, then read.

    The generated study is a few hundred thousand live objects; kept alive while reading,
    they make every garbage collection slower (decoding about a quarter slower, measured),
    which would be a measurement of the benchmark, not of protocolkit.
    """

    def __init__(self, settings: Settings, workdir: Path, report: Report) -> None:
        self.s = settings
        self.dir = workdir
        self.report = report
        self.protocol = load_protocol(default_protocol_path())
        self.events: list[Event] = []
        self.histories: list[list[Event]] = []
        self.at: dt.datetime = pendulum.now("UTC")
        self.evaluation_rate: float | None = None
        self.counts: dict[tuple[str, str], int] = {}
        self.rebuild_info = ""
        self.postgres_names: list[str] = []
        self.tag = uuid.uuid4().hex[:8]

    def location(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            return str(self.dir / f"{name}.db")
        store = f"bench_{self.tag}_{name}"
        if store not in self.postgres_names:
            self.postgres_names.append(store)
        return _postgres_url(self.s.postgres or "", store)

    @property
    def backends(self) -> list[str]:
        return ["sqlite", "postgres"] if self.s.postgres else ["sqlite"]

    def run(self) -> None:
        self.generate()
        for kind in self.backends:
            self.write(kind)
        self.write_rebuild_store()
        self.release()
        for kind in self.backends:
            self.read(kind)
        if self.s.profile:
            self.profile(self.location("sqlite", "study"))

    # --- data ---------------------------------------------------------------------------

    def generate(self) -> None:
        start = time.perf_counter()
        self.histories = list(synthetic.study_histories(
            self.s.subjects, self.s.events_per_subject, seed=self.s.seed))
        self.events = synthetic.record_order(self.histories)
        self.at = synthetic.evaluation_time(self.events)
        seconds = time.perf_counter() - start
        failures = sum(1 for h in self.histories if len(h) < self.s.events_per_subject)
        mix = Counter(e.event_type for e in self.events)
        top = ", ".join(f"{k} {v / len(self.events):.1%}" for k, v in mix.most_common(8))
        self.report.note(
            f"generated {len(self.events):,} events for {len(self.histories)} subjects "
            f"({failures} screen failures) in {seconds:.1f} s; evaluated at "
            f"{self.at.isoformat()}\n  mix: {top}, {max(0, len(mix) - 8)} other types")

    def release(self) -> None:
        self.events = []
        self.histories = []
        gc.collect()

    # --- writing ------------------------------------------------------------------------

    def write(self, kind: str) -> None:
        report, s = self.report, self.s
        report.note(f"\n== {kind}: writing ==")
        batch_size = s.batch
        batches = _batches(self.events, batch_size)
        with open_store(self.location(kind, "study")) as store:
            seconds = timed_append(store, batches)
            stored_bytes = _stored_bytes(store.recorder)
        append_rate = len(self.events) / seconds
        es_env, es_name = self._bare_env(kind)
        es_s, es_n, es_bytes = bare_eventsourcing_save(batches, es_env, es_name)
        es_rate = es_n / es_s
        report.add(Figure(
            "bare eventsourcing save", kind, es_rate,
            f"{es_n:,} events, {len(batches)} saves (one aggregate per subject, @event "
            f"method), {es_s:.1f} s, {es_bytes / es_n:.0f} B/event stored"))
        ratio = append_rate / es_rate
        report.add(Figure(
            "batch append", kind, append_rate,
            f"EventStore.append of {len(self.events):,} events in {len(batches)} batches "
            f"of {batch_size} (record order, subjects interleaved), {seconds:.1f} s, "
            f"{stored_bytes / len(self.events):.0f} B/event stored",
            baseline="bare eventsourcing save", baseline_rate=es_rate, ratio=ratio,
            ratio_text=f"{ratio:.2f}x", target=">= 0.8x", met=ratio >= 0.8))

    def write_rebuild_store(self) -> None:
        histories = self.histories[: self.s.rebuild_subjects]
        events = synthetic.record_order(histories)
        with open_store(self.location("sqlite", "rebuild")) as store:
            for batch in _batches(events, self.s.batch):
                store.append(batch)
        self.rebuild_info = f"the first {len(histories)} subjects"

    def _bare_env(self, kind: str) -> tuple[dict[str, str], str]:
        name = f"bench_{self.tag}_es"
        if kind == "sqlite":
            return {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                    "SQLITE_DBNAME": str(self.dir / f"{name}.db")}, name
        env = dict(StoreLocation.parse(self.s.postgres).env)
        env.pop("APPLICATION_RECORDER_TOPIC", None)
        self.postgres_names.append(name)
        return env, name

    # --- reading ------------------------------------------------------------------------

    def read(self, kind: str) -> None:
        report, s = self.report, self.s
        report.note(f"\n== {kind}: reading ==")
        study = self.location(kind, "study")
        loc = StoreLocation.parse(study)
        if kind == "sqlite":
            raw_n, raw_s = best_of(3, lambda: raw_sqlite_read(loc.path or ""))
            raw_what = "plain sqlite3 + orjson.loads"
        else:
            raw_n, raw_s = best_of(3, lambda: raw_postgres_read(loc))
            raw_what = "plain psycopg (binary rows) + orjson.loads"
        raw_rate = raw_n / raw_s
        report.add(Figure("raw limit", kind, raw_rate,
                          f"{raw_what}: {raw_n:,} events in {raw_s:.2f} s (best of 3)"))

        with open_store(study) as store:
            n, secs = best_of(2, lambda: store_replay(store))
            replay_rate = n / secs
            report.add(Figure(
                "store replay", kind, replay_rate,
                f"EventStore.events() decoding {n:,} events into event objects in "
                f"{secs:.1f} s (no evaluation; best of 2)",
                baseline="raw limit", baseline_rate=raw_rate,
                ratio=replay_rate / raw_rate, ratio_text=f"{replay_rate / raw_rate:.3f}x"))
            full = full_evaluation(store, self.protocol, self.at)
        rate = full.events / full.seconds
        if kind == "sqlite":
            self.evaluation_rate = rate
            self.counts = full.counts
        ratio = rate / raw_rate
        report.add(Figure(
            "full evaluation", kind, rate,
            f"{len(full.counts)} subjects, {full.events:,} events in {full.seconds:.1f} s: "
            f"history() read+decode {full.read_s:.1f} s ({full.events / full.read_s:,.0f} "
            f"ev/s), evaluate() {full.eval_s:.1f} s ({full.events / full.eval_s:,.0f} ev/s); "
            f"eligibility {dict(full.eligibility)}; deviations "
            f"{dict(full.deviations.most_common())}",
            baseline="raw limit", baseline_rate=raw_rate, ratio=ratio,
            ratio_text=f"{ratio:.3f}x", target=">= 0.5x", met=ratio >= 0.5))

        incremental(self.location(kind, "incremental"), self.protocol,
                    sizes=s.incremental_sizes, repeats=s.repeats, seed=s.seed,
                    batch=s.batch, report=report, backend=kind)

        if kind == "sqlite":
            memory = self.location(kind, "memory")
            appended, seconds = build_memory_store(memory, s.memory_events, s.seed)
            report.note(f"  (memory-test store: {appended:,} small events appended by two "
                        f"processes in {seconds:.0f} s)")
            memory_figures(memory, raw_kind="raw-sqlite",
                           raw_target=StoreLocation.parse(memory).path or "",
                           what=f"{s.memory_events:,} small events", report=report,
                           backend=kind)
            report.note(f"  ({append_latency(memory, s.seed)})")
            self.multiprocess(study)
            self.rebuild(self.location(kind, "rebuild"))
        else:
            # On PostgreSQL the streamed replay reads the study store: appending a million
            # events there would take minutes more. The SQLite figure is the 1M-event one.
            memory_figures(study, raw_kind="raw-postgres", raw_target=study,
                           what="the study store", report=report, backend=kind)

    def multiprocess(self, study: str) -> None:
        """1 process against 2, alternated; the best of each (other load on the machine
        slows the 2-process run most, and the load average is printed with it)."""
        rounds = 1 if self.s.quick else 2
        load = _load()
        loops = 2_000_000 if self.s.quick else 10_000_000
        ceilings = [cpu_ceiling(loops)]
        best: dict[int, tuple[int, float]] = {}
        for _ in range(rounds):
            for processes in (1, 2):
                n, t = parallel_evaluation(study, self.counts, self.at, processes)
                if processes not in best or t < best[processes][1]:
                    best[processes] = (n, t)
        ceilings.append(cpu_ceiling(loops))
        ceiling = max(ceilings)
        (n1, t1), (n2, t2) = best[1], best[2]
        assert n1 == n2, (n1, n2)
        r1, r2 = n1 / t1, n2 / t2
        runs = f"best of {rounds}" if rounds > 1 else "one run"
        self.report.add(Figure(
            "1 process", "sqlite", r1,
            f"one spawned process reads (history()) and evaluates all {len(self.counts)} "
            f"subjects: {n1:,} events in {t1:.1f} s (timed after imports and opening; "
            f"{runs})"))
        ratio = r2 / r1
        self.report.add(Figure(
            "2 processes", "sqlite", r2,
            f"two processes, disjoint subject sets of equal event counts, same SQLite file: "
            f"{n2:,} events in {t2:.1f} s (wall clock until both finish; {runs}; "
            f"{load} before, {_load()} after); this machine's ceiling meanwhile: a "
            f"pure-Python loop ran {' and '.join(f'{c:.2f}x' for c in ceilings)} faster in "
            f"2 processes than in 1 (before and after), so {ratio / ceiling:.0%} of it",
            baseline="1 process", baseline_rate=r1, ratio=ratio, ratio_text=f"{ratio:.2f}x",
            target=">= 1.7x", met=ratio >= 1.7,
            caveat=f"CPU ceiling {ceiling:.2f}x" if ceiling < 1.7 else ""))

    def rebuild(self, location: str) -> None:
        """A projection built from scratch by catch_up() over an interleaved log."""
        with open_store(location) as store:
            projector = Projector(store, self.protocol, at=self.at, name="rebuild")
            start = time.perf_counter()
            read = projector.catch_up()
            seconds = time.perf_counter() - start
            pages = -(-read // store.page_size)
        rate = read / seconds
        base = self.evaluation_rate or rate
        self.report.add(Figure(
            "projector rebuild", "sqlite", rate,
            f"Projector.catch_up() from position 0 over {self.rebuild_info} ({read:,} "
            f"events, {pages} pages, record order) in {seconds:.1f} s; each subject is "
            f"evaluated once, after all pages are read",
            baseline="full evaluation", baseline_rate=base, ratio=rate / base,
            ratio_text=f"{rate / base:.3f}x"))

    # --- profiles -----------------------------------------------------------------------

    def profile(self, location: str) -> None:
        """cProfile of decoding (EventStore.events) and of evaluating every subject."""
        with open_store(location) as store:
            decode = cProfile.Profile()
            decode.enable()
            sum(1 for _ in store.events())
            decode.disable()
            histories = [[r.event for r in store.history(*key)]
                         for key in store.subjects(self.protocol.id)]
        evaluation = cProfile.Profile()
        evaluation.enable()
        for history in histories:
            evaluate(self.protocol, history, at=self.at)
        evaluation.disable()
        for title, prof in (("decoding (EventStore.events)", decode),
                            ("evaluation (evaluate, every subject)", evaluation)):
            for order in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(20)
                self.report.note(f"\n-- profile: {title}, by {order} --\n"
                                 + _trim_profile(out.getvalue()))

    def cleanup(self) -> None:
        if self.postgres_names and self.s.postgres:
            drop_postgres(self.s.postgres, self.postgres_names)


def _trim_profile(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    head = [line.strip() for line in lines[:start] if "function calls" in line]
    return "\n".join(head + lines[start:]).rstrip()


def drop_postgres(url: str, names: Sequence[str]) -> None:
    """Drop every table (and the append-only function) of the stores this run made."""
    import psycopg  # noqa: PLC0415 - optional extra

    location = StoreLocation.parse(url)
    assert location.conninfo is not None
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        for name in names:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name LIKE %s", (location.schema, f"{name}\\_%")).fetchall()
            for (table,) in tables:
                conn.execute(f'DROP TABLE IF EXISTS "{location.schema}"."{table}" CASCADE')  # type: ignore[arg-type]
            conn.execute(f'DROP FUNCTION IF EXISTS "{location.schema}"."{name}_append_only"() '  # type: ignore[arg-type]
                         "CASCADE")


def check_postgres(url: str) -> str | None:
    """Why the PostgreSQL server cannot be used (None when it can)."""
    try:
        import psycopg  # noqa: PLC0415 - optional extra

        location = StoreLocation.parse(url)
        assert location.conninfo is not None
        with psycopg.connect(location.conninfo, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _postgres_url(base: str, name: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}name={name}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark protocolkit on a synthetic NCT03918265 study "
                    "(docs/performance.md).")
    parser.add_argument("--subjects", type=int, help="subjects (default 200; --quick 30)")
    parser.add_argument("--events-per-subject", type=int,
                        help="events per subject, screen failures have fewer "
                             "(default 500; --quick 200)")
    parser.add_argument("--postgres", metavar="URL",
                        help="also measure on PostgreSQL, e.g. "
                             "postgresql://postgres@127.0.0.1:5432/test (tables dropped after)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (under a minute): a 20,000-event streamed replay, "
                             "incremental at 2,000 prior events")
    parser.add_argument("--batch", type=int, default=1000, help="events per append (1000)")
    parser.add_argument("--incremental-large", type=int,
                        help="prior events of the large incremental subject (10,000)")
    parser.add_argument("--repeats", type=int, help="incremental repetitions (5; --quick 3)")
    parser.add_argument("--memory-events", type=int,
                        help="events of the streamed-replay store (1,000,000; --quick 20,000)")
    parser.add_argument("--rebuild-subjects", type=int,
                        help="subjects of the projector-rebuild store (40; --quick 10)")
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    parser.add_argument("--profile", action="store_true",
                        help="also print cProfile tables of decoding and of evaluation")
    parser.add_argument("--workdir", type=Path,
                        help="keep the stores in this new or empty folder "
                             "(default: a temporary one, removed)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    settings = _settings(args)
    if settings.postgres and (problem := check_postgres(settings.postgres)):
        print(f"--postgres {settings.postgres}: cannot connect ({problem})", file=sys.stderr)
        return 2
    report = Report()
    report.note(_header(settings, argv))
    started = time.perf_counter()
    with _workdir(args.workdir) as workdir:
        bench = Bench(settings, workdir, report)
        try:
            bench.run()
        finally:
            bench.cleanup()
    report.figures.sort(key=lambda f: (bench.backends.index(f.backend), FIGURES.index(f.name)))
    met = [f for f in report.figures if f.met is not None]
    report.note(f"\n== results ({time.perf_counter() - started:.0f} s; {_load()}) ==\n"
                f"{report.table()}")
    report.note(f"\ntargets met: {sum(1 for f in met if f.met)} of {len(met)}: "
                + ", ".join(f"{f.label} {f.verdict()}" for f in met))
    return 0


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        if path.exists() and any(path.iterdir()):
            raise SystemExit(f"--workdir {path}: not empty; give a new or empty folder")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="protocolkit-bench-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    raise SystemExit(main())
