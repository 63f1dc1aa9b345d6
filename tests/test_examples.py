"""The example study history of NCT03918265 (``protocolkit/examples/nct03918265.jsonl``).

These tests check the file itself (it parses, it is what the generator writes, its envelope is
sound) and that each subject holds the facts its row of ``examples/README.md`` promises. The
small oracle below recomputes only what the data must show (study days, trough timing, Month 6
selection); it is not the rules engine, whose verdicts on this file are tested elsewhere.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import itertools
import sys
from collections import defaultdict
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import ModuleType

import orjson
import pendulum
import pytest

from protocolkit import events as ev
from protocolkit.serde import read_jsonl
from protocolkit.units import MeasurementStatus

ROOT = Path(__file__).resolve().parents[1]
ZONE = "Asia/Shanghai"
HB, PLT, RETIC = "718-7", "777-3", "4679-7"


def _load_generator() -> ModuleType:
    path = ROOT / "tools" / "make_examples.py"
    spec = importlib.util.spec_from_file_location("make_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_examples", module)
    spec.loader.exec_module(module)
    return module


make_examples = _load_generator()


def _example_bytes() -> bytes:
    return resources.files("protocolkit").joinpath("examples/nct03918265.jsonl").read_bytes()


EVENTS: list[ev.Event] = read_jsonl(_example_bytes().splitlines(), source="nct03918265.jsonl")
BY_SUBJECT: dict[str, list[ev.Event]] = defaultdict(list)
for _event in EVENTS:
    BY_SUBJECT[_event.subject].append(_event)


# --- a small oracle over the data (D1, D3, D4, D7, D8) ------------------------------------

def of(subject: str, kind: type[ev.Event]) -> list[ev.Event]:
    """The subject's events of one type, in clinical order."""
    return sorted((e for e in BY_SUBJECT[subject] if isinstance(e, kind)),
                  key=lambda e: e.occurred_at)


@functools.cache
def site_zone(subject: str) -> str:
    """The zone the subject's SubjectRegistered records for the site (D1, D8)."""
    (registered,) = [e for e in BY_SUBJECT[subject] if isinstance(e, ev.SubjectRegistered)]
    assert registered.time_zone is not None
    return registered.time_zone


def local_date(event: ev.Event) -> dt.date:
    """The clinical date in the site's zone, whatever zone the event was stamped in (D8)."""
    return event.occurred_at.in_timezone(site_zone(event.subject)).date()


def day1(subject: str) -> dt.date:
    return local_date(of(subject, ev.DoseAdministered)[0])


def study_day(subject: str, event: ev.Event) -> int:
    delta = (local_date(event) - day1(subject)).days
    return delta + 1 if delta >= 0 else delta


def retracted(subject: str) -> set[object]:
    return {e.retracts for e in of(subject, ev.EntryRetracted)}


def current_value(subject: str, event: ev.LabResulted) -> Decimal:
    """The canonical value after corrections (only g/L corrections occur in this file)."""
    value = event.result.canonical_value
    for fix in of(subject, ev.EntryCorrected):
        if fix.corrects == event.event_id and "result" in fix.changes:
            assert fix.changes["result"]["unit"] == event.result.canonical_unit
            value = Decimal(fix.changes["result"]["value"])
    assert value is not None
    return value


def results(subject: str, loinc: str) -> list[ev.LabResulted]:
    gone = retracted(subject)
    return [e for e in of(subject, ev.LabResulted)
            if e.loinc == loinc and e.event_id not in gone
            and e.result.status is MeasurementStatus.VALID]


def month6(subject: str, loinc: str) -> ev.LabResulted | None:
    """D4: in Days 169-197, closest to Day 183, a tie to the later one, then the later time."""
    inside = [e for e in results(subject, loinc) if 169 <= study_day(subject, e) <= 197]
    if not inside:
        return None
    return min(inside, key=lambda e: (abs(study_day(subject, e) - 183),
                                      -study_day(subject, e), -e.occurred_at.timestamp()))


def baseline(subject: str, loinc: str) -> Decimal:
    first = of(subject, ev.DoseAdministered)[0].occurred_at
    before = [e for e in results(subject, loinc) if e.occurred_at < first]
    return current_value(subject, before[-1])


def trough_validity(subject: str, level: ev.DrugLevelResulted) -> bool:
    """D3: 11-13 h after the last dose taken, before the next dose, previous dose not missed."""
    doses = of(subject, ev.DoseAdministered)
    before = [d for d in doses if d.occurred_at < level.occurred_at]
    after = [d for d in doses if d.occurred_at > level.occurred_at]
    if not before:
        return False
    last = before[-1].occurred_at
    missed = [m for m in of(subject, ev.DoseMissed)
              if last < m.occurred_at < level.occurred_at]
    hours = (pendulum.instance(level.occurred_at).in_timezone("UTC")
             - pendulum.instance(last).in_timezone("UTC")).total_seconds() / 3600
    return 11 <= hours <= 13 and not missed and (not after or after[0].occurred_at
                                                   > level.occurred_at)


def steady(subject: str, level: ev.DrugLevelResulted) -> bool:
    """D3: at least 72 h since the last dose change, or since the first dose."""
    anchors = [of(subject, ev.DoseAdministered)[0].occurred_at] + [
        c.occurred_at for c in of(subject, ev.DoseChanged) if c.occurred_at < level.occurred_at
    ]
    return level.occurred_at - max(anchors) >= dt.timedelta(hours=72)


def troughs(subject: str) -> list[ev.DrugLevelResulted]:
    return [e for e in of(subject, ev.DrugLevelResulted) if e.labelled_trough]


DOSED = ["PUMCH-001", "PUMCH-002", "PUMCH-003", "PUMCH-007", "PUMCH-008", "PUMCH-009",
         "PUMCH-010", "PUMCH-011", "PUMCH-012"]
SCREEN_ONLY = ["PUMCH-004", "PUMCH-005", "PUMCH-006"]

#: Day 1 and the Month 6 values (study day, canonical value) of README.md.
MONTH6 = {
    "PUMCH-001": ("2019-05-28", (183, "126"), (183, "231")),
    "PUMCH-002": ("2019-06-18", (180, "112"), (180, "251")),
    "PUMCH-003": ("2019-07-09", (183, "124"), (183, "64")),
    "PUMCH-007": ("2019-09-16", (183, "105"), (183, "201")),
    "PUMCH-008": ("2019-09-24", (183, "84"), (183, "170")),
    "PUMCH-009": ("2019-10-15", (183, "94"), (183, "236")),
    "PUMCH-010": ("2019-11-05", (183, "89"), (183, "268")),
    "PUMCH-011": ("2019-11-26", (183, "121"), (183, "243")),
    "PUMCH-012": ("2019-12-17", None, None),
}


# --- the file -------------------------------------------------------------------------------

class TestFile:
    def test_parses_at_the_boundary(self) -> None:
        """Every line passes ``read_jsonl`` (units measured against the catalogue)."""
        assert len(EVENTS) == len(_example_bytes().splitlines())
        assert {e.study for e in EVENTS} == {"NCT03918265"}
        assert sorted(BY_SUBJECT) == [f"PUMCH-{n:03d}" for n in range(1, 13)]

    def test_generator_reproduces_the_file(self) -> None:
        """The file is exactly what tools/make_examples.py writes, and writing is stable."""
        assert make_examples.render() == _example_bytes()
        assert make_examples.render() == make_examples.render()

    def test_check_mode(self, tmp_path: Path) -> None:
        target = tmp_path / "out.jsonl"
        assert make_examples.main(["--check", "--output", str(target)]) == 1
        assert make_examples.main(["--output", str(target)]) == 0
        assert make_examples.main(["--check", "--output", str(target)]) == 0

    def test_event_ids_are_unique_and_derived(self) -> None:
        ids = [e.event_id for e in EVENTS]
        assert len(set(ids)) == len(ids)
        assert {i.version for i in ids} == {5}

    def test_every_subject_registers_the_site_zone(self) -> None:
        """Each subject has one SubjectRegistered, naming the site and its zone."""
        for subject, events in BY_SUBJECT.items():
            registered = [e for e in events if isinstance(e, ev.SubjectRegistered)]
            assert [(r.site, r.time_zone) for r in registered] == [("PUMCH", ZONE)], subject
            assert site_zone(subject) == ZONE

    def test_levels_say_whether_labelled_trough(self) -> None:
        """Every DrugLevelResulted line carries labelled_trough (required) as true."""
        lines = [orjson.loads(line) for line in _example_bytes().splitlines()]
        levels = [d for d in lines if d["type"] == "DrugLevelResulted"]
        assert levels
        assert {d["labelled_trough"] for d in levels} == {True}

    def test_recorded_on_or_after_occurred(self) -> None:
        late = [e for e in EVENTS if e.recorded_at < e.occurred_at]
        assert late == []

    def test_subjects_contiguous_in_record_order(self) -> None:
        """Subjects follow one another; each subject's events are in record-time order."""
        order = [e.subject for e in EVENTS]
        assert order == sorted(order)
        for events in BY_SUBJECT.values():
            stamps = [e.recorded_at for e in events]
            assert stamps == sorted(stamps)

    def test_zones_are_the_site_or_utc(self) -> None:
        zones = {e.occurred_at.timezone_name for e in EVENTS}
        assert zones == {ZONE, "UTC"}
        assert {e.recorded_at.timezone_name for e in EVENTS} == {ZONE, "UTC"}

    def test_attributable(self) -> None:
        assert {e.recorded_by for e in EVENTS} == {
            "dr.zhang", "nurse.li", "lab.central", "pharmacy"}
        assert {e.source for e in EVENTS} == {"edc", "lab:central", "pharmacy"}

    def test_corrections_name_an_earlier_event_of_the_same_subject(self) -> None:
        seen: dict[object, ev.Event] = {}
        amendments = 0
        for event in EVENTS:
            target = getattr(event, "corrects", None) or getattr(event, "retracts", None)
            if target is not None:
                amendments += 1
                assert target in seen, f"{event.event_id} names an unknown or later event"
                assert seen[target].subject == event.subject
                assert seen[target].recorded_at < event.recorded_at
            seen[event.event_id] = event
        assert amendments == 2

    def test_corrections_have_reasons(self) -> None:
        for event in EVENTS:
            if isinstance(event, ev.EntryCorrected | ev.EntryRetracted):
                assert event.reason.strip()

    def test_the_readme_lists_every_subject(self) -> None:
        readme = resources.files("protocolkit").joinpath("examples/README.md").read_text("utf-8")
        for subject in BY_SUBJECT:
            assert f"`{subject}`" in readme
        assert f"There are {len(EVENTS)} events" in readme


# --- what every dosed subject has --------------------------------------------------------------

@pytest.mark.parametrize("subject", DOSED)
class TestDosedSubjects:
    def test_day1(self, subject: str) -> None:
        assert day1(subject).isoformat() == MONTH6[subject][0]

    def test_screening_facts_fresh(self, subject: str) -> None:
        """ECOG and any pregnancy test within 28 days before Day 1 (D2, D8 inclusive)."""
        for kind in (ev.EcogAssessed, ev.PregnancyTestResulted):
            screening = [e for e in of(subject, kind) if study_day(subject, e) < 1]
            assert all(-28 <= study_day(subject, e) <= -1 for e in screening)
        assert of(subject, ev.EcogAssessed)

    def test_consent_and_enrolment_before_dosing(self, subject: str) -> None:
        first = of(subject, ev.DoseAdministered)[0].occurred_at
        assert of(subject, ev.ConsentSigned)[0].occurred_at < first
        assert of(subject, ev.SubjectEnrolled)[0].occurred_at < first
        regimen = of(subject, ev.RegimenPrescribed)[0]
        assert (str(regimen.dose), regimen.frequency) == ("1 mg", "BID")

    def test_day1_twice_daily(self, subject: str) -> None:
        on_day1 = [d for d in of(subject, ev.DoseAdministered) if study_day(subject, d) == 1]
        assert len(on_day1) == 2

    def test_every_trough_has_its_sample_and_the_dose_before(self, subject: str) -> None:
        samples = {s.sample_id: s for s in of(subject, ev.SampleDrawn)}
        for level in troughs(subject):
            assert samples[level.sample_id].purpose == "trough"
            assert samples[level.sample_id].occurred_at == level.occurred_at
            assert any(d.occurred_at < level.occurred_at
                       for d in of(subject, ev.DoseAdministered))

    def test_month6_values(self, subject: str) -> None:
        _, hb, plt = MONTH6[subject]
        for loinc, expected in ((HB, hb), (PLT, plt)):
            chosen = month6(subject, loinc)
            if expected is None:
                assert chosen is None
            else:
                assert chosen is not None
                assert (study_day(subject, chosen), str(current_value(subject, chosen))) == (
                    expected[0], expected[1])


def test_invalid_troughs_are_exactly_the_two_of_the_readme() -> None:
    """D3: PD-PK for PUMCH-009 Day 15 (2 h post dose) and PUMCH-010 Day 41 (missed dose)."""
    invalid = {(s, study_day(s, t)) for s in DOSED for t in troughs(s)
               if not trough_validity(s, t)}
    assert invalid == {("PUMCH-009", 15), ("PUMCH-010", 41)}


def test_out_of_range_pairs_are_only_pumch_009() -> None:
    """D3/D5 PD-TDM: consecutive valid steady-state troughs outside 5-10 with no change."""
    pairs = []
    for subject in DOSED:
        usable = [t for t in troughs(subject)
                  if trough_validity(subject, t) and steady(subject, t)]
        for a, b in itertools.pairwise(usable):
            changed = any(a.occurred_at < c.occurred_at < b.occurred_at
                          for c in of(subject, ev.DoseChanged))
            out = [not Decimal(5) <= t.result.canonical_value <= Decimal(10) for t in (a, b)]
            if all(out) and not changed:
                pairs.append((subject, study_day(subject, a), study_day(subject, b),
                              max(a.result.canonical_value, b.result.canonical_value)))
    assert pairs == [("PUMCH-009", 22, 29, Decimal("21.4"))]


def test_no_other_trough_out_of_range_at_steady_state() -> None:
    """Every other valid steady-state trough is inside 5-10 ng/mL (README rows 1-3, 7-12)."""
    for subject in DOSED:
        for level in troughs(subject):
            if trough_validity(subject, level) and steady(subject, level):
                if (subject, study_day(subject, level)) in {("PUMCH-009", 22),
                                                            ("PUMCH-009", 29)}:
                    continue
                assert Decimal(5) <= level.result.canonical_value <= Decimal(10), subject


# --- subject by subject (README rows) ----------------------------------------------------------

def test_001_complete_response_data() -> None:
    assert baseline("PUMCH-001", HB) == 72
    assert of("PUMCH-001", ev.TransfusionGiven) == []
    utc_level = [t for t in troughs("PUMCH-001") if t.occurred_at.timezone_name == "UTC"]
    assert [study_day("PUMCH-001", t) for t in utc_level] == [85]
    assert utc_level[0].occurred_at.date() != local_date(utc_level[0])  # UTC date is Day 84


def test_002_prca_partial_response_data() -> None:
    s = "PUMCH-002"
    consent = of(s, ev.ConsentSigned)[0]
    assert consent.time_precision is ev.TimePrecision.DAY
    assert consent.occurred_at == pendulum.datetime(2019, 6, 10, tz=ZONE)
    others = [e for e in BY_SUBJECT[s] if e is not consent]
    assert all(local_date(e) > local_date(consent) for e in others)  # no data query
    assert of(s, ev.DiagnosisRecorded)[0].condition == "PRCA"
    sample = month6(s, HB)
    assert sample is not None
    last_rbc = of(s, ev.TransfusionGiven)[-1]
    assert sample.occurred_at - last_rbc.occurred_at >= dt.timedelta(weeks=8)
    assert current_value(s, sample) - baseline(s, HB) == 50
    same_draw = [r for r in results(s, RETIC) if r.specimen_id == sample.specimen_id]
    assert [str(r.result.canonical_value) for r in same_draw] == ["0.7"]
    # Hb drawn within 7 days after a red-cell transfusion (flagged, D4).
    flagged = {study_day(s, h) for h in results(s, HB)
               if any(dt.timedelta(0) < h.occurred_at - t.occurred_at <= dt.timedelta(days=7)
                      for t in of(s, ev.TransfusionGiven))}
    assert flagged == {8, 29}


def test_003_evans_both_lineages_and_units() -> None:
    s = "PUMCH-003"
    assert of(s, ev.DiagnosisRecorded)[0].condition == "EVANS"
    assert baseline(s, PLT) == 18
    hb, plt = month6(s, HB), month6(s, PLT)
    assert hb is not None and plt is not None
    assert (hb.result.value, hb.result.unit) == (Decimal("12.4"), "g/dL")
    assert (plt.result.value, plt.result.unit) == (Decimal("64000"), "/uL")
    confirmation = [p for p in results(s, PLT)
                    if p.occurred_at - plt.occurred_at >= dt.timedelta(days=7)]
    assert [(study_day(s, p), p.result.canonical_value) for p in confirmation] == [
        (192, Decimal("71"))]
    assert of(s, ev.AdverseEventReported) == []  # no bleeding
    assert [p.result for p in of(s, ev.PregnancyTestResulted)] == [ev.TestResult.NEGATIVE]


def test_004_isolated_itp() -> None:
    assert [d.condition for d in of("PUMCH-004", ev.DiagnosisRecorded)] == ["ITP"]
    assert of("PUMCH-004", ev.DoseAdministered) == []


def test_005_aged_81_on_the_consent_date() -> None:
    born = of("PUMCH-005", ev.DemographicsRecorded)[0].date_of_birth
    signed = local_date(of("PUMCH-005", ev.ConsentSigned)[0])
    age = signed.year - born.year - ((signed.month, signed.day) < (born.month, born.day))
    assert age == 81
    assert of("PUMCH-005", ev.DoseAdministered) == []


def test_006_pending_without_ecog() -> None:
    assert of("PUMCH-006", ev.EcogAssessed) == []
    assert of("PUMCH-006", ev.SubjectEnrolled) == []
    assert of("PUMCH-006", ev.DoseAdministered) == []
    assert of("PUMCH-006", ev.ConsentSigned)


def test_007_procedure_before_consent() -> None:
    s = "PUMCH-007"
    consent = of(s, ev.ConsentSigned)[0]
    early = [e for e in BY_SUBJECT[s] if e.occurred_at < consent.occurred_at]
    assert sorted(e.event_type for e in early) == ["LabResulted", "LabResulted", "SampleDrawn"]
    assert study_day(s, consent) == -28
    assert [study_day(s, e) for e in of(s, ev.EcogAssessed)] == [-28]


def test_008_dosed_with_ecog_3() -> None:
    s = "PUMCH-008"
    enrolled = of(s, ev.SubjectEnrolled)[0].occurred_at
    latest = [e for e in of(s, ev.EcogAssessed) if e.occurred_at <= enrolled][-1]
    assert latest.score == 3
    assert [e.score for e in of(s, ev.EcogAssessed)] == [2, 3]
    hb = month6(s, HB)
    assert hb is not None
    rbc = of(s, ev.TransfusionGiven)[-1]
    assert dt.timedelta(0) < hb.occurred_at - rbc.occurred_at <= dt.timedelta(days=7)


def test_009_titration() -> None:
    s = "PUMCH-009"
    (change,) = of(s, ev.DoseChanged)
    assert str(change.dose) == "0.5 mg"
    after = [t for t in troughs(s) if t.occurred_at > change.occurred_at]
    assert [(study_day(s, t), steady(s, t)) for t in after] == [
        (31, False), (36, True), (85, True), (183, True)]
    (two_hours,) = [t for t in troughs(s) if study_day(s, t) == 15]
    assert not trough_validity(s, two_hours)


def test_010_first_dose_2_mg_and_missed_dose() -> None:
    s = "PUMCH-010"
    first = of(s, ev.DoseAdministered)[0]
    assert str(first.dose) == "2 mg"
    assert [study_day(s, m) for m in of(s, ev.DoseMissed)] == [40]


def test_011_pregnancy_after_enrolment() -> None:
    s = "PUMCH-011"
    positive = [p for p in of(s, ev.PregnancyTestResulted)
                if p.result is ev.TestResult.POSITIVE]
    (test,) = positive
    assert study_day(s, test) == 120
    after = [d for d in of(s, ev.DoseAdministered) if d.occurred_at > test.recorded_at]
    assert [(study_day(s, d), d.occurred_at.in_timezone(ZONE).strftime("%H:%M"))
            for d in after] == [(120, "20:00"), (121, "08:00")]
    assert [a.category for a in of(s, ev.AdverseEventReported)] == ["pregnancy"]
    assert of(s, ev.TreatmentDiscontinued)


def test_012_missing_month6_after_retraction() -> None:
    s = "PUMCH-012"
    (fix,) = of(s, ev.EntryCorrected)
    corrected = next(e for e in BY_SUBJECT[s] if e.event_id == fix.corrects)
    assert isinstance(corrected, ev.LabResulted)
    assert (corrected.result.canonical_value, current_value(s, corrected)) == (78, 87)
    (gone,) = of(s, ev.EntryRetracted)
    wrong = next(e for e in BY_SUBJECT[s] if e.event_id == gone.retracts)
    assert study_day(s, wrong) == 185  # inside the window until it was retracted
    late = [h for h in results(s, HB) if study_day(s, h) > 197]
    assert [(study_day(s, h), h.occurred_at.timezone_name) for h in late] == [(198, "UTC")]
    assert (late[0].occurred_at.date() - day1(s)).days + 1 == 197  # the UTC date is Day 197


def test_only_pumch_007_has_anything_before_consent() -> None:
    """D5 PD-ICF: no other subject has an event whose clinical time precedes its consent."""
    early = {}
    for subject, events in BY_SUBJECT.items():
        (consent,) = of(subject, ev.ConsentSigned)
        before = [e for e in events if e.occurred_at < consent.occurred_at]
        if before:
            early[subject] = len(before)
    assert early == {"PUMCH-007": 3}


def test_first_dose_is_1_mg_except_pumch_010() -> None:
    first = {s: str(of(s, ev.DoseAdministered)[0].dose) for s in DOSED}
    assert {s for s, dose in first.items() if dose != "1 mg"} == {"PUMCH-010"}


def test_only_pumch_011_has_a_positive_pregnancy_test() -> None:
    positive = {e.subject for e in EVENTS if isinstance(e, ev.PregnancyTestResulted)
                and e.result is ev.TestResult.POSITIVE}
    assert positive == {"PUMCH-011"}


def test_reference_evaluation_time_follows_every_record() -> None:
    """README: evaluated at 2020-08-10T23:59:59+08:00, everything is known by then."""
    reference = pendulum.datetime(2020, 8, 10, 23, 59, 59, tz=ZONE)
    assert max(e.recorded_at for e in EVENTS) < reference
    for subject in DOSED:
        month6_closes = day1(subject) + dt.timedelta(days=196)
        month24_opens = day1(subject) + dt.timedelta(days=702)
        assert month6_closes < reference.date() < month24_opens
