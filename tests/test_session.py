"""Engine sessions: evaluating as events arrive gives exactly what a fresh evaluation gives."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.engine import Session, evaluate
from protocolkit.errors import RuleEvaluationError
from protocolkit.rules import default_protocol_path, load_protocol
from protocolkit.rules._values import utc_of
from protocolkit.strategies import edge_histories, histories
from tests.helpers import correct, dose, hb

PROTOCOL = load_protocol(default_protocol_path())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_session_evaluates_as_a_fresh_evaluation_would(data: st.DataObject) -> None:
    """Events added in any order, in chunks, evaluated at moving times and knowledge cuts."""
    history = data.draw(st.one_of(histories(PROTOCOL), edge_histories(PROTOCOL)))
    events = sorted(history, key=lambda e: e.occurred_at)
    arrival = data.draw(st.sampled_from(["clinical", "late", "shuffled"]), label="arrival")
    if arrival == "shuffled":
        events = data.draw(st.permutations(events))
    elif arrival == "late":  # the usual case: results (a few at a time) recorded late
        for _ in range(data.draw(st.integers(1, 6), label="late batches")):
            i = data.draw(st.integers(0, len(events) - 1))
            batch = events[i:i + data.draw(st.integers(1, 3))]
            del events[i:i + len(batch)]
            at_ = min(len(events), i + data.draw(st.integers(1, 8)))
            events[at_:at_] = batch
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    session = Session(PROTOCOL)
    done = 0
    for cut in [*cuts, len(events)]:
        session.add(events[done:cut])
        done = max(done, cut)
        # Times at the history's own record times, so that cuts fall between its events.
        at = data.draw(st.sampled_from([history.at, *(e.recorded_at for e in events)]),
                       label="at") + dt.timedelta(seconds=data.draw(st.sampled_from([-1, 0, 1])))
        known = data.draw(st.one_of(st.none(), st.sampled_from(
            [at - dt.timedelta(days=d) for d in (1, 30, 200)])), label="known_at")
        added = events[:done]
        assert session.evaluate(at=at, known_at=known) == evaluate(
            PROTOCOL, added, at=at, known_at=known)
        _assert_in_clinical_order(session.base(utc_of(known or at)))


def _assert_in_clinical_order(base: Any) -> None:
    """The session's lists, which kept results rely on, are each in clinical order."""
    for views in [base.views, *base.by_type.values()]:
        assert [v.index for v in views] == sorted(v.index for v in views)


def test_new_events_are_placed_in_the_kept_order_and_corrections_rebuild_it() -> None:
    at = pendulum.parse("2024-06-01T00:00:00+00:00")
    session = Session(PROTOCOL)
    session.add([dose(when="2024-03-01T08:00"), hb(when="2024-03-02T08:00")])
    first = session.evaluate(at=at)
    base = session.base(pendulum.instance(at))
    session.add([dose(when="2024-03-03T08:00")])
    second = session.evaluate(at=at)
    assert session.base(pendulum.instance(at)) is base  # appended in place
    assert len(base.views) == 3 and first != second
    early = dose(when="2024-02-01T08:00")
    session.add([early])  # back-dated: inserted in place, in clinical order
    session.evaluate(at=at)
    assert session.base(pendulum.instance(at)) is base
    assert base.views[0].event is early
    assert [v.index for v in base.views] == sorted(v.index for v in base.views)
    session.add([correct(early, dose={"value": "2", "unit": "mg"})])  # corrections order them again
    session.evaluate(at=at)
    assert session.base(pendulum.instance(at)) is not base


def test_a_session_holds_one_subject() -> None:
    session = Session(PROTOCOL)
    session.add([dose("S-001")])
    with pytest.raises(RuleEvaluationError, match="one subject"):
        session.add([dose("S-002")])


@pytest.mark.parametrize("index", [1, 2, 3])
def test_a_long_history_in_record_order_evaluates_as_a_fresh_evaluation(index: int) -> None:
    """The benchmark's synthetic subjects, as their log grows: results arrive after later
    doses (inserted), corrections and retractions (rebuilt), one to a dozen at a time."""
    from bench import synthetic

    events = synthetic.subject_history(500 + index, 700, screen_failure=False)
    at = synthetic.evaluation_time(events)
    session = Session(PROTOCOL)
    done, step = 0, 0
    while done < len(events):
        step += 1
        size = 1 + (step * 7 + index) % 12
        session.add(events[done:done + size])
        done += size
        if step % 6 == 0 or done >= len(events):
            assert session.evaluate(at=at) == evaluate(PROTOCOL, events[:done], at=at)
        else:
            session.evaluate(at=at)
