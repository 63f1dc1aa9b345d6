"""Import and export of JSON Lines files: a whole file is one atomic append."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import attrs

from protocolkit.events import Event
from protocolkit.serde import read_jsonl, write_jsonl
from protocolkit.store import EventStore, RecordedEvent
from protocolkit.units import AnalyteCatalogue

__all__ = ["ImportResult", "export_jsonl", "import_jsonl"]


@attrs.frozen
class ImportResult:
    """What an import did."""

    appended: tuple[RecordedEvent, ...]
    #: Events of the file already in the store (same event id), left alone.
    skipped: int = 0

    @property
    def subjects(self) -> set[tuple[str, str]]:
        """The (study, subject) pairs that received events."""
        return {(r.event.study, r.event.subject) for r in self.appended}


def import_jsonl(
    store: EventStore,
    source: Path | str | Iterable[str | bytes],
    *,
    skip_existing: bool = False,
    catalogue: AnalyteCatalogue | None = None,
) -> ImportResult:
    """Import a JSON Lines file (or lines) atomically: every event is appended, or none.

    Every line is checked first, and every problem of every line is reported together, each
    naming its line and field. With ``skip_existing``, events whose id is already stored are
    left out (so re-importing the same file changes nothing); otherwise they are an error.

    Raises:
        EventValidationError: lines are bad (nothing appended).
        EventError: an event id is already recorded, or a correction names no known event.
        ConcurrencyError: another writer appended to one of the subjects meanwhile.
    """
    if isinstance(source, Path | str):
        path = Path(source)
        with path.open("rb") as handle:
            events = read_jsonl(handle, source=str(path), catalogue=catalogue)
    else:
        events = read_jsonl(source, catalogue=catalogue)
    skipped = 0
    if skip_existing:
        fresh = [e for e in events if store.get(e.event_id) is None]
        skipped = len(events) - len(fresh)
        events = fresh
    return ImportResult(tuple(store.append(events)), skipped)


def export_jsonl(
    store: EventStore,
    out: IO[bytes],
    *,
    study: str | None = None,
    subject: str | None = None,
) -> int:
    """Write the store's events (all, or one subject's) as JSON Lines; return how many."""
    count = 0
    for line in write_jsonl(_select(store, study, subject)):
        out.write(line)
        count += 1
    return count


def _select(store: EventStore, study: str | None, subject: str | None) -> Iterator[Event]:
    if subject is not None:
        for one in [study] if study else store.studies_of(subject):
            yield from (r.event for r in store.history(one, subject))
        return
    yield from (r.event for r in store.events() if study in (None, r.event.study))
