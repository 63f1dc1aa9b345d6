"""Engine sessions: evaluating as events arrive gives exactly what a fresh evaluation gives."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.engine import Session, evaluate
from protocolkit.errors import RuleEvaluationError
from protocolkit.rules import default_protocol_path, load_protocol, parse_protocol
from protocolkit.rules._values import utc_of
from protocolkit.strategies import edge_histories, histories
from tests.helpers import correct, dose, hb
from tests.rules.conftest import HEADER

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


#: Every way a condition can read beyond its member: after it, around it, before it, counts,
#: lets and anchors, `now`, record time. Kept filters must judge again exactly when needed.
READS = parse_protocol(HEADER + """
define dose = DoseAdministered where (drug = "tacrolimus")
anchor day1 = first $dose
let last_lab = last LabResulted
define followed = $dose where (any LabResulted after it)
define soon = $dose where (any LabResulted within [it, it + 2 d])
define preceded = $dose where (any LabResulted before it)
define alone = $dose where (no LabResulted within [it - 1 d, it])
define counted = $dose where (count LabResulted >= 2)
define late = $dose where (it > day1 + 3 d)
define recent = $dose where (it > now - 30 d)
define after_last = $dose where (last_lab is missing or it > last_lab)
define known_lab = $dose where (any LabResulted known before it)
define lab_dosed = LabResulted where (no $dose within [it - 1 d, it] and any $followed before it)
let month_ago = now - 30 d
define recent_let = $dose where (it > month_ago)
report n_recent_let "recent (through a let)" = count $recent_let
define first_days = $dose within [day1, day1 + 3 d]
define lab_early = LabResulted where (any $first_days before it)
report n_lab_early "labs after a first-days dose" = count $lab_early
report n_followed "followed" = count $followed
report n_soon "soon" = count $soon
report n_preceded "preceded" = count $preceded
report n_alone "alone" = count $alone
report n_counted "counted" = count $counted
report n_late "late" = count $late
report n_recent "recent" = count $recent
report n_after_last "after last" = count $after_last
report n_known "known" = count $known_lab
report n_lab_dosed "lab dosed" = count $lab_dosed
report last_followed "last followed" = last $followed
define valid_dose = $dose where (no LabResulted within [it - 1 d, it])
define steady_dose = $valid_dose where (it > day1 + 2 d)
deviation D-INVALID "A dose with a lab in the day before it (membership read up to it)"
  category "TEST" importance not_important
  for each $dose
  fires when not (it in $valid_dose)
deviation D-UNSTEADY "A dose not in a set that also reads Day 1"
  category "TEST" importance not_important
  for each $dose
  fires when not (it in $steady_dose)
deviation D-RUN "Two haemoglobins above 90 g/L in a row, no dose between"
  category "TEST" importance not_important
  important when any $occurrence where (it > day1 + 10 d)
  fires when consecutive 2 LabResulted where (loinc = "718-7" and result > 90 g/L)
      with no $dose between
deviation D-FOLLOWED "A dose followed by a lab"
  category "TEST" importance not_important
  for each $dose
  fires when any LabResulted after it
deviation D-PRECEDED "A dose with a lab in the day before it"
  category "TEST" importance not_important
  important when any $occurrence where (it > day1 + 5 d)
  for each $dose
  fires when any LabResulted within [it - 1 d, it]
deviation D-LAB-FOLLOWED "A lab followed by another (its study day moves with Day 1)"
  category "TEST" importance not_important
  for each LabResulted
  fires when any LabResulted after it
deviation D-LATE "A lab after the last one seen"
  category "TEST" importance not_important
  for each LabResulted
  fires when last_lab is present and it = last_lab and it > now - 20 d
""", source="reads.protocol")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kept_filters_judge_again_when_what_they_read_changes(data: st.DataObject) -> None:
    slots = data.draw(st.lists(st.tuples(st.sampled_from(["dose", "lab"]), st.integers(0, 40),
                                         st.sampled_from(["08:00", "20:00"]),
                                         st.integers(0, 3)),
                               min_size=1, max_size=25), label="events (kind, day, time, delay)")
    events = []
    for kind, day, time, delay in slots:
        when = f"{dt.date(2024, 3, 1) + dt.timedelta(days=day)}T{time}"
        made = dose(when=when) if kind == "dose" else hb(when=when)
        # Recorded `delay` days late: results arrive after events that came later.
        events.append(attrs.evolve(made, recorded_at=made.occurred_at + dt.timedelta(
            days=delay, hours=1)))
    events.sort(key=lambda e: e.recorded_at)
    at = pendulum.parse("2024-04-20T00:00:00+08:00")
    session = Session(READS)
    done = 0
    for size in data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=12), label="adds"):
        session.add(events[done:done + size])
        done = min(len(events), done + size)
        now = at - dt.timedelta(days=data.draw(st.integers(0, 20), label="days before"))
        assert session.evaluate(at=now) == evaluate(READS, events[:done], at=now)
    session.add(events[done:])
    assert session.evaluate(at=at) == evaluate(READS, events, at=at)


def test_an_event_at_a_members_own_instant_is_seen_by_its_kept_verdict() -> None:
    """`within [.., it]` includes the member's instant: a lab added later at that very instant
    (ordered after the dose by type name) must change the dose's kept verdict."""
    at = pendulum.parse("2024-04-20T00:00:00+08:00")
    session = Session(READS)
    first = [dose(when="2024-03-01T08:00"), dose(when="2024-03-02T08:00")]
    session.add(first)
    session.evaluate(at=at)
    lab = hb(when="2024-03-01T08:00")
    session.add([lab])
    assert session.evaluate(at=at) == evaluate(READS, [*first, lab], at=at)


def test_an_event_of_another_subject_adds_nothing() -> None:
    session = Session(PROTOCOL)
    session.add([dose("S-001")])
    with pytest.raises(RuleEvaluationError, match="one subject"):
        session.add([dose("S-001", when="2024-03-02T08:00"), dose("S-002")])
    assert len(session.events) == 1  # the whole batch was refused
