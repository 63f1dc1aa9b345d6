"""Builders for the protocol-language tests: tiny protocols, events, one-line verdicts.

Test modules import these functions (``from tests.rules.conftest import ...``); nothing here
is a fixture, so a test reads as the protocol text and the events it evaluates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import uuid4

import pendulum

from protocolkit.engine import CriterionResult, Evaluation, evaluate
from protocolkit.events import (
    ConsentSigned,
    DemographicsRecorded,
    DoseAdministered,
    DoseChanged,
    DrugLevelResulted,
    EcogAssessed,
    EntryCorrected,
    EntryRetracted,
    Event,
    LabResulted,
    PregnancyTestResulted,
    TransfusionGiven,
)
from protocolkit.rules import Protocol, parse_protocol
from protocolkit.units import Quantity, measure

ZONE = "Asia/Shanghai"
HEADER = f'protocol "T-1" "Test protocol" version "1" effective 2024-01-01 zone "{ZONE}"\n'
#: The default evaluation time: late enough that every window below has closed.
LATE = "2026-01-01T00:00"


def at(text: str, zone: str = ZONE) -> pendulum.DateTime:
    """An aware instant from local wall time (``2024-03-01T08:00``) in ``zone``."""
    parsed = pendulum.parse(text, tz=zone)
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


def protocol(body: str, *, header: str = HEADER, source: str = "test.protocol") -> Protocol:
    """Parse a protocol made of the standard header and ``body``."""
    return parse_protocol(header + body, source=source)


def event(cls: type[Event], when: str = "2024-03-01T08:00", *, zone: str = ZONE,
          recorded: str | None = None, day_only: bool = False, **fields: Any) -> Event:
    """An event of subject S-001 that occurred at ``when`` (local time in ``zone``).

    It is recorded two hours later unless ``recorded`` says when; ``day_only`` makes it a
    date-only fact (``time_precision='day'``, ``when`` must then be midnight).
    """
    occurred = at(when, zone)
    envelope: dict[str, Any] = {
        "event_id": uuid4(),
        "study": "T-1",
        "subject": "S-001",
        "occurred_at": occurred,
        "recorded_at": at(recorded, zone) if recorded else occurred.add(hours=2),
        "recorded_by": "tester",
        "source": "test",
    }
    if day_only:
        envelope["time_precision"] = "day"
    return cls(**envelope, **fields)


def dose(when: str = "2024-03-01T08:00", mg: str = "1", drug: str = "tacrolimus",
         **kw: Any) -> Event:
    return event(DoseAdministered, when, drug=drug, dose=Quantity(mg, "mg"), **kw)


def dose_change(when: str, mg: str = "2", **kw: Any) -> Event:
    return event(DoseChanged, when, drug="tacrolimus", dose=Quantity(mg, "mg"),
                 frequency="BID", **kw)


def hb(when: str = "2024-03-01T08:00", value: str = "12", unit: str = "g/dL",
       **kw: Any) -> Event:
    """A haemoglobin result (LOINC 718-7)."""
    return event(LabResulted, when, loinc="718-7", result=measure("718-7", value, unit), **kw)


def level(when: str, value: str, unit: str = "ng/mL", *, trough: bool = True,
          **kw: Any) -> Event:
    """A tacrolimus level (LOINC 11253-2)."""
    return event(DrugLevelResulted, when, drug="tacrolimus", loinc="11253-2",
                 result=measure("11253-2", value, unit), labelled_trough=trough, **kw)


def ecog(when: str, score: int, **kw: Any) -> Event:
    return event(EcogAssessed, when, score=score, **kw)


def consent(when: str = "2024-03-01T00:00", *, day_only: bool = False, **kw: Any) -> Event:
    return event(ConsentSigned, when, form_version="1.0", day_only=day_only, **kw)


def demographics(born: dt.date, sex: str = "F", when: str = "2024-02-01T09:00",
                 **kw: Any) -> Event:
    return event(DemographicsRecorded, when, date_of_birth=born, sex=sex, **kw)


def pregnancy(when: str, result: str = "negative", **kw: Any) -> Event:
    return event(PregnancyTestResulted, when, result=result, **kw)


def transfusion(when: str, product: str = "RBC", **kw: Any) -> Event:
    return event(TransfusionGiven, when, product=product, **kw)


def correct(target: Event, when: str, reason: str = "transcription error",
            **changes: Any) -> Event:
    """A correction of ``target`` recorded at ``when``."""
    return event(EntryCorrected, when, recorded=when, corrects=target.event_id,
                 changes=changes, reason=reason)


def retract(target: Event, when: str, reason: str = "entered in error") -> Event:
    """A retraction of ``target`` recorded at ``when``."""
    return event(EntryRetracted, when, recorded=when, retracts=target.event_id, reason=reason)


def run(proto: Protocol, events: Iterable[Event], *, when: str = LATE,
        known: str | None = None) -> Evaluation:
    """Evaluate ``proto`` at the local time ``when`` (as known at ``known``)."""
    return evaluate(proto, list(events), at=at(when),
                    known_at=at(known) if known is not None else None)


def criterion(condition: str, events: Sequence[Event] = (), *, prelude: str = "",
              when: str = LATE, known: str | None = None) -> CriterionResult:
    """The verdict of ``inclusion INC-X "x" met when <condition>`` after ``prelude``."""
    proto = protocol(f'{prelude}inclusion INC-X "x" met when {condition}\n')
    return run(proto, events, when=when, known=known).criterion("INC-X")


def verdict(condition: str, events: Sequence[Event] = (), **kw: Any) -> str:
    """Just the verdict: ``met``, ``not met`` or ``unknown``."""
    return criterion(condition, events, **kw).verdict
