"""Projections: the current state of every subject and of the study, persisted beside the log.

A :class:`Projector` reads the global log after its tracked position, re-evaluates only the
subjects the new events touch, and writes their state rows and the new position in one
transaction: the projection is never ahead of, or inconsistent with, its position, and
processing an event twice changes nothing. Each subject's decoded events are kept in memory
once read, so a new event costs one evaluation of that subject, not a read of its history
from the store or of any other subject. The study state is computed from the subject rows.

``eventsourcing``'s ``ProjectionRunner`` needs a recorder subscription that SQLite lacks; this
catch-up loop works the same on SQLite and PostgreSQL (see docs/projections.md).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import pendulum

from protocolkit.corrections import effective_events
from protocolkit.engine import Evaluation, Session, order_key
from protocolkit.errors import ProtocolKitError
from protocolkit.events import (
    ConsentWithdrawn,
    DoseAdministered,
    DoseChanged,
    Event,
    RegimenPrescribed,
    SubjectEnrolled,
    SubjectRegistered,
    SubjectWithdrawn,
)
from protocolkit.rules import Protocol
from protocolkit.rules._values import utc_of
from protocolkit.store import EventStore

__all__ = [
    "ProjectionError",
    "Projector",
    "StudyState",
    "SubjectState",
    "study_state",
    "subject_state",
]


class ProjectionError(ProtocolKitError):
    """A projection cannot be read or written."""

    exit_code = 74


@attrs.frozen
class SubjectState:
    """One subject's current state, derived from its evaluation and its events."""

    study: str
    subject: str
    site: str | None
    #: screening, eligible, ineligible, pending, enrolled, on treatment, completed, withdrawn
    status: str
    eligibility: str
    missing: tuple[str, ...]
    regimen: str | None
    last_dose: str | None
    reports: dict[str, Any]
    open_deviations: tuple[str, ...]
    next_window: dict[str, Any] | None
    data_queries: tuple[str, ...]
    evaluated_at: str
    events: int


def subject_state(evaluation: Evaluation, events: Sequence[Event]) -> SubjectState:
    """The state of a subject from its evaluation and its (recorded) events."""
    current = sorted(effective_events(events), key=order_key)
    by_type: dict[str, list[tuple[int, Event]]] = {}
    for index, event in enumerate(current):
        by_type.setdefault(event.event_type, []).append((index, event))
    return _state(evaluation, by_type, len(events))


def _state(evaluation: Evaluation, by_type: Mapping[str, Sequence[Any]],
           count: int) -> SubjectState:
    """The state from the evaluation and the subject's events by type, in clinical order.

    ``by_type`` lists, per event type name, ``(index, event)`` pairs or engine views (both
    give the clinical position and the event), so that a session's lists serve unchanged.
    """

    def latest(*kinds: type[Event]) -> Event | None:
        found = [_placed(by_type[k.__name__][-1]) for k in kinds if by_type.get(k.__name__)]
        return max(found, key=lambda pair: pair[0])[1] if found else None

    site_event = latest(SubjectRegistered)
    site = site_event.site if isinstance(site_event, SubjectRegistered) else None
    regimen_event = latest(RegimenPrescribed, DoseChanged)
    regimen = (f"{regimen_event.drug} {regimen_event.dose} {regimen_event.frequency}"
               if isinstance(regimen_event, RegimenPrescribed | DoseChanged) else None)
    last_dose = latest(DoseAdministered)
    withdrawn = latest(SubjectWithdrawn, ConsentWithdrawn) is not None
    dosed = last_dose is not None
    enrolled = latest(SubjectEnrolled) is not None
    applicable = [p for p in evaluation.endpoints if p.status != "not applicable"]
    if withdrawn and (dosed or enrolled):
        status = "withdrawn"  # a screen failure's withdrawal leaves it ineligible or pending
    elif dosed and applicable and all(p.closed for p in applicable):
        status = "completed"
    elif dosed:
        status = "on treatment"
    elif enrolled:
        status = "enrolled"
    elif all(c.verdict == "unknown" for c in evaluation.criteria):
        status = "screening"
    else:
        status = evaluation.eligibility
    missing = tuple(f"{c.id}: {'; '.join(c.missing)}" for c in evaluation.criteria
                    if c.verdict == "unknown")
    upcoming = sorted((p for p in evaluation.endpoints if p.window and not p.closed),
                      key=lambda p: (p.window or ("", ""))[0])
    next_window = None
    if upcoming:
        p = upcoming[0]
        assert p.window is not None
        next_window = {"endpoint": p.id, "from": p.window[0], "to": p.window[1],
                       "target": p.target, "selected": p.value is not None}
    return SubjectState(
        study=evaluation.study, subject=evaluation.subject, site=site, status=status,
        eligibility=evaluation.eligibility, missing=missing, regimen=regimen,
        last_dose=last_dose.occurred_at.isoformat() if last_dose else None,
        reports={r.name: {"value": r.value, "unit": r.unit, "date": r.date}
                 for r in evaluation.reports},
        open_deviations=tuple(f"{d.code} ({d.importance})" for d in evaluation.deviations),
        next_window=next_window,
        data_queries=tuple(f"{q.rule or '-'}: {q.reason}" for q in evaluation.data_queries),
        evaluated_at=evaluation.evaluated_at, events=count,
    )


def _placed(item: Any) -> tuple[int, Event]:
    if isinstance(item, tuple):
        return item[0], item[1]
    return item.index, item.event  # an engine view


@attrs.frozen
class StudyState:
    """The study at a glance: enrolment, the screening funnel, deviations, completeness."""

    study: str
    target: int | None
    enrolled: int
    screened: int
    funnel: dict[str, int]
    ineligible_by: dict[str, int]
    pending_on: dict[str, int]
    deviations_by_code: dict[str, int]
    deviations_by_category: dict[str, int]
    deviations_by_importance: dict[str, int]
    endpoints: dict[str, dict[str, int]]
    sites: dict[str, dict[str, int]]


def study_state(protocol: Protocol, rows: Iterable[tuple[SubjectState, Evaluation]]
                ) -> StudyState:
    """Aggregate subject states and evaluations into the study state."""
    funnel: Counter[str] = Counter()
    status_counts: Counter[str] = Counter()
    ineligible_by: Counter[str] = Counter()
    pending_on: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_importance: Counter[str] = Counter()
    endpoints: dict[str, Counter[str]] = {}
    sites: dict[str, Counter[str]] = {}
    screened = enrolled = 0
    for state, evaluation in rows:
        screened += 1
        funnel[evaluation.eligibility] += 1
        status_counts[state.status] += 1
        if state.status in ("enrolled", "on treatment", "completed") or (
            state.status == "withdrawn" and state.last_dose is not None
        ):
            enrolled += 1
        for c in evaluation.criteria:
            if evaluation.eligibility == "ineligible" and (c.kind, c.verdict) in (
                ("inclusion", "not met"), ("exclusion", "met")
            ):
                ineligible_by[c.id] += 1
            if evaluation.eligibility == "pending" and c.verdict == "unknown":
                pending_on[c.id] += 1
        for d in evaluation.deviations:
            by_code[d.code] += 1
            by_category[d.category] += 1
            by_importance[d.importance] += 1
        for p in evaluation.endpoints:
            endpoints.setdefault(p.id, Counter())[p.status] += 1
        site = sites.setdefault(state.site or "(no site)", Counter())
        site["screened"] += 1
        site[state.status] += 1
    target = protocol.parameters.get("target_subjects")
    return StudyState(
        study=protocol.id,
        target=int(target.base) if target is not None and hasattr(target, "base") else None,
        enrolled=enrolled, screened=screened,
        funnel={**dict(sorted(funnel.items())),
                **{f"status: {k}": v for k, v in sorted(status_counts.items())}},
        ineligible_by=dict(sorted(ineligible_by.items())),
        pending_on=dict(sorted(pending_on.items())),
        deviations_by_code=dict(sorted(by_code.items())),
        deviations_by_category=dict(sorted(by_category.items())),
        deviations_by_importance=dict(sorted(by_importance.items())),
        endpoints={k: dict(sorted(v.items())) for k, v in sorted(endpoints.items())},
        sites={k: dict(sorted(v.items())) for k, v in sorted(sites.items())},
    )


class _Tables:
    """The projection's two tables, in the store's own database (SQLite or PostgreSQL)."""

    def __init__(self, store: EventStore, name: str) -> None:
        self.store = store
        self.kind = store.location.kind
        prefix = store.location.name
        self.rows = f"{prefix}_projection_subjects"
        self.position = f"{prefix}_projection_position"
        self.name = name
        self.mark = "?" if self.kind == "sqlite" else "%s"
        datastore = store.recorder.datastore  # type: ignore[attr-defined]
        self.datastore = datastore
        if not self._has_versions():
            # Made before rows kept their subject's version: derived data, so start again.
            with datastore.transaction(commit=True) as c:
                c.execute(f"DROP TABLE IF EXISTS {self.rows}")
                c.execute(f"DROP TABLE IF EXISTS {self.position}")
        with datastore.transaction(commit=True) as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {self.rows} (projection TEXT NOT NULL, "
                      "study TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL, "
                      "evaluation TEXT NOT NULL, version BIGINT NOT NULL, "
                      "PRIMARY KEY (projection, study, subject))")
            c.execute(f"CREATE TABLE IF NOT EXISTS {self.position} (projection TEXT PRIMARY KEY,"
                      " position BIGINT NOT NULL, protocol TEXT NOT NULL)")

    def _has_versions(self) -> bool:
        """Whether the rows table is absent or has its ``version`` column."""
        with self.datastore.transaction(commit=False) as c:
            if self.kind == "sqlite":
                c.execute(f"PRAGMA table_info({self.rows})")
                columns = [r[1] for r in c.fetchall()]
            else:
                c.execute("SELECT column_name FROM information_schema.columns "
                          "WHERE table_schema = current_schema() AND table_name = %s",
                          (self.rows,))
                columns = [r["column_name"] for r in c.fetchall()]
        return not columns or "version" in columns

    def read_position(self) -> tuple[int, str | None]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT position, protocol FROM {self.position} WHERE projection = "
                      f"{self.mark}", (self.name,))
            row = c.fetchone()
        if row is None:
            return 0, None
        return int(row[0] if self.kind == "sqlite" else row["position"]), (
            row[1] if self.kind == "sqlite" else row["protocol"])

    def write(self, rows: list[tuple[str, str, str, str, int]], position: int, digest: str,
              fail_before_commit: bool = False) -> None:
        """Write subject rows and the position in ONE transaction (all or nothing)."""
        m = self.mark
        with self.datastore.transaction(commit=True) as c:
            for study, subject, state, evaluation, version in rows:
                c.execute(
                    f"INSERT INTO {self.rows} VALUES ({m},{m},{m},{m},{m},{m}) ON CONFLICT "
                    "(projection, study, subject) DO UPDATE SET state = excluded.state, "
                    "evaluation = excluded.evaluation, version = excluded.version",
                    (self.name, study, subject, state, evaluation, version),
                )
            c.execute(
                f"INSERT INTO {self.position} VALUES ({m},{m},{m}) ON CONFLICT (projection) "
                "DO UPDATE SET position = excluded.position, protocol = excluded.protocol",
                (self.name, position, digest),
            )
            if fail_before_commit:  # for the crash tests: nothing above may survive
                raise ProjectionError("simulated crash before commit")

    def read_rows(self, study: str | None = None, subject: str | None = None
                  ) -> list[tuple[str, str]]:
        query = f"SELECT state, evaluation FROM {self.rows} WHERE projection = {self.mark}"
        params: list[str] = [self.name]
        if study is not None:
            query += f" AND study = {self.mark}"
            params.append(study)
        if subject is not None:
            query += f" AND subject = {self.mark}"
            params.append(subject)
        query += " ORDER BY study, subject"
        with self.datastore.transaction(commit=False) as c:
            c.execute(query, params)
            rows = c.fetchall()
        if self.kind == "sqlite":
            return [(r[0], r[1]) for r in rows]
        return [(r["state"], r["evaluation"]) for r in rows]

    def read_versions(self, study: str) -> dict[tuple[str, str], int]:
        """Each subject's version its row was computed at."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT subject, version FROM {self.rows} WHERE projection = {self.mark}"
                      f" AND study = {self.mark}", (self.name, study))
            rows = c.fetchall()
        if self.kind == "sqlite":
            return {(study, r[0]): int(r[1]) for r in rows}
        return {(study, r["subject"]): int(r["version"]) for r in rows}

    def reset(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.rows} WHERE projection = {self.mark}", (self.name,))
            c.execute(f"DELETE FROM {self.position} WHERE projection = {self.mark}",
                      (self.name,))


class Projector:
    """Keeps subject and study state current from the log, incrementally.

    Args:
        store: the event store (its database also holds the projection tables).
        protocol: the protocol to evaluate.
        at: the evaluation time (default: the present at each catch-up).
        name: the projection's name (several may coexist, e.g. per protocol version).
        max_sessions: how many subjects' sessions to keep in memory (default: all). A
            session costs about 1.4 kB per event; the least recently used is dropped
            first and read again from the store when its subject next changes.
    """

    def __init__(self, store: EventStore, protocol: Protocol, *,
                 at: dt.datetime | None = None, name: str = "state",
                 max_sessions: int | None = None) -> None:
        if max_sessions is not None and max_sessions < 1:
            raise ProjectionError(f"max_sessions must be at least 1, not {max_sessions}")
        self.store = store
        self.protocol = protocol
        self.at = at
        self.max_sessions = max_sessions
        self.tables = _Tables(store, name)
        # One engine session per subject: its events, kept in clinical order between
        # catch-ups, so a new event costs an evaluation, not a read or a sort of the history.
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        _, digest = self.tables.read_position()
        if digest is not None and digest != protocol.digest:
            # The protocol changed: the stored states are for another text; rebuild.
            self.tables.reset()

    @property
    def position(self) -> int:
        """The last log position the persisted projection has applied."""
        return self.tables.read_position()[0]

    def catch_up(self, *, replay_from: int | None = None, refresh: bool = False,
                 fail_before_commit: bool = False) -> int:
        """Apply every event after the tracked position; return how many were read.

        ``replay_from`` re-applies events from an earlier position (repair, or to show that
        applying an event twice changes nothing). ``refresh`` also re-evaluates every other
        subject at the evaluation time (windows close as time passes), each at the version
        its row holds, so no row is ever ahead of the position written with it.
        """
        after = self.position if replay_from is None else replay_from
        read = 0
        # Collect first, evaluate each touched subject once (not once per page of the log),
        # then write the rows and the new position in one transaction.
        touched: dict[tuple[str, str], int] = {}
        last = after
        for page in self.store.pages(after=after):
            for recorded in page:
                key = (recorded.event.study, recorded.event.subject)
                if key[0] != self.protocol.id:
                    continue
                session = self._sessions.get(key)
                # Versions make this idempotent: an event already held is never added twice.
                if session is not None and recorded.version == len(session.events) + 1:
                    session.add([recorded.event])
                touched[key] = recorded.version
            read += len(page)
            last = page[-1].position or last
        if refresh:
            for key, version in self.tables.read_versions(self.protocol.id).items():
                touched.setdefault(key, version)
        if touched:
            rows = [self._row(key, version) for key, version in touched.items()]
            self.tables.write(rows, last, self.protocol.digest, fail_before_commit)
        return read

    def refresh(self) -> int:
        """Catch up and re-evaluate every subject at the evaluation time, in one pass."""
        return self.catch_up(refresh=True)

    def _session(self, key: tuple[str, str], version: int) -> Session:
        """The subject's session holding exactly its events up to ``version``."""
        session = self._sessions.get(key)
        if session is None or len(session.events) < version:
            session = Session(self.protocol)
            session.add(r.event for r in self.store.history(*key) if r.version <= version)
            self._sessions[key] = session
        self._sessions.move_to_end(key)
        if self.max_sessions is not None:
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        if len(session.events) > version:
            # Held beyond the version (a catch-up that failed to commit): evaluate exactly
            # what the position covers; the next catch-up uses the whole session again.
            exact = Session(self.protocol)
            exact.add(session.events[:version])
            return exact
        return session

    def _row(self, key: tuple[str, str], version: int) -> tuple[str, str, str, str, int]:
        session = self._session(key, version)
        at = self.at if self.at is not None else pendulum.now("UTC")
        evaluation = session.evaluate(at=at)
        base = session.base(utc_of(at))
        state = _state(evaluation, base.by_type, base.included)
        return (key[0], key[1], _dumps(attrs.asdict(state)), _dumps(attrs.asdict(evaluation)),
                version)

    def subjects(self, subject: str | None = None) -> list[SubjectState]:
        """The persisted subject states (catch up first to be current)."""
        return [SubjectState(**_loads(state)) for state, _ in
                self.tables.read_rows(self.protocol.id, subject)]

    def evaluations(self) -> list[Evaluation]:
        """The persisted evaluations behind the subject states."""
        return [_evaluation(_loads(ev)) for _, ev in self.tables.read_rows(self.protocol.id)]

    def study(self) -> StudyState:
        """The study state from the persisted subject rows."""
        rows = self.tables.read_rows(self.protocol.id)
        return study_state(self.protocol, [
            (SubjectState(**_loads(s)), _evaluation(_loads(e))) for s, e in rows
        ])


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _loads(text: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(text)
    return {k: tuple(v) if isinstance(v, list) and k != "reports" else v
            for k, v in data.items()}


def _evaluation(data: dict[str, Any]) -> Evaluation:
    from protocolkit.engine import (  # noqa: PLC0415
        CriterionResult,
        DataQuery,
        DeviationResult,
        EndpointResult,
        ReportValue,
    )

    def build(cls: Any, item: dict[str, Any]) -> Any:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.items()})

    return Evaluation(**{
        **data,
        "criteria": tuple(build(CriterionResult, c) for c in data["criteria"]),
        "deviations": tuple(build(DeviationResult, d) for d in data["deviations"]),
        "endpoints": tuple(build(EndpointResult, p) for p in data["endpoints"]),
        "data_queries": tuple(build(DataQuery, q) for q in data["data_queries"]),
        "reports": tuple(build(ReportValue, r) for r in data["reports"]),
    })


def render_states(states: Sequence[SubjectState], *, detailed: bool = False) -> str:
    """Subject states as a table (or, for one subject, every field)."""
    if detailed and len(states) == 1:
        s = states[0]
        lines = [f"{s.study} / {s.subject} (site {s.site or '-'}), as of {s.evaluated_at}",
                 f"  status: {s.status} (eligibility: {s.eligibility})"]
        for item in s.missing:
            lines.append(f"  pending on {item}")
        lines.append(f"  regimen: {s.regimen or '-'}; last dose: {s.last_dose or '-'}")
        for name, value in s.reports.items():
            shown = f"{value['value']} {value['unit'] or ''}".strip() if value["value"] else "-"
            lines.append(f"  {name}: {shown}" + (f" ({value['date']})" if value["date"] else ""))
        lines.append(f"  open deviations: {', '.join(s.open_deviations) or 'none'}")
        if s.next_window:
            w = s.next_window
            lines.append(f"  next window: {w['endpoint']} {w['from']}..{w['to']} (target "
                         f"{w['target']}), value selected: {'yes' if w['selected'] else 'no'}")
        for query in s.data_queries:
            lines.append(f"  data query: {query}")
        return "\n".join(lines)
    header = ("subject", "site", "status", "deviations", "next window", "queries")
    rows = [(s.subject, s.site or "-", s.status,
             ", ".join(d.split(" ")[0] for d in s.open_deviations) or "-",
             f"{s.next_window['endpoint']} {s.next_window['from']}" if s.next_window else "-",
             str(len(s.data_queries))) for s in states]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
    return "\n".join(out)


def render_study(state: StudyState) -> str:
    """The study state as readable text."""
    target = f" of {state.target}" if state.target is not None else ""
    lines = [f"{state.study}: {state.enrolled}{target} enrolled, {state.screened} screened"]

    def block(title: str, counts: dict[str, Any]) -> None:
        if counts:
            lines.append(f"  {title}:")
            lines.extend(f"    {k}: {v}" for k, v in counts.items())

    block("screening funnel", state.funnel)
    block("ineligible because of", state.ineligible_by)
    block("pending on", state.pending_on)
    block("deviations by code", state.deviations_by_code)
    block("deviations by category", state.deviations_by_category)
    block("deviations by importance", state.deviations_by_importance)
    for endpoint, counts in state.endpoints.items():
        lines.append(f"  {endpoint}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for site, counts in state.sites.items():
        lines.append(f"  site {site}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)
