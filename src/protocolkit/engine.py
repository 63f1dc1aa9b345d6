"""The engine: evaluate a protocol against one subject's history, purely and deterministically.

``evaluate(protocol, history, at=..., known_at=...)`` is a function of its arguments only: the
events recorded up to ``known_at`` (default: ``at``), with corrections applied and retractions
removed (D7), ordered by clinical time; ties are broken by event type name and then event id,
never by record order, so the same events in any record order give the same result.
"""

from __future__ import annotations

import bisect
import datetime as dt
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import attrs
import pendulum

from protocolkit.corrections import effective_events
from protocolkit.errors import EventError, RuleEvaluationError
from protocolkit.events import (
    EntryCorrected,
    EntryRetracted,
    Event,
    SubjectRegistered,
    TimePrecision,
)
from protocolkit.rules import Criterion, Deviation, Endpoint, Protocol, Report
from protocolkit.rules._compile import _as_date, _truthy, study_day, study_day_date
from protocolkit.rules._context import Ctx, global_value
from protocolkit.rules._kept import KeptVerdicts, Reads, kept_per_member, note_insert
from protocolkit.rules._values import (
    EventView,
    Evidence,
    Instant,
    Qty,
    Unknown,
    field_value,
    instant_at,
    instant_of,
    utc_of,
)
from protocolkit.store import RecordedEvent
from protocolkit.units import Measurement

__all__ = [
    "OBSERVERS",
    "CriterionResult",
    "DataQuery",
    "DeviationResult",
    "EndpointResult",
    "Evaluation",
    "ReportValue",
    "Session",
    "evaluate",
    "order_key",
]


@attrs.frozen
class CriterionResult:
    """One criterion's verdict: met, not met, unknown or not applicable."""

    id: str
    kind: str
    text: str
    verdict: str
    #: For an unknown verdict: the facts that would decide it.
    missing: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    note: str | None = None
    path: str = ""


@attrs.frozen
class DeviationResult:
    """One protocol deviation with the events that prove it."""

    code: str
    text: str
    category: str
    importance: str
    date: str | None
    study_day: int | None
    evidence: tuple[str, ...]
    path: str = ""


@attrs.frozen
class EndpointResult:
    """An endpoint: the value selected in its window, its status and response."""

    id: str
    text: str
    status: str  # in window | open | missing | unknown | not evaluable | not applicable
    value: str | None = None
    unit: str | None = None
    as_received: str | None = None
    date: str | None = None
    study_day: int | None = None
    window: tuple[str, str] | None = None
    target: str | None = None
    baseline: str | None = None
    response: str | None = None
    missing: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    path: str = ""
    #: Whether the window had closed at the evaluation time (an open window may still change).
    closed: bool = False


@attrs.frozen
class ReportValue:
    """A value the protocol reports (``report`` statements): shown as text, with evidence."""

    name: str
    label: str
    value: str | None
    unit: str | None = None
    date: str | None = None
    missing: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()


@attrs.frozen
class DataQuery:
    """A data problem a monitor must resolve (implausible value, an order that cannot be known)."""

    rule: str | None
    reason: str
    evidence: tuple[str, ...] = ()


@attrs.frozen
class Evaluation:
    """Everything the protocol says about one subject at one evaluation time."""

    protocol: str
    protocol_version: str
    study: str
    subject: str
    evaluated_at: str
    known_at: str
    eligibility: str  # eligible | ineligible | pending
    criteria: tuple[CriterionResult, ...]
    deviations: tuple[DeviationResult, ...]
    endpoints: tuple[EndpointResult, ...]
    data_queries: tuple[DataQuery, ...]
    day1: str | None = None
    reports: tuple[ReportValue, ...] = ()

    def criterion(self, rule_id: str) -> CriterionResult:
        """The result of one criterion by id."""
        return next(c for c in self.criteria if c.id == rule_id)

    def endpoint(self, rule_id: str) -> EndpointResult:
        """The result of one endpoint by id."""
        return next(e for e in self.endpoints if e.id == rule_id)

    def deviation_codes(self) -> list[str]:
        """The codes of the deviations found, in order."""
        return [d.code for d in self.deviations]


#: Callbacks that see every evaluation made (clause coverage records through this).
OBSERVERS: list[Callable[[Evaluation], None]] = []


def order_key(event: Event) -> tuple[dt.datetime, str, str]:
    """Clinical-time order: the UTC instant, then event type, then event id (never record order)."""
    return (event.occurred_at.astimezone(dt.UTC), event.event_type, str(event.event_id))


def evaluate(
    protocol: Protocol,
    history: Iterable[Event | RecordedEvent],
    *,
    at: dt.datetime | None = None,
    known_at: dt.datetime | None = None,
) -> Evaluation:
    """Evaluate ``protocol`` for the subject whose events are ``history``.

    Args:
        protocol: a loaded protocol (:func:`protocolkit.rules.load_protocol`).
        history: one subject's events, in any order.
        at: the evaluation time ("now"; default: the present). A window that has not closed
            by then is open, never missing (D8).
        known_at: count only events recorded up to this time (default: ``at``).
    """
    session = Session(protocol)
    session.add(history)
    return session.evaluate(at=at, known_at=known_at)


class Session:
    """One subject's history, evaluated again as events arrive: what a projection keeps.

    ``Session(protocol)``, then :meth:`add` events (in any order) and :meth:`evaluate` as
    often as needed; each evaluation equals ``evaluate(protocol, every event added so far,
    ...)``. Between evaluations the session keeps the subject's events in clinical order with
    their instants, so an event that comes after all the others (the usual case) is placed in
    constant time; a correction, a retraction, a new registration (its zone dates every event),
    a back-dated event or a different ``known_at`` cut makes the next evaluation order them
    all again.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._events: list[Event] = []
        self._recorded: list[dt.datetime] = []  # each event's recorded_at in UTC
        self._key: tuple[str, str] | None = None
        self._base: _Base | None = None

    @property
    def events(self) -> Sequence[Event]:
        """The events added, in the order they were added."""
        return self._events

    def add(self, events: Iterable[Event | RecordedEvent]) -> None:
        """Add events of this session's subject (any order; each once).

        Raises:
            RuleEvaluationError: an event of another subject (then none is added).
        """
        batch = [item.event if isinstance(item, RecordedEvent) else item for item in events]
        subject = self._key
        for event in batch:
            key = (event.study, event.subject)
            if subject is None:
                subject = key
            elif key != subject:
                raise RuleEvaluationError(
                    f"evaluate() takes one subject's events, got {subject} and {key}")
        self._key = subject
        self._events.extend(batch)
        self._recorded.extend(utc_of(event.recorded_at) for event in batch)

    def evaluate(self, *, at: dt.datetime | None = None,
                 known_at: dt.datetime | None = None) -> Evaluation:
        """The protocol's verdicts on every event added so far (see :func:`evaluate`)."""
        for name, value in (("at", at), ("known_at", known_at)):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise EventError(f"a naive {name} names no instant: give its UTC offset (D1)",
                                 field=name)
        now = pendulum.instance(at) if at is not None else pendulum.now("UTC")
        known = pendulum.instance(known_at) if known_at is not None else now
        base = self.base(utc_of(known))
        ctx = Ctx(by_type=base.by_type, now=instant_of(now, base.zone, TimePrecision.INSTANT),
                  zone=base.zone, kept=base.kept, versions=base.versions, log=base.log)
        study, subject = self._key or ("", "")
        result = _Run(self.protocol, ctx, base, study=study, subject=subject, now=now,
                      known=known).run()
        for observer in OBSERVERS:
            observer(result)
        return result

    def base(self, known: dt.datetime) -> _Base:
        """The events recorded by ``known``, effective and in clinical order, with views."""
        base = self._base
        if base is None or not base.extend(self._events, self._recorded, known):
            base = self._base = _Base.build(self.protocol, self._events, self._recorded, known)
        return base


#: Events that change others (or every event's date): placed only by a full rebuild.
_REORDERING = (EntryCorrected, EntryRetracted, SubjectRegistered)


@attrs.define
class _Base:
    """A session's events as of one ``known_at`` cut: effective, ordered, viewed, indexed."""

    zone: Any
    views: list[EventView]
    by_type: dict[str, list[EventView]]
    by_id: dict[UUID, EventView]
    #: Each measurement implausible for its unit (a data query): its view and the reason,
    #: in clinical order.
    implausible: list[tuple[EventView, str]]
    #: How many of the session's events this covers, and the recorded times that bound
    #: the cut it was made with (the latest included, the earliest left out).
    seen: int
    #: How many of those were recorded by the cut (corrections and retractions included).
    included: int
    latest_in: dt.datetime | None
    earliest_out: dt.datetime | None
    #: The last view's sort key: a new event after it is appended, not sorted in.
    last_key: tuple[dt.datetime, str, int] | None
    #: Filters kept between evaluations (the compiled protocol's), and how many events of
    #: each type ("*": of any) were added since this base was built: what they depend on.
    kept: dict[Any, Any] = attrs.field(factory=dict)
    versions: dict[str, int] = attrs.field(factory=dict)
    #: Every view in the order it was added: what kept results have accounted for.
    log: list[EventView] = attrs.field(factory=list)

    @classmethod
    def build(cls, protocol: Protocol, events: Sequence[Event],
              recorded: Sequence[dt.datetime], known: dt.datetime) -> _Base:
        chosen = [e for e, r in zip(events, recorded, strict=True) if r <= known]
        keyed = _in_clinical_order(effective_events(chosen))
        zone = _zone(protocol, [k[3] for k in keyed if isinstance(k[3], SubjectRegistered)])
        base = cls(zone=zone, views=[], by_type={}, by_id={}, implausible=[], seen=len(events),
                   included=len(chosen),
                   latest_in=max((r for r in recorded if r <= known), default=None),
                   earliest_out=min((r for r in recorded if r > known), default=None),
                   last_key=None)
        for utc, kind, number, event in keyed:
            base._append(event, utc, (utc, kind, number))
        return base

    def extend(self, events: Sequence[Event], recorded: Sequence[dt.datetime],
               known: dt.datetime) -> bool:
        # An event before others is inserted in place (a lab result arriving after later
        # doses): the kept results follow the session's log of added views.
        """Bring this base up to ``events`` under ``known`` in place; False if it cannot."""
        if (self.latest_in is not None and known < self.latest_in) or (
                self.earliest_out is not None and known >= self.earliest_out):
            return False  # the cut moved across an event already seen
        fresh = [(e, r) for e, r in zip(events[self.seen:], recorded[self.seen:], strict=True)]
        late = [r for _, r in fresh if r > known]
        keyed = _in_clinical_order(e for e, r in fresh if r <= known)
        if any(isinstance(k[3], _REORDERING) for k in keyed):
            return False
        for utc, kind, number, event in keyed:
            self._append(event, utc, (utc, kind, number))
        self.seen = len(events)
        self.included += len(keyed)
        if keyed:
            latest = max(r for e, r in fresh if r <= known)
            self.latest_in = latest if self.latest_in is None else max(self.latest_in, latest)
        if late:
            earliest = min(late)
            self.earliest_out = (earliest if self.earliest_out is None
                                 else min(self.earliest_out, earliest))
        return True

    def _append(self, event: Event, utc: dt.datetime, key: tuple[dt.datetime, str, int]) -> None:
        view = EventView(event, instant_at(event.occurred_at, utc, self.zone,
                                           event.time_precision), key)
        same_type = self.by_type.setdefault(view.type, [])
        if self.last_key is None or key > self.last_key:
            self.views.append(view)
            same_type.append(view)
            self.last_key = key
        else:
            bisect.insort(self.views, view, key=_view_key)
            position = bisect.bisect_left(same_type, key, key=_view_key)
            same_type.insert(position, view)
            note_insert(self.kept, same_type, position)
        self.log.append(view)
        self.by_id[event.event_id] = view
        versions = self.versions
        versions[view.type] = versions.get(view.type, 0) + 1
        versions["*"] = versions.get("*", 0) + 1
        for name in _measurement_fields(type(event)):
            value = getattr(event, name)
            if isinstance(value, Measurement) and not value.usable:
                bisect.insort(self.implausible,
                              (view, f"{view.type}: {value} is implausible for its unit"),
                              key=_first_view_key)


def _in_clinical_order(events: Iterable[Event]) -> list[tuple[dt.datetime, str, int, Event]]:
    """Events with their order keys, sorted as order_key sorts them.

    Each UTC instant is computed once; the event id's integer orders as its text does.
    """
    return sorted(((utc_of(e.occurred_at), e.event_type, e.event_id.int, e) for e in events),
                  key=_sort_key)


def _sort_key(key: tuple[dt.datetime, str, int, Event]) -> tuple[dt.datetime, str, int]:
    return key[0], key[1], key[2]


def _view_key(view: EventView) -> Any:
    return view.index


def _first_view_key(pair: tuple[EventView, str]) -> Any:
    return pair[0].index


def _zone(protocol: Protocol, events: Sequence[Event]) -> Any:
    for event in reversed(events):
        if isinstance(event, SubjectRegistered) and event.time_zone:
            return pendulum.timezone(event.time_zone)
    return protocol.tzinfo or pendulum.timezone("UTC")


class _Run:
    def __init__(self, protocol: Protocol, ctx: Ctx, base: _Base, *, study: str,
                 subject: str, now: pendulum.DateTime, known: pendulum.DateTime) -> None:
        self.protocol = protocol
        self.ctx = ctx
        self.base = base
        self.by_id = base.by_id
        self.study, self.subject, self.now, self.known = study, subject, now, known
        self.queries: list[DataQuery] = []
        self.criteria: dict[str, CriterionResult] = {}
        self.endpoints: dict[str, EndpointResult] = {}
        self.selected: dict[str, Any] = {}
        self.overall: str | None = None
        self.window_closed: dt.date | None = None
        ctx.rules = self.lookup

    # --- rule references ---------------------------------------------------------------------

    def lookup(self, rule_id: str, what: str) -> Any:
        if what == "eligibility":
            overall = self.eligibility()
            for result in self.criteria.values():
                if (result.kind, result.verdict) in (("inclusion", "not met"),
                                                     ("exclusion", "met")):
                    self.ctx.touched |= {UUID(i) for i in result.evidence}
            return overall
        for criterion in self.protocol.criteria:
            if criterion.id == rule_id:
                return self.criterion(criterion).verdict
        for endpoint in self.protocol.endpoints:
            if endpoint.id == rule_id:
                outcome = self.endpoint(endpoint)
                # A verdict that reads an endpoint cites its evidence, and its date is the
                # window's close when nothing was found in it.
                self.ctx.touched |= {UUID(i) for i in outcome.evidence}
                if outcome.status == "missing" and outcome.window:
                    self.window_closed = dt.date.fromisoformat(outcome.window[1])
                if what == "status":
                    return outcome.status
                if what == "response":
                    return outcome.response if outcome.response else Unknown(
                        (f"{rule_id} has no response",))
                return self.selected.get(rule_id, Unknown((f"{rule_id} has no value",)))
        raise RuleEvaluationError(f"no rule {rule_id}")

    # --- the evaluation ----------------------------------------------------------------------

    def run(self) -> Evaluation:
        criteria = tuple(self.criterion(c) for c in self.protocol.criteria)
        overall = self.eligibility()
        endpoints = tuple(self.endpoint(e) for e in self.protocol.endpoints)
        deviations = tuple(d for rule in self.protocol.deviations for d in self.deviation(rule))
        for view, reason in self.base.implausible:
            self._query(None, reason, {view.event.event_id})
        day1 = self._day1()
        reports = tuple(self.report(r) for r in self.protocol.reports)
        return Evaluation(
            protocol=self.protocol.id, protocol_version=self.protocol.version,
            study=self.study, subject=self.subject,
            evaluated_at=self.now.isoformat(), known_at=self.known.isoformat(),
            eligibility=overall, criteria=criteria, deviations=deviations,
            endpoints=endpoints, data_queries=tuple(_unique(self.queries)),
            day1=day1.isoformat() if day1 else None, reports=reports,
        )

    def report(self, rule: Report) -> ReportValue:
        self._fresh()
        value = rule.fn(self.ctx, None)
        date = None
        if isinstance(value, EventView):
            date = value.instant.local_date.isoformat()
            value = _result(value, self.ctx)
        if isinstance(value, Unknown):
            return ReportValue(rule.name, rule.label, None, missing=value.reasons,
                               evidence=self._evidence())
        if isinstance(value, bool):
            shown: tuple[str | None, str | None] = ("yes" if value else "no", None)
        elif isinstance(value, dt.date):
            shown = (value.isoformat(), None)
        else:
            shown = _shown(value)
        if date is None and self.ctx.touched and isinstance(value, Qty):
            last = max((self.by_id[i] for i in self.ctx.touched if i in self.by_id),
                       key=lambda v: v.index)
            date = last.instant.local_date.isoformat()
        return ReportValue(rule.name, rule.label, shown[0], shown[1], date,
                           evidence=self._evidence())

    def _fresh(self) -> None:
        self.ctx.touched = Evidence()
        self.ctx.locals = {}

    def _evidence(self, extra: Iterable[UUID] = ()) -> tuple[str, ...]:
        ids = set(self.ctx.touched) | set(extra)
        ordered = sorted((self.by_id[i] for i in ids if i in self.by_id), key=lambda v: v.index)
        return tuple(str(v.event.event_id) for v in ordered)

    def _query(self, rule: str | None, reason: str, evidence: Iterable[UUID] = ()) -> None:
        ids = sorted(str(i) for i in evidence)
        self.queries.append(DataQuery(rule, reason, tuple(ids)))

    def _note_unknown(self, rule: str, value: Unknown) -> None:
        if value.query:
            for reason in value.reasons:
                self._query(rule, reason, self.ctx.touched)

    def criterion(self, rule: Criterion) -> CriterionResult:
        if rule.id in self.criteria:
            return self.criteria[rule.id]
        self._fresh()
        verdict, note = "met", None
        missing: tuple[str, ...] = ()
        applies = _truthy(rule.applies(self.ctx, None)) if rule.applies else True
        if applies is False:
            verdict = "not applicable"
        elif isinstance(applies, Unknown):
            verdict, missing = "unknown", applies.reasons
            self._note_unknown(rule.id, applies)
        else:
            met = _truthy(rule.met(self.ctx, None))
            if isinstance(met, Unknown):
                self._note_unknown(rule.id, met)
                if rule.unknown_as is not None:
                    verdict, note = rule.unknown_as
                else:
                    verdict, missing = "unknown", met.reasons
            else:
                verdict = "met" if met else "not met"
        result = CriterionResult(rule.id, rule.kind, rule.text, verdict, tuple(missing),
                                 self._evidence(), note, rule.path)
        self.criteria[rule.id] = result
        return result

    def eligibility(self) -> str:
        if self.overall is not None:
            return self.overall
        results = [self.criterion(c) for c in self.protocol.criteria]
        failed = any(
            (r.kind == "inclusion" and r.verdict == "not met")
            or (r.kind == "exclusion" and r.verdict == "met") for r in results
        )
        if failed:
            self.overall = "ineligible"
        elif all(r.verdict in ("met", "not applicable") if r.kind == "inclusion"
                 else r.verdict in ("not met", "not applicable") for r in results):
            self.overall = "eligible"
        else:
            self.overall = "pending"
        return self.overall

    def deviation(self, rule: Deviation) -> list[DeviationResult]:
        self._fresh()
        if rule.applies is not None:
            applies = _truthy(rule.applies(self.ctx, None))
            if applies is not True:
                if isinstance(applies, Unknown):
                    self._note_unknown(rule.id, applies)
                return []
        if rule.for_each is None:
            return self._occurrences(rule, None)
        members = rule.for_each(self.ctx, None).items
        if rule.kept is not None and self.ctx.kept is not None:
            return self._kept_occurrences(rule, rule.kept, members)
        return [d for view in list(members) for d in self._occurrences(rule, view)]

    def _kept_occurrences(self, rule: Deviation, reads: Reads,
                          members: list[EventView]) -> list[DeviationResult]:
        """Each member's occurrences, kept between a session's evaluations (see ``Reads``).

        Their study days also depend on Day 1; the data queries they raised are raised again.
        """
        state = kept_per_member(self.ctx, ("deviation", rule.id),
                                (reads.stamp(self.ctx), self._day1()), members)
        found: list[DeviationResult] = []
        for view in members:
            entry = state.given.get(id(view))
            if entry is None:
                mark = len(self.queries)
                entry = state.given[id(view)] = (self._occurrences(rule, view),
                                                 self.queries[mark:])
            else:
                self.queries.extend(entry[1])
            found.extend(entry[0])
        return found

    def _occurrences(self, rule: Deviation, view: EventView | None) -> list[DeviationResult]:
        """The deviation's occurrences for one member (or for the subject, with no member)."""
        self._fresh()
        self.window_closed = None
        fired = rule.fires(self.ctx, view)
        if isinstance(fired, Unknown):
            self._note_unknown(rule.id, fired)
            return []
        runs: list[list[EventView]]
        if isinstance(fired, list) and fired and isinstance(fired[0], list):
            runs = fired
        elif _truthy(fired) is True:
            runs = [[view] if view is not None else []]
        else:
            return []
        # A run of `consecutive` is its own evidence; any other firing cites what its
        # condition used.
        if fired is not runs:
            return [self._occurrence(rule, run, set(self.ctx.touched)) for run in runs]
        if (view is None and rule.kept is not None and self.ctx.kept is not None
                and self.window_closed is None):
            return self._kept_runs(rule, rule.kept, runs)
        return [self._occurrence(rule, run, set()) for run in runs]

    def _kept_runs(self, rule: Deviation, reads: Reads,
                   runs: list[list[EventView]]) -> list[DeviationResult]:
        """Each run's occurrence, kept while what `important when` reads and Day 1 stand."""
        kept = self.ctx.kept
        assert kept is not None
        stamp = (reads.stamp(self.ctx), self._day1())
        state: KeptVerdicts | None = kept.get(("runs", rule.id))
        if state is None or state.stamp != stamp:
            state = kept[("runs", rule.id)] = KeptVerdicts(stamp)
        given: dict[Any, DeviationResult] = {}
        found = []
        for run in runs:
            key = tuple(id(v) for v in run)  # the views are the session's: ids are stable
            result = state.given.get(key) or self._occurrence(rule, run, set())
            given[key] = result
            found.append(result)
        state.given = given  # only this evaluation's runs are kept
        return found

    def _occurrence(self, rule: Deviation, run: list[EventView],
                    touched: set[UUID]) -> DeviationResult:
        ids = touched | {v.event.event_id for v in run}
        importance = rule.importance
        if rule.important is not None:
            self.ctx.locals = {"occurrence": run}
            anchor = run[-1] if run else None
            if _truthy(rule.important(self.ctx, anchor)) is True:
                importance = "important"
        self.ctx.touched = Evidence(ids)
        evidence = self._evidence()
        last = max((self.by_id[UUID(i)] for i in evidence), key=lambda v: v.index, default=None)
        date = last.instant.local_date if last else None
        if self.window_closed is not None and (date is None or self.window_closed > date):
            date = self.window_closed  # an endpoint found missing: when its window closed
        day1 = self._day1()
        day = study_day(date, day1) if date and day1 else None
        return DeviationResult(rule.code or rule.id, rule.text, rule.category, importance,
                               date.isoformat() if date else None, day, evidence, rule.path)

    def _day1(self) -> dt.date | None:
        name = self.protocol.study_day_anchor
        if name is None or name not in self.protocol.globals:
            return None
        saved = self.ctx.touched.copy()
        value = global_value(self.ctx, self.protocol.globals[name])
        self.ctx.touched = saved
        day = _as_date(value)
        return day if isinstance(day, dt.date) else None

    def endpoint(self, rule: Endpoint) -> EndpointResult:
        if rule.id in self.endpoints:
            return self.endpoints[rule.id]
        saved_touched, saved_locals = self.ctx.touched, self.ctx.locals
        self._fresh()
        try:
            result = self._endpoint(rule)
        finally:
            self.ctx.touched, self.ctx.locals = saved_touched, saved_locals
        self.endpoints[rule.id] = result
        return result

    def _endpoint(self, rule: Endpoint) -> EndpointResult:
        closed = False

        def done(status: str, **kw: Any) -> EndpointResult:
            return EndpointResult(rule.id, rule.text, status, path=rule.path,
                                  evidence=self._evidence(), closed=closed, **kw)

        if rule.applies is not None:
            applies = _truthy(rule.applies(self.ctx, None))
            if applies is False:
                return done("not applicable")
            if isinstance(applies, Unknown):
                return done("unknown", missing=applies.reasons)
        anchor_value = global_value(self.ctx, self.protocol.globals[rule.anchor])
        if isinstance(anchor_value, Unknown):
            return done("not applicable", missing=anchor_value.reasons)
        lo, hi = (study_day_date(anchor_value, d) for d in rule.window)
        target = study_day_date(anchor_value, rule.target)
        day1 = _as_date(anchor_value)
        window = (lo.isoformat(), hi.isoformat())
        closed = self.ctx.now.local_date > hi
        # The candidates are not evidence; the value selected (and what its rules read) is.
        saved, self.ctx.touched = self.ctx.touched, Evidence()
        candidates = [v for v in rule.values(self.ctx, None).items
                      if lo <= v.instant.local_date <= hi]
        self.ctx.touched = saved
        usable = [v for v in candidates if not isinstance(_result(v, self.ctx), Unknown)]
        if not usable:
            if candidates:
                self.ctx.touched |= {v.event.event_id for v in candidates}
                self._query(rule.id, "only implausible values in the window",
                            self.ctx.touched)
                return done("unknown", window=window, target=target.isoformat(),
                            missing=("a plausible value in the window",))
            if self.ctx.now.local_date <= hi:
                return done("open", window=window, target=target.isoformat())
            return done("missing", window=window, target=target.isoformat(), response="missing")
        chosen = select_closest(usable, target, later=rule.ties == "later")
        self.ctx.touch(chosen)
        value = _result(chosen, self.ctx)
        self.selected[rule.id] = chosen
        self.ctx.locals["value"] = value
        baseline_text = None
        if rule.baseline is not None:
            base = rule.baseline(self.ctx, chosen)
            if isinstance(base, EventView):
                base = _result(base, self.ctx)
            self.ctx.locals["baseline"] = base
            baseline_text = base.shown() if isinstance(base, Qty) else None
        status, response = "in window", rule.default
        missing: tuple[str, ...] = ()
        if rule.evaluable is not None:
            ok = _truthy(rule.evaluable(self.ctx, chosen))
            if ok is False:
                status, response = "not evaluable", "not evaluable"
        if status == "in window":
            for category, condition in rule.responses:
                verdict = _truthy(condition(self.ctx, chosen))
                if verdict is True:
                    response = category
                    break
                if isinstance(verdict, Unknown):
                    response, missing = "pending", verdict.reasons
                    self._note_unknown(rule.id, verdict)
                    break
        measurement = getattr(chosen.event, "result", None)
        as_received = f"{measurement.value} {measurement.unit}" if isinstance(
            measurement, Measurement) else None
        shown = _shown(value)
        return done(
            status, value=shown[0], unit=shown[1], as_received=as_received,
            date=chosen.instant.local_date.isoformat(),
            study_day=study_day(chosen.instant.local_date, day1) if isinstance(day1, dt.date)
            else None,
            window=window, target=target.isoformat(), baseline=baseline_text,
            response=response, missing=tuple(missing),
        )


def _measurement_fields(kind: type[Event]) -> tuple[str, ...]:
    """The fields of an event class that can hold a measurement (checked for plausibility)."""
    names = _MEASUREMENT_FIELDS.get(kind)
    if names is None:
        hints = typing.get_type_hints(kind)
        names = _MEASUREMENT_FIELDS[kind] = tuple(
            f.name for f in attrs.fields(kind)
            if Measurement in (hints[f.name], *typing.get_args(hints[f.name])))
    return names


_MEASUREMENT_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def select_closest(views: Sequence[EventView], target: dt.date, *, later: bool) -> EventView:
    """The view closest to ``target`` (D4).

    Nearest date first; a tie goes later (or earlier); on the same date the later (or
    earlier) collection time, then clinical order.
    """
    if later:
        return max(views, key=lambda v: (-abs(_offset(v, target)), _offset(v, target),
                                         v.instant.utc, v.index))
    return min(views, key=lambda v: (abs(_offset(v, target)), _offset(v, target),
                                     v.instant.utc, v.index))


def _offset(view: EventView, target: dt.date) -> int:
    return (view.instant.local_date - target).days


def _result(view: EventView, ctx: Ctx) -> Any:
    if hasattr(view.event, "result"):
        return field_value(view, "result", ctx.zone)
    return view.instant


def _shown(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, Qty):
        number = value.in_unit(value.unit) if value.unit != "1" else value.base
        text = str(number.numerator) if number.denominator == 1 else f"{float(number):.6g}"
        return text, (None if value.unit == "1" else value.unit)
    if isinstance(value, Instant):
        return value.shown(), None
    return (None, None) if value is None else (str(value), None)


def _unique(queries: list[DataQuery]) -> list[DataQuery]:
    seen: dict[tuple[str | None, str], DataQuery] = {}
    for query in queries:
        seen.setdefault((query.rule, query.reason), query)
    return list(seen.values())


