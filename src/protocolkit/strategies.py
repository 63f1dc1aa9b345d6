"""Hypothesis strategies: events of every type, and subject histories derived from a protocol.

Import it on demand (``import protocolkit`` does not load Hypothesis)::

    from protocolkit import strategies as pks

- :func:`events` draws single valid events of any type (``st.from_type(DoseAdministered)``
  works too, through Hypothesis' entry point: :func:`_hypothesis_setup_hook`).
- :func:`histories`, :func:`eligible_histories`, :func:`violating`, :func:`triggering` and
  :func:`edge_histories` draw whole subject histories (:class:`History`) built from a loaded
  protocol: which event types each rule reads, the values its conditions compare with, its
  parameters, its windows and durations. Nothing in this module names a trial.
- :func:`reexpressed`, :func:`retractions` and :func:`unrelated_events` turn one history into
  another that the protocol must judge the same way (or, for unrelated events, must not judge
  more favourably).

How a history is derived (docs/testing-protocols.md says it at length, with its limits): the
protocol text is parsed with the language's own grammar and read for the sets of events each
rule uses (their type and the key fields their ``where`` pins: a LOINC code, a drug, a line),
the literals and parameters each field is compared with, ages (``years_between``), elapsed-time
rules (``elapsed``), screening windows and endpoint windows. From that a *template* is laid out
on study days: registration and consent first, the screening facts, enrolment, Day 1, timed
samples, the values of each endpoint window. The engine is then used as an oracle, once per
protocol, to search the template's values for an eligible, deviation-free *witness* and, on
demand, for the changes that violate one criterion or trigger one deviation. Drawing a history
only combines these changes with a drawn context (Day 1's date, the site's zone, the subject,
clock and recording delays): it never calls the engine, so what the engine then says about the
drawn history is a real test of the protocol and the engine. Every choice is a Hypothesis draw
that shrinks to the witness, the protocol's zone and the first change found.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import functools
import itertools
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from typing import Any, TypeVar, overload

import attrs
import pendulum
from lark import Lark, Token, Tree

from protocolkit.corrections import apply_correction
from protocolkit.engine import Evaluation, evaluate
from protocolkit.errors import EventError, ProtocolKitError, RuleError
from protocolkit.events import (
    ENVELOPE_FIELDS,
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
from protocolkit.rules import Protocol
from protocolkit.serde import event_to_json
from protocolkit.units import (
    Measurement,
    MeasurementStatus,
    Quantity,
    default_catalogue,
    measure,
    parse_unit,
)

#: Whether this module has finished loading (see :func:`_hypothesis_setup_hook`).
_READY = False


def _hypothesis_setup_hook() -> None:
    """Register :func:`events` for every event class (Hypothesis' entry point calls this).

    Afterwards ``st.from_type(DoseAdministered)`` (and ``st.builds`` of anything that takes an
    event) draws valid events, as :func:`events` does. Defined before Hypothesis is imported:
    importing this module first imports Hypothesis, which runs its entry points and so calls
    this hook while the module is half loaded; the module then registers when it is done.
    """
    if _READY:
        _register_event_types()


# Imported after the hook: importing Hypothesis runs its entry points, which load this module.
from hypothesis import strategies as st  # noqa: E402
from hypothesis.strategies import SearchStrategy  # noqa: E402

__all__ = [
    "EDGE_KINDS",
    "ZONES",
    "History",
    "StrategyError",
    "edge_histories",
    "eligible_histories",
    "events",
    "histories",
    "reexpressed",
    "retractions",
    "triggering",
    "unrelated_events",
    "violating",
]

E = TypeVar("E", bound=Event)


class StrategyError(ProtocolKitError, ValueError):
    """A strategy cannot be built for this protocol (no history found that does what was asked).

    The message says what was searched for and which rules could not be brought to the wanted
    verdict; docs/testing-protocols.md lists what the derivation can and cannot see.
    """


# =============================================================================================
# Single events of every type
# =============================================================================================

#: Real IANA zones: the study's, DST in both hemispheres, half- and quarter-hour offsets and a
#: 30-minute DST shift (Lord Howe).
ZONES = (
    "Asia/Shanghai", "UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata",
    "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "Pacific/Chatham",
    "America/Sao_Paulo",
)
_EARLIEST = dt.datetime(1990, 1, 1)
_LATEST = dt.datetime(2060, 1, 1)
_NAMES = st.text(
    st.characters(codec="ascii", categories=("Lu", "Ll", "Nd")), min_size=1, max_size=8
)
_OPTIONAL_NAMES = st.none() | _NAMES
_UCUM_UNITS = ("mg/dL", "mmol/L", "%", "U/L", "10*9/L", "fL", "s")
_DOSE_UNITS = ("mg", "ug", "g", "mg/kg", "mg/m2", "[iU]", "mL", "mg/mL")
_AMOUNT_UNITS = ("mL", "L", "{bag}", "1", "{unit}")
_DRUG_LEVEL_CODES = ("11253-2", "77348-1", "74097-7", "74096-9")
_BODY_CODES = ("8302-2", "29463-7")


def _zone_strategy(zone: str | None) -> SearchStrategy[str]:
    return st.just(zone) if zone is not None else st.sampled_from(ZONES)


def _text_strategy(value: str | None, default: str) -> SearchStrategy[str]:
    return st.just(value) if value is not None else st.just(default) | _NAMES


@st.composite
def _envelope(
    draw: st.DrawFn, study: str | None, subject: str | None, zone: str | None, *,
    start: dt.datetime | None = None, end: dt.datetime | None = None,
) -> dict[str, Any]:
    """The envelope's keyword arguments: an instant shown in ``zone``, recorded at or after it."""
    shown = draw(_zone_strategy(zone))
    low = (start.astimezone(dt.UTC).replace(tzinfo=None) if start is not None else _EARLIEST)
    high = (end.astimezone(dt.UTC).replace(tzinfo=None) if end is not None else _LATEST)
    precision = TimePrecision.INSTANT
    utc = draw(st.datetimes(min_value=low, max_value=high))
    occurred = pendulum.instance(utc.replace(tzinfo=dt.UTC)).in_timezone(shown)
    if start is None and draw(st.booleans()):
        midnight = pendulum.datetime(occurred.year, occurred.month, occurred.day, tz=shown)
        if midnight.time() == dt.time(0):  # not where DST began at midnight
            occurred, precision = midnight, TimePrecision.DAY
    if end is not None:
        room = max(dt.timedelta(0), end - occurred)
        delay = draw(st.timedeltas(dt.timedelta(0), min(room, dt.timedelta(days=2))))
    else:
        delay = draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=30)))
    recorded = (occurred + delay).in_timezone(draw(_zone_strategy(zone)))
    return {
        "event_id": draw(st.uuids()),
        "study": draw(_text_strategy(study, "STUDY-1")),
        "subject": draw(_text_strategy(subject, "S-001")),
        "occurred_at": occurred,
        "recorded_at": recorded,
        "recorded_by": draw(st.sampled_from(["investigator", "lab", "pharmacy"])),
        "source": draw(st.sampled_from(["edc", "lab:central", "pharmacy", "api"])),
        "time_precision": precision,
    }


def _measured_value(code: str) -> SearchStrategy[Any]:
    analyte = default_catalogue().analytes.get(code)
    if analyte is None:
        return st.builds(measure, st.just(code), _decimals(0, 1000), st.sampled_from(_UCUM_UNITS))
    low = analyte.minimum if analyte.minimum is not None else Decimal(0)
    high = analyte.maximum if analyte.maximum is not None else Decimal(10_000)
    units = st.sampled_from(analyte.accepted_units)
    # Mostly plausible values in the canonical unit; sometimes any unit (often implausible).
    plausible = st.builds(measure, st.just(code), _decimals(low, high),
                          st.just(analyte.canonical_unit))
    anything = st.builds(measure, st.just(code), _decimals(0, 10_000), units)
    return plausible | anything


def _decimals(low: Decimal | int, high: Decimal | int) -> SearchStrategy[Decimal]:
    return st.one_of(*(st.decimals(min_value=low, max_value=high, places=p) for p in range(3)))


def _quantities(units: tuple[str, ...]) -> SearchStrategy[Any]:
    return st.builds(Quantity, _decimals(0, 1000), st.sampled_from(units))


def _coded(codes: tuple[str, ...], **fields: SearchStrategy[Any]) -> SearchStrategy[dict[str, Any]]:
    @st.composite
    def payload(draw: st.DrawFn) -> dict[str, Any]:
        code = draw(st.sampled_from(codes))
        drawn = {name: draw(strategy) for name, strategy in fields.items()}
        return {**drawn, "loinc": code, "result": draw(_measured_value(code))}

    return payload()


@st.composite
def _observation(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "code_system": draw(st.sampled_from(["http://loinc.org", "LOINC", "SNOMED", "protocol"])),
        "display": draw(_OPTIONAL_NAMES),
    }
    if draw(st.booleans()):
        code = draw(st.sampled_from(("718-7", "8310-5", "2951-2")))
        return {**fields, "code": code, "result": draw(_measured_value(code)), "category": None}
    return {**fields, "code": draw(_NAMES), "result": None, "category": draw(_NAMES)}


def _correctable() -> list[str]:
    return sorted({a.name for cls in EVENT_TYPES.values() for a in attrs.fields(cls)}
                  - IMMUTABLE_FIELDS)


_PAYLOADS: dict[type[Event], Callable[[], SearchStrategy[dict[str, Any]]]] = {
    SubjectRegistered: lambda: st.fixed_dictionaries({
        "site": _NAMES, "screening_number": _OPTIONAL_NAMES,
        "time_zone": st.none() | st.sampled_from(ZONES)}),
    ConsentSigned: lambda: st.fixed_dictionaries({"form_version": _NAMES}),
    ConsentWithdrawn: lambda: st.fixed_dictionaries({"reason": _OPTIONAL_NAMES}),
    DemographicsRecorded: lambda: st.fixed_dictionaries({
        "date_of_birth": st.dates(dt.date(1900, 1, 1), dt.date(1989, 12, 31)),
        "sex": st.sampled_from(Sex)}),
    ChildbearingPotentialAssessed: lambda: st.fixed_dictionaries(
        {"childbearing_potential": st.booleans()}),
    DiagnosisRecorded: lambda: st.fixed_dictionaries({
        "condition": st.sampled_from(["AIHA", "PRCA", "EVANS", "ITP"]) | _NAMES,
        "code_system": _OPTIONAL_NAMES, "code": _OPTIONAL_NAMES}),
    PriorTherapyRecorded: lambda: st.fixed_dictionaries({
        "line": st.integers(1, 20), "therapy": _NAMES, "response": st.sampled_from(PriorResponse),
        "tolerance": st.sampled_from(Tolerance)}),
    EcogAssessed: lambda: st.fixed_dictionaries({"score": st.integers(0, 5)}),
    OtherHaematologicalDiseaseAssessed: lambda: st.fixed_dictionaries(
        {"present": st.booleans(), "condition": _OPTIONAL_NAMES}),
    PregnancyTestResulted: lambda: st.fixed_dictionaries(
        {"result": st.sampled_from(TestResult), "specimen": st.sampled_from(["urine", "serum"])}),
    LactationAssessed: lambda: st.fixed_dictionaries({"lactating": st.booleans()}),
    SubjectEnrolled: lambda: st.fixed_dictionaries({"arm": _OPTIONAL_NAMES}),
    RegimenPrescribed: lambda: st.fixed_dictionaries({
        "drug": _NAMES, "dose": _quantities(_DOSE_UNITS),
        "frequency": st.sampled_from(["QD", "BID", "TID"]), "route": _NAMES}),
    DoseChanged: lambda: st.fixed_dictionaries({
        "drug": _NAMES, "dose": _quantities(_DOSE_UNITS), "frequency": _NAMES,
        "reason": _OPTIONAL_NAMES}),
    DoseAdministered: lambda: st.fixed_dictionaries({
        "drug": _NAMES, "dose": _quantities(_DOSE_UNITS), "route": _OPTIONAL_NAMES}),
    DoseMissed: lambda: st.fixed_dictionaries({"drug": _NAMES, "reason": _OPTIONAL_NAMES}),
    SampleDrawn: lambda: st.fixed_dictionaries({"sample_id": _NAMES, "purpose": _NAMES}),
    DrugLevelResulted: lambda: _coded(
        _DRUG_LEVEL_CODES, drug=st.just("tacrolimus") | _NAMES, sample_id=_OPTIONAL_NAMES,
        labelled_trough=st.booleans()),
    LabResulted: lambda: _coded(
        ("718-7", "777-3", "4679-7", "2160-0", "751-8", "2951-2"), test=_OPTIONAL_NAMES,
        specimen_id=_OPTIONAL_NAMES, laboratory=_OPTIONAL_NAMES),
    TransfusionGiven: lambda: st.fixed_dictionaries({
        "product": st.sampled_from(["RBC", "platelets", "plasma"]) | _NAMES,
        "amount": st.none() | _quantities(_AMOUNT_UNITS)}),
    ConcomitantMedicationStarted: lambda: st.fixed_dictionaries({
        "medication": _NAMES, "code": _OPTIONAL_NAMES,
        "dose": st.none() | _quantities(_DOSE_UNITS), "indication": _OPTIONAL_NAMES}),
    ConcomitantMedicationStopped: lambda: st.fixed_dictionaries(
        {"medication": _NAMES, "code": _OPTIONAL_NAMES}),
    BodyMeasured: lambda: _coded(_BODY_CODES),
    AdverseEventReported: lambda: st.fixed_dictionaries({
        "term": _NAMES, "grade": st.none() | st.integers(1, 5), "serious": st.booleans(),
        "category": st.none() | st.just("bleeding") | _NAMES}),
    VisitOccurred: lambda: st.fixed_dictionaries({"visit": _NAMES}),
    SubjectWithdrawn: lambda: st.fixed_dictionaries({"reason": _NAMES}),
    TreatmentDiscontinued: lambda: st.fixed_dictionaries({"reason": _NAMES}),
    ObservationRecorded: _observation,
    EntryCorrected: lambda: st.fixed_dictionaries({
        "corrects": st.uuids(),
        "changes": st.dictionaries(st.sampled_from(_correctable()),
                                   st.none() | st.booleans() | st.integers(-5, 5) | _NAMES,
                                   min_size=1, max_size=2),
        "reason": _NAMES}),
    EntryRetracted: lambda: st.fixed_dictionaries({"retracts": st.uuids(), "reason": _NAMES}),
}


@st.composite
def _events_of(
    draw: st.DrawFn, cls: type[E], study: str | None, subject: str | None, zone: str | None, *,
    start: dt.datetime | None = None, end: dt.datetime | None = None,
) -> E:
    envelope = draw(_envelope(study, subject, zone, start=start, end=end))
    payload = draw(_PAYLOADS[cls]())
    if cls is DemographicsRecorded:
        latest = envelope["occurred_at"].date()
        payload["date_of_birth"] = min(payload["date_of_birth"],
                                       dt.date(latest.year, latest.month, latest.day))
    return cls(**envelope, **payload)


@overload
def events(
    event_type: type[E], *, study: str | None = ..., subject: str | None = ...,
    zone: str | None = ...,
) -> SearchStrategy[E]: ...
@overload
def events(
    event_type: str | None = ..., *, study: str | None = ..., subject: str | None = ...,
    zone: str | None = ...,
) -> SearchStrategy[Event]: ...
def events(
    event_type: str | type[Event] | None = None, *, study: str | None = None,
    subject: str | None = None, zone: str | None = None,
) -> SearchStrategy[Any]:
    """Valid events of ``event_type`` (a class or its name), or of every type when ``None``.

    Args:
        event_type: the class (``DoseAdministered``) or its stored name; ``None``: any type.
        study: the study id every event carries (default: drawn).
        subject: the subject id every event carries (default: drawn).
        zone: the IANA zone the instants are shown in, the site's (default: drawn from
            :data:`ZONES`, DST and half-hour zones included).

    Events are recorded at or after they occur (never early), a date-only one at local 00:00.
    Measured results are mostly plausible, in their canonical unit, and sometimes in another
    accepted unit where the value is often implausible (a data query, D6).

    >>> from hypothesis import find
    >>> find(events("EcogAssessed", study="NCT03918265", zone="Asia/Shanghai"),
    ...      lambda e: e.score > 2).score
    3
    """
    if event_type is None:
        return st.one_of([_events_of(cls, study, subject, zone) for cls in EVENT_TYPES.values()])
    if isinstance(event_type, str):
        if event_type not in EVENT_TYPES:
            raise EventError(f"unknown event type {event_type!r}", field="event_type")
        cls = EVENT_TYPES[event_type]
    else:
        cls = event_type
    if cls is Event:
        return events(None, study=study, subject=subject, zone=zone)
    return _events_of(cls, study, subject, zone)


def _register_event_types() -> None:
    st.register_type_strategy(Event, events())
    for cls in EVENT_TYPES.values():
        st.register_type_strategy(cls, events(cls))


# =============================================================================================
# Reading the protocol
# =============================================================================================

Node = Any  # a lark Tree or Token

#: Fields that say *which* fact an event is (a LOINC code, a drug, a therapy line), as opposed
#: to its value. A ``where (field = literal)`` on one of these names a distinct fact: the
#: template holds one event for each (catalogue knowledge, not trial knowledge).
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "LabResulted": ("loinc",),
    "DrugLevelResulted": ("drug", "loinc", "labelled_trough"),
    "BodyMeasured": ("loinc",),
    "ObservationRecorded": ("code_system", "code"),
    "DoseAdministered": ("drug",),
    "DoseMissed": ("drug",),
    "DoseChanged": ("drug",),
    "RegimenPrescribed": ("drug",),
    "TransfusionGiven": ("product",),
    "PriorTherapyRecorded": ("line",),
    "ConcomitantMedicationStarted": ("medication", "code"),
    "ConcomitantMedicationStopped": ("medication", "code"),
    "AdverseEventReported": ("category",),
    "SampleDrawn": ("purpose",),
    "VisitOccurred": ("visit",),
}
#: Integer fields and their valid range (the catalogue's validators).
_INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("EcogAssessed", "score"): (0, 5),
    ("PriorTherapyRecorded", "line"): (1, 20),
    ("AdverseEventReported", "grade"): (1, 5),
}
_ENUMS: dict[tuple[str, str], type[enum.Enum]] = {
    ("DemographicsRecorded", "sex"): Sex,
    ("PriorTherapyRecorded", "response"): PriorResponse,
    ("PriorTherapyRecorded", "tolerance"): Tolerance,
    ("PregnancyTestResulted", "result"): TestResult,
}
_BOOLS = {
    ("ChildbearingPotentialAssessed", "childbearing_potential"),
    ("OtherHaematologicalDiseaseAssessed", "present"), ("LactationAssessed", "lactating"),
    ("DrugLevelResulted", "labelled_trough"), ("AdverseEventReported", "serious"),
}
_QUANTITY_FIELDS = {"dose", "amount"}
#: Event types that lay out the timeline rather than state a screening fact.
_TIMELINE = {"SubjectRegistered", "ConsentSigned", "SubjectEnrolled"}
_CORRECTIONS = {"EntryCorrected", "EntryRetracted"}


def _payload_fields(type_name: str) -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(EVENT_TYPES[type_name])
                 if a.name not in ENVELOPE_FIELDS)


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("protocolkit.rules").joinpath("grammar.lark").read_text("utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


@attrs.frozen
class _Ref:
    """One event type of a set, with the key fields its filters pin (``loinc = "718-7"``)."""

    type: str
    sig: tuple[tuple[str, Any], ...] = ()

    def label(self) -> str:
        if not self.sig:
            return self.type
        inner = ",".join(f"{k}={v}" if v is not True else k for k, v in self.sig)
        return f"{self.type}[{inner}]"

    def covers(self, other: _Ref) -> bool:
        """Whether every event of ``other`` is an event of this set (its pins are a subset)."""
        return self.type == other.type and set(self.sig) <= set(other.sig)


@attrs.frozen
class _Q:
    """A constant quantity of the protocol (a literal or a parameter)."""

    value: Fraction
    unit: str

    def to(self, unit: str) -> Fraction | None:
        source, target = parse_unit(self.unit), parse_unit(unit)
        if source.dimension != target.dimension:
            return None
        return self.value * source.factor / target.factor

    @property
    def seconds(self) -> Fraction | None:
        return self.to("s")


@attrs.frozen
class _Scope:
    it: tuple[_Ref, ...] = ()
    fields: Mapping[str, tuple[tuple[_Ref, str], ...]] = attrs.field(factory=dict)


@attrs.frozen
class _Elapsed:
    """``elapsed(first, then)`` compared with durations: where a timed sample must fall."""

    first: tuple[_Ref, ...]
    then: tuple[_Ref, ...]
    low: Fraction | None  # seconds, inclusive
    high: Fraction | None


class _Analysis:
    """What a protocol's text says about the events it reads (see the module docstring)."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        tree = _parser().parse(protocol.text)
        self.lets: dict[str, Node] = {}
        self.defines: dict[str, Node] = {}
        self.rules: dict[str, Node] = {}
        self.owner_nodes: dict[str, Node] = {}
        for stmt in tree.children[1:]:
            if not isinstance(stmt, Tree):
                continue
            if stmt.data in ("anchor", "let"):
                self.lets[str(stmt.children[0])] = stmt.children[1]
                self.owner_nodes[f"let:{stmt.children[0]}"] = stmt.children[1]
            elif stmt.data == "define":
                self.defines[str(stmt.children[0])] = stmt.children[1]
                self.owner_nodes[f"define:{stmt.children[0]}"] = stmt.children[1]
            elif stmt.data == "criterion":
                self.rules[str(stmt.children[1])] = stmt
                self.owner_nodes[f"rule:{stmt.children[1]}"] = stmt
            elif stmt.data in ("deviation", "endpoint"):
                self.rules[str(stmt.children[0])] = stmt
                self.owner_nodes[f"rule:{stmt.children[0]}"] = stmt
            elif stmt.data == "report":
                self.owner_nodes[f"report:{stmt.children[0]}"] = stmt.children[2]
        self.criteria = [c.id for c in protocol.criteria]
        self.day1 = protocol.study_day_anchor
        # Findings, filled by walking every statement.
        self.refs: dict[str, set[_Ref]] = {}          # owner -> sets it reads
        self.literals: dict[tuple[str, str], list[tuple[Any, str]]] = {}  # (type, field)
        self.thresholds: dict[tuple[_Ref, str], list[_Q]] = {}
        self.ages: list[tuple[tuple[_Ref, ...], tuple[_Ref, ...], list[int]]] = []
        self.elapsed: list[_Elapsed] = []
        #: (sets, first study day, last study day or None) of ``within`` bounds on Day 1.
        self.windows: list[tuple[tuple[_Ref, ...], int, int | None]] = []
        self.record_time: set[str] = set()
        self._define_refs: dict[str, tuple[_Ref, ...]] = {}
        self._owner = ""
        for owner, node in self.owner_nodes.items():
            self._owner = owner
            self.refs.setdefault(owner, set())
            self._statement(owner, node)
        self._closure: dict[str, frozenset[str]] = {}

    # --- walking ---------------------------------------------------------------------------

    def _statement(self, owner: str, node: Node) -> None:
        if owner.startswith("define:"):
            self._set_refs(node, _Scope())
            return
        if not (isinstance(node, Tree) and node.data in ("deviation", "endpoint")):
            self._walk(node, _Scope())
            return
        if node.data == "deviation":
            scope = _Scope()
            for clause in node.children:
                if isinstance(clause, Tree) and clause.data == "for_each":
                    scope = _Scope(it=self._set_refs(clause.children[0], _Scope()))
            for clause in node.children:
                if isinstance(clause, Tree) and clause.data != "for_each":
                    self._walk(clause, scope)
            return
        values: tuple[_Ref, ...] = ()
        for clause in node.children:
            if isinstance(clause, Tree) and clause.data == "endpoint_values":
                values = self._set_refs(clause.children[0], _Scope())
        result = tuple((ref, "result") for ref in values)
        scope = _Scope(it=values, fields={"value": result, "baseline": result})
        for clause in node.children:
            if isinstance(clause, Tree) and clause.data not in ("endpoint_values",):
                self._walk(clause, scope)

    def _walk(self, node: Node, scope: _Scope) -> None:
        if not isinstance(node, Tree):
            return
        kind = node.data
        if kind == "set_expr":
            self._set_refs(node, scope)
            return
        if kind == "every":
            refs = self._set_refs(node.children[0], scope)
            self._walk(node.children[1], attrs.evolve(scope, it=refs))
            return
        if kind in ("compare", "in_set", "not_in_set", "in_interval", "not_in_interval"):
            self._comparison(node, scope)
        if kind == "field" and str(node.children[1]) == "recorded_at":
            self.record_time.update(r.type for r in self._event_refs(node.children[0], scope))
        for child in node.children:
            self._walk(child, scope)

    def _set_refs(self, node: Node, scope: _Scope) -> tuple[_Ref, ...]:
        """The sets of ``node`` (a set expression), recording what its filters say."""
        if not isinstance(node, Tree):
            return ()
        kind = node.data
        if kind == "of_type":
            return (_Ref(str(node.children[0])),)
        if kind == "of_types":
            return tuple(_Ref(str(t)) for t in node.children)
        if kind == "defined":
            return self._define(str(node.children[0]))
        if kind != "set_expr":
            return ()
        base, *rest = node.children
        refs = self._set_refs(base, scope)
        for item in rest:
            if not isinstance(item, Tree):
                continue
            if item.data == "where":
                inner = attrs.evolve(scope, it=refs)
                refs = self._pin(refs, item.children[0], inner)
                self._walk(item.children[0], attrs.evolve(scope, it=refs))
            elif item.data == "within":
                self._window(refs, item.children[0])
                self._walk(item.children[0], scope)
            elif item.data == "known_before":
                self.record_time.update(r.type for r in refs)
                self._walk(item.children[0], scope)
            elif item.data != "alias":
                self._walk(item, scope)
        self.refs.setdefault(self._owner, set()).update(refs)
        return refs

    def _define(self, name: str) -> tuple[_Ref, ...]:
        if name not in self.defines:  # $occurrence: the deviation's own run
            return ()
        if name not in self._define_refs:
            self._define_refs[name] = ()  # defined above their use: no cycle, but be safe
            owner, self._owner = self._owner, f"define:{name}"
            self._define_refs[name] = self._set_refs(self.defines[name], _Scope())
            self._owner = owner
        return self._define_refs[name]

    def _pin(self, refs: tuple[_Ref, ...], condition: Node, scope: _Scope) -> tuple[_Ref, ...]:
        """Narrow ``refs`` by the key-field equalities of a ``where`` condition."""
        pins: dict[str, Any] = {}
        for conjunct in _conjuncts(condition):
            field = self._own_field(conjunct, scope)
            if field is not None:
                pins[field] = True
                continue
            if isinstance(conjunct, Tree) and conjunct.data == "compare" and \
                    str(conjunct.children[1]) == "=":
                left, _, right = conjunct.children
                for a, b in ((left, right), (right, left)):
                    name = self._own_field(a, scope)
                    values = self._consts(b)
                    if name is not None and values and len(values) == 1:
                        pins[name] = _plain(values[0])
        result = []
        for ref in refs:
            keys = _KEY_FIELDS.get(ref.type, ())
            extra = {k: v for k, v in pins.items() if k in keys}
            sig = dict(ref.sig) | extra
            result.append(_Ref(ref.type, tuple(sorted(sig.items(), key=lambda kv: kv[0]))))
        return tuple(result)

    def _own_field(self, node: Node, scope: _Scope) -> str | None:
        """The field name when ``node`` is a bare field of ``it`` (or ``it.field``)."""
        if not isinstance(node, Tree) or not scope.it:
            return None
        if node.data == "name":
            name = str(node.children[0])
            if name in self.lets or name in self.protocol.parameters:
                return None
        elif node.data == "field" and isinstance(node.children[0], Tree) and \
                node.children[0].data == "it":
            name = str(node.children[1])
        else:
            return None
        if all(name in _payload_fields(r.type) for r in scope.it if r.type in EVENT_TYPES):
            return name
        return None

    def _window(self, refs: tuple[_Ref, ...], interval: Node) -> None:
        day = self._study_day(interval.children[1])
        last = self._study_day(interval.children[2])
        if day is not None:
            if interval.children[0].data == "open":
                day = day + 1 if day != -1 else 1
            if last is not None and interval.children[3].data == "open":
                last = last - 1 if last != 1 else -1
            self.windows.append((refs, day, last))

    def _study_day(self, node: Node) -> int | None:
        """The study day of a bound such as ``date(ref) - 28 d`` or ``day -14 of ref``."""
        if not isinstance(node, Tree):
            return None
        if self._is_day1(node):
            return 1
        if node.data == "sub":
            left, right = node.children
            consts = self._consts(right)
            if self._is_day1(left) and consts and isinstance(consts[0], _Q):
                seconds = consts[0].seconds
                if seconds is not None and seconds % 86400 == 0:
                    offset = -int(seconds // 86400)
                    return offset + 1 if offset >= 0 else offset
        if node.data == "study_day_date":
            number, of = node.children
            if self._is_day1(of):
                text = "".join(str(t) for t in number.children)
                return int(text)
        return None

    def _is_day1(self, node: Node) -> bool:
        if not isinstance(node, Tree):
            return False
        if node.data == "call" and str(node.children[0]) == "date" and len(node.children) == 2:
            return self._is_day1(node.children[1])
        if node.data == "coalesce":
            return self._is_day1(node.children[0])
        if node.data == "name":
            name = str(node.children[0])
            if name == self.day1:
                return True
            if name in self.lets:
                return self._is_day1(self.lets[name])
        return False

    def _comparison(self, node: Node, scope: _Scope) -> None:
        kind = node.data
        pairs: list[tuple[Node, str, list[Any]]] = []
        if kind == "compare":
            left, op, right = node.children
            for a, o, b in ((left, str(op), right), (right, _FLIP[str(op)], left)):
                consts = self._consts(b)
                if consts is not None:
                    pairs.append((a, o, consts))
        elif kind in ("in_set", "not_in_set"):
            subject, literal = node.children
            consts = [c for e in literal.children for c in (self._consts(e) or [])]
            pairs.append((subject, "in", consts))
        else:
            subject, interval = node.children
            low, high = interval.children[1], interval.children[2]
            low_open = interval.children[0].data == "open"
            high_open = interval.children[3].data == "open"
            for bound, op in ((low, ">" if low_open else ">="), (high, "<" if high_open else "<=")):
                consts = self._consts(bound)
                if consts is not None:
                    pairs.append((subject, op, consts))
        for subject, op, consts in pairs:
            self._hint(subject, op, consts, scope)

    def _hint(self, node: Node, op: str, consts: list[Any], scope: _Scope) -> None:
        for ref, name in self._field_refs(node, scope):
            self.literals.setdefault((ref.type, name), []).extend(
                (_plain(c), self._owner) for c in consts)
            quantities = [c for c in consts if isinstance(c, _Q)]
            if quantities:
                self.thresholds.setdefault((ref, name), []).extend(quantities)
        age = self._age(node, scope)
        if age is not None:
            years = [int(c) for c in consts if isinstance(c, Fraction) and c.denominator == 1]
            self.ages.append((age[0], age[1], years))
        span = self._elapsed(node, scope)
        if span is not None:
            for c in consts:
                seconds = c.seconds if isinstance(c, _Q) else None
                if seconds is None:
                    continue
                low = seconds if op in (">=", "=") else seconds + 1 if op == ">" else None
                high = seconds if op in ("<=", "=") else seconds - 1 if op == "<" else None
                self.elapsed.append(_Elapsed(span[0], span[1], low, high))

    # --- resolving expressions -------------------------------------------------------------

    def _consts(self, node: Node) -> list[Any] | None:
        """The constant value(s) of ``node`` (a literal or a parameter), or None."""
        if not isinstance(node, Tree):
            return None
        kind = node.data
        if kind == "number":
            return [Fraction(str(node.children[0]))]
        if kind == "quantity":
            return [_Q(Fraction(str(node.children[0])), str(node.children[1]))]
        if kind == "string":
            return [str(node.children[0])[1:-1]]
        if kind in ("true", "false"):
            return [kind == "true"]
        if kind == "date":
            return [dt.date.fromisoformat(str(node.children[0]))]
        if kind == "neg":
            inner = self._consts(node.children[0])
            if inner and isinstance(inner[0], Fraction):
                return [-inner[0]]
            return None
        if kind == "name":
            name = str(node.children[0])
            if name in self.protocol.parameters:
                return [_param(self.protocol.parameters[name])]
        return None

    def _event_refs(self, node: Node, scope: _Scope, depth: int = 0) -> tuple[_Ref, ...]:
        """The sets an event-valued expression draws from (``last $x``, an anchor, ``it``)."""
        if not isinstance(node, Tree) or depth > 20:
            return ()
        kind = node.data
        if kind in ("first", "last", "closest"):
            return self._set_refs(node.children[0], scope)
        if kind == "it":
            return scope.it
        if kind == "coalesce":
            return tuple(r for c in node.children for r in self._event_refs(c, scope, depth + 1))
        if kind == "call" and str(node.children[0]) == "date" and len(node.children) == 2:
            return self._event_refs(node.children[1], scope, depth + 1)
        if kind == "name":
            name = str(node.children[0])
            if name in self.lets:
                return self._event_refs(self.lets[name], _Scope(), depth + 1)
        return ()

    def _field_refs(self, node: Node, scope: _Scope,
                    depth: int = 0) -> tuple[tuple[_Ref, str], ...]:
        """The (set, field) pairs a value-valued expression reads (``ecog.score``, ``value``)."""
        if not isinstance(node, Tree) or depth > 20:
            return ()
        kind = node.data
        if kind == "field":
            name = str(node.children[1])
            return tuple((r, name) for r in self._event_refs(node.children[0], scope, depth + 1)
                         if r.type in EVENT_TYPES and name in _payload_fields(r.type))
        if kind == "coalesce":
            return tuple(p for c in node.children for p in self._field_refs(c, scope, depth + 1))
        if kind == "name":
            name = str(node.children[0])
            if name in scope.fields:
                return scope.fields[name]
            if name in self.lets:
                return self._field_refs(self.lets[name], _Scope(), depth + 1)
            own = self._own_field(node, scope)
            if own is not None:
                return tuple((r, own) for r in scope.it)
        return ()

    def _age(self, node: Node, scope: _Scope, depth: int = 0) -> tuple[
            tuple[_Ref, ...], tuple[_Ref, ...]] | None:
        if not isinstance(node, Tree) or depth > 20:
            return None
        if node.data == "call" and str(node.children[0]) == "years_between" and \
                len(node.children) == 3:
            born = tuple(r for r, f in self._field_refs(node.children[1], scope)
                         if f == "date_of_birth")
            on = self._event_refs(node.children[2], scope)
            return (born, on) if born else None
        if node.data == "name" and str(node.children[0]) in self.lets:
            return self._age(self.lets[str(node.children[0])], _Scope(), depth + 1)
        return None

    def _elapsed(self, node: Node, scope: _Scope, depth: int = 0) -> tuple[
            tuple[_Ref, ...], tuple[_Ref, ...]] | None:
        if not isinstance(node, Tree) or depth > 20:
            return None
        if node.data == "call" and str(node.children[0]) == "elapsed" and len(node.children) == 3:
            first = self._event_refs(node.children[1], scope)
            then = self._event_refs(node.children[2], scope)
            return (first, then) if first and then else None
        if node.data == "name" and str(node.children[0]) in self.lets:
            return self._elapsed(self.lets[str(node.children[0])], _Scope(), depth + 1)
        return None

    # --- what each rule reads ----------------------------------------------------------------

    def closure(self, owner: str) -> frozenset[str]:
        """The owners (lets, defines, rules) ``owner`` reads, itself included."""
        if owner in self._closure:
            return self._closure[owner]
        self._closure[owner] = frozenset({owner})
        found = {owner}
        node = self.owner_nodes.get(owner)
        if node is not None:
            for token in _tokens(node):
                text = str(token)
                for other in (f"let:{text}", f"define:{text}", f"rule:{text}"):
                    if other in self.owner_nodes and other not in found:
                        found |= self.closure(other)
            if any(isinstance(n, Tree) and n.data == "eligibility" for n in node.iter_subtrees()):
                for criterion in self.criteria:
                    found |= self.closure(f"rule:{criterion}")
        self._closure[owner] = frozenset(found)
        return self._closure[owner]

    def reads(self, owner: str) -> frozenset[_Ref]:
        """Every set ``owner`` reads, through the names and rules it uses."""
        return frozenset(r for o in self.closure(owner) for r in self.refs.get(o, ()))



_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def _tokens(node: Node) -> Iterator[Token]:
    if isinstance(node, Token):
        yield node
    elif isinstance(node, Tree):
        yield from (t for t in node.scan_values(lambda v: isinstance(v, Token)))


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, Tree) and node.data == "and_expr":
        return [c for child in node.children for c in _conjuncts(child)]
    return [node]


def _param(value: Any) -> Any:
    """A parameter's value as a constant: quantities as :class:`_Q`, numbers as fractions."""
    if hasattr(value, "in_unit") and hasattr(value, "unit"):
        if value.unit == "1":
            return Fraction(value.base)
        return _Q(Fraction(value.in_unit(value.unit)), str(value.unit))
    return value


def _plain(value: Any) -> Any:
    """A literal as an event field holds it (1 for the number 1)."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value


# =============================================================================================
# The template: a history laid out on study days, with abstract values
# =============================================================================================


@attrs.frozen
class _At:
    """Wall-clock ``minute`` (after local midnight) of study ``day`` in the site's zone."""

    day: int
    minute: int

    def __str__(self) -> str:
        return f"Day {self.day} {self.minute // 60:02d}:{self.minute % 60:02d}"


@attrs.frozen
class _After:
    """``seconds`` of elapsed (UTC) time after the slot ``slot`` (negative: before it)."""

    slot: str
    seconds: int

    def __str__(self) -> str:
        sign = "+" if self.seconds >= 0 else "-"
        return f"{self.slot} {sign} {_span(abs(self.seconds))}"


def _span(seconds: int) -> str:
    parts = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 s"


@attrs.frozen
class _Amount:
    """A quantity (a dose): value as decimal text, UCUM unit."""

    value: str
    unit: str

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"


@attrs.frozen
class _Result:
    """A measured value as received: decimal text and unit (measured at rendering)."""

    value: str
    unit: str

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"


@attrs.frozen
class _Birth:
    """A date of birth ``years`` before the reference date (consent), moved ``days`` later."""

    years: int
    days: int = 0

    def __str__(self) -> str:
        if self.days == 0:
            return f"{self.years} years to the day before consent"
        return f"{self.years} years before consent + {self.days} d"


class _SiteZone:
    """The site's zone of the drawn context (``SubjectRegistered.time_zone``)."""

    def __repr__(self) -> str:
        return "<site zone>"


_SITE_ZONE = _SiteZone()


@attrs.frozen
class _Slot:
    key: str
    ref: _Ref
    time: _At | _After
    fields: tuple[tuple[str, Any], ...]
    role: str  # registration consent fact enrolment regimen dose sample result optional
    present: bool = True
    free: tuple[str, ...] = ()

    def value(self, name: str) -> Any:
        return dict(self.fields).get(name)


@attrs.frozen
class _Edit:
    key: str  # a slot key; "" for the evaluation time
    what: str  # field | present | time | at
    name: str = ""
    value: Any = None


@attrs.frozen
class _Move:
    """A change to the template, with a label a person can read (``EcogAssessed.score = 3``)."""

    label: str
    edits: tuple[_Edit, ...]
    kind: str = "change"

    @property
    def touches(self) -> frozenset[str]:
        return frozenset(e.key for e in self.edits if e.key)


@attrs.frozen
class _Template:
    slots: tuple[_Slot, ...]
    at: _At

    def slot(self, key: str) -> _Slot:
        for slot in self.slots:
            if slot.key == key:
                return slot
        raise KeyError(key)

    def apply(self, *moves: _Move) -> _Template:
        slots = {s.key: s for s in self.slots}
        at = self.at
        for move in moves:
            for edit in move.edits:
                if edit.what == "at":
                    at = edit.value
                    continue
                slot = slots[edit.key]
                if edit.what == "field":
                    fields = dict(slot.fields)
                    fields[edit.name] = edit.value
                    slot = attrs.evolve(slot, fields=tuple(fields.items()))
                elif edit.what == "present":
                    slot = attrs.evolve(slot, present=edit.value)
                elif edit.what == "time":
                    slot = attrs.evolve(slot, time=edit.value)
                slots[edit.key] = slot
        return _Template(tuple(slots[s.key] for s in self.slots), at)


@attrs.frozen
class _Ctx:
    """What a drawn history adds to a template: dates, the site's zone, the subject, clocks."""

    day1: dt.date
    zone: str
    subject: str
    jitter: int = 0  # minutes added to every wall-clock time
    delay: int = 0  # minutes added to every recording delay


_REQUIRED: dict[str, dict[str, Any]] = {
    "SubjectRegistered": {"site": "SITE-01", "time_zone": _SITE_ZONE},
    "ConsentSigned": {"form_version": "ICF 1.0"},
    "ConsentWithdrawn": {"reason": "withdrew consent"},
    "DemographicsRecorded": {"date_of_birth": _Birth(45), "sex": "M"},
    "ChildbearingPotentialAssessed": {"childbearing_potential": False},
    "DiagnosisRecorded": {"condition": "UNSPECIFIED"},
    "PriorTherapyRecorded": {"line": 1, "therapy": "prior therapy", "response": "none",
                             "tolerance": "tolerated"},
    "EcogAssessed": {"score": 1},
    "OtherHaematologicalDiseaseAssessed": {"present": False},
    "PregnancyTestResulted": {"result": "negative", "specimen": "urine"},
    "LactationAssessed": {"lactating": False},
    "SubjectEnrolled": {},
    "RegimenPrescribed": {"drug": "study drug", "dose": _Amount("1", "mg"), "frequency": "QD"},
    "DoseChanged": {"drug": "study drug", "dose": _Amount("1", "mg"), "frequency": "QD",
                    "reason": "titration"},
    "DoseAdministered": {"drug": "study drug", "dose": _Amount("1", "mg")},
    "DoseMissed": {"drug": "study drug", "reason": "missed"},
    "SampleDrawn": {"sample_id": "SAMPLE", "purpose": "sample"},
    "DrugLevelResulted": {"drug": "study drug", "labelled_trough": False},
    "LabResulted": {"loinc": "718-7"},
    "TransfusionGiven": {"product": "RBC", "amount": _Amount("300", "mL")},
    "ConcomitantMedicationStarted": {"medication": "concomitant medication"},
    "ConcomitantMedicationStopped": {"medication": "concomitant medication"},
    "BodyMeasured": {"loinc": "29463-7"},
    "AdverseEventReported": {"term": "adverse event", "grade": 1},
    "VisitOccurred": {"visit": "UNSCHEDULED"},
    "SubjectWithdrawn": {"reason": "withdrew"},
    "TreatmentDiscontinued": {"reason": "discontinued"},
    "ObservationRecorded": {"code_system": "protocol", "code": "OBSERVATION"},
}
#: The code field of a measured event (``loinc``, or ``code`` for an observation).
_CODE_FIELD = {cls.event_type: cls.measured[0] for cls in EVENT_TYPES.values() if cls.measured}
_MEASURED_FIELD = {cls.event_type: cls.measured[1] for cls in EVENT_TYPES.values()
                   if cls.measured}
_DRUG_LEVEL_DEFAULT = "11253-2"
#: A value nobody wrote in the protocol, for a text field compared with literals.
_OTHER = "OTHER"


def _study_date(day1: dt.date, day: int) -> dt.date:
    return day1 + dt.timedelta(days=day - 1 if day > 0 else day)


def _decimal_text(value: Fraction) -> str:
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    if den == 1:
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    else:
        text = format(round(Decimal(value.numerator) / Decimal(value.denominator), 3), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _numbers(thresholds: Iterable[Fraction], low: Fraction | None, high: Fraction | None,
             *, integer: bool = False) -> list[Fraction]:
    """Values around the protocol's thresholds: between them first, then outside, then edges."""
    marks = sorted(set(thresholds))
    found: list[Fraction] = []
    if marks:
        found += [(a + b) / 2 for a, b in _pairs(marks)]
        found += [marks[0] / 2 if marks[0] > 0 else marks[0] - 1,
                  marks[-1] * 3 / 2 if marks[-1] > 0 else marks[-1] + 1]
        for mark in marks:
            step = Fraction(1) if integer or abs(mark) >= 10 else Fraction(1, 10)
            found += [mark, mark - step, mark + step]
    result: list[Fraction] = []
    for candidate in found:
        value = Fraction(round(candidate)) if integer else candidate
        if (low is not None and value < low) or (high is not None and value > high):
            continue
        if value not in result:
            result.append(value)
    return result


def _pairs(values: Sequence[Fraction]) -> Iterator[tuple[Fraction, Fraction]]:
    return itertools.pairwise(values)


class _Model:
    """A protocol's template, its value pools, and the oracle searches over them."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.catalogue = default_catalogue()
        self.analysis = a = _Analysis(protocol)
        self.base_day1 = protocol.effective + dt.timedelta(days=60)
        self.zone = protocol.zone or "UTC"
        self.pools: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.times: dict[str, tuple[_At | _After, ...]] = {}
        self.edges: list[_Move] = []
        self.twins: dict[str, str] = {}  # a second copy of a screening fact -> the first
        self._cache: dict[Any, Any] = {}
        self._evaluations: dict[_Template, Evaluation] = {}
        # Day 1: the set of the anchor named day1 (``first $dose``), else doses of any drug.
        day1_refs: tuple[_Ref, ...] = ()
        if a.day1 is not None and a.day1 in a.lets:
            day1_refs = a._event_refs(a.lets[a.day1], _Scope())
        self.day1_ref = day1_refs[0] if day1_refs else _Ref("DoseAdministered")
        criteria_refs = {r for c in a.criteria for r in a.reads(f"rule:{c}")}
        all_refs = {r for owner in a.owner_nodes for r in a.reads(owner)}
        # Screening windows on Day 1 decide where the facts and the consent go.
        lows = [day for _, day, _ in a.windows if day < 1]
        self.fact_day = min(-2, max([-7, *lows]))
        self.twin_day = self.fact_day + 4 if self.fact_day + 4 <= -2 else self.fact_day - 1
        self.consent_day = min([self.fact_day, self.twin_day, *lows]) - 2
        slots: list[_Slot] = []
        c = self.consent_day
        slots.append(self._slot(_Ref("SubjectRegistered"), _At(c, 8 * 60), "registration"))
        slots.append(self._slot(_Ref("ConsentSigned"), _At(c, 8 * 60 + 30), "consent"))
        self.times["ConsentSigned"] = (_At(self.fact_day, 13 * 60), _At(1, 9 * 60))
        facts = self._fact_refs(criteria_refs)
        for i, ref in enumerate(facts):
            when = _At(self.fact_day, 9 * 60 + 5 * i)
            slots.append(self._slot(ref, when, "fact"))
            twin = _At(self.twin_day, 9 * 60 + 5 * i)
            twin_key = f"{ref.label()} (again, Day {self.twin_day})"
            slots.append(self._slot(ref, twin, "fact", present=False, key=twin_key))
            self.twins[twin_key] = ref.label()
        slots.append(self._slot(_Ref("SubjectEnrolled"), _At(-1, 15 * 60), "enrolment"))
        if any(r.type == "RegimenPrescribed" for r in all_refs):
            ref = next((r for r in all_refs if r.type == "RegimenPrescribed"),
                       _Ref("RegimenPrescribed"))
            slots.append(self._slot(ref, _At(-1, 15 * 60 + 15), "regimen"))
        # Day 1: the endpoints' baseline values, then the first dose (and optional others).
        endpoint_refs = self._endpoint_refs()
        for i, ref in enumerate(dict.fromkeys(r for r, _ in endpoint_refs)):
            slots.append(self._slot(ref, _At(1, 7 * 60 + 30 + i), "result",
                                    key=f"{ref.label()} Day 1 (baseline)"))
        self.day1_key = f"{self.day1_ref.label()} Day 1 08:00"
        slots.append(self._slot(self.day1_ref, _At(1, 8 * 60), "dose", key=self.day1_key))
        for minute in (20 * 60, 14 * 60):
            slots.append(self._slot(self.day1_ref, _At(1, minute), "dose", present=False,
                                    key=f"{self.day1_ref.label()} {_At(1, minute)}"))
        last_day = 1
        # Timed samples: elapsed(first, then) in [low, high] after a dose.
        for first, then, low, high, settle in self._timed():
            start = max(8, 2 + -(-settle // 86400))
            middle = (low + high) // 2
            for k, day in enumerate((start, start + 7)):
                dose_key = f"{first.label()} {_At(day - 1, 20 * 60)}"
                sample_key = f"{then.label()} Day {day}"
                slots.append(self._slot(first, _At(day - 1, 20 * 60), "dose", key=dose_key))
                slots.append(self._slot(then, _After(dose_key, middle), "sample", key=sample_key))
                at_draw = f"{first.label()} at the draw of {sample_key}"
                slots.append(self._slot(first, _After(sample_key, 0), "dose", present=False,
                                        key=at_draw))
                offsets = sorted({low - 1, low, high, high + 1} - {middle})
                self.times[sample_key] = tuple(_After(dose_key, s) for s in offsets)
                for s in offsets:
                    inside = low <= s <= high
                    self.edges.append(_Move(
                        f"{sample_key} drawn {_span(s)} after its dose "
                        f"({'inside' if inside else 'outside'} [{_span(low)}, {_span(high)}])",
                        (_Edit(sample_key, "time", value=_After(dose_key, s)),), "timing"))
                self.edges.append(_Move(
                    f"a dose at the very instant of {sample_key}",
                    (_Edit(at_draw, "present", value=True),), "timing"))
                if k == 0 and settle:
                    # The first sample exactly at the settling time after Day 1 (and 1 s early).
                    for s in (settle, settle - 1):
                        self.edges.append(_Move(
                            f"{sample_key} drawn {_span(s)} after Day 1's first dose",
                            (_Edit(dose_key, "time", value=_After(self.day1_key, s - middle)),),
                            "timing"))
                last_day = max(last_day, day)
        # Endpoint values: one at each window's target day.
        for i, (ref, endpoint) in enumerate(endpoint_refs):
            lo, hi = endpoint.window
            key = f"{ref.label()} Day {endpoint.target}"
            if any(s.key == key for s in slots):
                continue
            slots.append(self._slot(ref, _At(endpoint.target, 9 * 60 + i), "result", key=key))
            last_day = max(last_day, hi)
            days = [d for d in (lo - 1 if lo != 1 else -1, lo, hi, hi + 1 if hi != -1 else 1)]
            self.times[key] = tuple(_At(d, 9 * 60 + i) for d in days)
            for d in days:
                inside = lo <= d <= hi
                self.edges.append(_Move(
                    f"{key} moved to Day {d} ({'inside' if inside else 'outside'} "
                    f"{endpoint.id}'s window [{lo}, {hi}])",
                    (_Edit(key, "time", value=_At(d, 9 * 60 + i)),), "window"))
        # Windows after Day 1 (visits): an optional event in the middle of each.
        for refs, lo, hi in a.windows:
            if lo < 1:
                continue
            for ref in refs:
                middle = lo if hi is None else (lo + hi) // 2
                key = f"{ref.label()} Day {middle}"
                if not any(s.key == key for s in slots):
                    slots.append(self._slot(ref, _At(middle, 10 * 60), "optional",
                                            present=False, key=key))
                last_day = max(last_day, middle if hi is None else hi)
        # Optional events: every set a rule reads that no slot holds yet.
        self.at = _At(last_day + 1, 12 * 60)
        self._optional(slots, all_refs)
        self.initial = _Template(tuple(slots), self.at)
        self.slots = {s.key: s for s in slots}
        self._edges_from_analysis()

    # --- building ----------------------------------------------------------------------------

    def _fact_refs(self, refs: Iterable[_Ref]) -> list[_Ref]:
        """The screening facts: criteria-read sets (most specific first), not the timeline."""
        chosen: list[_Ref] = []
        candidates = sorted(
            (r for r in refs if r.type not in _TIMELINE | _CORRECTIONS
             and not (r.type == self.day1_ref.type and set(self.day1_ref.sig) <= set(r.sig))
             and not (r.type == self.day1_ref.type and set(r.sig) <= set(self.day1_ref.sig))),
            key=lambda r: (-len(r.sig), r.label()))
        for ref in candidates:
            if any(ref.covers(c) for c in chosen):
                continue  # a more specific fact of this set is already held
            chosen.append(ref)
        return sorted(chosen, key=lambda r: r.label())

    def _endpoint_refs(self) -> list[tuple[_Ref, Any]]:
        a = self.analysis
        found = []
        for endpoint in self.protocol.endpoints:
            if endpoint.anchor != a.day1:
                continue  # anchored on another event (a cycle): not laid out
            node = a.rules.get(endpoint.id)
            refs: tuple[_Ref, ...] = ()
            for clause in node.children if node is not None else ():
                if isinstance(clause, Tree) and clause.data == "endpoint_values":
                    a._owner = f"rule:{endpoint.id}"
                    refs = a._set_refs(clause.children[0], _Scope())
            found += [(r, endpoint) for r in refs[:1]]
        return found

    def _timed(self) -> list[tuple[_Ref, _Ref, int, int, int]]:
        """(dose set, sample set, low s, high s, settling s after Day 1) of elapsed rules."""
        bounds: dict[tuple[_Ref, _Ref], list[Fraction | None]] = {}
        settle: dict[_Ref, int] = {}
        for rule in self.analysis.elapsed:
            for then in rule.then:
                if self.day1_ref in rule.first and len(rule.first) > 1 and rule.low is not None:
                    settle[then] = max(settle.get(then, 0), int(rule.low))
                    continue
                for first in rule.first:
                    if first.type != self.day1_ref.type or then.type in _TIMELINE:
                        continue
                    low, high = bounds.setdefault((first, then), [None, None])
                    if rule.low is not None:
                        low = rule.low if low is None else max(low, rule.low)
                    if rule.high is not None:
                        high = rule.high if high is None else min(high, rule.high)
                    bounds[(first, then)] = [low, high]
        return [(f, t, int(lo), int(hi), settle.get(t, 0))
                for (f, t), (lo, hi) in bounds.items() if lo is not None and hi is not None]

    def _optional(self, slots: list[_Slot], refs: set[_Ref]) -> None:
        """Absent events of every set a rule reads that no slot holds, in a few places each."""
        held = [s.ref for s in slots]
        ordered = sorted(refs, key=lambda r: (-len(r.sig), r.label()))
        for ref in ordered:
            if ref.type in _TIMELINE | _CORRECTIONS or any(ref.covers(h) for h in held):
                continue
            if ref.type == self.day1_ref.type and not ref.sig:
                continue
            held.append(ref)
            owners = [o for o in self.analysis.owner_nodes
                      if o.startswith("rule:") and ref in self.analysis.reads(o)]
            co_read = {r for o in owners for r in self.analysis.reads(o)} - {ref}
            near = sorted((s for s in slots if s.present and s.role not in (
                "registration", "consent", "enrolment") and any(r.covers(s.ref) for r in co_read)),
                key=lambda s: self._sort_key(s, slots))
            places: list[tuple[str, _At | _After]] = [
                (f"Day {self.fact_day}", _At(self.fact_day, 11 * 60 + len(held)))]
            for s in dict.fromkeys([*near[:1], *near[-1:]]):
                places.append((f"1 min before {s.key}", _After(s.key, -60)))
            for where, when in places:
                slots.append(self._slot(ref, when, "optional", present=False,
                                        key=f"{ref.label()} {where}"))

    def _sort_key(self, slot: _Slot, slots: Sequence[_Slot]) -> tuple[int, int]:
        time = slot.time
        seconds = 0
        while isinstance(time, _After):
            seconds += time.seconds
            time = next(s.time for s in slots if s.key == time.slot)
        return (time.day, time.minute * 60 + seconds)

    def _slot(self, ref: _Ref, when: _At | _After, role: str, *, present: bool = True,
              key: str | None = None) -> _Slot:
        key = key or ref.label()
        fields = dict(_REQUIRED.get(ref.type, {}))
        fields.update(ref.sig)
        free: list[str] = []
        for name in _payload_fields(ref.type):
            if name in dict(ref.sig):
                continue
            pool = self._pool(ref, name)
            if pool:
                self.pools[(key, name)] = tuple(pool)
                fields[name] = pool[0]
                if len(pool) > 1:
                    free.append(name)
        if ref.type in _CODE_FIELD:
            self._measured(ref, key, fields, free)
        if ref.type in {"SampleDrawn", "DrugLevelResulted"}:
            fields.setdefault("sample_id", None)
        return _Slot(key, ref, when, tuple(fields.items()), role, present, tuple(free))

    def _pool(self, ref: _Ref, name: str) -> list[Any]:
        """The values the search may give ``name`` of an event of ``ref``."""
        a = self.analysis
        literals = [v for v, _ in a.literals.get((ref.type, name), [])]
        if name == "date_of_birth" and ref.type == "DemographicsRecorded":
            return self._births()
        if (ref.type, name) in _ENUMS:
            members = [m.value for m in _ENUMS[(ref.type, name)]]
            known = [v for v in dict.fromkeys(literals) if v in members]
            default = _REQUIRED.get(ref.type, {}).get(name)
            rest = [m for m in members if m not in known]
            pool = [*known, *rest]
            if not known and default in pool:
                pool.remove(default)
                pool.insert(0, default)
            return pool if (known or name in self._read_names()) else []
        if (ref.type, name) in _BOOLS:
            if name not in self._read_names():
                return []
            default = bool(_REQUIRED.get(ref.type, {}).get(name, False))
            return [default, not default]
        if (ref.type, name) in _INT_RANGES:
            low, high = _INT_RANGES[(ref.type, name)]
            numbers = [Fraction(v) for v in literals if isinstance(v, int)]
            values = [int(v) for v in _numbers(numbers, Fraction(low), Fraction(high),
                                               integer=True)]
            return values
        if name in _QUANTITY_FIELDS:
            marks = [q for (r, f), qs in a.thresholds.items() for q in qs
                     if f == name and r.covers(ref)]
            if not marks:
                return []
            first = marks[0]
            amounts = [first.value, first.value * 2, first.value / 2]
            return [_Amount(_decimal_text(v), first.unit) for v in amounts]
        strings = [v for v in dict.fromkeys(literals) if isinstance(v, str)]
        if not strings:
            return []
        if name not in _KEY_FIELDS.get(ref.type, ()):
            return [*strings, _OTHER]
        if name == _CODE_FIELD.get(ref.type):
            return []  # the code of a measured value decides its analyte and units
        # A key field no ``where`` pins (``code in {...}``): as recorded by default, or one of
        # the protocol's values.
        default = _REQUIRED.get(ref.type, {}).get(name)
        return [default, *(v for v in strings if v != default)]

    def _read_names(self) -> frozenset[str]:
        """Every lower-case name the protocol writes (fields a rule reads are among them)."""
        if "names" not in self._cache:
            names: set[str] = set()
            for node in self.analysis.owner_nodes.values():
                names.update(str(t) for t in _tokens(node) if t.type == "NAME")
            self._cache["names"] = frozenset(names)
        found: frozenset[str] = self._cache["names"]
        return found

    def _births(self) -> list[Any]:
        years = sorted({y for _, _, ys in self.analysis.ages for y in ys})
        if not years:
            return []
        middle = (years[0] + years[-1]) // 2 if len(years) > 1 else years[0] + 20
        found = [_Birth(middle)]
        for y in years:
            found += [_Birth(y), _Birth(y, 1), _Birth(y + 1), _Birth(y + 1, 1)]
        return list(dict.fromkeys(b for b in found if b.years > 0))

    def _measured(self, ref: _Ref, key: str, fields: dict[str, Any], free: list[str]) -> None:
        """The code and value pool of a measured event (a lab, a drug level, an observation)."""
        code_field, result_field = _CODE_FIELD[ref.type], _MEASURED_FIELD[ref.type]
        marks = [q for (r, f), qs in self.analysis.thresholds.items() for q in qs
                 if f == result_field and r.covers(ref)]
        code = fields.get(code_field)
        if ref.type == "ObservationRecorded" and not marks:
            fields["result"] = None
            if fields.get("category") is None:
                fields["category"] = _OTHER
            return
        if code is None:
            code = self._drug_level_code(str(fields.get("drug", "")), marks)
            fields[code_field] = code
        analyte = self.catalogue.analytes.get(str(code))
        unit = analyte.canonical_unit if analyte else (marks[0].unit if marks else "1")
        low = Fraction(analyte.minimum) if analyte and analyte.minimum is not None else None
        high = Fraction(analyte.maximum) if analyte and analyte.maximum is not None else None
        converted = [v for v in (m.to(unit) for m in marks) if v is not None]
        values = _numbers(converted, low, high)
        if not values:
            if low is not None and high is not None:
                typical = (Fraction(round((low * high) ** 0.5)) if low > 0 else high / 20)
            else:
                typical = Fraction(1)
            values = [typical]
        pool = tuple(_Result(_decimal_text(v), unit) for v in values)
        self.pools[(key, result_field)] = pool
        fields[result_field] = pool[0]
        if ref.type == "ObservationRecorded":
            fields["category"] = None
        if len(pool) > 1 and result_field not in free:
            free.append(result_field)

    def _drug_level_code(self, drug: str, marks: list[_Q]) -> str:
        for code, analyte in self.catalogue.analytes.items():
            if analyte.name.lower() == drug.lower():
                return code
        for code, analyte in self.catalogue.analytes.items():
            if marks and marks[0].to(analyte.canonical_unit) is not None:
                return code
        return _DRUG_LEVEL_DEFAULT

    def _edges_from_analysis(self) -> None:
        """Edge moves that need the finished template: ages, screening windows, thresholds."""
        for slot in self.initial.slots:
            if slot.ref.type == "DemographicsRecorded" and slot.present:
                for birth in self.pools.get((slot.key, "date_of_birth"), ())[1:]:
                    self.edges.append(_Move(
                        f"{slot.key}.date_of_birth: {birth}",
                        (_Edit(slot.key, "field", "date_of_birth", birth),), "age"))
        for refs, lo, _hi in self.analysis.windows:
            if lo >= 1:
                continue
            for slot in self.initial.slots:
                if slot.role != "fact" or not slot.present or not any(
                        r.covers(slot.ref) for r in refs):
                    continue
                assert isinstance(slot.time, _At)
                for day in (lo, lo - 1):
                    inside = day >= lo
                    self.edges.append(_Move(
                        f"{slot.key} on Day {day} ({'first day of' if inside else 'a day before'}"
                        f" its screening window)",
                        (_Edit(slot.key, "time", value=_At(day, slot.time.minute)),),
                        "screening"))
        for slot in self.initial.slots:
            if slot.ref.type not in _MEASURED_FIELD or not slot.present:
                continue
            result_field = _MEASURED_FIELD[slot.ref.type]
            pool = self.pools.get((slot.key, result_field), ())
            marks = {m for (r, f), qs in self.analysis.thresholds.items() for m in qs
                     if f == result_field and r.covers(slot.ref)}
            if not marks or not pool:
                continue
            unit = pool[0].unit
            converted = [c for c in (m.to(unit) for m in marks) if c is not None]
            edge_values = {_decimal_text(v) for c in converted
                           for v in _numbers([c], None, None)[2:]}
            for value in sorted(edge_values, key=Fraction):
                self.edges.append(_Move(
                    f"{slot.key}.{result_field} = {value} {unit} (at a threshold)",
                    (_Edit(slot.key, "field", result_field, _Result(value, unit)),),
                    "threshold"))
        for endpoint in self.protocol.endpoints:
            keys = [s.key for s in self.initial.slots if s.key.endswith(f" Day {endpoint.target}")
                    and s.role == "result"]
            if endpoint.anchor != self.analysis.day1 or not keys:
                continue
            hi = endpoint.window[1]
            removal = tuple(_Edit(k, "present", value=False) for k in keys)
            for when, state in ((_At(hi, 23 * 60 + 59), "still open"),
                                (_At(hi + 1 if hi != -1 else 1, 1), "just closed")):
                self.edges.append(_Move(
                    f"no value for {endpoint.id}; evaluated at {when}, its window {state}",
                    (*removal, _Edit("", "at", value=when)), "window"))

    # --- rendering ---------------------------------------------------------------------------

    def render(self, template: _Template, ctx: _Ctx, description: Sequence[str] = ()) -> History:
        """The events of ``template`` in context ``ctx`` (none after the evaluation time)."""
        zone = ctx.zone
        instants: dict[str, pendulum.DateTime] = {}
        by_key = {s.key: s for s in template.slots}

        def instant(time: _At | _After, jitter: int = ctx.jitter) -> pendulum.DateTime:
            if isinstance(time, _After):
                if time.slot not in instants:
                    instants[time.slot] = instant(by_key[time.slot].time)
                base = instants[time.slot]
                return base.in_timezone("UTC").add(seconds=time.seconds).in_timezone(zone)
            day = _study_date(ctx.day1, time.day)
            minute = time.minute + jitter
            return pendulum.datetime(day.year, day.month, day.day, minute // 60, minute % 60,
                                     tz=zone)

        at = instant(template.at, 0)
        for slot in template.slots:
            instants[slot.key] = instant(slot.time)
        consent = instants.get("ConsentSigned")
        found: list[Event] = []
        study = self.protocol.id
        for slot in template.slots:
            occurred = instants[slot.key]
            if not slot.present or occurred > at:
                continue
            on = consent.date() if consent is not None else occurred.date()
            fields = {name: _concrete(slot, value, zone, on) for name, value in slot.fields}
            if "sample_id" in fields and fields["sample_id"] is None and \
                    slot.ref.type == "SampleDrawn":
                fields["sample_id"] = f"{ctx.subject}-{len(found)}"
            if slot.ref.type == "DemographicsRecorded":
                born = fields.get("date_of_birth")
                if isinstance(born, dt.date) and born > occurred.date():
                    fields["date_of_birth"] = occurred.date()
            lag = 120 if slot.role in ("result", "sample") or slot.ref.type in _MEASURED_FIELD \
                else 10
            recorded = occurred.add(minutes=lag + ctx.delay)
            if recorded > at:
                recorded = max(occurred, at)
            cls = EVENT_TYPES[slot.ref.type]
            found.append(cls(
                event_id=uuid.uuid5(_NAMESPACE, f"{study}/{ctx.subject}/{slot.key}"),
                study=study, subject=ctx.subject, occurred_at=occurred, recorded_at=recorded,
                recorded_by="lab" if slot.role in ("result", "sample") else "investigator",
                source="lab:central" if slot.role in ("result", "sample") else "edc",
                **fields,
            ))
        return History(events=tuple(found), at=at, protocol=self.protocol, study=study,
                       subject=ctx.subject, zone=zone, day1=ctx.day1,
                       description=tuple(description))

    def special_days(self, zone: str) -> tuple[dt.date, ...]:
        """Days 1 that put the layout on calendar edges in ``zone``.

        Consent on 28 or 29 February or 1 March (birthdays of people born on 29 February), and
        Day 1, the day before it, the first timed sample or the consent on a day the zone
        changes its UTC offset (DST).
        """
        key = ("special", zone)
        if key in self._cache:
            days: tuple[dt.date, ...] = self._cache[key]
            return days
        first, last = self.base_day1, self.base_day1 + dt.timedelta(days=3650)
        found: set[dt.date] = set()
        consent = self.consent_day
        for year in range(first.year, last.year + 1):
            for month, day in ((2, 28), (2, 29), (3, 1)):
                try:
                    on = dt.date(year, month, day)
                except ValueError:
                    continue
                found.add(on - dt.timedelta(days=consent))  # consent_day is negative
        tz = pendulum.timezone(zone)
        date = first - dt.timedelta(days=60)
        previous = pendulum.datetime(date.year, date.month, date.day, tz=tz).utcoffset()
        while date <= last:
            date += dt.timedelta(days=1)
            offset = pendulum.datetime(date.year, date.month, date.day, tz=tz).utcoffset()
            if offset != previous:
                change = date - dt.timedelta(days=1)  # the offset changed during this day
                for shift in (0, 1, -1, -7, -6):
                    found.add(change - dt.timedelta(days=shift))
                found.add(change - dt.timedelta(days=consent))
            previous = offset
        days = tuple(sorted(d for d in found if first <= d <= last))
        self._cache[key] = days
        return days

    @property
    def base_ctx(self) -> _Ctx:
        return _Ctx(self.base_day1, self.zone, "S-000")

    def evaluate(self, template: _Template) -> Evaluation:
        found = self._evaluations.get(template)
        if found is None:
            history = self.render(template, self.base_ctx)
            found = evaluate(self.protocol, history.events, at=history.at)
            if len(self._evaluations) > 4000:
                self._evaluations.clear()
            self._evaluations[template] = found
        return found


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://protocolkit.invalid/strategies")


def _concrete(slot: _Slot, value: Any, zone: str, consent: dt.date) -> Any:
    """A template value as the event holds it (a quantity, a measurement, a date)."""
    if isinstance(value, _Amount):
        return Quantity(value.value, value.unit)
    if isinstance(value, _Result):
        code = slot.value(_CODE_FIELD[slot.ref.type])
        return measure(str(code), value.value, value.unit)
    if isinstance(value, _Birth):
        born = pendulum.date(consent.year, consent.month, consent.day)
        born = born.subtract(years=value.years).add(days=value.days)
        return dt.date(born.year, born.month, born.day)
    if isinstance(value, _SiteZone):
        return zone
    return value

# =============================================================================================
# The oracle searches (once per protocol, cached)
# =============================================================================================


def _shown(value: Any) -> str:
    if isinstance(value, (_Amount, _Result, _Birth)):
        return str(value)
    return repr(value)


def _edit_label(edit: _Edit) -> str:
    if edit.what == "field":
        return f"{edit.key}.{edit.name} = {_shown(edit.value)}"
    if edit.what == "present":
        return f"{'add' if edit.value else 'remove'} {edit.key}"
    if edit.what == "time":
        return f"{edit.key} at {edit.value}"
    return f"evaluated at {edit.value}"


def _violated(result: Any) -> bool:
    return (result.kind, result.verdict) in (("inclusion", "not met"), ("exclusion", "met"))


def _good(result: Any) -> bool:
    if result.verdict == "not applicable":
        return True
    return bool(result.verdict == ("met" if result.kind == "inclusion" else "not met"))


def _rule_of(deviation: Any) -> str:
    return str(deviation.path).rsplit(" ", 1)[-1]


class _Search(_Model):
    """The template's searches: the witness, its variations, violations, triggers."""

    def score(self, ev: Any) -> tuple[int, int, int, int]:
        return (sum(_violated(c) for c in ev.criteria), sum(not _good(c) for c in ev.criteria),
                len(ev.deviations), len(ev.data_queries))

    def keys_read_by(self, owners: Iterable[str]) -> list[str]:
        refs = {r for o in owners for r in self.analysis.reads(o)}
        return [s.key for s in self.initial.slots if any(r.covers(s.ref) for r in refs)]

    def moves(self, template: _Template, keys: Iterable[str], *,
              structural: bool = True) -> list[_Move]:
        """Every single change to the slots ``keys``: a value, present or not, a time."""
        found: list[_Move] = []
        keys = list(keys)
        for key in keys:
            slot = template.slot(key)
            if slot.role == "registration":
                continue
            if not structural and (slot.role in ("consent", "enrolment") or key == self.day1_key):
                continue  # the timeline stays: consent first, enrolment, Day 1
            if not slot.present:
                found.append(_Move(f"add {key}", (_Edit(key, "present", value=True),)))
                continue
            for name in slot.free:
                current = slot.value(name)
                for value in self.pools[(key, name)]:
                    if value != current:
                        edit = _Edit(key, "field", name, value)
                        found.append(_Move(_edit_label(edit), (edit,)))
            found.append(_Move(f"remove {key}", (_Edit(key, "present", value=False),)))
            for time in self.times.get(key, ()):
                if time != slot.time:
                    edit = _Edit(key, "time", value=time)
                    found.append(_Move(_edit_label(edit), (edit,)))
        groups: dict[_Ref, list[_Slot]] = {}
        for key in keys:
            slot = template.slot(key)
            if slot.present and slot.role in ("sample", "result", "dose", "fact"):
                groups.setdefault(slot.ref, []).append(slot)
        for ref, members in groups.items():
            if len(members) < 2:
                continue
            for name in members[0].free:
                for value in self.pools.get((members[0].key, name), ()):
                    edits = tuple(_Edit(m.key, "field", name, value) for m in members
                                  if value in self.pools.get((m.key, name), ()))
                    if len(edits) > 1:
                        found.append(_Move(f"every {ref.label()}: {name} = {_shown(value)}",
                                           edits))
        return found

    def random_moves(self, template: _Template, keys: Sequence[str], rng: random.Random,
                     count: int, favour: Iterable[Any] = ()) -> Iterator[_Move]:
        """Random combinations of changes to ``keys`` (values in ``favour`` drawn more often)."""
        liked = set(favour)
        for _ in range(count):
            edits: list[_Edit] = []
            for key in keys:
                slot = template.slot(key)
                if slot.role in ("registration", "consent", "enrolment"):
                    continue
                present = slot.present
                if slot.role in ("fact", "optional") and rng.random() < 0.2:
                    present = not present
                    edits.append(_Edit(key, "present", value=present))
                if not present:
                    continue  # the values of an absent event do not matter
                for name in slot.free:
                    if rng.random() < 0.5:
                        pool = self.pools[(key, name)]
                        weights = [4 if v in liked else 1 for v in pool]
                        value = rng.choices(pool, weights)[0]
                        if value != slot.value(name):
                            edits.append(_Edit(key, "field", name, value))
            if edits:
                yield _Move("; ".join(_edit_label(e) for e in edits), tuple(edits), "combined")

    @functools.cached_property
    def witness(self) -> _Template:
        """An eligible, deviation-free template (as far as the search gets)."""
        template = self.initial
        ev = self.evaluate(template)
        score = self.score(ev)
        budget = 3000
        rng = random.Random(self.protocol.digest)
        codes: dict[str, list[str]] = {}
        for rule in self.protocol.deviations:
            codes.setdefault(rule.code or rule.id, []).append(rule.id)
        tried: set[str] = set()
        while budget > 0 and score != (0, 0, 0, 0):
            owners = [f"rule:{c.id}" for c in ev.criteria if not _good(c)]
            owners += [f"rule:{_rule_of(d)}" for d in ev.deviations]
            keys = self.keys_read_by(owners)
            improved = False
            candidates = [*self.moves(template, keys, structural=False),
                          *self.random_moves(template, keys, rng, 40)]
            for move in candidates:
                budget -= 1
                trial = template.apply(move)
                trial_ev = self.evaluate(trial)
                trial_score = self.score(trial_ev)
                if trial_score < score:
                    template, ev, score, improved = trial, trial_ev, trial_score, True
                    break
                if budget <= 0:
                    break
            if not improved:
                # A plateau step: a second copy of a fact (``count ... >= 2`` needs one).
                for twin, first in self.twins.items():
                    if twin in tried or twin not in keys or template.slot(twin).present:
                        continue
                    tried.add(twin)
                    trial = template.apply(self.copy(template, twin, first))
                    trial_ev = self.evaluate(trial)
                    if self.score(trial_ev) <= score:
                        template, ev, score, improved = trial, trial_ev, self.score(trial_ev), True
                        break
            if not improved:
                break
        return template

    def copy(self, template: _Template, twin: str, first: str) -> _Move:
        """Add the second copy ``twin`` of a fact with the values of the first."""
        source = template.slot(first)
        edits = [_Edit(twin, "present", value=True)]
        edits += [_Edit(twin, "field", name, source.value(name)) for name in source.free]
        return _Move(f"add {twin} (as {first})", tuple(edits))

    @functools.cached_property
    def witness_evaluation(self) -> Any:
        return self.evaluate(self.witness)

    def require_eligible(self) -> None:
        ev = self.witness_evaluation
        if ev.eligibility != "eligible":
            bad = [f"{c.id} ({c.verdict})" for c in ev.criteria if not _good(c)]
            raise StrategyError(
                f"{self.protocol.id}: no eligible history found; the search could not satisfy "
                f"{', '.join(bad)} (see docs/testing-protocols.md, 'Limits')")

    @functools.cached_property
    def components(self) -> tuple[tuple[frozenset[str], tuple[_Move, ...]], ...]:
        """Groups of screening facts no criterion reads across, each with validated variants."""
        witness = self.witness
        base = self.witness_evaluation
        groups: list[set[str]] = []
        for criterion in self.analysis.criteria:
            keys = {k for k in self.keys_read_by([f"rule:{criterion}"])
                    if self.slots[k].role in ("fact", "optional")}
            if not keys:
                continue
            merged, rest = set(keys), []
            for group in groups:
                if group & merged:
                    merged |= group
                else:
                    rest.append(group)
            groups = [*rest, merged]
        found = []
        for group in sorted(groups, key=sorted):
            options = [_Move("", ())]
            seen: set[tuple[_Edit, ...]] = set()
            rng = random.Random(f"{self.protocol.digest}/{sorted(group)}")
            for move in self.random_moves(witness, sorted(group), rng, 30):
                if move.edits in seen:
                    continue
                seen.add(move.edits)
                ev = self.evaluate(witness.apply(move))
                if ev.eligibility == "eligible" and all(_good(c) for c in ev.criteria) and \
                        len(ev.deviations) <= len(base.deviations) and \
                        ev.deviation_codes() == base.deviation_codes() and \
                        len(ev.data_queries) <= len(base.data_queries):
                    options.append(move)
            found.append((frozenset(group), tuple(options)))
        return tuple(found)

    def _search(self, owners: Sequence[str], hit: Callable[[Any], bool],
                rank: Callable[[Any, _Move], tuple[int, ...]], seed: str) -> tuple[_Move, ...]:
        witness = self.witness
        keys = [k for k in self.keys_read_by(owners)]
        key_set = set(keys)
        singles = [*self.moves(witness, keys),
                   *(m for m in self.edges if m.touches & key_set)]
        found: dict[str, tuple[tuple[int, ...], int, _Move]] = {}

        def check(move: _Move) -> None:
            if move.label in found:
                return
            ev = self.evaluate(witness.apply(move))
            if hit(ev):
                found[move.label] = (rank(ev, move), len(found), move)

        for move in singles:
            check(move)
        if len(found) < 4:
            favour = {v for o in self.analysis.closure(owners[0]) for (_, _), pairs in
                      self.analysis.literals.items() for v, owner in pairs if owner == o}
            facts = [k for k in keys if self.slots[k].role in ("fact", "optional", "result")]
            for move in self.random_moves(witness, facts, random.Random(seed), 120, favour):
                check(move)
        if not found:
            for i, first in enumerate(singles[:40]):
                for second in singles[i + 1:60]:
                    if first.touches & second.touches:
                        continue
                    check(_Move(f"{first.label}; {second.label}", first.edits + second.edits,
                                "combined"))
        ordered = sorted(found.values(), key=lambda item: (item[0], item[1]))
        return tuple(move for _, _, move in ordered[:12])

    def violations(self, criterion: str) -> tuple[_Move, ...]:
        key = ("violations", criterion)
        if key not in self._cache:
            def hit(ev: Any) -> bool:
                return _violated(ev.criterion(criterion))

            def rank(ev: Any, move: _Move) -> tuple[int, ...]:
                others = [c for c in ev.criteria if c.id != criterion]
                return (sum(_violated(c) for c in others), sum(not _good(c) for c in others),
                        len(move.edits))

            self._cache[key] = self._search([f"rule:{criterion}"], hit, rank,
                                            f"{self.protocol.digest}/{criterion}")
        moves: tuple[_Move, ...] = self._cache[key]
        return moves

    def triggers(self, code: str) -> tuple[_Move, ...]:
        key = ("triggers", code)
        if key not in self._cache:
            rules = [d.id for d in self.protocol.deviations if (d.code or d.id) == code]

            def hit(ev: Any) -> bool:
                return code in ev.deviation_codes()

            def rank(ev: Any, move: _Move) -> tuple[int, ...]:
                others = {c for c in ev.deviation_codes() if c != code}
                return (len(others), sum(_violated(c) for c in ev.criteria), len(move.edits))

            self._cache[key] = self._search([f"rule:{r}" for r in rules], hit, rank,
                                            f"{self.protocol.digest}/{code}")
        moves: tuple[_Move, ...] = self._cache[key]
        return moves

    @functools.cached_property
    def moves_by_rule(self) -> dict[str, tuple[_Move, ...]]:
        """For each rule, the single changes and edges of what it reads (consent stays first)."""
        found: dict[str, tuple[_Move, ...]] = {}
        for owner in self.analysis.owner_nodes:
            if not owner.startswith("rule:"):
                continue
            keys = [k for k in self.keys_read_by([owner])
                    if self.slots[k].role not in ("registration", "consent")]
            key_set = set(keys)
            moves = [*self.moves(self.witness, keys, structural=False),
                     *(m for m in self.edges
                       if m.touches & key_set and "ConsentSigned" not in m.touches)]
            if moves:
                found[owner.removeprefix("rule:")] = tuple(moves)
        return found


_MODELS: dict[int, tuple[Protocol, _Search]] = {}


def _model(protocol: Protocol) -> _Search:
    """The searched template of ``protocol`` (built once per loaded protocol)."""
    if not isinstance(protocol, Protocol):
        raise TypeError(f"expected a loaded Protocol (protocolkit.rules.load_protocol), "
                        f"got {protocol!r}")
    entry = _MODELS.get(id(protocol))
    if entry is None or entry[0] is not protocol:
        entry = (protocol, _Search(protocol))
        _MODELS[id(protocol)] = entry
    return entry[1]


# =============================================================================================
# Histories
# =============================================================================================


@attrs.frozen(repr=False)
class History:
    """One subject's generated history and the time to evaluate it at.

    Iterating a history gives its events, so ``evaluate(protocol, history, at=history.at)``
    works; :meth:`evaluate` does exactly that. ``description`` says how the history was made
    from the protocol's eligible witness (which criterion it violates, which edges it takes).
    """

    #: The events, in the order they would be recorded in (any order gives the same result).
    events: tuple[Event, ...]
    #: The evaluation time: after every event (at an edge: just before or after a window).
    at: pendulum.DateTime
    #: The protocol the history was generated from.
    protocol: Protocol = attrs.field(eq=False)
    study: str = ""
    subject: str = ""
    #: The site's IANA zone (recorded in ``SubjectRegistered.time_zone``).
    zone: str = "UTC"
    #: The date of study Day 1 the history was laid out from (None: not laid out on days).
    day1: dt.date | None = None
    #: How the history was made, one line per choice.
    description: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def evaluate(self, *, known_at: dt.datetime | None = None) -> Evaluation:
        """``engine.evaluate(self.protocol, self.events, at=self.at, known_at=known_at)``."""
        return evaluate(self.protocol, self.events, at=self.at, known_at=known_at)

    def with_events(self, *events: Event, note: str | None = None) -> History:
        """This history with ``events`` added (recorded after the others)."""
        notes = (*self.description, note) if note else self.description
        return attrs.evolve(self, events=(*self.events, *events), description=notes)

    def without(self, *events: Event, note: str | None = None) -> History:
        """This history without ``events`` (compared by event id)."""
        gone = {e.event_id for e in events}
        notes = (*self.description, note) if note else self.description
        return attrs.evolve(self, events=tuple(e for e in self.events if e.event_id not in gone),
                            description=notes)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis' printer would otherwise walk the attrs fields, the protocol included.
        printer.text(repr(self))

    def __repr__(self) -> str:
        lines = [f"History({self.study} {self.subject}, zone {self.zone}, Day 1 {self.day1}, "
                 f"evaluated at {self.at.isoformat()}"]
        lines += [f"  # {note}" for note in self.description if note]
        for event in self.events:
            lines.append("  " + _event_line(event, self))
        return "\n".join(lines) + "\n)"


def _event_line(event: Event, history: History) -> str:
    occurred = event.occurred_at
    when = occurred.isoformat()
    if history.day1 is not None:
        local = occurred.in_timezone(history.zone)
        offset = (dt.date(local.year, local.month, local.day) - history.day1).days
        day = offset + 1 if offset >= 0 else offset
        when = f"Day {day} {local.strftime('%H:%M:%S')} ({occurred.isoformat()})"
    if event.time_precision is TimePrecision.DAY:
        when += " [date only]"
    body = ", ".join(
        f"{a.name}={_field_text(getattr(event, a.name))}" for a in attrs.fields(type(event))
        if a.name not in ENVELOPE_FIELDS and getattr(event, a.name) is not None)
    lag = event.recorded_at - occurred
    return (f"{event.event_type}({body}) {when} recorded +{_span(int(lag.total_seconds()))}"
            f" id={str(event.event_id)[:8]}")


def _field_text(value: Any) -> str:
    if isinstance(value, Measurement | Quantity):
        return f"'{value}'"
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


def _contexts(model: _Search, subject: str | None,
              zones: Sequence[str] | None) -> SearchStrategy[_Ctx]:
    """Drawn contexts: the site's zone, then Day 1 (sometimes on a date that is an edge there)."""
    choices = list(zones) if zones else [model.zone, *(z for z in ZONES if z != model.zone)]
    subjects = st.just(subject) if subject is not None else st.integers(1, 999).map(
        lambda n: f"S-{n:03d}")
    anywhere = st.integers(0, 3650).map(lambda n: model.base_day1 + dt.timedelta(days=n))

    @st.composite
    def build(draw: st.DrawFn) -> _Ctx:
        zone = draw(st.sampled_from(choices))
        special = model.special_days(zone)
        day1 = draw(anywhere | st.sampled_from(special)) if special else draw(anywhere)
        return _Ctx(day1, zone, draw(subjects), draw(st.integers(0, 59)),
                    draw(st.integers(0, 240)))

    return build()


def _assemble(model: _Search, picks: SearchStrategy[tuple[_Move, ...]], *, intent: str,
              protect: Iterable[str] = (), subject: str | None,
              zones: Sequence[str] | None) -> SearchStrategy[History]:
    contexts = _contexts(model, subject, zones)
    protected = frozenset(protect)

    @st.composite
    def build(draw: st.DrawFn) -> History:
        moves = draw(picks)
        touched = protected.union(*(m.touches for m in moves))
        template = model.witness
        notes = [intent]
        for group, options in model.components:
            if group & touched or len(options) < 2:
                continue
            choice = draw(st.sampled_from(options))
            if choice.edits:
                template = template.apply(choice)
                notes.append(f"varied: {choice.label}")
        for move in moves:
            template = template.apply(move)
            notes.append(move.label)
        return model.render(template, draw(contexts), notes)

    return build()


def _check_zones(zones: Sequence[str] | None) -> None:
    for zone in zones or ():
        try:
            pendulum.timezone(zone)
        except Exception:
            raise EventError(f"unknown time zone {zone!r}", field="zones") from None


def eligible_histories(protocol: Protocol, *, subject: str | None = None,
                       zones: Sequence[str] | None = None) -> SearchStrategy[History]:
    """Histories the protocol finds eligible, with no deviation where the search found none.

    Each is the protocol's *witness* (an eligible subject found once per protocol by searching
    the values its rules compare with) with, for each group of screening facts that no
    criterion reads across, one of the variants checked to keep every criterion satisfied,
    laid out from a drawn Day 1 in a drawn site zone. Shrinks to the witness itself.

    Raises:
        StrategyError: the search found no eligible history for this protocol.
    """
    model = _model(protocol)
    model.require_eligible()
    _check_zones(zones)
    return _assemble(model, st.just(()), intent="eligible witness", subject=subject, zones=zones)


def histories(protocol: Protocol, *, max_changes: int = 3, subject: str | None = None,
              zones: Sequence[str] | None = None) -> SearchStrategy[History]:
    """Histories valid by construction, eligible or not: the witness with up to ``max_changes``.

    Registration and consent come first, then the screening facts inside the protocol's
    screening windows, enrolment, Day 1's doses, timed samples and each endpoint window's
    values. The changes are any of the values the protocol compares with, events removed or
    added, and the edges of :func:`edge_histories`; consent is never moved or removed.
    """
    model = _model(protocol)
    _check_zones(zones)
    by_rule = model.moves_by_rule
    if not by_rule:
        return _assemble(model, st.just(()), intent="witness", subject=subject, zones=zones)
    # A rule first, then a change to what it reads: every rule is probed as often.
    one = st.sampled_from(sorted(by_rule)).flatmap(lambda rule: st.sampled_from(by_rule[rule]))
    picks = st.lists(one, max_size=max_changes, unique_by=lambda m: m.label).map(tuple)
    return _assemble(model, picks, intent="witness with changes", subject=subject, zones=zones)


EDGE_KINDS = ("window", "age", "timing", "screening", "threshold")


def edge_histories(protocol: Protocol, *, kinds: Iterable[str] | None = None,
                   subject: str | None = None,
                   zones: Sequence[str] | None = None) -> SearchStrategy[History]:
    """Histories at the edges the protocol defines, one or two edges at a time.

    ``kinds`` picks among :data:`EDGE_KINDS`:

    - ``window``: an endpoint's value on the day before, the first, the last and the day
      after its window (``protocol.endpoints[*].window``); no value, evaluated in the last
      minute of the window and just after it closed;
    - ``age``: a date of birth exactly N years before consent and a day later, for each age N
      a criterion compares ``years_between(...)`` with (and N + 1);
    - ``timing``: a timed sample exactly at, and one second outside, the bounds of an
      ``elapsed(dose, sample)`` rule; a dose at the sample's instant; the first sample exactly
      at the settling time after Day 1;
    - ``screening``: a screening fact on the first day of its window and the day before;
    - ``threshold``: a result exactly at a threshold it is compared with, and a step either side.
    """
    model = _model(protocol)
    _check_zones(zones)
    wanted = set(EDGE_KINDS if kinds is None else kinds)
    unknown = wanted - set(EDGE_KINDS)
    if unknown:
        raise StrategyError(f"unknown edge kinds {sorted(unknown)}: choose from {EDGE_KINDS}")
    by_kind: dict[str, list[_Move]] = {}
    for move in model.edges:
        if move.kind in wanted:
            by_kind.setdefault(move.kind, []).append(move)
    if not by_kind:
        raise StrategyError(f"{protocol.id}: the protocol defines no edges of kinds "
                            f"{sorted(wanted)} that the derivation can see")
    # A kind first, then an edge of it: ages and timings are probed as often as thresholds.
    kinds_found = [k for k in EDGE_KINDS if k in by_kind]
    one = st.sampled_from(kinds_found).flatmap(lambda kind: st.sampled_from(by_kind[kind]))
    picks = st.lists(one, min_size=1, max_size=2,
                     unique_by=lambda m: m.touches or m.label).map(tuple)
    return _assemble(model, picks, intent="edges", subject=subject, zones=zones)


def violating(protocol: Protocol, criterion_id: str, *, subject: str | None = None,
              zones: Sequence[str] | None = None) -> SearchStrategy[History]:
    """Histories made to fail one criterion: an inclusion not met, or an exclusion met.

    The changes were found by the engine, once, on the witness (a value the criterion compares
    with, a fact removed or moved, an edge); each drawn history is one of them, the ones that
    leave every other criterion satisfied first, combined with the variants of facts the
    criterion does not read. Shrinks to the simplest change.

    Raises:
        RuleError: the protocol has no criterion ``criterion_id``.
        StrategyError: no change found makes it fail (``needs(consent, true)`` can only be
            met or unknown, for instance).
    """
    model = _model(protocol)
    ids = [c.id for c in protocol.criteria]
    if criterion_id not in ids:
        raise RuleError(f"no criterion {criterion_id}", source=protocol.source,
                        suggestion=_closest(criterion_id, ids))
    _check_zones(zones)
    moves = model.violations(criterion_id)
    if not moves:
        kind = next(c.kind for c in protocol.criteria if c.id == criterion_id)
        want = "not met" if kind == "inclusion" else "met"
        raise StrategyError(
            f"{protocol.id}: no history found in which {criterion_id} is {want} (its condition "
            "may only ever be met or unknown, or need facts the derivation cannot see)")
    protect = model.keys_read_by([f"rule:{criterion_id}"])
    return _assemble(model, st.sampled_from(moves).map(lambda m: (m,)),
                     intent=f"violates {criterion_id}", protect=protect, subject=subject,
                     zones=zones)


def triggering(protocol: Protocol, deviation_code: str, *, subject: str | None = None,
               zones: Sequence[str] | None = None) -> SearchStrategy[History]:
    """Histories made to raise one deviation code (``PD-TDM``; several rules may share a code).

    Raises:
        RuleError: no deviation rule reports ``deviation_code``.
        StrategyError: no change found raises it.
    """
    model = _model(protocol)
    codes = sorted({d.code or d.id for d in protocol.deviations})
    if deviation_code not in codes:
        raise RuleError(f"no deviation reports code {deviation_code}", source=protocol.source,
                        suggestion=_closest(deviation_code, codes))
    _check_zones(zones)
    moves = model.triggers(deviation_code)
    if not moves:
        raise StrategyError(f"{protocol.id}: no history found that raises {deviation_code}")
    rules = [f"rule:{d.id}" for d in protocol.deviations if (d.code or d.id) == deviation_code]
    return _assemble(model, st.sampled_from(moves).map(lambda m: (m,)),
                     intent=f"triggers {deviation_code}", protect=model.keys_read_by(rules),
                     subject=subject, zones=zones)


def _closest(name: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(name, choices, n=1)
    return found[0] if found else None


# =============================================================================================
# The same facts, written otherwise
# =============================================================================================

#: Other ways to write a dose or an amount (exact conversions only are used).
_OTHER_UNITS: dict[str, tuple[str, ...]] = {
    "mg": ("ug", "g"), "ug": ("mg", "ng"), "g": ("mg", "kg"), "ng": ("ug",),
    "mL": ("L", "uL"), "L": ("mL",), "mg/kg": ("ug/kg",), "ug/kg": ("mg/kg",),
    "mg/m2": ("ug/m2", "g/m2"), "mg/mL": ("ug/mL", "g/L"), "[iU]": ("k[iU]",),
}


def _exact(value: Fraction) -> Decimal | None:
    """``value`` as a decimal of at most 12 significant digits, when it is one exactly."""
    text = _decimal_text(value) if _terminates(value) else None
    if text is None:
        return None
    number = Decimal(text)
    if len(number.normalize().as_tuple().digits) > 12:
        return None
    return number


def _terminates(value: Fraction) -> bool:
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    return den == 1


def _unit_variants(event: Event) -> list[tuple[str, Any]]:
    """(field, same value in another unit) for each measured value and quantity of ``event``."""
    found: list[tuple[str, Any]] = []
    if event.measured is not None:
        code, field = (getattr(event, n) for n in event.measured)
        analyte = default_catalogue().analytes.get(str(code))
        if field is not None and analyte is not None and \
                field.status is MeasurementStatus.VALID and field.canonical_value is not None:
            for unit in analyte.accepted_units:
                if unit == field.unit:
                    continue
                try:
                    number = _exact(Fraction(field.canonical_value) / analyte.factor_from(unit))
                    if number is None:
                        continue
                    other = default_catalogue().measure(str(code), number, unit)
                except ProtocolKitError:
                    continue
                if other.canonical_value == field.canonical_value and \
                        other.status is MeasurementStatus.VALID:
                    found.append((event.measured[1], other))
    for name in _QUANTITY_FIELDS:
        value = getattr(event, name, None)
        if not isinstance(value, Quantity):
            continue
        for unit in _OTHER_UNITS.get(value.unit, ()):
            factor = parse_unit(value.unit).factor_to(parse_unit(unit))
            number = _exact(Fraction(value.value) * factor)
            if number is not None:
                found.append((name, Quantity(number, unit)))
    return found


def _other_value(event: Event, name: str) -> Any:
    """A different value for field ``name`` in the JSON interchange form, or None."""
    body = event_to_json(event)
    value = body.get(name)
    if name == "occurred_at":
        if event.time_precision is TimePrecision.DAY:
            return None
        return (event.occurred_at.subtract(hours=1)).isoformat()
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        low, high = _INT_RANGES.get((event.event_type, name), (value + 1, value + 1))
        return low if value != low else high
    if isinstance(value, enum.Enum):
        others = [m.value for m in type(value) if m is not value]
        return others[0] if others else None
    if isinstance(value, str) and name not in ("code", "loinc"):
        if (event.event_type, name) in _ENUMS:
            others = [m.value for m in _ENUMS[(event.event_type, name)] if m.value != value]
            return others[0]
        return value + " (typo)"
    if isinstance(value, dict) and "value" in value and "unit" in value:
        return {"value": str(Decimal(str(value["value"])) + 1), "unit": value["unit"]}
    return None


def _json_value(event: Event, name: str) -> Any:
    value = event_to_json(event)[name]
    if isinstance(value, dict) and "value" in value and "unit" in value:
        return {"value": value["value"], "unit": value["unit"]}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts))


@st.composite
def _restoring(draw: st.DrawFn, event: Event, at: pendulum.DateTime) -> list[Event]:
    """Corrections of ``event`` that leave it as it was: a change then its undoing."""
    names = [n for n in ("occurred_at", *_payload_fields(event.event_type))
             if n not in _KEY_FIELDS.get(event.event_type, ())
             and _other_value(event, n) is not None]
    if not names:
        return []
    name = draw(st.sampled_from(names))
    wrong = _other_value(event, name)
    change = EntryCorrected(
        event_id=_id(event.event_id, "wrong", name), study=event.study, subject=event.subject,
        occurred_at=event.recorded_at, recorded_at=event.recorded_at, recorded_by="monitor",
        corrects=event.event_id, changes={name: wrong}, reason="transcription error")
    try:
        apply_correction(event, change)
    except ProtocolKitError:
        return []
    room = max(0, int((at - event.recorded_at).total_seconds()))
    first = event.recorded_at.add(seconds=draw(st.integers(0, room // 2)))
    second = first.add(seconds=draw(st.integers(1, max(1, room - room // 2))))
    second = min(second, at)
    if first >= second:
        return []
    change = attrs.evolve(change, occurred_at=first, recorded_at=first)
    if draw(st.booleans()):
        undo: Event = EntryCorrected(
            event_id=_id(event.event_id, "undo", name), study=event.study, subject=event.subject,
            occurred_at=second, recorded_at=second, recorded_by="monitor",
            corrects=event.event_id, changes={name: _json_value(event, name)},
            reason="correction reverted")
    else:
        undo = EntryRetracted(
            event_id=_id(event.event_id, "undo", name), study=event.study, subject=event.subject,
            occurred_at=second, recorded_at=second, recorded_by="monitor",
            retracts=change.event_id, reason="correction entered in error")
    return [change, undo]


def reexpressed(history: History, *, units: bool = True, zones: bool = True,
                order: bool = True, late: bool = True,
                corrections: bool = True) -> SearchStrategy[History]:
    """The same facts written otherwise: the protocol must judge them exactly as before.

    Each kind of rewriting can be switched off:

    - ``units``: a measured value in another unit its analyte accepts (98 g/L as 9.8 g/dL), a
      dose in another unit (1 mg as 1000 ug); only where the conversion is exact;
    - ``zones``: instants shown in another zone (the same UTC instant; date-only events keep
      theirs, since their date is the one written) and the evaluation time likewise;
    - ``order``: the events in another record order;
    - ``late``: events recorded later (back-dated), still before the evaluation time; never for
      event types whose record time the protocol reads (``known before``, ``.recorded_at``);
    - ``corrections``: a correction to a wrong value followed by one restoring the value (or by
      the retraction of the wrong correction).

    Every choice shrinks to "not rewritten". ``description`` lists what was rewritten.
    """
    model = _model(history.protocol)
    at = history.at
    record_time = model.analysis.record_time

    @st.composite
    def build(draw: st.DrawFn) -> History:
        written: list[Event] = []
        extra: list[Event] = []
        notes: list[str] = []
        for event in history.events:
            new = event
            if units and not isinstance(event, EntryCorrected | EntryRetracted):
                variants = _unit_variants(event)
                if variants and draw(st.booleans()) is True:
                    name, value = draw(st.sampled_from(variants))
                    new = attrs.evolve(new, **{name: value})
                    notes.append(f"{event.event_type} {str(event.event_id)[:8]}: {name} as "
                                 f"{value.value} {value.unit}")
            if zones and draw(st.booleans()):
                zone = draw(st.sampled_from(ZONES))
                occurred = new.occurred_at
                if new.time_precision is TimePrecision.INSTANT:
                    occurred = occurred.in_timezone(zone)
                new = attrs.evolve(new, occurred_at=occurred,
                                   recorded_at=new.recorded_at.in_timezone(zone))
                notes.append(f"{event.event_type} {str(event.event_id)[:8]}: shown in {zone}")
            if late and event.event_type not in record_time and new.recorded_at < at and \
                    not isinstance(event, EntryCorrected | EntryRetracted) and draw(st.booleans()):
                room = int((at - new.recorded_at).total_seconds())
                later = new.recorded_at.add(seconds=draw(st.integers(1, room)))
                new = attrs.evolve(new, recorded_at=later)
                notes.append(f"{event.event_type} {str(event.event_id)[:8]}: recorded "
                             f"{later.isoformat()}")
            if corrections and not isinstance(event, EntryCorrected | EntryRetracted) and \
                    draw(st.integers(0, 3)) == 3:
                fixes = draw(_restoring(new, at))
                if fixes:
                    extra += fixes
                    notes.append(f"{event.event_type} {str(event.event_id)[:8]}: corrected and "
                                 "restored")
            written.append(new)
        everything = written + extra
        if order:
            everything = draw(st.permutations(everything))
        shown_at = at.in_timezone(draw(st.sampled_from(ZONES))) if zones else at
        return attrs.evolve(history, events=tuple(everything), at=shown_at,
                            description=(*history.description, *notes))

    return build()


@st.composite
def _retraction_pair(draw: st.DrawFn, history: History, model: _Search) -> tuple[History, History]:
    targets = [e for e in history.events if not isinstance(e, EntryCorrected | EntryRetracted)]
    start = min((e.occurred_at for e in history.events), default=history.at)
    if not targets or draw(st.booleans()):
        types = [cls for name, cls in EVENT_TYPES.items() if name not in _CORRECTIONS]
        cls = draw(st.sampled_from(types))
        target = draw(_events_of(cls, history.study, history.subject, history.zone,
                                 start=start, end=history.at))
        base = history
        with_target = history.with_events(target)
        note = f"{target.event_type} {str(target.event_id)[:8]} added, then retracted"
    else:
        target = draw(st.sampled_from(targets))
        base = history.without(target)
        with_target = history
        note = f"{target.event_type} {str(target.event_id)[:8]} retracted"
    room = max(0, int((history.at - target.recorded_at).total_seconds()))
    when = target.recorded_at.add(seconds=draw(st.integers(0, room)))
    retraction = EntryRetracted(
        event_id=_id(target.event_id, "retracted"), study=history.study,
        subject=history.subject, occurred_at=when, recorded_at=when, recorded_by="monitor",
        retracts=target.event_id, reason="entered in error")
    return with_target.with_events(retraction, note=note), base


def retractions(history: History) -> SearchStrategy[tuple[History, History]]:
    """Pairs (history with a retracted event, the same history without that event).

    The event retracted is one of the history's, or a new event of any type (drawn like
    :func:`events`, between the first event and the evaluation time). A retraction must
    leave no trace: the two histories must evaluate alike (evidence ids included).
    """
    return _retraction_pair(history, _model(history.protocol))


def unrelated_events(history: History, *, max_size: int = 4) -> SearchStrategy[list[Event]]:
    """Events of ``history``'s subject that no eligibility criterion reads.

    "Unrelated" is read from the protocol: an event type no criterion reads (through its lets
    and sets), or an event outside every set a criterion reads (a dose of another drug, a lab
    with another code). Site registrations (which set the zone) and corrections are never
    drawn. The events fall between the first event and the evaluation time. Adding them must
    never turn an ineligible subject eligible (nor change any criterion).
    """
    model = _model(history.protocol)
    a = model.analysis
    refs = {r for c in a.criteria for r in a.reads(f"rule:{c}")}

    def related(event: Event) -> bool:
        return any(r.type == event.event_type and all(
            _plain_equal(getattr(event, k, None), v) for k, v in r.sig) for r in refs)

    types = [cls for name, cls in EVENT_TYPES.items()
             if name not in _CORRECTIONS | {"SubjectRegistered"}
             and not any(r.type == name and not r.sig for r in refs)]
    if not types:
        return st.just([])
    start = min((e.occurred_at for e in history.events), default=history.at)
    one = st.one_of([_events_of(cls, history.study, history.subject, history.zone,
                                start=start, end=history.at)
                     for cls in types]).filter(lambda e: not related(e))
    return st.lists(one, max_size=max_size)


def _plain_equal(value: Any, pinned: Any) -> bool:
    if isinstance(value, enum.Enum):
        value = value.value
    return bool(value == pinned)


_READY = True
_register_event_types()
