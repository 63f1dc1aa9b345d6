"""Small builders of events for tests."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pendulum

from protocolkit.events import (
    DoseAdministered,
    EntryCorrected,
    EntryRetracted,
    Event,
    LabResulted,
)
from protocolkit.units import Quantity, measure

ZONE = "Asia/Shanghai"


def at(text: str, zone: str = ZONE) -> pendulum.DateTime:
    parsed = pendulum.parse(text, tz=zone)
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


def envelope(subject: str = "S-001", *, study: str = "STUDY", when: str = "2024-03-01T08:00",
             **extra: Any) -> dict[str, Any]:
    occurred = at(when)
    return {
        "event_id": uuid4(),
        "study": study,
        "subject": subject,
        "occurred_at": occurred,
        "recorded_at": occurred.add(hours=2),
        "recorded_by": "tester",
        "source": "test",
        **extra,
    }


def dose(subject: str = "S-001", when: str = "2024-03-01T08:00", mg: str = "1",
         **kw: Any) -> DoseAdministered:
    return DoseAdministered(**envelope(subject, when=when, **kw), drug="tacrolimus",
                            dose=Quantity(mg, "mg"))


def hb(subject: str = "S-001", when: str = "2024-03-01T08:00", value: str = "9.8",
       unit: str = "g/dL", **kw: Any) -> LabResulted:
    return LabResulted(**envelope(subject, when=when, **kw), loinc="718-7",
                       result=measure("718-7", value, unit))


def correct(target: Event, reason: str = "transcription error", **changes: Any) -> EntryCorrected:
    return EntryCorrected(**envelope(target.subject, study=target.study), corrects=target.event_id,
                          changes=changes, reason=reason)


def retract(target: Event, reason: str = "entered in error") -> EntryRetracted:
    return EntryRetracted(**envelope(target.subject, study=target.study),
                          retracts=target.event_id, reason=reason)
