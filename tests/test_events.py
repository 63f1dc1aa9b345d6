"""The event catalogue: envelope validation and the invariants of individual event types."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any
from uuid import UUID

import pendulum
import pytest
from hypothesis import given

from protocolkit.errors import EventError
from protocolkit.events import (
    EVENT_TYPES,
    IMMUTABLE_FIELDS,
    DemographicsRecorded,
    EcogAssessed,
    EntryCorrected,
    Event,
    ObservationRecorded,
    Sex,
    TimePrecision,
    VisitOccurred,
)
from protocolkit.timeutil import format_instant
from protocolkit.units import measure
from tests.strategies import events

SHANGHAI = "Asia/Shanghai"


def _envelope(**overrides: Any) -> dict[str, Any]:
    at = pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI)
    return {
        "study": "NCT03918265",
        "subject": "S-001",
        "occurred_at": at,
        "recorded_at": at.add(hours=2),
        "recorded_by": "coordinator",
        **overrides,
    }


def _visit(**overrides: Any) -> VisitOccurred:
    return VisitOccurred(**_envelope(**overrides), visit="V1")


def _error(build: Any, **kwargs: Any) -> EventError:
    with pytest.raises(EventError) as raised:
        build(**kwargs)
    return raised.value


# --- the envelope ---------------------------------------------------------------------------


def test_a_valid_envelope() -> None:
    """A fully given envelope is kept as given, with its defaults filled in."""
    visit = _visit()
    assert visit.event_type == "VisitOccurred"
    assert isinstance(visit.event_id, UUID)
    assert visit.source == "api"
    assert visit.schema_version == 1
    assert visit.time_precision is TimePrecision.INSTANT
    assert visit.occurred_at.timezone_name == SHANGHAI


@pytest.mark.parametrize("field", ["occurred_at", "recorded_at"])
def test_naive_datetimes_are_refused(field: str) -> None:
    """A naive date-time names no instant: refused, naming the field."""
    error = _error(_visit, **{field: dt.datetime(2024, 3, 1, 8, 0)})
    assert error.field == field
    assert "naive date-time" in error.message


@pytest.mark.parametrize("field", ["occurred_at", "recorded_at"])
@pytest.mark.parametrize("value", [dt.date(2024, 3, 1), "2024-03-01T08:00:00+08:00", None])
def test_non_datetimes_are_refused(field: str, value: object) -> None:
    """A date, a string or nothing is not an instant."""
    assert _error(_visit, **{field: value}).field == field


def test_stdlib_aware_datetimes_become_pendulum_and_keep_their_zone() -> None:
    """An aware stdlib datetime (zoneinfo) is accepted, as the same instant in the same zone."""
    given_at = dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    visit = _visit(occurred_at=given_at)
    assert isinstance(visit.occurred_at, pendulum.DateTime)
    assert visit.occurred_at.timestamp() == given_at.timestamp()
    assert visit.occurred_at.utcoffset() == dt.timedelta(hours=-5)  # the second 01:30
    assert format_instant(visit.occurred_at) == "2024-11-03T01:30:00-05:00[America/New_York]"


@pytest.mark.parametrize("field", ["recorded_by", "study", "subject", "source"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n", None, 7])
def test_blank_or_non_text_identity_is_refused(field: str, value: object) -> None:
    """recorded_by (the attributable actor), study, subject and source must be non-blank text."""
    error = _error(_visit, **{field: value})
    assert error.field == field
    assert "non-empty string" in error.message


@pytest.mark.parametrize("version", [0, -1, True, "1"])
def test_schema_version_is_a_positive_integer(version: object) -> None:
    """schema_version is an int >= 1 (never a bool or a string)."""
    assert _error(_visit, schema_version=version).field == "schema_version"


def test_event_itself_cannot_be_instantiated() -> None:
    """Event is the envelope only."""
    error = _error(Event, **_envelope())
    assert "envelope only" in error.message
    assert Event not in EVENT_TYPES.values()
    assert all(issubclass(cls, Event) and cls.event_type == name
               for name, cls in EVENT_TYPES.items())


# --- date-only precision --------------------------------------------------------------------


def test_date_only_event_at_local_midnight() -> None:
    """A date-only event has occurred_at at 00:00 of that date in the site's zone."""
    midnight = pendulum.datetime(2024, 3, 1, tz=SHANGHAI)
    visit = _visit(occurred_at=midnight, time_precision="day")
    assert visit.time_precision is TimePrecision.DAY
    assert visit.occurred_on == dt.date(2024, 3, 1)


@pytest.mark.parametrize(
    "occurred_at",
    [
        pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI),
        pendulum.datetime(2024, 3, 1, 0, 0, 0, 1, tz=SHANGHAI),
        # midnight in UTC is 08:00 in Shanghai: not the start of the site's date
        pendulum.datetime(2024, 3, 1, tz="UTC").in_timezone(SHANGHAI),
    ],
    ids=["08:00", "one-microsecond-past", "utc-midnight"],
)
def test_date_only_event_off_midnight_is_refused(occurred_at: pendulum.DateTime) -> None:
    """time_precision=day with a time of day other than local 00:00 is refused."""
    error = _error(_visit, occurred_at=occurred_at, time_precision=TimePrecision.DAY)
    assert error.field == "occurred_at"
    assert "00:00" in error.message


def test_unknown_time_precision_is_refused() -> None:
    """time_precision is one of instant and day."""
    error = _error(_visit, time_precision="hour")
    assert "'instant', 'day'" in error.message


@given(events())
def test_generated_date_only_events_start_at_local_midnight(event: Event) -> None:
    """Every date-only event (of any type) sits at 00:00 local time."""
    if event.time_precision is TimePrecision.DAY:
        assert event.occurred_at.time() == dt.time(0)
        assert format_instant(event.occurred_at)[11:19] == "00:00:00"


# --- occurred_on ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("occurred_at", "local_date", "utc_date"),
    [
        (pendulum.datetime(2024, 3, 1, 1, 0, tz=SHANGHAI), dt.date(2024, 3, 1),
         dt.date(2024, 2, 29)),
        (pendulum.datetime(2024, 2, 29, 22, 0, tz="America/New_York"), dt.date(2024, 2, 29),
         dt.date(2024, 3, 1)),
    ],
)
def test_occurred_on_is_the_site_date(
    occurred_at: pendulum.DateTime, local_date: dt.date, utc_date: dt.date
) -> None:
    """occurred_on is the date in the site's zone, not in UTC (D1)."""
    visit = _visit(occurred_at=occurred_at)
    assert visit.occurred_on == local_date
    assert visit.occurred_at.in_timezone("UTC").date() == utc_date


@given(events())
def test_occurred_on_matches_the_written_local_date(event: Event) -> None:
    """occurred_on is the date written in the event's own RFC 9557 text."""
    assert event.occurred_on == dt.date.fromisoformat(format_instant(event.occurred_at)[:10])


# --- individual event types -----------------------------------------------------------------


def _demographics(born: Any, **overrides: Any) -> DemographicsRecorded:
    return DemographicsRecorded(**_envelope(**overrides), date_of_birth=born, sex="F")


def test_demographics_date_of_birth() -> None:
    """A date of birth on or before the assessment date (local) is kept; sex is coded."""
    assert _demographics(dt.date(2024, 3, 1)).sex is Sex.FEMALE
    error = _error(_demographics, born=dt.date(2024, 3, 2))
    assert error.field == "date_of_birth"
    # 2024-03-01T01:00 in Shanghai is still 2024-02-29 in UTC: the local date counts
    early = pendulum.datetime(2024, 3, 1, 1, 0, tz=SHANGHAI)
    assert _demographics(dt.date(2024, 3, 1), occurred_at=early).date_of_birth == dt.date(
        2024, 3, 1
    )
    assert _error(_demographics, born=dt.datetime(1980, 1, 1)).field == "date_of_birth"


@pytest.mark.parametrize("score", [-1, 6, 7, True, "1", 1.0])
def test_ecog_is_an_integer_from_0_to_5(score: object) -> None:
    """ECOG performance status: 0-5 only, an int (not a bool, a string or a float)."""
    error = _error(EcogAssessed, **_envelope(), score=score)
    assert error.field == "score"
    assert EcogAssessed(**_envelope(), score=5).score == 5


def _correction(**changes: Any) -> EntryCorrected:
    return EntryCorrected(
        **_envelope(), corrects=UUID(int=1), changes=changes, reason="transcription error"
    )


@pytest.mark.parametrize("field", sorted(IMMUTABLE_FIELDS | {"type"}))
def test_correction_cannot_change_envelope_identity(field: str) -> None:
    """event_id, study, subject, recorded_at, recorded_by, source, schema_version, type: fixed."""
    error = _error(_correction, **{field: "x"})
    assert error.field == f"changes.{field}"
    assert "cannot be corrected" in error.message


def test_correction_may_change_clinical_time_and_payload() -> None:
    """occurred_at, time_precision and payload fields may be corrected."""
    correction = _correction(
        occurred_at="2024-03-01T00:00:00+08:00[Asia/Shanghai]", time_precision="day", score=2
    )
    assert correction.changes["score"] == 2
    assert {
        "event_id", "study", "subject", "recorded_at", "recorded_by", "source", "schema_version",
    } == IMMUTABLE_FIELDS


@pytest.mark.parametrize("changes", [{}, None, ["score", 2]])
def test_correction_must_name_a_change(changes: object) -> None:
    """A correction names at least one field and its new value."""
    error = _error(
        EntryCorrected, **_envelope(), corrects=UUID(int=1), changes=changes, reason="typo"
    )
    assert error.field == "changes"


@pytest.mark.parametrize("reason", ["", "  ", None])
def test_correction_needs_a_reason(reason: object) -> None:
    """D7: a correction without a reason is rejected."""
    error = _error(
        EntryCorrected, **_envelope(), corrects=UUID(int=1), changes={"score": 2}, reason=reason
    )
    assert error.field == "reason"


def _observation(**fields: Any) -> ObservationRecorded:
    return ObservationRecorded(**_envelope(), code_system="http://loinc.org", code="718-7",
                               **fields)


def test_observation_needs_exactly_one_of_result_and_category() -> None:
    """An observation has a value (result) or a category, never both, never neither."""
    hb = measure("718-7", "9.8", "g/dL")
    assert _observation(result=hb).result == hb
    assert _observation(category="normal").category == "normal"
    assert _error(_observation, result=hb, category="normal").field == "result"
    assert _error(_observation).field == "result"
    assert _error(_observation, result=None, category=None).field == "result"


@given(events())
def test_generated_events_are_frozen(event: Event) -> None:
    """Events are immutable: setting a field raises."""
    with pytest.raises(AttributeError):
        event.subject = "other"  # type: ignore[misc]
