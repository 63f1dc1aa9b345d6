"""Scenario suite for NCT03918265: one subject per test, each built from the eligible baseline.

Every test states in its docstring the expected verdict and the decision (D1-D8 of
``protocol-decisions.md``) it comes from, and evaluates at a fixed time (``at=``). The
baseline (``builders.Subject``) is a 45-year-old man with AIHA, consent on Day -10, screening
on Day -10, enrolled on Day -1, first dose 1 mg on Day 1 (2024-03-11) at 08:00 and 20:00.
"""

from __future__ import annotations

import datetime as dt

import pytest

from protocolkit.engine import DeviationResult, Evaluation
from protocolkit.errors import EventError, UnitError
from protocolkit.serde import event_from_json, event_to_json
from protocolkit.units import measure

from .builders import HB, Subject, Value, ids

# --- helpers -------------------------------------------------------------------------------


def verdicts(evaluation: Evaluation, *rule_ids: str) -> tuple[str, ...]:
    return tuple(evaluation.criterion(r).verdict for r in rule_ids)


def found(evaluation: Evaluation, code: str) -> list[DeviationResult]:
    return [d for d in evaluation.deviations if d.code == code]


def only(evaluation: Evaluation, code: str) -> DeviationResult:
    (deviation,) = found(evaluation, code)
    return deviation


def queried(evaluation: Evaluation, rule: str) -> bool:
    return any(q.rule == rule for q in evaluation.data_queries)


def eligible_and_clean(evaluation: Evaluation) -> None:
    assert evaluation.eligibility == "eligible"
    assert evaluation.deviations == ()


def month6(b: Subject, *, hb: Value | None = "125", plt: Value | None = "150", day: int = 183,
           clock: str = "08:00", retic: Value | None = None, slot: str | None = None) -> Subject:
    """A Month 6 draw: Hb and platelets (and reticulocytes) of one specimen."""
    return b.labs(day, clock, hb=hb, plt=plt, retic=retic, slot=slot)


# --- the baseline --------------------------------------------------------------------------


def test_baseline_subject_is_eligible_without_deviations() -> None:
    """Eligible, no deviation, no data query; pregnancy and lactation not applicable to a man
    (D2, D8); Month 6 and 24 windows open on Day 30 (D8)."""
    b = Subject()
    e = b.evaluate(at=b.at(30))
    eligible_and_clean(e)
    assert e.data_queries == ()
    assert e.day1 == "2024-03-11"
    assert verdicts(e, "EXC-PREGNANT", "EXC-LACTATING") == ("not applicable",) * 2
    assert e.endpoint("HB-M6").status == "open"


# --- D2: age ---------------------------------------------------------------------------------


def test_age_consent_on_18th_birthday_is_eligible() -> None:
    """Eligible: 18 completed years on the consent date (2024-03-01), 18-80 inclusive (D2)."""
    b = Subject().born(dt.date(2006, 3, 1))
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("met", "not met")
    eligible_and_clean(e)


def test_age_day_before_18th_birthday_gives_inclusion_and_exclusion() -> None:
    """Ineligible: 17 on the consent date; INC-AGE not met AND EXC-AGE met (D2); dosed anyway,
    so PD-ELIG (D5)."""
    b = Subject().born(dt.date(2006, 3, 2))
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("not met", "met")
    assert e.eligibility == "ineligible"
    assert only(e, "PD-ELIG").importance == "important"


def test_age_consent_on_80th_birthday_is_eligible() -> None:
    """Eligible: exactly 80 on the consent date, 18-80 inclusive (D2)."""
    b = Subject().born(dt.date(1944, 3, 1))
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("met", "not met")
    eligible_and_clean(e)


def test_age_80_years_364_days_is_eligible() -> None:
    """Eligible: 80 years and 364 days on the consent date (2023-03-01, a common year) is
    still 80 completed years (D2)."""
    b = Subject(day1=dt.date(2023, 3, 11)).born(dt.date(1942, 3, 2))
    assert (b.date(-10) - dt.date(2022, 3, 2)).days == 364
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("met", "not met")
    eligible_and_clean(e)


def test_age_consent_on_81st_birthday_is_ineligible() -> None:
    """Ineligible: 81 on the consent date (over 80): INC-AGE not met, EXC-AGE met (D2)."""
    b = Subject().born(dt.date(1943, 3, 1))
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("not met", "met")
    assert e.eligibility == "ineligible"


def test_age_29_february_birthday_not_yet_18_on_28_february_of_a_common_year() -> None:
    """Ineligible: born 2004-02-29, consent 2022-02-28 (common year): the birthday advances
    on 1 March, so 17 completed years (D2)."""
    b = Subject(day1=dt.date(2022, 3, 10)).born(dt.date(2004, 2, 29))
    assert b.date(-10) == dt.date(2022, 2, 28)
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("not met", "met")
    assert e.eligibility == "ineligible"


def test_age_29_february_birthday_is_18_on_1_march_of_a_common_year() -> None:
    """Eligible: born 2004-02-29, consent 2022-03-01: 18 completed years (D2)."""
    b = Subject(day1=dt.date(2022, 3, 11)).born(dt.date(2004, 2, 29))
    assert b.date(-10) == dt.date(2022, 3, 1)
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-AGE", "EXC-AGE") == ("met", "not met")
    eligible_and_clean(e)


# --- D2: ECOG --------------------------------------------------------------------------------


def test_ecog_2_is_met() -> None:
    """Eligible: ECOG 2 meets INC-ECOG (0, 1 or 2) (D2)."""
    b = Subject().ecog(2)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-ECOG").verdict == "met"
    eligible_and_clean(e)


def test_ecog_3_dosed_is_ineligible_with_pd_elig() -> None:
    """Ineligible: ECOG 3 does not meet INC-ECOG (D2); dosed while not met: PD-ELIG,
    important (D5)."""
    b = Subject().ecog(3)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-ECOG").verdict == "not met"
    assert e.eligibility == "ineligible"
    assert e.deviation_codes() == ["PD-ELIG"]
    assert only(e, "PD-ELIG").importance == "important"


def test_ecog_3_screen_failure_has_no_deviation() -> None:
    """Ineligible, no deviation: a subject never dosed gets eligibility findings only (D5)."""
    b = Subject().ecog(3).no_dose(1, "08:00").no_dose(1, "20:00")
    e = b.evaluate(at=b.at(1, "12:00"))
    assert e.eligibility == "ineligible"
    assert e.deviations == ()
    assert e.day1 is None


def test_ecog_missing_is_pending_and_no_pd_elig() -> None:
    """Pending: no ECOG makes INC-ECOG unknown, naming the missing fact (D2); dosing while a
    criterion is unknown is not PD-ELIG (D8)."""
    b = Subject().without("ecog")
    e = b.evaluate(at=b.at(30))
    result = e.criterion("INC-ECOG")
    assert result.verdict == "unknown"
    assert result.missing
    assert e.eligibility == "pending"
    assert e.deviations == ()


def test_ecog_latest_on_or_before_enrolment_counts() -> None:
    """Ineligible: ECOG 1 on Day -10 then 3 on Day -2: the latest on or before enrolment
    counts (D2). A later ECOG 4 on Day 5 (after enrolment) does not."""
    b = Subject().ecog(3, day=-2, slot="ecog again").ecog(4, day=5, slot="ecog on treatment")
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-ECOG").verdict == "not met"
    assert ids(b.event("ecog again")) <= set(e.criterion("INC-ECOG").evidence)
    assert e.eligibility == "ineligible"


# --- D2, D8: screening freshness ------------------------------------------------------------


def test_screening_ecog_on_day_minus_29_is_stale() -> None:
    """Pending: an ECOG on Day -29 is older than 28 days before Day 1, so INC-ECOG is unknown
    until a fresh value arrives (D2, D8: Day -29 stale); not a deviation (D8)."""
    b = Subject().consent(-30).ecog(1, day=-29)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-ECOG").verdict == "unknown"
    assert e.eligibility == "pending"
    assert e.deviations == ()


def test_screening_ecog_on_day_minus_28_is_fresh() -> None:
    """Eligible: an ECOG on Day -28 is within 28 days before Day 1, inclusive (D8)."""
    b = Subject().consent(-30).ecog(1, day=-28)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-ECOG").verdict == "met"
    eligible_and_clean(e)


def test_screening_freshness_of_a_never_dosed_subject_counts_back_from_now() -> None:
    """Met on Day -1, unknown 40 days later: without a Day 1, freshness counts back from the
    evaluation time (D8)."""
    b = Subject().no_dose(1, "08:00").no_dose(1, "20:00")
    assert b.evaluate(at=b.at(-1, "18:00")).criterion("INC-ECOG").verdict == "met"
    late = b.evaluate(at=b.at(30))
    assert late.criterion("INC-ECOG").verdict == "unknown"
    assert late.eligibility == "pending"


# --- D2, D5: consent -------------------------------------------------------------------------


def test_consent_after_a_screening_procedure_is_pd_icf() -> None:
    """Eligible, PD-ICF important: the ECOG (10:00) and screening blood (10:15) came before
    the consent (10:20) (D5); they are its evidence."""
    b = Subject().consent(-10, "10:20")
    e = b.evaluate(at=b.at(30))
    assert e.eligibility == "eligible"
    deviation = only(e, "PD-ICF")
    assert deviation.importance == "important"
    assert ids(b.event("ecog"), b.event("screening labs")) <= set(deviation.evidence)


def test_consent_date_only_on_the_day_of_a_procedure_is_a_data_query() -> None:
    """Eligible, data query, no PD-ICF: a consent dated without a time on the same date as
    screening procedures cannot be ordered against them (D5)."""
    b = Subject().consent(-10, None)
    e = b.evaluate(at=b.at(30))
    assert e.eligibility == "eligible"
    assert "PD-ICF" not in e.deviation_codes()
    assert queried(e, "PD-ICF")


def test_no_consent_is_pending_and_dosing_is_pd_icf() -> None:
    """Pending: no consent record makes INC-CONSENT unknown, and age (on the consent date)
    unknown as well (D2, D8); dosing without consent is PD-ICF (D2, D5), not PD-ELIG (D8)."""
    b = Subject().no_consent()
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-CONSENT", "INC-AGE", "EXC-AGE") == ("unknown",) * 3
    assert e.eligibility == "pending"
    assert e.deviation_codes() == ["PD-ICF"]
    assert only(e, "PD-ICF").importance == "important"


# --- D2, D8: prior lines ---------------------------------------------------------------------


def test_prior_lines_no_response_and_intolerance_are_refractory() -> None:
    """Eligible: line 1 no response (tolerated), line 2 response but intolerant: refractory
    met; the exclusion needs a response AND good tolerance, so it is not met (D2)."""
    b = (Subject().prior_line(1, "prednisone", "none", "tolerated")
         .prior_line(2, "cyclosporine", "complete", "intolerant"))
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("met", "not met")
    eligible_and_clean(e)


def test_prior_line_1_response_and_tolerated_is_ineligible() -> None:
    """Ineligible: corticosteroids gave a partial response and were tolerated: INC-REFRACTORY
    not met and EXC-RESPONSE met (D2)."""
    b = Subject().prior_line(1, "prednisone", "partial", "tolerated")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("not met", "met")
    assert e.eligibility == "ineligible"


def test_prior_line_2_complete_response_and_tolerated_is_ineligible() -> None:
    """Ineligible: the second line gave a complete response and was tolerated (D2)."""
    b = Subject().prior_line(2, "rituximab", "complete", "tolerated")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("not met", "met")
    assert e.eligibility == "ineligible"


def test_no_second_line_makes_refractory_and_response_exclusion_unknown() -> None:
    """Pending: with no second-line therapy recorded, both INC-REFRACTORY and EXC-RESPONSE
    are unknown (D8), each naming what is missing (D2)."""
    b = Subject().without("line 2")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("unknown", "unknown")
    assert e.criterion("INC-REFRACTORY").missing
    assert e.criterion("EXC-RESPONSE").missing
    assert e.eligibility == "pending"


def test_no_first_line_makes_the_response_exclusion_unknown() -> None:
    """Pending, and EXC-RESPONSE unknown: with no first-line (corticosteroid) record, whether a
    prior line gave a well-tolerated response is not known; missing data never becomes "not
    met" (D2), as D8 rules for a missing second line."""
    b = Subject().without("line 1")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("unknown", "unknown")
    assert e.eligibility == "pending"


def test_prior_line_response_recorded_as_unknown_is_pending() -> None:
    """Pending: line 2 tolerated with its response recorded as unknown decides neither the
    refractory inclusion nor the response exclusion (D2: missing data is never met/not met)."""
    b = Subject().prior_line(2, "rituximab", "unknown", "tolerated")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("unknown", "unknown")
    assert e.eligibility == "pending"


def test_prior_line_intolerant_with_unknown_response_is_refractory() -> None:
    """Eligible: intolerance alone makes the line refractory, and without good tolerance the
    exclusion cannot fire, whatever the unknown response was (D2)."""
    b = Subject().prior_line(2, "rituximab", "unknown", "intolerant")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "INC-REFRACTORY", "EXC-RESPONSE") == ("met", "not met")
    eligible_and_clean(e)


# --- D2: diagnosis, other disease ------------------------------------------------------------


def test_other_haematological_disease_is_ineligible() -> None:
    """Ineligible: MDS documented at screening makes EXC-OTHER met (D2)."""
    b = Subject().other_disease(True, "MDS")
    e = b.evaluate(at=b.at(30))
    assert e.criterion("EXC-OTHER").verdict == "met"
    assert e.eligibility == "ineligible"


def test_isolated_itp_is_ineligible() -> None:
    """Ineligible: isolated ITP is not AIHA, PRCA or Evans syndrome: INC-DIAG not met (D2)."""
    b = Subject().diagnosis("ITP")
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-DIAG").verdict == "not met"
    assert e.eligibility == "ineligible"


@pytest.mark.parametrize("condition", ["PRCA", "EVANS"])
def test_prca_and_evans_are_eligible_diagnoses(condition: str) -> None:
    """Eligible: PRCA and Evans syndrome meet INC-DIAG (D2)."""
    b = Subject().diagnosis(condition)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("INC-DIAG").verdict == "met"
    eligible_and_clean(e)


# --- D2, D8: pregnancy and lactation ---------------------------------------------------------


def test_woman_of_childbearing_potential_with_negative_test_is_eligible() -> None:
    """Eligible: negative hCG within the screening window, not lactating: both exclusions
    not met (D2)."""
    b = Subject().female(childbearing=True, pregnancy_test="negative")
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "EXC-PREGNANT", "EXC-LACTATING") == ("not met", "not met")
    eligible_and_clean(e)


def test_woman_with_positive_screening_test_is_ineligible() -> None:
    """Ineligible: a positive screening test makes EXC-PREGNANT met (D2)."""
    b = Subject().female(pregnancy_test="positive").no_dose(1, "08:00").no_dose(1, "20:00")
    e = b.evaluate(at=b.at(-1, "18:00"))
    assert e.criterion("EXC-PREGNANT").verdict == "met"
    assert e.eligibility == "ineligible"


def test_woman_of_childbearing_potential_without_test_is_pending() -> None:
    """Pending: a woman of childbearing potential with no test: EXC-PREGNANT unknown (D2)."""
    b = Subject().female(pregnancy_test=None)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("EXC-PREGNANT").verdict == "unknown"
    assert e.eligibility == "pending"
    assert "PD-ELIG" not in e.deviation_codes()


def test_indeterminate_pregnancy_test_is_not_a_negative_test() -> None:
    """Pending: a woman of childbearing potential needs a NEGATIVE test (D2); an indeterminate
    result is not one, and missing data never becomes "not met" (D2), so EXC-PREGNANT is
    unknown until a conclusive test arrives."""
    b = Subject().female(pregnancy_test="indeterminate")
    e = b.evaluate(at=b.at(30))
    assert e.criterion("EXC-PREGNANT").verdict == "unknown"
    assert e.eligibility == "pending"


def test_pregnancy_test_on_day_minus_29_is_stale() -> None:
    """Pending: a negative test on Day -29 is outside the screening window (D2, D8)."""
    b = Subject().consent(-30).female(pregnancy_test="negative", test_day=-29)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("EXC-PREGNANT").verdict == "unknown"
    assert e.eligibility == "pending"


def test_woman_not_of_childbearing_potential_needs_no_test() -> None:
    """Eligible: not of childbearing potential: EXC-PREGNANT not applicable (D2)."""
    b = Subject().female(childbearing=False, pregnancy_test=None)
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "EXC-PREGNANT", "EXC-LACTATING") == ("not applicable", "not met")
    eligible_and_clean(e)


def test_lactating_woman_is_ineligible() -> None:
    """Ineligible: lactation is its own yes/no fact; lactating makes EXC-LACTATING met (D2)."""
    b = Subject().female(lactating=True)
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "EXC-PREGNANT", "EXC-LACTATING") == ("not met", "met")
    assert e.eligibility == "ineligible"


def test_woman_without_lactation_assessment_is_pending() -> None:
    """Pending: for a woman, lactation not assessed makes EXC-LACTATING unknown (D2)."""
    b = Subject().female(lactating=None)
    e = b.evaluate(at=b.at(30))
    assert e.criterion("EXC-LACTATING").verdict == "unknown"
    assert e.eligibility == "pending"


def test_man_pregnancy_and_lactation_not_applicable() -> None:
    """Eligible: for a man with no pregnancy test and no lactation record, both exclusions
    are not applicable (D2, D8)."""
    b = Subject()
    e = b.evaluate(at=b.at(30))
    assert verdicts(e, "EXC-PREGNANT", "EXC-LACTATING") == ("not applicable",) * 2
    assert e.eligibility == "eligible"


# --- D5, D7: a deviation found after dosing --------------------------------------------------


def test_pd_elig_found_after_dosing_by_a_later_correction() -> None:
    """Ineligible with PD-ELIG (important) once the screening ECOG is corrected from 1 to 3 on
    Day 20 (D5: "also when found later"); replayed as known on Day 19, eligible and no
    deviation (D7)."""
    b = Subject().correct("ecog", on=(20, "10:00"), score=3,
                          reason="source document verification: ECOG 3")
    now = b.evaluate(at=b.at(30))
    assert now.eligibility == "ineligible"
    assert only(now, "PD-ELIG").importance == "important"
    before = b.evaluate(at=b.at(30), known_at=b.at(19))
    eligible_and_clean(before)
    uncorrected = Subject().evaluate(at=b.at(30), known_at=b.at(19))
    assert before == uncorrected  # the earlier result, exactly


# --- D3: trough validity (PD-PK) ---------------------------------------------------------------


def test_trough_2_hours_post_dose_is_invalid() -> None:
    """PD-PK, not important: a sample labelled trough drawn 2 h after the morning dose (D3)."""
    b = Subject().trough(15, "14.2", prev=(15, "08:00"), drawn="10:00", slot="t15")
    e = b.evaluate(at=b.at(30))
    deviation = only(e, "PD-PK")
    assert deviation.importance == "not important"
    assert ids(b.event("t15")) <= set(deviation.evidence)
    assert deviation.study_day == 15


def test_unlabelled_level_2_hours_post_dose_is_not_pd_pk() -> None:
    """No deviation: only a sample labelled as a trough can be an invalid trough (D5)."""
    b = Subject().trough(15, "14.2", prev=(15, "08:00"), drawn="10:00", labelled=False)
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_trough_after_a_missed_dose_is_invalid() -> None:
    """PD-PK: the 20:00 dose of Day 40 was missed; the Day 41 trough follows a missed dose
    (and is 23 h 40 min after the last dose taken) (D3)."""
    b = (Subject().dose(40, "08:00").missed(40, "20:00")
         .trough(41, "2.9", drawn="07:40", next_dose="08:10", slot="t41"))
    e = b.evaluate(at=b.at(50))
    assert ids(b.event("t41")) <= set(only(e, "PD-PK").evidence)
    assert e.deviation_codes() == ["PD-PK"]


def test_trough_exactly_11_hours_after_the_dose_is_valid() -> None:
    """Valid, no PD-PK: [11 h, 13 h] is inclusive (D3)."""
    b = Subject().trough(8, "7.0", hours_after=11)
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_trough_exactly_13_hours_after_the_dose_is_valid() -> None:
    """Valid, no PD-PK: [11 h, 13 h] is inclusive (D3)."""
    b = Subject().trough(8, "7.0", hours_after=13)
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_trough_10_hours_59_minutes_after_the_dose_is_invalid() -> None:
    """PD-PK: one minute before the 11 h edge (D3)."""
    b = Subject().trough(8, "7.0", hours_after=10 + 59 / 60)
    assert b.evaluate(at=b.at(30)).deviation_codes() == ["PD-PK"]


def test_trough_13_hours_1_minute_after_the_dose_is_invalid() -> None:
    """PD-PK: one minute after the 13 h edge (D3)."""
    b = Subject().trough(8, "7.0", hours_after=13 + 1 / 60)
    assert b.evaluate(at=b.at(30)).deviation_codes() == ["PD-PK"]


def test_trough_across_the_autumn_dst_night_in_berlin_is_invalid() -> None:
    """PD-PK: dose 2023-10-28 20:00, draw 2023-10-29 08:30 Europe/Berlin: the wall clock says
    12 h 30 min but 13 h 30 min elapsed (D1: elapsed on UTC instants; D3)."""
    b = Subject(day1=dt.date(2023, 10, 2), zone="Europe/Berlin")
    b.trough(28, "7.0", drawn="08:30", slot="dst")
    assert b.date(27) == dt.date(2023, 10, 28)
    e = b.evaluate(at=b.at(40))
    assert e.deviation_codes() == ["PD-PK"]
    assert ids(b.event("dst")) <= set(only(e, "PD-PK").evidence)


def test_trough_across_the_spring_dst_night_in_berlin_is_valid() -> None:
    """Valid: dose 2023-03-25 20:00, draw 2023-03-26 09:30 Europe/Berlin: the wall clock says
    13 h 30 min but only 12 h 30 min elapsed (D1, D3)."""
    b = Subject(day1=dt.date(2023, 3, 6), zone="Europe/Berlin")
    b.trough(21, "7.0", drawn="09:30")
    assert b.date(20) == dt.date(2023, 3, 25)
    eligible_and_clean(b.evaluate(at=b.at(40)))


# --- D3, D5: steady state and PD-TDM -----------------------------------------------------------


def test_troughs_less_than_72_hours_after_a_dose_change_are_not_counted() -> None:
    """No PD-TDM: two valid high troughs 40 h and 64 h after a dose change are not at steady
    state, so they are excluded from target checks (D3)."""
    b = (Subject().trough(8, "7.0").dose_change(10, "16:00")
         .trough(12, "12.0", mg="0.5").trough(13, "12.5", mg="0.5"))
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_troughs_72_hours_after_a_dose_change_are_counted() -> None:
    """PD-TDM, not important: two valid high troughs 88 h and 112 h after the change are at
    steady state, consecutive, with no dose change between (D3, D5)."""
    b = (Subject().trough(8, "7.0").dose_change(10, "16:00")
         .trough(14, "12.0", mg="0.5", slot="t14").trough(15, "12.5", mg="0.5", slot="t15"))
    e = b.evaluate(at=b.at(30))
    assert e.deviation_codes() == ["PD-TDM"]
    deviation = only(e, "PD-TDM")
    assert deviation.importance == "not important"
    assert ids(b.event("t14"), b.event("t15")) <= set(deviation.evidence)


def test_troughs_before_72_hours_from_the_first_dose_are_not_counted() -> None:
    """No PD-TDM: high troughs on Days 2 and 3 (24 h and 48 h after the first dose) are not at
    steady state (D3)."""
    b = Subject().trough(2, "12.0").trough(3, "13.0")
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_trough_exactly_72_hours_after_the_first_dose_is_counted() -> None:
    """PD-TDM: the Day 4 08:00 trough is exactly 72 h after the first dose (>= 72 h, D3) and
    pairs with the Day 5 one."""
    b = Subject().trough(4, "12.0").trough(5, "13.0")
    assert b.evaluate(at=b.at(30)).deviation_codes() == ["PD-TDM"]


def test_pd_tdm_two_consecutive_high_troughs_without_dose_change() -> None:
    """PD-TDM, not important: Day 8 12.0 and Day 15 13.0 ng/mL, steady state, no dose change
    between (D5)."""
    b = Subject().trough(8, "12.0", slot="t8").trough(15, "13.0", slot="t15")
    e = b.evaluate(at=b.at(30))
    deviation = only(e, "PD-TDM")
    assert deviation.importance == "not important"
    assert set(deviation.evidence) >= ids(b.event("t8"), b.event("t15"))
    assert e.eligibility == "eligible"


def test_pd_tdm_two_consecutive_low_troughs() -> None:
    """PD-TDM, not important: below 5 ng/mL is also outside the target (D3, D5)."""
    b = Subject().trough(8, "3.0").trough(15, "4.9")
    assert only(b.evaluate(at=b.at(30)), "PD-TDM").importance == "not important"


def test_troughs_at_5_and_10_are_on_target() -> None:
    """No PD-TDM: 5.0 to 10.0 ng/mL is inclusive (D3)."""
    b = Subject().trough(8, "10.0").trough(15, "5.0")
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_pd_tdm_not_raised_with_a_dose_change_between() -> None:
    """No PD-TDM: a dose change lies between the two high troughs (D5); the second is at
    steady state again (D3)."""
    b = Subject().trough(8, "12.0").dose_change(10, "16:00").trough(15, "13.0", mg="0.5")
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_pd_tdm_above_20_is_important() -> None:
    """PD-TDM, important: one of the two troughs is 21.4 ng/mL (> 20, D3, D5)."""
    b = Subject().trough(8, "12.0").trough(15, "21.4")
    assert only(b.evaluate(at=b.at(30)), "PD-TDM").importance == "important"


def test_pd_tdm_exactly_20_is_not_important() -> None:
    """PD-TDM, not important: 20 ng/mL is not above 20 (D3: "above 20")."""
    b = Subject().trough(8, "12.0").trough(15, "20.0")
    assert only(b.evaluate(at=b.at(30)), "PD-TDM").importance == "not important"


def test_invalid_trough_does_not_break_or_make_a_pd_tdm_pair() -> None:
    """PD-TDM and PD-PK: an invalid high "trough" (2 h post dose) is excluded from target
    checks (D3), so the valid troughs of Days 8 and 22 are consecutive (D5)."""
    b = (Subject().trough(8, "12.0", slot="t8")
         .trough(15, "16.0", prev=(15, "08:00"), drawn="10:00", slot="t15")
         .trough(22, "12.5", slot="t22"))
    e = b.evaluate(at=b.at(30))
    assert sorted(e.deviation_codes()) == ["PD-PK", "PD-TDM"]
    assert ids(b.event("t15")).isdisjoint(only(e, "PD-TDM").evidence)


# --- D6: units ---------------------------------------------------------------------------------


def test_haemoglobin_in_g_per_dl_is_converted() -> None:
    """Hb 12.4 g/dL is 124 g/L: Month 6 value 124 g/L, complete response (D6, D4)."""
    b = month6(Subject(), hb=("12.4", "g/dL"))
    e = b.evaluate(at=b.at(200))
    hb = e.endpoint("HB-M6")
    assert (hb.value, hb.unit, hb.as_received) == ("124", "g/L", "12.4 g/dL")
    assert hb.response == "complete"


def test_haemoglobin_in_mmol_per_l_is_converted() -> None:
    """Hb 7.5 mmol/L x 16.11 = 120.825 g/L: complete response (D6, D4)."""
    b = month6(Subject(), hb=("7.5", "mmol/L"))
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.value, hb.unit, hb.response) == ("120.825", "g/L", "complete")


def test_tacrolimus_in_ug_per_l_and_pg_per_ml_is_converted() -> None:
    """No PD-TDM: 7000 pg/mL (/1000) and 8.0 ug/L (x1) are 7 and 8 ng/mL, inside 5-10 (D6)."""
    b = Subject().trough(8, "7000", unit="pg/mL").trough(15, "8.0", unit="ug/L")
    eligible_and_clean(b.evaluate(at=b.at(30)))


def test_high_tacrolimus_in_ug_per_l_and_pg_per_ml() -> None:
    """PD-TDM, not important: 12 ug/L and 12000 pg/mL are 12 ng/mL each, above 10 but not
    above 20 (D6, D5)."""
    b = Subject().trough(8, "12", unit="ug/L").trough(15, "12000", unit="pg/mL")
    assert only(b.evaluate(at=b.at(30)), "PD-TDM").importance == "not important"


def test_platelets_per_microlitre_are_converted() -> None:
    """Platelets 150000 /uL are 150 x10^9/L at Month 6 (D6)."""
    b = month6(Subject(), plt=("150000", "/uL"))
    plt = b.evaluate(at=b.at(200)).endpoint("PLT-M6")
    assert (plt.value, plt.unit, plt.status) == ("150", "10*9/L", "in window")


def test_impossible_haemoglobin_is_unknown_with_a_data_query() -> None:
    """Unknown + data query, no PD-WIN1: Hb 9.8 g/L is impossible for its unit, never
    converted by guessing (D6); a window whose only value is implausible is unknown, not
    missing (D8)."""
    b = month6(Subject(), hb=("9.8", "g/L"))
    e = b.evaluate(at=b.at(200))
    hb = e.endpoint("HB-M6")
    assert hb.status == "unknown"
    assert queried(e, "HB-M6")
    assert e.deviations == ()


def test_non_ucum_unit_is_refused_at_the_boundary() -> None:
    """Refused: gm/dL is not a UCUM code (D6, D8); ng/mL cannot be compared with Hb (D6)."""
    with pytest.raises(UnitError, match="UCUM"):
        measure(HB, "12.4", "gm/dL")
    with pytest.raises(UnitError, match="not accepted"):
        measure(HB, "12.4", "ng/mL")


# --- D4, D8: windows, selection, missing vs open ---------------------------------------------


def test_window_day_169_is_in_the_window() -> None:
    """In window: Day 169 is the first day of Month 6's window (Days 169-197, D4)."""
    b = month6(Subject(), day=169)
    e = b.evaluate(at=b.at(200))
    hb = e.endpoint("HB-M6")
    assert (hb.status, hb.study_day, hb.date) == ("in window", 169, "2024-08-26")
    assert e.deviations == ()


def test_window_day_197_is_in_the_window() -> None:
    """In window: Day 197 is the last day of Month 6's window (D4)."""
    b = month6(Subject(), day=197)
    e = b.evaluate(at=b.at(200))
    assert (e.endpoint("HB-M6").status, e.endpoint("HB-M6").study_day) == ("in window", 197)
    assert e.deviations == ()


def test_window_day_198_is_outside_and_the_endpoint_is_missing() -> None:
    """Missing, PD-WIN1 important for Hb and platelets: Day 198 is outside Days 169-197; no
    extrapolation (D4, D5); the response is "missing", not "no response" (D8)."""
    b = month6(Subject(), day=198)
    e = b.evaluate(at=b.at(200))
    hb = e.endpoint("HB-M6")
    assert (hb.status, hb.response) == ("missing", "missing")
    assert e.deviation_codes() == ["PD-WIN1", "PD-WIN1"]
    assert {d.importance for d in e.deviations} == {"important"}


def test_window_uses_the_site_date_for_a_lab_stamping_in_utc() -> None:
    """Missing: drawn on Day 198 at 07:20 in Shanghai, stamped 23:20Z on Day 197's UTC date;
    the study day uses the site's date (D8), so it is outside the window."""
    b = Subject().labs(198, "07:20", hb="125", plt="150", stamp_zone="UTC")
    e = b.evaluate(at=b.at(200))
    assert e.endpoint("HB-M6").status == "missing"
    assert e.deviation_codes() == ["PD-WIN1", "PD-WIN1"]


def test_tie_equidistant_before_and_after_goes_to_the_later() -> None:
    """Day 186 selected: Days 180 and 186 are both 3 days from Day 183; a tie goes to the
    later result (D4)."""
    b = month6(month6(Subject(), day=180, hb="100"), day=186, hb="125")
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.study_day, hb.value) == (186, "125")


def test_closest_to_target_wins_over_later() -> None:
    """Day 182 selected: closer to Day 183 than Day 185 (D4)."""
    b = month6(month6(Subject(), day=182, hb="100"), day=185, hb="125")
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.study_day, hb.value) == (182, "100")


def test_tie_on_the_same_day_goes_to_the_later_collection_time() -> None:
    """15:00 selected: two results on Day 183; the later collection time wins (D4)."""
    b = month6(month6(Subject(), clock="07:00", hb="100"), clock="15:00", hb="125")
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.study_day, hb.value) == (183, "125")


def test_missing_endpoint_after_the_window_closed_is_pd_win1() -> None:
    """Missing + PD-WIN1 (important): no Month 6 value, evaluated on Day 198 (D4, D5, D8)."""
    b = Subject()
    e = b.evaluate(at=b.at(198, "00:30"))
    assert (e.endpoint("HB-M6").status, e.endpoint("PLT-M6").status) == ("missing", "missing")
    assert e.endpoint("HB-M6").response == "missing"
    assert e.deviation_codes() == ["PD-WIN1", "PD-WIN1"]


def test_open_window_is_not_missing() -> None:
    """Open, no PD-WIN1: no Month 6 value yet, evaluated on Day 197 at 23:30 (D8)."""
    b = Subject()
    e = b.evaluate(at=b.at(197, "23:30"))
    assert e.endpoint("HB-M6").status == "open"
    eligible_and_clean(e)


def test_month_24_window_missing_after_day_759() -> None:
    """Missing + PD-WIN1 for Month 24 only: Month 6 values present, nothing in Days 703-759,
    evaluated on Day 760 (D4, D5)."""
    b = month6(Subject())
    e = b.evaluate(at=b.at(760))
    assert (e.endpoint("HB-M24").status, e.endpoint("HB-M6").status) == ("missing",
                                                                          "in window")
    assert e.deviation_codes() == ["PD-WIN1", "PD-WIN1"]


# --- D4: response ------------------------------------------------------------------------------


def test_aiha_complete_response_at_120() -> None:
    """AIHA complete: Hb 120 g/L (>= 120, D4)."""
    b = month6(Subject(), hb="120")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "complete"


def test_aiha_partial_response_by_a_rise_of_20() -> None:
    """AIHA partial: Hb 92 g/L is below 100 but 20 above the baseline 72 (D4)."""
    b = month6(Subject(), hb="92")
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.response, hb.baseline) == ("partial", "72 g/L")


def test_aiha_no_response() -> None:
    """AIHA none: Hb 91 g/L, a rise of 19 from 72, below 100 (D4)."""
    b = month6(Subject(), hb="91")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "none"


def test_haemoglobin_6_days_after_red_cells_is_not_evaluable() -> None:
    """Not evaluable, value kept: Hb drawn 6 days after a red-cell transfusion stays the
    descriptive value but is flagged and not evaluable for response (D4); no PD-WIN1."""
    b = month6(Subject().transfusion(177, "08:00"), hb="105")
    e = b.evaluate(at=b.at(200))
    hb = e.endpoint("HB-M6")
    assert (hb.status, hb.value, hb.response) == ("not evaluable", "105", "not evaluable")
    assert e.deviations == ()


def test_haemoglobin_8_days_after_red_cells_is_evaluable() -> None:
    """AIHA partial: 8 days after red cells the Hb (105) is evaluable (D4)."""
    b = month6(Subject().transfusion(175, "08:00"), hb="105")
    hb = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (hb.status, hb.response) == ("in window", "partial")


def evans(b: Subject) -> Subject:
    """Evans syndrome with baseline platelets 18000 /uL (18 x10^9/L)."""
    return b.diagnosis("EVANS").labs(1, "07:30", hb="72", plt=("18000", "/uL"),
                                     slot="baseline labs")


def test_evans_platelet_confirmation_6_days_later_is_pending() -> None:
    """Pending: platelets 64 (>= 30, >= 2 x 18) at Month 6, but the only later count is 6 days
    after, not the >= 7 days a confirmation needs (D4, D8); overall pending."""
    b = evans(Subject())
    month6(b, hb="125", plt=("64000", "/uL")).labs(189, plt="71")
    e = b.evaluate(at=b.at(200))
    plt = e.endpoint("PLT-M6")
    assert (plt.value, plt.baseline, plt.response) == ("64", "18 10*9/L", "pending")
    assert e.endpoint("EVANS-M6").response == "pending"


def test_evans_platelet_confirmation_7_days_later_is_a_response() -> None:
    """Platelets response (R) confirmed 7 days later (71), Hb complete; Evans overall = the
    worse of the two = response (D4)."""
    b = evans(Subject())
    month6(b, hb="125", plt=("64000", "/uL")).labs(190, plt=("71", "10*3/uL"))
    e = b.evaluate(at=b.at(200))
    assert e.endpoint("HB-M6").response == "complete"
    assert e.endpoint("PLT-M6").response == "response"
    assert e.endpoint("EVANS-M6").response == "response"


def test_evans_complete_in_both_lineages() -> None:
    """Evans complete: Hb 125 and platelets 120, confirmed 110 seven days later (D4)."""
    b = evans(Subject())
    month6(b, hb="125", plt="120").labs(190, plt="110")
    e = b.evaluate(at=b.at(200))
    assert e.endpoint("PLT-M6").response == "complete"
    assert e.endpoint("EVANS-M6").response == "complete"


def test_evans_bleeding_overrides_the_platelet_response() -> None:
    """No response: bleeding before the confirmation overrides the platelet response; overall
    the worse lineage, no response (D4, D8)."""
    b = evans(Subject())
    month6(b, hb="125", plt="64").labs(190, plt="71").bleeding(186)
    e = b.evaluate(at=b.at(200))
    assert e.endpoint("PLT-M6").response == "no response"
    assert e.endpoint("EVANS-M6").response == "no response"


def prca(b: Subject) -> Subject:
    """PRCA, baseline Hb 62 g/L, red cells on Days 4 and 25."""
    return (b.diagnosis("PRCA").labs(1, "07:30", hb="62", plt="236", retic="0.1",
                                     slot="baseline labs")
            .transfusion(4).transfusion(25))


def test_prca_complete_response() -> None:
    """PRCA complete: transfusion independent >= 8 weeks, Hb 125 >= 120 (man), reticulocytes
    1.2 % from the same draw (D4, D8)."""
    b = month6(prca(Subject()), hb="125", retic="1.2")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "complete"


def test_prca_partial_when_the_same_draw_reticulocytes_are_low() -> None:
    """PRCA partial: reticulocytes 0.7 % in the Month 6 draw; a 1.3 % from another draw on Day
    187 must not be used (D8); rise 63 >= 20 and transfusion independent (D4)."""
    b = month6(prca(Subject()), hb="125", retic="0.7").labs(187, "09:00", retic="1.3")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "partial"


def test_prca_no_response_after_a_recent_transfusion() -> None:
    """PRCA none: red cells on Day 150, within 8 weeks of the Month 6 sample, so not
    transfusion independent (D4, D8)."""
    b = month6(prca(Subject()).transfusion(150), hb="125", retic="1.2")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "none"


def test_prca_woman_complete_at_110_and_reticulocytes_1_percent() -> None:
    """PRCA complete: a woman needs Hb >= 110 g/L (110 is enough) and reticulocytes >= 1 %
    (1.0 is enough), transfusion independent (D4)."""
    b = month6(prca(Subject().female(childbearing=False, pregnancy_test=None)), hb="110",
               retic="1.0")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "complete"


def test_prca_transfusion_exactly_8_weeks_before_is_independent() -> None:
    """PRCA complete: the last red cells were given exactly 8 weeks (56 days, same clock time)
    before the Month 6 sample, so the subject has been transfusion independent for >= 8 weeks
    (D4, counted back from the selected sample, D8)."""
    b = month6(prca(Subject()).transfusion(127, "08:00"), hb="125", retic="1.2")
    assert b.evaluate(at=b.at(200)).endpoint("HB-M6").response == "complete"


def test_evans_overall_no_response_when_hb_fails_while_platelets_await_confirmation() -> None:
    """Evans no response: Hb 80 (rise 8, below 100) is no response; whatever the pending
    platelet confirmation gives, the worse of the two lineages is no response (D4)."""
    b = evans(Subject())
    month6(b, hb="80", plt="64")
    e = b.evaluate(at=b.at(188))
    assert (e.endpoint("HB-M6").response, e.endpoint("PLT-M6").response) == ("none",
                                                                              "pending")
    assert e.endpoint("EVANS-M6").response == "no response"


def test_evans_overall_no_response_when_platelets_fail_and_hb_is_not_evaluable() -> None:
    """Evans no response: platelets 20 (confirmed 20, baseline 18) are no response; the Hb,
    drawn 3 days after red cells, is not evaluable (D4); the worse of the two lineages is no
    response whatever the Hb would have shown (D4)."""
    b = evans(Subject().transfusion(180))
    month6(b, hb="100", plt="20").labs(190, plt="20")
    e = b.evaluate(at=b.at(200))
    assert (e.endpoint("HB-M6").response, e.endpoint("PLT-M6").response) == (
        "not evaluable", "no response")
    assert e.endpoint("EVANS-M6").response == "no response"


# --- D7: corrections and retractions ---------------------------------------------------------


def test_correction_changes_the_response_and_replay_reproduces_the_old_one() -> None:
    """Complete after the Month 6 Hb is corrected from 95 to 125 g/L on Day 195; as known on
    Day 194, the old value 95 and the old response (partial, rise 23) (D7)."""
    b = month6(Subject(), hb="95", slot="m6")
    b.correct("m6", on=(195, "10:00"), result={"value": "125", "unit": "g/L"})
    now = b.evaluate(at=b.at(200)).endpoint("HB-M6")
    assert (now.value, now.response) == ("125", "complete")
    old = b.evaluate(at=b.at(200), known_at=b.at(194)).endpoint("HB-M6")
    assert (old.value, old.response) == ("95", "partial")


def test_retraction_makes_the_endpoint_missing_and_replay_reproduces_it() -> None:
    """Missing + PD-WIN1 after the only Month 6 draw is retracted as entered in error on Day
    199; as known on Day 198 it is in window, complete, without deviation (D7)."""
    b = month6(Subject(), slot="m6")
    b.retract("m6", on=(199, "10:00")).retract("m6", index=1, on=(199, "10:05"),
                                               name="retraction of m6 plt")
    now = b.evaluate(at=b.at(200))
    assert now.endpoint("HB-M6").status == "missing"
    assert now.deviation_codes() == ["PD-WIN1", "PD-WIN1"]
    before = b.evaluate(at=b.at(200), known_at=b.at(198))
    assert (before.endpoint("HB-M6").status, before.endpoint("HB-M6").response) == (
        "in window", "complete")
    assert before.deviations == ()


def test_retracted_correction_no_longer_applies() -> None:
    """Eligible again: the ECOG correction (1 -> 3) is itself retracted; the original value
    counts (D7)."""
    b = (Subject().correct("ecog", on=(20, "10:00"), score=3, name="fix")
         .retract("fix", on=(21, "10:00")))
    eligible_and_clean(b.evaluate(at=b.at(30)))
    assert b.evaluate(at=b.at(30), known_at=b.at(20, "18:00")).eligibility == "ineligible"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_correction_without_a_reason_is_refused(reason: str | None) -> None:
    """Refused at construction with EventError: a correction must say why (D7)."""
    b = Subject()
    with pytest.raises(EventError):
        b.correct("ecog", on=(20, "10:00"), score=3, reason=reason)


def test_correction_without_a_reason_is_refused_at_the_interchange_boundary() -> None:
    """Refused with EventError: the interchange form of a correction with no "reason" (D7)."""
    body = event_to_json(Subject().correct("ecog", on=(20, "10:00"), score=3)
                         .event("correction of ecog"))
    del body["reason"]
    with pytest.raises(EventError, match="reason"):
        event_from_json(body)


# --- D5, D7, D8: pregnancy after enrolment -----------------------------------------------------


def pregnant_on_day_120(b: Subject) -> Subject:
    """A woman of childbearing potential, negative at screening; positive urine hCG on Day 120
    drawn 09:10, recorded 11:30; morning dose at 08:00."""
    return (b.female().dose(120, "08:00")
            .pregnancy_test(120, "09:10", "positive", recorded=(120, "11:30"), slot="hcg+"))


def test_pregnancy_after_enrolment_with_a_later_dose_is_pd_safe() -> None:
    """Eligible (D7: no change to eligibility), PD-SAFE important: a dose at 20:00 after the
    positive result was recorded at 11:30; the 08:00 dose is not evidence (D5, D8)."""
    b = pregnant_on_day_120(Subject()).dose(120, "20:00")
    e = b.evaluate(at=b.at(130))
    assert e.eligibility == "eligible"
    deviation = only(e, "PD-SAFE")
    assert deviation.importance == "important"
    assert ids(b.event("dose 120 20:00")) <= set(deviation.evidence)
    assert ids(b.event("dose 120 08:00")).isdisjoint(deviation.evidence)


def test_pregnancy_after_enrolment_without_a_later_dose_is_not_a_deviation() -> None:
    """Eligible, no deviation: no dose after the positive result (D7)."""
    b = pregnant_on_day_120(Subject())
    eligible_and_clean(b.evaluate(at=b.at(130)))


def test_dose_between_specimen_and_record_time_is_not_pd_safe() -> None:
    """No PD-SAFE: the 10:00 dose was after the specimen (09:10) but before the result was
    recorded (11:30); a result is known from its record time (D8)."""
    b = pregnant_on_day_120(Subject()).dose(120, "10:00")
    eligible_and_clean(b.evaluate(at=b.at(130)))


# --- D1: study days ----------------------------------------------------------------------------


def test_study_day_minus_1_and_1_around_day_1_no_day_0() -> None:
    """Day -1 is the day before Day 1, there is no Day 0 (D1, CDISC): a consent on Day -1
    after a procedure gives PD-ICF dated Day -1; a first dose of 2 mg gives PD-DOSE on Day 1;
    Month 6 = Day 183 = Day 1 + 182 days, window Day 1 + 168 to Day 1 + 196 (D4)."""
    b = (Subject().consent(-1, "10:00").ecog(1, day=-1, clock="10:30")
         .labs(-1, "08:00", hb="70", plt="205", slot="screening labs")
         .dose(1, "08:00", mg="2"))
    e = b.evaluate(at=b.at(30))
    icf = only(e, "PD-ICF")
    assert (icf.study_day, icf.date) == (-1, "2024-03-10")
    dose = only(e, "PD-DOSE")
    assert (dose.study_day, dose.date) == (1, "2024-03-11")
    hb = e.endpoint("HB-M6")
    assert hb.target == "2024-09-09"
    assert hb.window == ("2024-08-26", "2024-09-23")


def test_day_1_is_the_site_date_of_the_first_dose() -> None:
    """Day 1 = 2024-03-11: the first dose at 07:00 in Shanghai is 23:00 UTC on 2024-03-10;
    dates use the site's zone (D1, D8)."""
    b = Subject().no_dose(1, "08:00").dose(1, "07:00")
    e = b.evaluate(at=b.at(30))
    assert e.day1 == "2024-03-11"
    eligible_and_clean(e)


def test_pd_dose_when_day_1_is_not_twice_daily() -> None:
    """PD-DOSE, not important: only one dose on Day 1 (D5)."""
    b = Subject().no_dose(1, "20:00")
    e = b.evaluate(at=b.at(30))
    assert e.deviation_codes() == ["PD-DOSE"]
    assert only(e, "PD-DOSE").importance == "not important"
