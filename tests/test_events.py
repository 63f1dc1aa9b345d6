"""The event catalogue: envelope validation and the invariants of individual event types."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any
from uuid import UUID

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocolkit.corrections import apply_correction
from protocolkit.errors import EventError
from protocolkit.events import (
    CLOCK_SKEW,
    EVENT_TYPES,
    IMMUTABLE_FIELDS,
    ConcomitantMedicationStarted,
    ConsentSigned,
    DemographicsRecorded,
    DoseAdministered,
    DoseChanged,
    DrugLevelResulted,
    EcogAssessed,
    EntryCorrected,
    Event,
    ObservationRecorded,
    RegimenPrescribed,
    Sex,
    SubjectRegistered,
    TimePrecision,
    TransfusionGiven,
    VisitOccurred,
)
from protocolkit.serde import event_from_json, event_to_json
from protocolkit.timeutil import format_instant, to_utc
from protocolkit.units import Quantity, measure
from tests.strategies import AMOUNT_UNITS, DOSE_UNITS, ZONES, events

SHANGHAI = "Asia/Shanghai"


def _envelope(**overrides: Any) -> dict[str, Any]:
    """A valid envelope; recorded 2 h after occurred_at (the one given, if it is aware)."""
    at = pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI)
    given_at = overrides.get("occurred_at")
    if isinstance(given_at, dt.datetime) and given_at.utcoffset() is not None:
        at = pendulum.instance(given_at)
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


# --- recorded_at is not before occurred_at --------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    [dt.timedelta(0), dt.timedelta(days=400), -CLOCK_SKEW, -dt.timedelta(minutes=1)],
    ids=["at-once", "a-year-later", "skew-limit", "one-minute-skew"],
)
def test_recorded_at_or_after_occurred_within_clock_skew(delay: dt.timedelta) -> None:
    """An event is recorded when or after it happened; up to 5 minutes early is clock skew."""
    at = pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI)
    assert dt.timedelta(minutes=5) == CLOCK_SKEW
    assert _visit(occurred_at=at, recorded_at=at + delay).recorded_at == at + delay


@pytest.mark.parametrize(
    "early",
    [CLOCK_SKEW + dt.timedelta(microseconds=1), dt.timedelta(minutes=6), dt.timedelta(days=1)],
    ids=["skew-plus-1us", "six-minutes", "a-day"],
)
def test_recorded_before_it_occurred_is_refused(early: dt.timedelta) -> None:
    """recorded_at more than 5 minutes before occurred_at: refused, naming recorded_at."""
    at = pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI)
    error = _error(_visit, occurred_at=at, recorded_at=at - early)
    assert error.field == "recorded_at"
    assert error.message.startswith(f"recorded {format_instant(at - early)} before it occurred")
    assert format_instant(at) in error.message


def test_time_order_compares_instants_not_wall_clocks() -> None:
    """Across zones and across a DST fall-back (same wall clock twice) the instants count."""
    lab = pendulum.datetime(2024, 3, 1, 8, 0, tz=SHANGHAI)  # 00:00 UTC
    assert _visit(occurred_at=lab, recorded_at=pendulum.datetime(2024, 2, 29, 23, 56, tz="UTC"))
    assert _error(_visit, occurred_at=lab,
                  recorded_at=pendulum.datetime(2024, 2, 29, 23, 54, tz="UTC")).field == (
        "recorded_at")
    # 01:30 EDT (first) then 01:10 EST (second): recorded 40 minutes later, though its wall
    # clock reads earlier.
    first = pendulum.datetime(2024, 11, 3, 1, 30, tz="America/New_York", fold=0)
    second = pendulum.datetime(2024, 11, 3, 1, 10, tz="America/New_York", fold=1)
    assert second.tzinfo is first.tzinfo
    assert _visit(occurred_at=first, recorded_at=second).recorded_at == second
    assert _error(_visit, occurred_at=second, recorded_at=first).field == "recorded_at"


def _consent(recorded_at: pendulum.DateTime) -> ConsentSigned:
    midnight = pendulum.datetime(2019, 6, 10, tz=SHANGHAI)
    return ConsentSigned(**_envelope(occurred_at=midnight, recorded_at=recorded_at),
                         time_precision="day", form_version="ICF v1.0")


@pytest.mark.parametrize(
    "recorded_at",
    [
        pendulum.datetime(2019, 6, 10, 10, 0, tz=SHANGHAI),
        pendulum.datetime(2019, 6, 10, 0, 0, tz=SHANGHAI),
        pendulum.datetime(2019, 6, 9, 23, 55, tz=SHANGHAI),  # clock skew
        pendulum.datetime(2019, 6, 10, 2, 0, tz="UTC"),  # 10:00 at the site
        pendulum.datetime(2019, 6, 11, 8, 45, tz=SHANGHAI),
    ],
    ids=["10:00-same-day", "midnight", "skew", "utc-same-site-day", "next-day"],
)
def test_date_only_event_may_be_recorded_during_its_date(recorded_at: pendulum.DateTime) -> None:
    """A date-only consent happened some time that date: recording it that day is not early."""
    assert _consent(recorded_at).recorded_at == recorded_at


@pytest.mark.parametrize(
    "recorded_at",
    [
        pendulum.datetime(2019, 6, 9, 23, 0, tz=SHANGHAI),
        pendulum.datetime(2019, 6, 9, 15, 0, tz="UTC"),  # 23:00 the day before at the site
    ],
    ids=["day-before", "utc-day-before"],
)
def test_date_only_event_recorded_before_its_date_is_refused(
    recorded_at: pendulum.DateTime,
) -> None:
    """A record made before the date began precedes the event, whenever in that date it was."""
    error = _error(_consent, recorded_at=recorded_at)
    assert error.field == "recorded_at"
    assert "before it occurred (2019-06-10T00:00:00+08:00[Asia/Shanghai])" in error.message


@given(events())
def test_generated_events_are_recorded_after_they_occurred(event: Event) -> None:
    """The strategies draw recorded_at as occurred_at plus a delay (at worst the skew)."""
    assert to_utc(event.recorded_at) >= to_utc(event.occurred_at) - CLOCK_SKEW


def test_correction_cannot_move_an_event_after_its_record() -> None:
    """A corrected occurred_at is checked too: it may not fall after the original record."""
    visit = _visit()
    later = format_instant(visit.recorded_at.add(hours=1))
    fix = _correction(occurred_at=later)
    with pytest.raises(EventError) as raised:
        apply_correction(visit, fix)
    assert raised.value.field == "changes.recorded_at"
    earlier = format_instant(visit.occurred_at.subtract(hours=1))
    assert apply_correction(visit, _correction(occurred_at=earlier)).occurred_at.hour == 7


# --- the site's time zone -------------------------------------------------------------------


def _registered(**fields: Any) -> SubjectRegistered:
    return SubjectRegistered(**_envelope(), site="PUMCH", **fields)


@pytest.mark.parametrize("zone", [SHANGHAI, "UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+8"])
def test_subject_registered_keeps_its_site_zone(zone: str) -> None:
    """time_zone is the IANA zone of the site, kept as given; without it, None."""
    assert _registered(time_zone=zone).time_zone == zone
    assert _registered().time_zone is None


@pytest.mark.parametrize(
    "zone",
    ["Asia/Shangai", "asia/shanghai", "", " ", "+08:00", "Asia", "Asia/Shanghai ", "local",
     "../../etc/passwd", "zone.tab", 8, b"Asia/Shanghai"],
)
def test_unknown_site_zone_is_refused(zone: object) -> None:
    """A zone pendulum does not know (misspelt, an offset, a directory) names time_zone."""
    error = _error(_registered, time_zone=zone)
    assert error.field == "time_zone"
    assert "IANA" in error.message


@given(st.sampled_from(ZONES))
def test_site_zone_round_trips(zone: str) -> None:
    """time_zone survives the interchange form; an absent one is None."""
    registered = _registered(time_zone=zone)
    assert event_from_json(event_to_json(registered)) == registered
    document = event_to_json(_registered())
    assert document["time_zone"] is None
    del document["time_zone"]
    back = event_from_json(document)
    assert isinstance(back, SubjectRegistered) and back.time_zone is None


def test_occurred_on_is_the_date_in_the_zone_occurred_at_carries() -> None:
    """A level stamped 23:40 UTC is on the UTC date; the site's date is one day later (D8).

    Rules compute dates in the site's zone (SubjectRegistered.time_zone), not occurred_on.
    """
    stamped = pendulum.datetime(2019, 8, 19, 23, 40, tz="UTC")
    visit = _visit(occurred_at=stamped)
    assert visit.occurred_on == dt.date(2019, 8, 19)
    site_zone = _registered(time_zone=SHANGHAI).time_zone
    assert site_zone is not None
    assert stamped.in_timezone(site_zone).date() == dt.date(2019, 8, 20)
    assert Event.occurred_on.__doc__ is not None
    assert "SubjectRegistered.time_zone" in Event.occurred_on.__doc__


# --- dose and transfusion units -------------------------------------------------------------

DOSED: dict[type[Any], dict[str, Any]] = {
    RegimenPrescribed: {"drug": "tacrolimus", "frequency": "BID"},
    DoseChanged: {"drug": "tacrolimus", "frequency": "BID"},
    DoseAdministered: {"drug": "tacrolimus"},
    ConcomitantMedicationStarted: {"medication": "prednisone"},
}


Dosed = RegimenPrescribed | DoseChanged | DoseAdministered | ConcomitantMedicationStarted


def _dosed(cls: type[Dosed], unit: str, value: str = "1") -> Dosed:
    return cls(**_envelope(), **DOSED[cls], dose=Quantity(value, unit))


@pytest.mark.parametrize("cls", list(DOSED), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "unit",
    sorted({*DOSE_UNITS, "mg", "kg", "[iU]", "[IU]", "10*6.[iU]", "mL", "L", "mg/m2", "g/m2",
            "mg/kg", "ug/kg", "[iU]/kg", "mL/kg", "mg/mL", "mg/L", "[iU]/mL", "mL/m2",
            "mg{total}"}),
)
def test_dose_units_accepted(cls: type[Dosed], unit: str) -> None:
    """A mass, international units or a volume, alone or per m2, per kg or per volume."""
    event = _dosed(cls, unit)
    assert event.dose == Quantity("1", unit)


@pytest.mark.parametrize("cls", list(DOSED), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "unit",
    [
        "mg/d",      # a rate, not a dose
        "mg/kg/d",
        "U",         # enzyme units are umol/min
        "mmol",      # an amount of substance
        "%",         # dimensionless, like mg/kg: the ratio is what is checked
        "1",
        "{tablet}",
        "mL/L",      # a volume per volume is a ratio, not a concentration
        "[iU]/[iU]",
        "cm",        # a length, like mL/m2
        "m2",
        "/kg",
        "mg/{dose}",
        "mg/m.m",    # (mg/m).m in UCUM: a mass, not mg/m2
        "mg/h",
        "g/s",
        "Cel",
    ],
)
def test_other_dose_units_are_refused(cls: type[Dosed], unit: str) -> None:
    """Any other unit is refused on dose.unit, saying which dimensions are allowed."""
    error = _error(_dosed, cls=cls, unit=unit)
    assert error.field == "dose.unit"
    assert f"unit {unit!r} is not a dose unit" in error.message
    for allowed in ("mass (mg)", "international units ([iU])", "volume (mL)",
                    "body surface area (mg/m2)", "body mass (mg/kg)", "per volume (mg/mL)"):
        assert allowed in error.message


def test_negative_dose_is_still_refused() -> None:
    """The unit check does not replace the sign check."""
    error = _error(_dosed, cls=DoseAdministered, unit="mg", value="-1")
    assert (error.field, error.message) == ("dose", "cannot be negative (-1 mg)")


def _transfusion(unit: str) -> TransfusionGiven:
    return TransfusionGiven(**_envelope(), product="RBC", amount=Quantity("2", unit))


@pytest.mark.parametrize("unit", sorted({*AMOUNT_UNITS, "mL", "L", "1", "{unit}", "{bag}",
                                         "10*11"}))
def test_transfusion_amount_is_a_volume_or_a_count(unit: str) -> None:
    """A transfusion amount is a volume (mL) or a count (1, {unit}, {bag})."""
    assert _transfusion(unit).amount == Quantity("2", unit)
    assert TransfusionGiven(**_envelope(), product="RBC").amount is None


@pytest.mark.parametrize("unit", ["mg", "[iU]", "mL/kg", "mg/kg", "%", "[ppm]", "mL/L",
                                  "g/L", "/uL", "10*9/L", "cm"])
def test_other_transfusion_units_are_refused(unit: str) -> None:
    """Anything else, including a ratio or a fraction that happens to be dimensionless."""
    error = _error(_transfusion, unit=unit)
    assert error.field == "amount.unit"
    assert f"unit {unit!r} is not a transfusion amount unit" in error.message
    assert "a volume (mL) or a count (1, {unit}, {bag})" in error.message


# --- labelled_trough ------------------------------------------------------------------------


def _level(**fields: Any) -> DrugLevelResulted:
    return DrugLevelResulted(**_envelope(), drug="tacrolimus", loinc="77348-1",
                             result=measure("77348-1", "7.2", "ng/mL"), **fields)


def test_labelled_trough_is_required() -> None:
    """A level must say whether it was labelled a trough: no default makes it one."""
    with pytest.raises(TypeError, match="labelled_trough"):
        _level()
    assert _level(labelled_trough=False).labelled_trough is False
    assert _level(labelled_trough=True).labelled_trough is True
    document = event_to_json(_level(labelled_trough=True))
    del document["labelled_trough"]
    with pytest.raises(EventError) as raised:
        event_from_json(document)
    assert (raised.value.field, raised.value.message) == (
        "labelled_trough", "required field missing")


@pytest.mark.parametrize("value", [None, 1, "true", "yes"])
def test_labelled_trough_is_true_or_false(value: object) -> None:
    """labelled_trough is a bool, never a truthy stand-in."""
    assert _error(_level, labelled_trough=value).field == "labelled_trough"
