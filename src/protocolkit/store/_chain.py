"""The integrity chain: a hash per stored event, chained per subject and across the whole log.

``event_hash`` covers what the row says (stream id, version, topic, stored bytes);
``subject_hash`` chains it to the subject's previous event; ``log_hash`` chains it to the
previous event of the global log (the study-level anchor). They are computed when events are
appended, in the same transaction, and stored beside them. Anyone who alters, removes,
inserts or reorders stored rows, even directly in the database, breaks a chain that
:func:`verify_rows` recomputes; an attacker who also rewrites the chain changes the head hash
that auditors keep (``protocolkit verify`` prints it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

import attrs
import orjson

__all__ = ["GENESIS", "ChainRow", "Problem", "Verification", "chain_entries", "chain_rows",
           "event_hash", "verify_rows"]

GENESIS = "0" * 64


_SHA256 = hashlib.sha256


def event_hash(originator_id: UUID | str, version: int, topic: str, state: bytes) -> str:
    """The hash of one stored row (stream id, version, topic, bytes; 0x1f between them)."""
    return _SHA256(b"\x1f".join((str(originator_id).encode(), str(version).encode(),
                                  topic.encode(), state))).hexdigest()


def _link(previous: str, current: str) -> str:
    return _SHA256((previous + current).encode()).hexdigest()


@attrs.frozen
class ChainRow:
    """The chain entry stored for one event."""

    position: int
    originator_id: str
    version: int
    event_hash: str
    subject_hash: str
    log_hash: str


def chain_rows(
    stored: Sequence[Any],
    positions: Sequence[int],
    previous_subject: Mapping[str, str],
    previous_log: str,
) -> list[ChainRow]:
    """Chain entries for newly stored events (``stored`` are eventsourcing StoredEvents)."""
    rows = [(p, str(s.originator_id), s.originator_version, s.topic, s.state)
            for s, p in zip(stored, positions, strict=True)]
    return [ChainRow(*entry) for entry in chain_entries(rows, previous_subject, previous_log)]


def chain_entries(
    rows: Iterable[tuple[int, str, int, str, bytes]],
    previous_subject: Mapping[str, str],
    previous_log: str,
) -> list[tuple[int, str, int, str, str, str]]:
    """The chain table's rows for new log rows ``(position, stream, version, topic, state)``.

    ``previous_subject`` holds each stream's last ``subject_hash``, ``previous_log`` the last
    ``log_hash``. The same hashes as :func:`event_hash` and ``_link``, written out inline:
    three SHA-256 per event are most of what an append computes.
    """
    subject_heads = dict(previous_subject)
    log_head = previous_log
    sha256 = _SHA256
    entries = []
    for position, stream, version, topic, state in rows:
        own = sha256(b"\x1f".join((stream.encode(), str(version).encode(), topic.encode(),
                                    state))).hexdigest()
        subject_head = subject_heads[stream] = sha256(
            (subject_heads.get(stream, GENESIS) + own).encode()).hexdigest()
        log_head = sha256((log_head + own).encode()).hexdigest()
        entries.append((position, stream, version, own, subject_head, log_head))
    return entries


@attrs.frozen
class Problem:
    """One break in the chain, naming the row where it shows."""

    kind: str  # altered | removed | inserted | reordered
    position: int
    subject: str | None
    version: int | None
    detail: str
    #: The event id the row holds, when it can be read (not for removed or encrypted rows).
    event_id: str | None = None

    def __str__(self) -> str:
        event = f" event {self.event_id}" if self.event_id else ""
        return (f"{self.kind} at log position {self.position}: {self.subject} version "
                f"{self.version}{event}: {self.detail}")


@attrs.frozen
class Verification:
    """The result of recomputing the chain."""

    events: int
    head: str
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether the stored log is exactly what was appended."""
        return not self.problems


def verify_rows(
    events: Iterable[tuple[int, str, int, str, bytes]],
    chain: Iterable[ChainRow],
    subjects: Mapping[str, tuple[str, str]] | None = None,
    homes: Mapping[str, tuple[str, int]] | None = None,
) -> Verification:
    """Recompute the chain over stored rows ``(position, stream, version, topic, state)``.

    Problems are reported in log order; the first names the first row that was altered,
    removed, inserted or reordered.
    """
    names = subjects or {}
    stored = {row[0]: row for row in events}
    recorded = {row.position: row for row in chain}
    by_hash = {row.event_hash: row for row in recorded.values()}
    problems: list[Problem] = []

    def event_id_of(state: bytes) -> str | None:
        try:
            value = orjson.loads(state).get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def who(stream: str) -> str:
        study, subject = names.get(stream, ("?", stream))
        return f"{study}/{subject}"

    subject_heads: dict[str, str] = {}
    subject_versions: dict[str, int] = {}
    log_head = GENESIS
    count = 0
    for position in sorted(set(stored) | set(recorded)):
        row = stored.get(position)
        entry = recorded.get(position)
        if row is None:
            assert entry is not None
            problems.append(Problem("removed", position, who(entry.originator_id),
                                    entry.version, "the chain records an event that is gone"))
            # Carry on from what the chain says was there, to find later breaks too.
            log_head = entry.log_hash
            subject_heads[entry.originator_id] = entry.subject_hash
            subject_versions[entry.originator_id] = entry.version
            continue
        count += 1
        _, stream, version, topic, state = row
        own = event_hash(stream, version, topic, state)
        event_id = event_id_of(state)
        if entry is None:
            problems.append(Problem("inserted", position, who(stream), version,
                                    "a row the chain does not know (added outside protocolkit)",
                                    event_id))
            continue
        if own != entry.event_hash:
            moved = by_hash.get(own)
            home = (homes or {}).get(event_id or "")
            same_place = home is not None and (
                home[0].replace("-", "") == stream.replace("-", "") and home[1] == version)
            if home is not None and not same_place:
                problems.append(Problem(
                    "reordered", position, who(stream), version,
                    f"this row holds the event appended as version {home[1]} of "
                    f"{who(home[0])}", event_id))
            elif moved is not None and moved.position != position:
                problems.append(Problem(
                    "reordered", position, who(stream), version,
                    f"this row's content was appended at position {moved.position}", event_id))
            else:
                problems.append(Problem("altered", position, who(stream), version,
                                        "the stored content differs from what was appended",
                                        event_id))
        expected_version = subject_versions.get(stream, 0) + 1
        if own == entry.event_hash and version != expected_version:
            problems.append(Problem("reordered", position, who(stream), version,
                                    f"expected version {expected_version} of the subject",
                                    event_id))
        subject_link = _link(subject_heads.get(stream, GENESIS), entry.event_hash)
        log_link = _link(log_head, entry.event_hash)
        if own == entry.event_hash and (subject_link != entry.subject_hash
                                        or log_link != entry.log_hash):
            problems.append(Problem("altered", position, who(stream), version,
                                    "the chain itself was rewritten here", event_id))
        subject_heads[stream] = entry.subject_hash
        subject_versions[stream] = entry.version
        log_head = entry.log_hash
    return Verification(count, log_head, tuple(problems))
