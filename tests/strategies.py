"""Internal Hypothesis strategies: valid instances of every event type.

Every new event class must get a payload strategy in ``_PAYLOADS`` (importing this module
fails otherwise). The strategies draw simple values and build events from them, so failures
shrink to small, readable examples: UTC-ish instants near 2000, one-character strings,
``Decimal(0)``, an event recorded the instant it occurred.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pendulum
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from protocolkit.events import (
    CLOCK_SKEW,
    EVENT_TYPES,
    IMMUTABLE_FIELDS,
    AdverseEventReported,
    BodyMeasured,
    ChildbearingPotentialAssessed,
    ConcomitantMedicationStarted,
    ConcomitantMedicationStopped,
    ConsentSigned,
    ConsentWithdrawn,
    DemographicsRecorded,
    DiagnosisRecorded,
    DoseAdministered,
    DoseChanged,
    DoseMissed,
    DrugLevelResulted,
    EcogAssessed,
    EntryCorrected,
    EntryRetracted,
    Event,
    LabResulted,
    LactationAssessed,
    ObservationRecorded,
    OtherHaematologicalDiseaseAssessed,
    PregnancyTestResulted,
    PriorResponse,
    PriorTherapyRecorded,
    RegimenPrescribed,
    SampleDrawn,
    Sex,
    SubjectEnrolled,
    SubjectRegistered,
    SubjectWithdrawn,
    TestResult,
    TimePrecision,
    Tolerance,
    TransfusionGiven,
    TreatmentDiscontinued,
    VisitOccurred,
)
from protocolkit.timeutil import to_utc
from protocolkit.units import Measurement, Quantity, default_catalogue, measure

__all__ = [
    "AMOUNT_UNITS",
    "CATALOGUED",
    "DOSE_UNITS",
    "UNCATALOGUED_CODES",
    "ZONES",
    "decimals",
    "envelopes",
    "events",
    "instants",
    "local_midnights",
    "measurements",
    "quantities",
    "record_delays",
    "texts",
    "timezones",
]

#: Real IANA zones: the study's, DST in both hemispheres, half- and quarter-hour offsets,
#: a 30-minute DST shift (Lord Howe), a skipped day (Apia, 2011) and local mean time before
#: 1900-ish (Shanghai +08:05:43).
ZONES = (
    "Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York", "Europe/London",
    "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe",
    "Pacific/Chatham", "Pacific/Apia", "America/Sao_Paulo",
)
_EARLIEST = dt.datetime(1900, 1, 1)
_LATEST = dt.datetime(2100, 1, 1)

#: (LOINC code, unit) for every code of the shipped catalogue and every unit it accepts.
CATALOGUED: tuple[tuple[str, str], ...] = tuple(
    sorted(
        (code, unit)
        for code, analyte in default_catalogue().analytes.items()
        for unit in analyte.accepted_units
    )
)
#: LOINC codes the shipped catalogue does not know (kept as received).
UNCATALOGUED_CODES = ("2951-2", "1742-6", "2093-3", "33914-3")
_ALL_CODES = tuple(sorted({c for c, _ in CATALOGUED})) + UNCATALOGUED_CODES
_UCUM_UNITS = ("mg/dL", "mmol/L", "%", "U/L", "[iU]/L", "10*9/L", "fL", "pg", "s", "mL/min")
#: Dose units: a mass, international units or a volume, alone or per m2, per kg or per volume.
DOSE_UNITS = (
    "mg", "ug", "g", "mg/kg", "mg/m2", "[iU]", "[iU]/kg", "mL", "mg/mL", "mL/kg", "[IU]/m2",
    "ug/kg", "mg{total}",
)
#: Transfusion amounts: a volume or a count.
AMOUNT_UNITS = ("mL", "L", "{bag}", "1", "{unit}")
_TACROLIMUS = ("11253-2", "77348-1", "74097-7", "74096-9")
_BODY = ("8302-2", "29463-7")

assert not set(UNCATALOGUED_CODES) & set(default_catalogue().analytes)


# Strategies are built once: building them inside every draw costs more than drawing.
_TEXTS = st.text(min_size=1, max_size=12).filter(lambda s: bool(s.strip()))
_OPTIONAL_TEXTS = st.none() | _TEXTS
_TIMEZONES = st.one_of(
    st.sampled_from(ZONES).map(pendulum.timezone),
    st.integers(-12 * 60, 14 * 60).map(lambda minutes: pendulum.FixedTimezone(minutes * 60)),
)
_UTC_DATETIMES = st.datetimes(min_value=_EARLIEST, max_value=_LATEST)
_DATES = st.dates(min_value=_EARLIEST.date(), max_value=_LATEST.date())


def texts() -> SearchStrategy[str]:
    """Non-blank text, as every free-text field needs."""
    return _TEXTS


def _optional_texts() -> SearchStrategy[str | None]:
    return _OPTIONAL_TEXTS


def timezones() -> SearchStrategy[pendulum.Timezone | pendulum.FixedTimezone]:
    """Named IANA zones and fixed UTC offsets (whole minutes, -12:00 to +14:00)."""
    return _TIMEZONES


@st.composite
def instants(
    draw: st.DrawFn, min_value: dt.datetime = _EARLIEST, max_value: dt.datetime = _LATEST
) -> pendulum.DateTime:
    """Aware instants (microseconds included) shown in one of :func:`timezones`.

    The instant is drawn in UTC and then converted, so it always exists in its zone and an
    ambiguous wall time carries the right ``fold``.
    """
    if (min_value, max_value) == (_EARLIEST, _LATEST):
        utc = draw(_UTC_DATETIMES)
    else:
        utc = draw(st.datetimes(min_value=min_value, max_value=max_value))
    zone = draw(_TIMEZONES)
    return pendulum.instance(utc.replace(tzinfo=dt.UTC)).in_timezone(zone)


@st.composite
def local_midnights(draw: st.DrawFn) -> pendulum.DateTime:
    """00:00 of a date in one of :func:`timezones`: the ``occurred_at`` of a date-only event."""
    day = draw(_DATES)
    zone = draw(_TIMEZONES)
    midnight = pendulum.datetime(day.year, day.month, day.day, tz=zone)
    assume(midnight.time() == dt.time(0))  # DST began at midnight there (Sao Paulo, 2018)
    return midnight


def decimals(
    min_value: Decimal | int = 0, max_value: Decimal | int = 10**6
) -> SearchStrategy[Decimal]:
    """Finite decimals with 0 to 3 places, trailing zeros kept (``9.80``)."""
    return st.one_of(
        *(st.decimals(min_value=min_value, max_value=max_value, places=p) for p in range(4))
    )


_CODES = st.sampled_from(_ALL_CODES)
_ACCEPTED_UNITS = {
    code: st.sampled_from([unit for c, unit in CATALOGUED if c == code])
    for code in {c for c, _ in CATALOGUED}
}
_UCUM = st.sampled_from(_UCUM_UNITS)
# Small values first (they shrink there), then the whole range: many are implausible.
_MEASURED_VALUES = decimals(0, 300) | decimals(0, 10**6) | st.integers(0, 10**6)
_UNCATALOGUED_VALUES = decimals(-1000, 10**6)


@st.composite
def measurements(draw: st.DrawFn, code: str | None = None) -> Measurement:
    """A result as :func:`protocolkit.units.measure` makes it from a value as received.

    Catalogued codes get an accepted unit and a non-negative value, often an implausible one
    (9.8 g/L of haemoglobin); other codes keep any UCUM unit and value as received.
    """
    if code is None:
        code = draw(_CODES)
    if code in _ACCEPTED_UNITS:
        unit = draw(_ACCEPTED_UNITS[code])
        value = draw(_MEASURED_VALUES)
    else:
        unit = draw(_UCUM)
        value = draw(_UNCATALOGUED_VALUES)
    return measure(code, value, unit)


@functools.cache
def quantities(units: tuple[str, ...] = DOSE_UNITS) -> SearchStrategy[Quantity]:
    """Non-negative quantities in one of ``units`` (UCUM)."""
    return st.builds(Quantity, decimals(0, 10_000), st.sampled_from(units))


_PRECISIONS = st.sampled_from(TimePrecision)
_MIDNIGHTS = local_midnights()
_INSTANTS = instants()
_UUIDS = st.uuids()
_STUDIES = st.just("NCT03918265") | _TEXTS
_SOURCES = st.sampled_from(["api", "edc", "lab:central", "pharmacy"]) | _TEXTS
_VERSIONS = st.integers(1, 3)
# At once first (where failures shrink to), then within the day, then up to 30 years later;
# last, early by no more than the clock skew the envelope tolerates.
_RECORD_DELAYS = st.one_of(
    st.timedeltas(dt.timedelta(0), dt.timedelta(days=1)),
    st.timedeltas(dt.timedelta(0), dt.timedelta(days=30 * 366)),
    st.timedeltas(-CLOCK_SKEW, dt.timedelta(0)),
)


def record_delays() -> SearchStrategy[dt.timedelta]:
    """How long after ``occurred_at`` an event is recorded (at worst ``CLOCK_SKEW`` early)."""
    return _RECORD_DELAYS


@st.composite
def envelopes(draw: st.DrawFn, precision: TimePrecision | None = None) -> dict[str, Any]:
    """The envelope's keyword arguments; a date-only one has ``occurred_at`` at local 00:00.

    ``recorded_at`` is ``occurred_at`` plus a :func:`record_delays` delay, shown in a zone of
    its own: an event is never recorded before it happened.
    """
    if precision is None:
        precision = draw(_PRECISIONS)
    occurred = draw(_MIDNIGHTS if precision is TimePrecision.DAY else _INSTANTS)
    recorded = (to_utc(occurred) + draw(_RECORD_DELAYS)).in_timezone(draw(_TIMEZONES))
    return {
        "event_id": draw(_UUIDS),
        "study": draw(_STUDIES),
        "subject": draw(_TEXTS),
        "occurred_at": occurred,
        "recorded_at": recorded,
        "recorded_by": draw(_TEXTS),
        "source": draw(_SOURCES),
        "schema_version": draw(_VERSIONS),
        "time_precision": precision,
    }


def _json_values() -> SearchStrategy[Any]:
    """Values of the JSON interchange form (what ``EntryCorrected.changes`` maps to)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                    max_size=3),
        max_leaves=6,
    )


_CORRECTABLE = sorted(
    {a.name for cls in EVENT_TYPES.values() for a in cls.__attrs_attrs__} - IMMUTABLE_FIELDS
)

Payload = Callable[[pendulum.DateTime], SearchStrategy[dict[str, Any]]]


def _fixed(**fields: SearchStrategy[Any]) -> Payload:
    """A payload of independent fields, whatever the envelope."""
    return _const(st.fixed_dictionaries(fields))


def _const(strategy: SearchStrategy[dict[str, Any]]) -> Payload:
    """A payload that does not depend on the envelope."""
    return lambda _occurred: strategy


@st.composite
def _demographics(draw: st.DrawFn, occurred: pendulum.DateTime) -> dict[str, Any]:
    on = occurred.date()
    latest = dt.date(on.year, on.month, on.day)  # a plain date: pendulum's Date is a subclass
    born = draw(st.dates(min_value=min(dt.date(1900, 1, 1), latest), max_value=latest))
    return {"date_of_birth": born, "sex": draw(st.sampled_from(Sex))}


@st.composite
def _measured(
    draw: st.DrawFn, /, codes: tuple[str, ...], **fields: SearchStrategy[Any]
) -> dict[str, Any]:
    """A measured result and its code (``loinc``), with the other ``fields`` drawn."""
    code = draw(_CODES if codes == _ALL_CODES else st.sampled_from(codes))
    drawn = {name: draw(strategy) for name, strategy in fields.items()}
    return {**drawn, "loinc": code, "result": draw(measurements(code))}


_CODE_SYSTEMS = st.sampled_from(["http://loinc.org", "LOINC", "SNOMED", "protocol"])


@st.composite
def _observation(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "code_system": draw(_CODE_SYSTEMS),
        "display": draw(_OPTIONAL_TEXTS),
    }
    if draw(st.booleans()):
        code = draw(_CODES)
        return {**fields, "code": code, "result": draw(measurements(code)), "category": None}
    return {**fields, "code": draw(_TEXTS), "result": None, "category": draw(_TEXTS)}


_PAYLOADS: dict[type[Event], Payload] = {
    SubjectRegistered: _fixed(
        site=texts(), screening_number=_optional_texts(),
        time_zone=st.none() | st.sampled_from(ZONES),
    ),
    ConsentSigned: _fixed(form_version=texts()),
    ConsentWithdrawn: _fixed(reason=_optional_texts()),
    DemographicsRecorded: _demographics,
    ChildbearingPotentialAssessed: _fixed(childbearing_potential=st.booleans()),
    DiagnosisRecorded: _fixed(
        condition=st.sampled_from(["AIHA", "PRCA", "EVANS", "ITP"]) | texts(),
        code_system=_optional_texts(),
        code=_optional_texts(),
    ),
    PriorTherapyRecorded: _fixed(
        line=st.integers(1, 20),
        therapy=texts(),
        response=st.sampled_from(PriorResponse),
        tolerance=st.sampled_from(Tolerance),
    ),
    EcogAssessed: _fixed(score=st.integers(0, 5)),
    OtherHaematologicalDiseaseAssessed: _fixed(present=st.booleans(), condition=_optional_texts()),
    PregnancyTestResulted: _fixed(result=st.sampled_from(TestResult), specimen=texts()),
    LactationAssessed: _fixed(lactating=st.booleans()),
    SubjectEnrolled: _fixed(arm=_optional_texts()),
    RegimenPrescribed: _fixed(
        drug=texts(), dose=quantities(), frequency=st.sampled_from(["BID", "QD"]) | texts(),
        route=texts(),
    ),
    DoseChanged: _fixed(
        drug=texts(), dose=quantities(), frequency=texts(), reason=_optional_texts()
    ),
    DoseAdministered: _fixed(drug=texts(), dose=quantities(), route=_optional_texts()),
    DoseMissed: _fixed(drug=texts(), reason=_optional_texts()),
    SampleDrawn: _fixed(sample_id=texts(), purpose=texts()),
    DrugLevelResulted: _const(_measured(
        _TACROLIMUS,
        drug=st.just("tacrolimus") | texts(),
        sample_id=_optional_texts(),
        labelled_trough=st.booleans(),
    )),
    LabResulted: _const(_measured(
        _ALL_CODES,
        test=_optional_texts(),
        specimen_id=_optional_texts(),
        laboratory=_optional_texts(),
    )),
    TransfusionGiven: _fixed(
        product=st.sampled_from(["RBC", "platelets", "plasma"]) | texts(),
        amount=st.none() | quantities(AMOUNT_UNITS),
    ),
    ConcomitantMedicationStarted: _fixed(
        medication=texts(), code=_optional_texts(), dose=st.none() | quantities(),
        indication=_optional_texts(),
    ),
    ConcomitantMedicationStopped: _fixed(medication=texts(), code=_optional_texts()),
    BodyMeasured: _const(_measured(_BODY)),
    AdverseEventReported: _fixed(
        term=texts(), grade=st.none() | st.integers(1, 5), serious=st.booleans(),
        category=_optional_texts(),
    ),
    VisitOccurred: _fixed(visit=texts()),
    SubjectWithdrawn: _fixed(reason=texts()),
    TreatmentDiscontinued: _fixed(reason=texts()),
    ObservationRecorded: _const(_observation()),
    EntryCorrected: _fixed(
        corrects=st.uuids(),
        changes=st.dictionaries(st.sampled_from(_CORRECTABLE), _json_values(), min_size=1,
                                max_size=3),
        reason=texts(),
    ),
    EntryRetracted: _fixed(retracts=st.uuids(), reason=texts()),
}

_missing = set(EVENT_TYPES.values()) - set(_PAYLOADS)
if _missing:  # every new event type must be generated here (house style 18)
    names = sorted(cls.__name__ for cls in _missing)
    raise ImportError(f"tests/strategies.py has no payload strategy for {names}")


_ENVELOPES = envelopes()


@st.composite
def _events_of(draw: st.DrawFn, cls: type[Event]) -> Event:
    envelope = draw(_ENVELOPES)
    payload = draw(_PAYLOADS[cls](envelope["occurred_at"]))
    return cls(**envelope, **payload)


def events(event_type: str | type[Event] | None = None) -> SearchStrategy[Event]:
    """Valid events of ``event_type`` (a name or a class), or of every type when ``None``."""
    if event_type is None:
        return st.one_of([_events_of(cls) for cls in EVENT_TYPES.values()])
    cls = EVENT_TYPES[event_type] if isinstance(event_type, str) else event_type
    return _events_of(cls)
