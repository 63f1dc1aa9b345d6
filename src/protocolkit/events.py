"""The event catalogue: what happens to a trial subject, as frozen attrs classes in the past tense.

Every event carries the same envelope (:class:`Event`): who the subject is, when it happened in
clinical time (``occurred_at``, aware, in the site's zone), when the system learned it
(``recorded_at``, never before ``occurred_at`` beyond :data:`CLOCK_SKEW`), who recorded it and
from where. Nothing here does I/O; the store and the serialiser build on these classes.

For results (labs, drug levels, body measurements, coded observations) ``occurred_at`` is the
specimen or measurement time, the clinical time the value describes; the time the result became
known is its ``recorded_at`` (D8).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

import attrs
import pendulum

from protocolkit.errors import EventError, UnitError
from protocolkit.timeutil import format_instant, is_aware, to_utc
from protocolkit.units import Measurement, Quantity, parse_unit

__all__ = [
    "CLOCK_SKEW",
    "EVENT_TYPES",
    "AdverseEventReported",
    "BodyMeasured",
    "ChildbearingPotentialAssessed",
    "ConcomitantMedicationStarted",
    "ConcomitantMedicationStopped",
    "ConsentSigned",
    "ConsentWithdrawn",
    "DemographicsRecorded",
    "DiagnosisRecorded",
    "DoseAdministered",
    "DoseChanged",
    "DoseMissed",
    "DrugLevelResulted",
    "EcogAssessed",
    "EntryCorrected",
    "EntryRetracted",
    "Event",
    "LabResulted",
    "LactationAssessed",
    "ObservationRecorded",
    "OtherHaematologicalDiseaseAssessed",
    "PregnancyTestResulted",
    "PriorResponse",
    "PriorTherapyRecorded",
    "RegimenPrescribed",
    "SampleDrawn",
    "Sex",
    "SubjectEnrolled",
    "SubjectRegistered",
    "SubjectWithdrawn",
    "TestResult",
    "TimePrecision",
    "Tolerance",
    "TransfusionGiven",
    "TreatmentDiscontinued",
    "VisitOccurred",
]

#: The envelope fields, in their stable order. A correction may not change these but
#: ``occurred_at`` and ``time_precision``.
ENVELOPE_FIELDS = (
    "event_id", "study", "subject", "occurred_at", "recorded_at", "recorded_by", "source",
    "schema_version", "time_precision",
)
IMMUTABLE_FIELDS = frozenset(ENVELOPE_FIELDS) - {"occurred_at", "time_precision"}

#: How far ``recorded_at`` may precede ``occurred_at``: the clock skew tolerated between the
#: systems that stamp them (a lab analyser, the EDC, a pharmacy system). Beyond it an event
#: would have been recorded before it happened, and is refused.
CLOCK_SKEW = dt.timedelta(minutes=5)


class TimePrecision(enum.StrEnum):
    """How much of ``occurred_at`` is known."""

    INSTANT = "instant"
    #: Only the date is known (a consent form dated but not timed); ``occurred_at`` is the
    #: start of that date in the site's zone and its time of day means nothing.
    DAY = "day"


class Sex(enum.StrEnum):
    """Sex, as CDISC SEX codes it."""

    FEMALE = "F"
    MALE = "M"
    UNKNOWN = "U"


class PriorResponse(enum.StrEnum):
    """Best response to a prior line of therapy."""

    NONE = "none"
    PARTIAL = "partial"
    COMPLETE = "complete"
    UNKNOWN = "unknown"


class Tolerance(enum.StrEnum):
    """Whether a prior line of therapy was tolerated."""

    TOLERATED = "tolerated"
    INTOLERANT = "intolerant"
    UNKNOWN = "unknown"


class TestResult(enum.StrEnum):
    """A qualitative test result."""

    __test__ = False  # not a pytest test class

    POSITIVE = "positive"
    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"


def _text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"must be a non-empty string, got {value!r}", field=attribute.name)


def _optional_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _text(inst, attribute, value)


#: The characters of an IANA zone name (``America/Argentina/Buenos_Aires``, ``Etc/GMT+8``).
_TIME_ZONE_PATTERN = r"^[A-Za-z0-9_+\-/]+$"


def _optional_time_zone(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """None, or the name of an IANA time zone that pendulum knows (``Asia/Shanghai``)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise EventError(f"must be an IANA time zone name, got {value!r}", field=attribute.name)
    try:
        pendulum.timezone(value)
    except Exception:  # InvalidTimezone; zoneinfo's ValueError or OSError for odd keys
        raise EventError(
            f"unknown time zone {value!r}: give an IANA zone name such as 'Asia/Shanghai'",
            field=attribute.name,
        ) from None


def _instant(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dt.datetime):
        raise EventError(f"must be a date-time, got {value!r}", field=attribute.name)
    if not is_aware(value):
        raise EventError(
            f"naive date-time {value.isoformat()}: a UTC offset and the site's zone are required",
            field=attribute.name,
        )


def _to_pendulum(value: object) -> object:
    # Accept any aware datetime from Python callers; keep pendulum's type inside.
    if isinstance(value, dt.datetime) and not isinstance(value, pendulum.DateTime):
        return pendulum.instance(value) if is_aware(value) else value
    return value


def _int_range(low: int, high: int | None = None) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EventError(f"must be an integer, got {value!r}", field=attribute.name)
        if value < low or (high is not None and value > high):
            bound = f"{low} to {high}" if high is not None else f">= {low}"
            raise EventError(f"must be {bound}, got {value}", field=attribute.name)

    return check


def _bool(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise EventError(f"must be true or false, got {value!r}", field=attribute.name)


E = TypeVar("E", bound=enum.Enum)


def _coerce(kind: type[E], value: object) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise EventError(f"{value!r} is not one of {allowed}") from None


def _to_precision(value: object) -> TimePrecision:
    return _coerce(TimePrecision, value)


def _to_sex(value: object) -> Sex:
    return _coerce(Sex, value)


def _to_response(value: object) -> PriorResponse:
    return _coerce(PriorResponse, value)


def _to_tolerance(value: object) -> Tolerance:
    return _coerce(Tolerance, value)


def _to_test_result(value: object) -> TestResult:
    return _coerce(TestResult, value)


_Dimension = tuple[int, ...]

_MASS = parse_unit("g").dimension
_INTERNATIONAL_UNITS = parse_unit("[iU]").dimension
_VOLUME = parse_unit("L").dimension
_AREA = parse_unit("m2").dimension
_DIMENSIONLESS = parse_unit("1").dimension
#: What a dose is an amount of, and what it may be given per (body surface area, body mass,
#: volume: a concentration).
_DOSE_AMOUNTS = frozenset({_MASS, _INTERNATIONAL_UNITS, _VOLUME})
_DOSE_PER = frozenset({_AREA, _MASS, _VOLUME})
_DOSE_UNITS = (
    "a mass (mg), an amount of international units ([iU]) or a volume (mL), or one of those "
    "per body surface area (mg/m2), per body mass (mg/kg) or per volume (mg/mL)"
)
_AMOUNT_UNITS = "a volume (mL) or a count (1, {unit}, {bag})"
_OPEN, _CLOSE = "([{", ")]}"


def _ratio(code: str) -> tuple[str, str | None] | None:
    """Split a UCUM code at its top-level ``/`` (not inside ``()``, ``[]``, ``{}``).

    Returns (numerator, None) when there is no top-level ``/``, and None when there is more
    than one (``mg/kg/d``) or nothing before it (``/kg``).
    """
    depth = 0
    cuts = []
    for i, char in enumerate(code):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == "/" and depth == 0:
            cuts.append(i)
    if not cuts:
        return code, None
    if len(cuts) > 1 or cuts[0] == 0:
        return None
    return code[: cuts[0]], code[cuts[0] + 1 :]


def _dimension_of(code: str | None) -> _Dimension | None:
    if code is None:
        return None
    try:
        return parse_unit(code).dimension
    except UnitError:
        return None


def _is_dose_unit(code: str) -> bool:
    """A mass, international units or a volume, optionally per area, per mass or per volume.

    The dimension of the whole unit is not enough: mg/kg is dimensionless like ``%``, and
    mL/m2 is a length like ``cm``. So the unit is read as amount ``/`` per, each checked.
    Per volume is a concentration (mg/mL, [iU]/mL): a volume per volume is a ratio.
    """
    parts = _ratio(code)
    if parts is None:
        return False
    amount, per = _dimension_of(parts[0]), _dimension_of(parts[1])
    if amount is None or amount not in _DOSE_AMOUNTS:
        return False
    if parts[1] is None:
        return True
    if per is None or per not in _DOSE_PER or (amount, per) == (_VOLUME, _VOLUME):
        return False  # mL/L is a ratio, not a concentration
    # mg/m.m is (mg/m).m in UCUM, not mg/m2: the parts must make up the whole.
    whole = tuple(a - b for a, b in zip(amount, per, strict=True))
    return parse_unit(code).dimension == whole


def _is_transfusion_unit(code: str) -> bool:
    """A volume, or a count: dimensionless, no ratio (not mg/kg), whole (not %)."""
    unit = parse_unit(code)
    if unit.dimension == _VOLUME:
        return True
    parts = _ratio(code)
    return (unit.dimension == _DIMENSIONLESS and parts is not None and parts[1] is None
            and unit.factor.denominator == 1)


def _quantity(allowed: Callable[[str], bool], what: str, units: str) -> Any:
    """Validate a non-negative Quantity whose unit ``allowed`` accepts (``units`` says which)."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, Quantity):
            raise EventError(f"must be a quantity with a unit, got {value!r}",
                             field=attribute.name)
        if not allowed(value.unit):
            raise EventError(
                f"unit {value.unit!r} is not {what} unit: allowed are {units}",
                field=f"{attribute.name}.unit",
            )
        if value.value < 0:
            raise EventError(f"cannot be negative ({value})", field=attribute.name)

    return check


@attrs.frozen(kw_only=True)
class Event:
    """The envelope every event carries. Not recorded on its own: use a subclass."""

    #: Unique id of this event; corrections and retractions name it.
    event_id: UUID = attrs.field(factory=uuid4)
    #: The study (protocol) identifier, e.g. ``NCT03918265``.
    study: str = attrs.field(validator=_text)
    #: The subject's identifier within the study.
    subject: str = attrs.field(validator=_text)
    #: Clinical time: when it happened, aware, in the site's zone. For a date-only event
    #: (``time_precision='day'``), 00:00 of that date in the site's zone.
    occurred_at: pendulum.DateTime = attrs.field(converter=_to_pendulum, validator=_instant)
    #: Record time: when the system learned it. Never before ``occurred_at`` by more than
    #: 5 minutes of clock skew; a date-only event may be recorded from 00:00 of its date on.
    recorded_at: pendulum.DateTime = attrs.field(converter=_to_pendulum, validator=_instant)
    #: The attributable actor who recorded it (a user or a system account).
    recorded_by: str = attrs.field(validator=_text)
    #: Where it came from (``edc``, ``lab:central``, ``pharmacy``, ``api``).
    source: str = attrs.field(default="api", validator=_text)
    #: Version of this event type's payload schema.
    schema_version: int = attrs.field(default=1, validator=_int_range(1))
    #: How much of ``occurred_at`` is known.
    time_precision: TimePrecision = attrs.field(
        default=TimePrecision.INSTANT, converter=_to_precision
    )

    #: The name under which the event is stored and exchanged (its topic).
    event_type: ClassVar[str] = "Event"
    #: For measured results: (code field, measurement field), checked against the catalogue.
    measured: ClassVar[tuple[str, str] | None] = None

    def __attrs_post_init__(self) -> None:
        if type(self) is Event:
            raise EventError("Event is the envelope only; record one of its subclasses")
        if self.time_precision is TimePrecision.DAY and self.occurred_at.time() != dt.time(0):
            raise EventError(
                "a date-only event must have occurred_at at 00:00 of that date in the site's zone",
                field="occurred_at",
            )
        # For a date-only event occurred_at is the start of its date: it happened at some
        # time that day, so a record made later that day is not early. Compared in UTC: two
        # instants sharing a zone compare by wall time, which ignores fold at a DST change.
        if to_utc(self.recorded_at) < to_utc(self.occurred_at) - CLOCK_SKEW:
            raise EventError(
                f"recorded {format_instant(self.recorded_at)} before it occurred "
                f"({format_instant(self.occurred_at)}); only {_minutes(CLOCK_SKEW)} of clock "
                "skew between systems is tolerated",
                field="recorded_at",
            )

    @property
    def occurred_on(self) -> dt.date:
        """The date of ``occurred_at`` in the zone it carries (its written local date).

        That is the site's date only when the event was stamped in the site's zone: a central
        lab stamping in UTC writes 23:40 on the day before the site's date. Rules do not use
        this date: they compute study days and dates in the site's zone (D1, D8), which is
        :attr:`SubjectRegistered.time_zone` of the subject, else the protocol's zone.
        """
        return self.occurred_at.date()


def _minutes(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _event_type(cls: type[Event]) -> type[Event]:
    cls.event_type = cls.__name__
    return cls


# --- identity, consent, screening -----------------------------------------------------------

@_event_type
@attrs.frozen(kw_only=True)
class SubjectRegistered(Event):
    """A subject was registered at a site (screening number assigned)."""

    site: str = attrs.field(validator=_text)
    screening_number: str | None = attrs.field(default=None, validator=_optional_text)
    #: The IANA time zone of the site (``Asia/Shanghai``). Study days and the dates of every
    #: event of the subject are computed in this zone, whatever zone an event was stamped in
    #: (D1, D8); when it is not given, the protocol's zone is used.
    time_zone: str | None = attrs.field(default=None, validator=_optional_time_zone)


@_event_type
@attrs.frozen(kw_only=True)
class ConsentSigned(Event):
    """Written informed consent was signed (``time_precision='day'`` when only dated)."""

    form_version: str = attrs.field(validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class ConsentWithdrawn(Event):
    """The subject withdrew consent."""

    reason: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class DemographicsRecorded(Event):
    """Date of birth and sex were recorded."""

    date_of_birth: dt.date = attrs.field()
    sex: Sex = attrs.field(converter=_to_sex)

    @date_of_birth.validator
    def _check_dob(self, attribute: attrs.Attribute[dt.date], value: object) -> None:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise EventError(f"must be a date, got {value!r}", field="date_of_birth")
        if value > self.occurred_at.date():
            raise EventError(
                f"date of birth {value} is after the assessment ({self.occurred_at.date()})",
                field="date_of_birth",
            )


@_event_type
@attrs.frozen(kw_only=True)
class ChildbearingPotentialAssessed(Event):
    """Whether the subject is of childbearing potential was assessed."""

    childbearing_potential: bool = attrs.field(validator=_bool)


@_event_type
@attrs.frozen(kw_only=True)
class DiagnosisRecorded(Event):
    """The condition under study was diagnosed (``AIHA``, ``PRCA``, ``EVANS``, ``ITP``...)."""

    condition: str = attrs.field(validator=_text)
    code_system: str | None = attrs.field(default=None, validator=_optional_text)
    code: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class PriorTherapyRecorded(Event):
    """A prior line of therapy, with the response it gave and whether it was tolerated."""

    line: int = attrs.field(validator=_int_range(1, 20))
    therapy: str = attrs.field(validator=_text)
    response: PriorResponse = attrs.field(converter=_to_response)
    tolerance: Tolerance = attrs.field(converter=_to_tolerance)


@_event_type
@attrs.frozen(kw_only=True)
class EcogAssessed(Event):
    """ECOG performance status (an integer 0-5, Oken 1982)."""

    score: int = attrs.field(validator=_int_range(0, 5))


@_event_type
@attrs.frozen(kw_only=True)
class OtherHaematologicalDiseaseAssessed(Event):
    """Whether another disease that may cause haematological abnormalities is documented."""

    present: bool = attrs.field(validator=_bool)
    condition: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class PregnancyTestResulted(Event):
    """A pregnancy (hCG) test result; ``occurred_at`` is the specimen time."""

    result: TestResult = attrs.field(converter=_to_test_result)
    specimen: str = attrs.field(default="urine", validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class LactationAssessed(Event):
    """Whether the subject is breast-feeding."""

    lactating: bool = attrs.field(validator=_bool)


@_event_type
@attrs.frozen(kw_only=True)
class SubjectEnrolled(Event):
    """The subject was enrolled (assigned to treatment)."""

    arm: str | None = attrs.field(default=None, validator=_optional_text)


# --- treatment ------------------------------------------------------------------------------

_DOSE = _quantity(_is_dose_unit, "a dose", _DOSE_UNITS)


@_event_type
@attrs.frozen(kw_only=True)
class RegimenPrescribed(Event):
    """A regimen was prescribed: drug, dose per administration, frequency (``BID``, ``QD``...)."""

    drug: str = attrs.field(validator=_text)
    #: A mass (``mg``), international units (``[iU]``) or a volume (``mL``), or one of those
    #: per body surface area (``mg/m2``), per body mass (``mg/kg``) or per volume (``mg/mL``).
    dose: Quantity = attrs.field(validator=_DOSE)
    frequency: str = attrs.field(validator=_text)
    route: str = attrs.field(default="oral", validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class DoseChanged(Event):
    """The prescribed dose or frequency was changed (titration)."""

    drug: str = attrs.field(validator=_text)
    #: A mass (``mg``), international units (``[iU]``) or a volume (``mL``), or one of those
    #: per body surface area (``mg/m2``), per body mass (``mg/kg``) or per volume (``mg/mL``).
    dose: Quantity = attrs.field(validator=_DOSE)
    frequency: str = attrs.field(validator=_text)
    reason: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class DoseAdministered(Event):
    """A dose was taken or given; ``occurred_at`` is the administration time."""

    drug: str = attrs.field(validator=_text)
    #: A mass (``mg``), international units (``[iU]``) or a volume (``mL``), or one of those
    #: per body surface area (``mg/m2``), per body mass (``mg/kg``) or per volume (``mg/mL``).
    dose: Quantity = attrs.field(validator=_DOSE)
    route: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class DoseMissed(Event):
    """A scheduled dose was not taken; ``occurred_at`` is the time it was due."""

    drug: str = attrs.field(validator=_text)
    reason: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class SampleDrawn(Event):
    """A sample was drawn (a study procedure); ``purpose`` says what for (``trough``...)."""

    sample_id: str = attrs.field(validator=_text)
    purpose: str = attrs.field(validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class DrugLevelResulted(Event):
    """A drug concentration result; ``occurred_at`` is the draw time."""

    drug: str = attrs.field(validator=_text)
    loinc: str = attrs.field(validator=_text)
    result: Measurement = attrs.field()
    sample_id: str | None = attrs.field(default=None, validator=_optional_text)
    #: Whether the sample was labelled as a trough (pre-dose) sample. Required: a level sent
    #: without saying so must not silently become a trough candidate.
    labelled_trough: bool = attrs.field(validator=_bool)

    measured: ClassVar[tuple[str, str] | None] = ("loinc", "result")


@_event_type
@attrs.frozen(kw_only=True)
class LabResulted(Event):
    """A laboratory result coded by LOINC; ``occurred_at`` is the specimen time."""

    loinc: str = attrs.field(validator=_text)
    result: Measurement = attrs.field()
    test: str | None = attrs.field(default=None, validator=_optional_text)
    specimen_id: str | None = attrs.field(default=None, validator=_optional_text)
    laboratory: str | None = attrs.field(default=None, validator=_optional_text)

    measured: ClassVar[tuple[str, str] | None] = ("loinc", "result")


@_event_type
@attrs.frozen(kw_only=True)
class TransfusionGiven(Event):
    """A transfusion was given (``product``: ``RBC``, ``platelets``, ``plasma``...)."""

    product: str = attrs.field(validator=_text)
    #: A volume (``mL``) or a count (``1``, ``{unit}``, ``{bag}``).
    amount: Quantity | None = attrs.field(
        default=None,
        validator=_quantity(_is_transfusion_unit, "a transfusion amount", _AMOUNT_UNITS),
    )


@_event_type
@attrs.frozen(kw_only=True)
class ConcomitantMedicationStarted(Event):
    """A concomitant medication was started."""

    medication: str = attrs.field(validator=_text)
    code: str | None = attrs.field(default=None, validator=_optional_text)
    #: A mass (``mg``), international units (``[iU]``) or a volume (``mL``), or one of those
    #: per body surface area (``mg/m2``), per body mass (``mg/kg``) or per volume (``mg/mL``).
    dose: Quantity | None = attrs.field(default=None, validator=_DOSE)
    indication: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class ConcomitantMedicationStopped(Event):
    """A concomitant medication was stopped."""

    medication: str = attrs.field(validator=_text)
    code: str | None = attrs.field(default=None, validator=_optional_text)


@_event_type
@attrs.frozen(kw_only=True)
class BodyMeasured(Event):
    """A body measurement (height 8302-2, weight 29463-7) coded by LOINC."""

    loinc: str = attrs.field(validator=_text)
    result: Measurement = attrs.field()

    measured: ClassVar[tuple[str, str] | None] = ("loinc", "result")


@_event_type
@attrs.frozen(kw_only=True)
class AdverseEventReported(Event):
    """An adverse event; ``occurred_at`` is its onset."""

    term: str = attrs.field(validator=_text)
    grade: int | None = attrs.field(default=None)
    serious: bool = attrs.field(default=False, validator=_bool)
    #: A grouping the protocol may name (``bleeding``, ``pregnancy``...).
    category: str | None = attrs.field(default=None, validator=_optional_text)

    @grade.validator
    def _check_grade(self, attribute: attrs.Attribute[int | None], value: object) -> None:
        if value is not None:
            _int_range(1, 5)(self, attribute, value)


@_event_type
@attrs.frozen(kw_only=True)
class VisitOccurred(Event):
    """A visit took place (scheduled or unscheduled)."""

    visit: str = attrs.field(validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class SubjectWithdrawn(Event):
    """The subject left the study."""

    reason: str = attrs.field(validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class TreatmentDiscontinued(Event):
    """Study treatment was stopped for good; the subject may stay in follow-up."""

    reason: str = attrs.field(validator=_text)


@_event_type
@attrs.frozen(kw_only=True)
class ObservationRecorded(Event):
    """A coded fact with no class of its own: a value with a unit, or a category.

    ``code_system`` is a URI or a short name (``http://loinc.org``, ``LOINC``, ``SNOMED``,
    ``protocol``); exactly one of ``result`` and ``category`` is given.
    """

    code_system: str = attrs.field(validator=_text)
    code: str = attrs.field(validator=_text)
    display: str | None = attrs.field(default=None, validator=_optional_text)
    result: Measurement | None = attrs.field(default=None)
    category: str | None = attrs.field(default=None, validator=_optional_text)

    measured: ClassVar[tuple[str, str] | None] = ("code", "result")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (self.result is None) == (self.category is None):
            raise EventError("give exactly one of 'result' and 'category'", field="result")


# --- corrections ----------------------------------------------------------------------------

@_event_type
@attrs.frozen(kw_only=True)
class EntryCorrected(Event):
    """An earlier event's values were corrected. It names the event, the new values and why.

    ``changes`` maps field names of the corrected event to their new values in the JSON
    interchange form. The envelope's identity fields cannot be corrected.
    """

    corrects: UUID = attrs.field()
    changes: dict[str, Any] = attrs.field(eq=attrs.cmp_using(eq=dict.__eq__), hash=False)
    reason: str = attrs.field(validator=_text)

    @changes.validator
    def _check_changes(self, attribute: attrs.Attribute[dict[str, Any]], value: object) -> None:
        if not isinstance(value, dict) or not value:
            raise EventError("must name at least one field and its new value", field="changes")
        for name in value:
            if name in IMMUTABLE_FIELDS or name == "type":
                raise EventError(f"the envelope field {name!r} cannot be corrected",
                                 field=f"changes.{name}")


@_event_type
@attrs.frozen(kw_only=True)
class EntryRetracted(Event):
    """An earlier event was entered in error; it stays in the log but no longer counts."""

    retracts: UUID = attrs.field()
    reason: str = attrs.field(validator=_text)


#: Every event type by its stored name (topic).
EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        SubjectRegistered, ConsentSigned, ConsentWithdrawn, DemographicsRecorded,
        ChildbearingPotentialAssessed, DiagnosisRecorded, PriorTherapyRecorded, EcogAssessed,
        OtherHaematologicalDiseaseAssessed, PregnancyTestResulted, LactationAssessed,
        SubjectEnrolled, RegimenPrescribed, DoseChanged, DoseAdministered, DoseMissed,
        SampleDrawn, DrugLevelResulted, LabResulted, TransfusionGiven,
        ConcomitantMedicationStarted, ConcomitantMedicationStopped, BodyMeasured,
        AdverseEventReported, VisitOccurred, SubjectWithdrawn, TreatmentDiscontinued,
        ObservationRecorded, EntryCorrected, EntryRetracted,
    )
}
