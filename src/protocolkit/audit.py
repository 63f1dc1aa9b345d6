"""Auditors' tools: protocol amendments, verdict diffs between knowledge times, receipts.

- :class:`ProtocolSet`: every version of a protocol, each with its effective date; the one
  in force for a subject follows the rule the protocol states (``versions by date``: the
  version effective at the evaluation time; ``versions by consent``: the version of the
  consent form the subject signed, so a subject consented under 1.0 keeps 1.0).
- :func:`diff_verdicts`: what changed between two knowledge times, and the events (new,
  corrected, retracted; who recorded them and why) recorded in between.
- Receipts: digests of the input events, the protocol text and the engine version, and of
  the result, so that an evaluation can be re-run later or elsewhere and confirmed offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import orjson

from protocolkit.engine import Evaluation, evaluate
from protocolkit.errors import ProtocolKitError, RuleError
from protocolkit.events import ConsentSigned, EntryCorrected, EntryRetracted, Event
from protocolkit.report import evaluation_to_json
from protocolkit.rules import Protocol, load_protocol
from protocolkit.serde import event_to_json
from protocolkit.store import RecordedEvent

__all__ = [
    "ENGINE",
    "ProtocolSet",
    "ReceiptError",
    "VerdictChange",
    "diff_protocols",
    "diff_verdicts",
    "events_digest",
    "make_receipt",
    "verdicts",
    "verify_receipt",
]


def _engine_version() -> str:
    try:
        return metadata.version("protocolkit")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


#: The engine's name and version, as receipts record them.
ENGINE = "protocolkit"


class ReceiptError(ProtocolKitError):
    """A receipt does not match what re-running the evaluation gives."""

    exit_code = 1


@attrs.frozen
class ProtocolSet:
    """The versions of one protocol, ordered by effective date."""

    versions: tuple[Protocol, ...]

    @classmethod
    def load(cls, path: str | Path) -> ProtocolSet:
        """One protocol file, or every ``*.protocol`` file of a folder sharing the first's id."""
        path = Path(path)
        files = sorted(path.glob("*.protocol")) if path.is_dir() else [path]
        loaded = [load_protocol(f) for f in files]
        if not loaded:
            raise RuleError("no protocol files", source=str(path))
        ids = {p.id for p in loaded}
        if len(ids) > 1:
            raise RuleError(f"several protocols in one set: {', '.join(sorted(ids))}; "
                            "keep one protocol's versions per folder", source=str(path))
        versions = tuple(sorted(loaded, key=lambda p: (p.effective, p.version)))
        seen: set[str] = set()
        for p in versions:
            if p.version in seen:
                raise RuleError(f"version {p.version} appears twice", source=p.source)
            seen.add(p.version)
        return cls(versions)

    @property
    def id(self) -> str:
        """The protocol (study) id."""
        return self.versions[0].id

    def in_force(self, events: Sequence[Event], at: dt.datetime) -> Protocol:
        """The version that governs a subject with these events at time ``at``."""
        rule = self.versions[-1].versions_by
        if rule == "consent":
            consents = sorted((e for e in events if isinstance(e, ConsentSigned)),
                              key=lambda e: e.occurred_at)
            if consents:
                signed = consents[0].form_version
                for version in self.versions:
                    if version.version == signed:
                        return version
                at = consents[0].occurred_at  # an unknown form: the version of that day
        day = at.date()
        current = [v for v in self.versions if v.effective <= day]
        return current[-1] if current else self.versions[0]

    def evaluate(self, events: Sequence[Event], *, at: dt.datetime,
                 known_at: dt.datetime | None = None) -> Evaluation:
        """Evaluate with the version in force (the evaluation names it)."""
        known = known_at or at
        visible = [e for e in events if e.recorded_at <= known]
        return evaluate(self.in_force(visible, at), events, at=at, known_at=known_at)


# --- verdicts and their differences -------------------------------------------------------------

def verdicts(evaluation: Evaluation) -> dict[str, str]:
    """Every verdict of an evaluation as ``rule -> text`` (the things a diff compares)."""
    result = {"eligibility": evaluation.eligibility,
              "protocol version": evaluation.protocol_version}
    for c in evaluation.criteria:
        result[c.id] = c.verdict
    codes: dict[str, list[str]] = {}
    for d in evaluation.deviations:
        codes.setdefault(d.code, []).append(f"{d.importance} {d.date or ''}".strip())
    for code, items in codes.items():
        result[f"deviation {code}"] = "; ".join(items)
    for p in evaluation.endpoints:
        value = f" {p.value} {p.unit or ''}".rstrip() if p.value is not None else ""
        result[p.id] = f"{p.status}{value}" + (f", {p.response}" if p.response else "")
    return result


@attrs.frozen
class VerdictChange:
    """One verdict that changed, with the events recorded in between that bear on it."""

    rule: str
    before: str | None
    after: str | None
    events: tuple[dict[str, Any], ...]


def diff_verdicts(
    events: Sequence[Event], protocols: ProtocolSet | Protocol, *, known_from: dt.datetime,
    known_to: dt.datetime, at: dt.datetime | None = None,
) -> list[VerdictChange]:
    """The verdicts that changed between two knowledge times, and why.

    Both evaluations are made at the same evaluation time (``at``, default ``known_to``), so
    only what became known in between can change a verdict.
    """
    when = at or known_to
    pset = protocols if isinstance(protocols, ProtocolSet) else ProtocolSet((protocols,))
    before = pset.evaluate(events, at=when, known_at=known_from)
    after = pset.evaluate(events, at=when, known_at=known_to)
    old, new = verdicts(before), verdicts(after)
    arrived = [e for e in events if known_from < e.recorded_at <= known_to]
    evidence_after = _evidence_by_rule(after)
    evidence_before = _evidence_by_rule(before)
    changes = []
    for rule in sorted(set(old) | set(new), key=lambda r: (r not in old, r)):
        if old.get(rule) == new.get(rule):
            continue
        cited = evidence_after.get(rule, set()) | evidence_before.get(rule, set())
        related = [e for e in arrived if str(e.event_id) in cited or _targets(e) & cited]
        changes.append(VerdictChange(rule, old.get(rule), new.get(rule),
                                     tuple(_describe(e) for e in (related or arrived))))
    return changes


def _targets(event: Event) -> set[str]:
    if isinstance(event, EntryCorrected):
        return {str(event.corrects)}
    if isinstance(event, EntryRetracted):
        return {str(event.retracts)}
    return set()


def _evidence_by_rule(evaluation: Evaluation) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for c in evaluation.criteria:
        found[c.id] = set(c.evidence)
    for d in evaluation.deviations:
        found.setdefault(f"deviation {d.code}", set()).update(d.evidence)
    for p in evaluation.endpoints:
        found[p.id] = set(p.evidence)
    found["eligibility"] = set().union(*(set(c.evidence) for c in evaluation.criteria))
    return found


def _describe(event: Event) -> dict[str, Any]:
    kind = ("corrected" if isinstance(event, EntryCorrected)
            else "retracted" if isinstance(event, EntryRetracted) else "new")
    item: dict[str, Any] = {
        "change": kind, "event_id": str(event.event_id), "type": event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(), "recorded_by": event.recorded_by,
    }
    if isinstance(event, EntryCorrected | EntryRetracted):
        item["target"] = sorted(_targets(event))[0]
        item["reason"] = event.reason
    if isinstance(event, EntryCorrected):
        item["changes"] = event.changes
    return item


def diff_protocols(
    subjects: Iterable[Sequence[Event]], old: Protocol, new: Protocol, *, at: dt.datetime
) -> list[tuple[str, list[tuple[str, str | None, str | None]]]]:
    """Subjects whose verdicts differ between two protocol versions, with the differences."""
    result = []
    for events in subjects:
        if not events:
            continue
        a = verdicts(evaluate(old, events, at=at))
        b = verdicts(evaluate(new, events, at=at))
        a.pop("protocol version", None)
        b.pop("protocol version", None)
        changed = [(rule, a.get(rule), b.get(rule)) for rule in sorted(set(a) | set(b))
                   if a.get(rule) != b.get(rule)]
        if changed:
            result.append((events[0].subject, changed))
    return result


# --- receipts -----------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def events_digest(events: Iterable[Event | RecordedEvent]) -> tuple[int, str]:
    """(count, digest) of a set of events, whatever order they come in."""
    hashes = sorted(
        _sha(_canonical(event_to_json(e.event if isinstance(e, RecordedEvent) else e)))
        for e in events
    )
    return len(hashes), _sha("\n".join(hashes).encode())


def make_receipt(evaluation: Evaluation, events: Sequence[Event], protocol: Protocol
                 ) -> dict[str, Any]:
    """A receipt for an evaluation: what went in, which rules and engine, what came out."""
    known = _instant(evaluation.known_at)
    used = [e for e in events if e.recorded_at <= known]
    count, digest = events_digest(used)
    return {
        "receipt": 1,
        "study": evaluation.study,
        "subject": evaluation.subject,
        "evaluated_at": evaluation.evaluated_at,
        "known_at": evaluation.known_at,
        "protocol": {"id": protocol.id, "version": protocol.version,
                     "sha256": protocol.digest},
        "engine": {"name": ENGINE, "version": _engine_version()},
        "events": {"count": count, "sha256": digest},
        "result_sha256": _sha(_canonical(evaluation_to_json(evaluation))),
    }


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def verify_receipt(receipt: dict[str, Any], events: Sequence[Event],
                   protocols: Iterable[Protocol]) -> Evaluation:
    """Re-run the evaluation a receipt describes and check every digest.

    Raises:
        ReceiptError: naming each part that differs (events, protocol, engine, result).
    """
    problems: list[str] = []
    known = _instant(receipt["known_at"])
    mine = [e for e in events if e.subject == receipt["subject"] and e.recorded_at <= known]
    count, digest = events_digest(mine)
    if digest != receipt["events"]["sha256"]:
        problems.append(f"events differ: {count} event(s) now, {receipt['events']['count']} "
                        "in the receipt, or their content changed")
    wanted = receipt["protocol"]
    protocol = next((p for p in protocols if p.digest == wanted["sha256"]), None)
    if protocol is None:
        problems.append(f"protocol {wanted['id']} v{wanted['version']} with sha256 "
                        f"{wanted['sha256'][:12]}... is not the one given")
    if receipt["engine"]["version"] != _engine_version():
        problems.append(f"engine {receipt['engine']['version']} made the receipt; this is "
                        f"{_engine_version()} (the result may differ for that reason)")
    if protocol is None:
        raise ReceiptError("receipt does not verify: " + "; ".join(problems))
    evaluation = evaluate(protocol, mine, at=_instant(receipt["evaluated_at"]), known_at=known)
    if _sha(_canonical(evaluation_to_json(evaluation))) != receipt["result_sha256"]:
        problems.append("the result differs from the receipt's")
    if problems:
        raise ReceiptError("receipt does not verify: " + "; ".join(problems))
    return evaluation
