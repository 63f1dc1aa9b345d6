"""Corrections and retractions (D7): nothing is updated; the latest non-retracted value counts.

An :class:`~protocolkit.events.EntryCorrected` names an earlier event and new values for some of
its fields; an :class:`~protocolkit.events.EntryRetracted` says an earlier event (or an earlier
correction) was entered in error. :func:`effective_events` folds a history into the events as
they now stand, which is what every derivation uses; the log itself keeps everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from protocolkit.errors import EventError
from protocolkit.events import EntryCorrected, EntryRetracted, Event
from protocolkit.serde import event_from_json, event_to_json

__all__ = ["apply_correction", "check_target", "effective_events"]

_CORRECTION_TYPES = (EntryCorrected, EntryRetracted)


def apply_correction(target: Event, correction: EntryCorrected) -> Event:
    """Return ``target`` as ``correction`` says it should have been recorded.

    The corrected event keeps the target's envelope identity (event id, study, subject, record
    time, recorder); its values are checked at the boundary exactly as a new event's are, so a
    correction cannot smuggle in an impossible value or a foreign unit.

    Raises:
        EventError: the correction names a field the target lacks, or a new value is invalid.
    """
    body: dict[str, Any] = event_to_json(target)
    for name, value in correction.changes.items():
        if name not in body:
            raise EventError(
                f"{target.event_type} has no field {name!r}", field=f"changes.{name}"
            )
        body[name] = value
    if target.measured is not None:
        result = body.get(target.measured[1])
        if isinstance(result, dict):
            # Re-measure from the value and unit as received; the old canonical value is stale.
            body[target.measured[1]] = {k: result[k] for k in ("value", "unit") if k in result}
    try:
        return event_from_json(body)
    except EventError as exc:
        raise exc.located(prefix="changes") from None


def check_target(correction: Event, target: Event | None) -> None:
    """Check that a correction or retraction names an event it may act on.

    Raises:
        EventError: the target is missing, belongs to another subject, or cannot be corrected.
    """
    if not isinstance(correction, _CORRECTION_TYPES):
        return
    field = "corrects" if isinstance(correction, EntryCorrected) else "retracts"
    target_id = _target_id(correction)
    if target is None:
        raise EventError(f"no recorded event has id {target_id}", field=field)
    if (target.study, target.subject) != (correction.study, correction.subject):
        raise EventError(
            f"event {target_id} belongs to subject {target.subject!r} of {target.study!r}, "
            f"not {correction.subject!r}",
            field=field,
        )
    if isinstance(target, EntryRetracted):
        raise EventError("a retraction cannot be corrected or retracted", field=field)
    if isinstance(correction, EntryCorrected):
        if isinstance(target, EntryCorrected):
            raise EventError(
                "correct the original event, not a correction (retract a wrong correction)",
                field=field,
            )
        apply_correction(target, correction)


def _target_id(event: EntryCorrected | EntryRetracted) -> UUID:
    return event.corrects if isinstance(event, EntryCorrected) else event.retracts


def effective_events(events: Iterable[Event]) -> list[Event]:
    """Return the history as it now stands: corrections applied, retracted events removed.

    Corrections to the same event apply in record order (``recorded_at``, then event id, so
    the result does not depend on the order events were stored in); a retracted correction no
    longer applies; correction and retraction events themselves are not in the result.
    Order follows the input.
    """
    history: Sequence[Event] = list(events)
    retracted = {e.retracts for e in history if isinstance(e, EntryRetracted)}
    corrections: dict[UUID, list[EntryCorrected]] = {}
    for e in history:
        if isinstance(e, EntryCorrected) and e.event_id not in retracted:
            corrections.setdefault(e.corrects, []).append(e)
    result: list[Event] = []
    for e in history:
        if isinstance(e, _CORRECTION_TYPES) or e.event_id in retracted:
            continue
        current = e
        for fix in sorted(corrections.get(e.event_id, ()), key=_record_key):
            current = apply_correction(current, fix)
        result.append(current)
    return result


def _record_key(event: Event) -> tuple[float, str]:
    return (event.recorded_at.timestamp(), str(event.event_id))
