"""Projections: incremental state equals a full replay, survives restarts and crashes."""

from __future__ import annotations

import itertools
from pathlib import Path

import attrs
import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.engine import evaluate
from protocolkit.events import EntryCorrected, EntryRetracted, Event
from protocolkit.ingest import import_jsonl
from protocolkit.projections import ProjectionError, Projector
from protocolkit.store import EventStore, open_store
from tests.conftest import StoreFactory
from tests.scenarios.builders import Subject, protocol

AT = pendulum.parse("2024-12-31T12:00:00+08:00")
EXAMPLES_AT = pendulum.parse("2020-08-10T23:59:59+08:00")
ROOT = Path(__file__).resolve().parent.parent


def _histories() -> list[Event]:
    """Three subjects: eligible with troughs and labs, one corrected, one retracted."""
    a = (Subject("P-001").trough(8, "6.5").trough(15, "12.5").trough(22, "13.5")
         .labs(183, hb="125", plt="220"))
    b = Subject("P-002").ecog(2).trough(8, "7.0").labs(183, hb=("10.9", "g/dL"))
    b = b.correct("ecog", on=(5, "10:00"), score=3)
    c = (Subject("P-003").female().labs(170, hb="101", slot="m6a")
         .labs(190, hb="99", slot="m6b").retract("m6a", on=(200, "09:00")))
    return [*a.events(), *b.events(), *c.events()]


def _state(projector: Projector) -> tuple[list[dict[str, object]], dict[str, object]]:
    return ([attrs.asdict(s) for s in projector.subjects()], attrs.asdict(projector.study()))


def _arrival(events: list[Event], order: list[int]) -> list[Event]:
    """Events in a shuffled arrival order, corrections moved after what they name."""
    shuffled = [events[i] for i in order]
    placed: list[Event] = []
    waiting: list[Event] = []
    ids: set[object] = set()
    for event in shuffled:
        waiting.append(event)
        progress = True
        while progress:
            progress = False
            for item in list(waiting):
                target = (item.corrects if isinstance(item, EntryCorrected)
                          else item.retracts if isinstance(item, EntryRetracted) else None)
                if target is None or target in ids:
                    placed.append(item)
                    ids.add(item.event_id)
                    waiting.remove(item)
                    progress = True
    return placed + waiting


def _full_replay(events: list[Event]) -> tuple[list[dict[str, object]], dict[str, object]]:
    with open_store(":memory:") as store:
        store.append(events)
        projector = Projector(store, protocol(), at=AT)
        projector.catch_up()
        return _state(projector)


EVENTS = _histories()
FULL = _full_replay(EVENTS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(len(EVENTS))),
       cuts=st.lists(st.integers(1, len(EVENTS) - 1), max_size=6, unique=True),
       restart=st.integers(0, 6))
def test_incremental_equals_full_replay_in_any_arrival_order(
    order: list[int], cuts: list[int], restart: int
) -> None:
    arrival = _arrival(EVENTS, order)
    bounds = [0, *sorted(cuts), len(arrival)]
    with open_store(":memory:") as store:
        projector = Projector(store, protocol(), at=AT)
        for number, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            store.append(arrival[lo:hi])
            if number == restart:
                projector = Projector(store, protocol(), at=AT)  # a restart mid-stream
            projector.catch_up()
        assert _state(projector) == FULL
        # And it is exactly what evaluate() says of each subject's full history.
        for state in projector.subjects():
            mine = [e for e in EVENTS if e.subject == state.subject]
            assert state.eligibility == evaluate(protocol(), mine, at=AT).eligibility


def test_processing_twice_changes_nothing(store: EventStore) -> None:
    store.append(EVENTS)
    projector = Projector(store, protocol(), at=AT)
    assert projector.catch_up() == len(EVENTS)
    before = _state(projector)
    assert projector.catch_up() == 0
    assert projector.catch_up(replay_from=0) == len(EVENTS)
    assert _state(projector) == before
    assert projector.position == store.max_position()


def test_catch_up_after_a_restart(make_store: StoreFactory) -> None:
    first = make_store()
    half = len(EVENTS) // 2
    first.append(EVENTS[:half])
    Projector(first, protocol(), at=AT).catch_up()
    first.append(EVENTS[half:])
    first.close()
    second = make_store()
    projector = Projector(second, protocol(), at=AT)
    assert projector.position == half
    assert projector.catch_up() == len(EVENTS) - half
    assert _state(projector) == FULL


def test_a_crash_before_commit_leaves_state_and_position_together(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    store.append(EVENTS[:10])
    projector = Projector(store, protocol(), at=AT)
    projector.catch_up()
    before, position = _state(projector), projector.position
    store.append(EVENTS[10:])
    with pytest.raises(ProjectionError, match="simulated crash"):
        projector.catch_up(fail_before_commit=True)
    assert projector.position == position  # not ahead ...
    assert _state(projector) == before  # ... and not inconsistent with its position
    projector = Projector(make_store(), protocol(), at=AT)  # restart after the crash
    projector.catch_up()
    assert _state(projector) == FULL


def test_example_study_state() -> None:
    with open_store(":memory:") as store:
        import_jsonl(store, ROOT / "examples" / "nct03918265.jsonl")
        projector = Projector(store, protocol(), at=EXAMPLES_AT)
        projector.catch_up()
        study = projector.study()
        nine = projector.subjects("PUMCH-009")[0]
    assert (study.target, study.screened, study.enrolled) == (80, 12, 9)
    assert study.ineligible_by == {"EXC-AGE": 1, "INC-AGE": 1, "INC-DIAG": 1, "INC-ECOG": 1}
    assert study.pending_on == {"INC-ECOG": 1}
    assert study.deviations_by_code["PD-WIN1"] == 2
    assert study.endpoints["HB-M6"] == {"in window": 7, "missing": 1, "not applicable": 3,
                                        "not evaluable": 1}
    assert nine.status == "on treatment"
    assert nine.regimen == "tacrolimus 0.5 mg BID"
    assert nine.reports["latest_trough"]["value"] == "6.9"
    assert nine.reports["trough_in_range"]["value"] == "yes"
    assert nine.next_window is not None and nine.next_window["endpoint"] == "HB-M24"
    assert "PD-TDM (important)" in nine.open_deviations


def test_a_changed_protocol_rebuilds(store: EventStore) -> None:
    store.append(EVENTS)
    Projector(store, protocol(), at=AT).catch_up()
    changed = attrs.evolve(protocol(), text=protocol().text + "\n# amended\n")
    projector = Projector(store, changed, at=AT)
    assert projector.position == 0
    projector.catch_up()
    assert _state(projector) == FULL


def test_refresh_catches_up_and_evaluates_each_subject_once(store: EventStore) -> None:
    from protocolkit.engine import OBSERVERS

    half = len(EVENTS) // 2
    store.append(EVENTS[:half])
    projector = Projector(store, protocol(), at=AT)
    projector.catch_up()
    store.append(EVENTS[half:])
    seen: list[str] = []
    OBSERVERS.append(lambda evaluation: seen.append(evaluation.subject))
    try:
        projector.refresh()
    finally:
        OBSERVERS.pop()
    subjects = sorted({e.subject for e in EVENTS})
    assert sorted(seen) == subjects  # one evaluation each, touched or not
    assert projector.position == store.max_position()
    assert _state(projector) == FULL


def test_a_refresh_is_never_ahead_of_its_position(store: EventStore) -> None:
    """Rows keep their subject's version: a refresh evaluates what the position covers."""
    events = [e for e in EVENTS if e.subject == "P-001"]
    store.append(events[:-1])
    projector = Projector(store, protocol(), at=AT)
    projector.catch_up()
    position = projector.position
    before = _state(projector)
    # Another writer appends just after this refresh has read the log (simulated: the page
    # read sees nothing new). The refresh must evaluate the subject at its row's version,
    # which the position covers, not at the store's newer one.
    store.append(events[-1:])
    other = Projector(store, protocol(), at=AT)
    other.store = _Unread(store)  # type: ignore[assignment]
    other.refresh()
    assert other.position == position
    assert other.tables.read_versions("NCT03918265") == {
        ("NCT03918265", "P-001"): len(events) - 1}
    assert _state(other) == before
    other.store = store
    other.refresh()  # the next pass sees the event
    assert other.tables.read_versions("NCT03918265") == {("NCT03918265", "P-001"): len(events)}


class _Unread:
    """A store whose log reads miss the latest append (it landed just after the read)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def pages(self, after: int = 0) -> list[object]:
        return []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_a_projection_made_before_row_versions_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_store(path) as store:
        store.append(EVENTS)
        datastore = store.recorder.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as c:  # the old layout, without `version`
            c.execute("CREATE TABLE protocolkit_projection_subjects (projection TEXT NOT NULL, "
                      "study TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL, "
                      "evaluation TEXT NOT NULL, PRIMARY KEY (projection, study, subject))")
            c.execute("CREATE TABLE protocolkit_projection_position (projection TEXT PRIMARY "
                      "KEY, position BIGINT NOT NULL, protocol TEXT NOT NULL)")
            c.execute("INSERT INTO protocolkit_projection_position VALUES ('state', 99, 'x')")
        projector = Projector(store, protocol(), at=AT)
        assert projector.position == 0
        projector.catch_up()
        assert _state(projector) == FULL


def test_a_bounded_projector_equals_an_unbounded_one(store: EventStore) -> None:
    """With room for one session, subjects are read again from the store as they change."""
    half = len(EVENTS) // 2
    store.append(EVENTS[:half])
    projector = Projector(store, protocol(), at=AT, max_sessions=1, name="bounded")
    projector.catch_up()
    assert len(projector._sessions) == 1
    store.append(EVENTS[half:])
    projector.catch_up()
    assert len(projector._sessions) == 1
    assert _state(projector) == FULL
    with pytest.raises(ProjectionError, match="max_sessions"):
        Projector(store, protocol(), at=AT, max_sessions=0)
