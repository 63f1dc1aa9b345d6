"""Property tests of NCT03918265, written only with the public strategies (issue 7, item 3).

Each property holds for every history the strategies draw; Hypothesis shrinks a failure to the
smallest history (printed one event a line, with how it was made).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from protocolkit.engine import Evaluation
from protocolkit.rules import Protocol, default_protocol_path, load_protocol
from protocolkit.strategies import (
    History,
    edge_histories,
    eligible_histories,
    histories,
    reexpressed,
    retractions,
    triggering,
    unrelated_events,
    violating,
)

HEAVY = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def nct() -> Protocol:
    return load_protocol(default_protocol_path())


PROTOCOL = nct()
CRITERIA = [c.id for c in PROTOCOL.criteria]
#: INC-CONSENT is `needs(consent, true)`: met, or unknown without a consent; never "not met".
VIOLABLE = [c for c in CRITERIA if c != "INC-CONSENT"]
CODES = sorted({d.code or d.id for d in PROTOCOL.deviations})


def essence(evaluation: Evaluation) -> tuple[Any, ...]:
    """Everything an evaluation concludes, without the echo of how its input was written.

    ``evaluated_at``/``known_at`` repeat the evaluation time as given (in its zone) and an
    endpoint's ``as_received`` the value as received (in its unit): both are left out.
    """
    return (
        evaluation.eligibility,
        evaluation.day1,
        tuple((c.id, c.verdict, c.missing, c.evidence, c.note) for c in evaluation.criteria),
        tuple((d.code, d.importance, d.date, d.study_day, d.evidence)
              for d in evaluation.deviations),
        tuple((e.id, e.status, e.value, e.unit, e.date, e.study_day, e.window, e.target,
               e.baseline, e.response, e.missing, e.evidence, e.closed)
              for e in evaluation.endpoints),
        tuple((q.rule, q.reason, q.evidence) for q in evaluation.data_queries),
        tuple((r.name, r.value, r.unit, r.date, r.missing, r.evidence)
              for r in evaluation.reports),
    )


#: Every kind of generated history: valid ones with changes, edges, eligible ones, and ones
#: made to violate a criterion or to raise a deviation.
ANY_HISTORY = st.one_of(
    histories(PROTOCOL),
    edge_histories(PROTOCOL),
    eligible_histories(PROTOCOL),
    st.sampled_from(VIOLABLE).flatmap(lambda c: violating(PROTOCOL, c)),
    st.sampled_from(CODES).flatmap(lambda code: triggering(PROTOCOL, code)),
)


@HEAVY
@given(st.data())
def test_invariant_under_units(data: st.DataObject) -> None:
    history = data.draw(ANY_HISTORY, label="history")
    other = data.draw(reexpressed(history, zones=False, order=False, late=False,
                                  corrections=False), label="in other units")
    assert essence(other.evaluate()) == essence(history.evaluate())


@HEAVY
@given(st.data())
def test_invariant_under_time_zones(data: st.DataObject) -> None:
    history = data.draw(ANY_HISTORY, label="history")
    other = data.draw(reexpressed(history, units=False, order=False, late=False,
                                  corrections=False), label="in other zones")
    assert essence(other.evaluate()) == essence(history.evaluate())


@HEAVY
@given(st.data())
def test_invariant_under_record_order(data: st.DataObject) -> None:
    history = data.draw(ANY_HISTORY, label="history")
    other = data.draw(reexpressed(history, units=False, zones=False, late=False,
                                  corrections=False), label="reordered")
    assert essence(other.evaluate()) == essence(history.evaluate())


@HEAVY
@given(st.data())
def test_invariant_under_all_rewritings(data: st.DataObject) -> None:
    """Units, zones, order, late back-dated recording and restoring corrections at once."""
    history = data.draw(ANY_HISTORY, label="history")
    other = data.draw(reexpressed(history), label="rewritten")
    assert essence(other.evaluate()) == essence(history.evaluate())


@HEAVY
@given(st.data())
def test_a_retracted_event_has_no_effect(data: st.DataObject) -> None:
    history = data.draw(ANY_HISTORY, label="history")
    retracted, without = data.draw(retractions(history), label="retracted, without")
    assert essence(retracted.evaluate()) == essence(without.evaluate())


@pytest.mark.parametrize("criterion", VIOLABLE)
def test_violating_a_criterion_is_never_eligible_and_names_it(criterion: str) -> None:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(violating(PROTOCOL, criterion))
    def check(history: History) -> None:
        evaluation = history.evaluate()
        result = evaluation.criterion(criterion)
        assert evaluation.eligibility == "ineligible"
        assert result.verdict == ("not met" if result.kind == "inclusion" else "met")
        assert "PD-ELIG" in evaluation.deviation_codes()

    check()


@pytest.mark.parametrize("code", CODES)
def test_triggering_a_deviation_yields_it_with_its_evidence(code: str) -> None:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(triggering(PROTOCOL, code))
    def check(history: History) -> None:
        evaluation = history.evaluate()
        found = [d for d in evaluation.deviations if d.code == code]
        assert found, evaluation.deviation_codes()
        ids = {str(e.event_id) for e in history.events}
        for deviation in found:
            assert deviation.evidence, deviation
            assert set(deviation.evidence) <= ids
            assert deviation.date is not None

    check()


@HEAVY
@given(st.data())
def test_unrelated_events_never_make_an_ineligible_subject_eligible(
        data: st.DataObject) -> None:
    criterion = data.draw(st.sampled_from(VIOLABLE), label="criterion")
    history = data.draw(violating(PROTOCOL, criterion), label="history")
    extra = data.draw(unrelated_events(history), label="unrelated")
    before = history.evaluate()
    after = history.with_events(*extra).evaluate()
    assert before.eligibility == "ineligible"
    assert after.eligibility == "ineligible"
    assert [(c.id, c.verdict) for c in after.criteria] == \
        [(c.id, c.verdict) for c in before.criteria]


@HEAVY
@given(st.data())
def test_unrelated_events_keep_an_eligible_subject_eligible(data: st.DataObject) -> None:
    history = data.draw(eligible_histories(PROTOCOL), label="history")
    extra = data.draw(unrelated_events(history), label="unrelated")
    assert history.evaluate().eligibility == "eligible"
    assert history.with_events(*extra).evaluate().eligibility == "eligible"


# --- found by these strategies (fixed): PD-PK cites why a trough is not valid -------------------

FIND = settings(database=None, deadline=None, phases=[Phase.generate, Phase.shrink],
                max_examples=2000, derandomize=True)
def pd_pk_evidence(history: History) -> set[str]:
    return {i for d in history.evaluate().deviations if d.code == "PD-PK" for i in d.evidence}


def test_pd_pk_cites_the_missed_dose_that_invalidates_a_trough() -> None:
    history = find(triggering(PROTOCOL, "PD-PK"),
                   lambda h: any(e.event_type == "DoseMissed" for e in h.events), settings=FIND)
    missed = {str(e.event_id) for e in history.events if e.event_type == "DoseMissed"}
    assert pd_pk_evidence(history)  # the sample is cited ...
    assert missed <= pd_pk_evidence(history)  # ... the missed dose is not


def test_pd_pk_cites_the_dose_a_trough_was_drawn_too_early_after() -> None:
    def early(history: History) -> bool:
        return any("10 h 59 min 59 s after its dose" in note for note in history.description)

    history = find(edge_histories(PROTOCOL, kinds=["timing"]), early, settings=FIND)
    sample = next(e for e in history.events if e.event_type == "DrugLevelResulted"
                  and e.occurred_at.in_timezone(history.zone).time().hour == 6)
    dose = max((e for e in history.events if e.event_type == "DoseAdministered"
                and e.occurred_at < sample.occurred_at), key=lambda e: e.occurred_at)
    assert str(sample.event_id) in pd_pk_evidence(history)
    assert str(dose.event_id) in pd_pk_evidence(history)
