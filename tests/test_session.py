"""Engine sessions: evaluating as events arrive gives exactly what a fresh evaluation gives."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.engine import Session, evaluate
from protocolkit.errors import RuleEvaluationError
from protocolkit.rules import default_protocol_path, load_protocol
from protocolkit.strategies import edge_histories, histories
from tests.helpers import dose, hb

PROTOCOL = load_protocol(default_protocol_path())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_session_evaluates_as_a_fresh_evaluation_would(data: st.DataObject) -> None:
    """Events added in any order, in chunks, evaluated at moving times and knowledge cuts."""
    history = data.draw(st.one_of(histories(PROTOCOL), edge_histories(PROTOCOL)))
    events = list(history)
    if data.draw(st.booleans(), label="record order shuffled"):
        events = data.draw(st.permutations(events))
    else:  # the usual case: in clinical order, each new event after the others
        events.sort(key=lambda e: e.occurred_at)
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


def test_an_event_after_the_others_is_appended_not_sorted_in() -> None:
    at = pendulum.parse("2024-06-01T00:00:00+00:00")
    session = Session(PROTOCOL)
    session.add([dose(when="2024-03-01T08:00"), hb(when="2024-03-02T08:00")])
    first = session.evaluate(at=at)
    base = session.base(pendulum.instance(at))
    session.add([dose(when="2024-03-03T08:00")])
    second = session.evaluate(at=at)
    assert session.base(pendulum.instance(at)) is base  # extended in place
    assert len(base.views) == 3 and first != second
    session.add([dose(when="2024-02-01T08:00")])  # back-dated: ordered again
    session.evaluate(at=at)
    assert session.base(pendulum.instance(at)) is not base


def test_a_session_holds_one_subject() -> None:
    session = Session(PROTOCOL)
    session.add([dose("S-001")])
    with pytest.raises(RuleEvaluationError, match="one subject"):
        session.add([dose("S-002")])
