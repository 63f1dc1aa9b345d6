"""The public strategies (protocolkit.strategies) and the pytest plugin: what they promise."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from protocolkit import (
    EVENT_TYPES,
    ConsentSigned,
    DemographicsRecorded,
    DoseAdministered,
    EntryRetracted,
    Event,
    LabResulted,
    ObservationRecorded,
    SubjectRegistered,
)
from protocolkit.errors import RuleError
from protocolkit.events import CLOCK_SKEW, TimePrecision
from protocolkit.rules import Protocol, default_protocol_path, load_protocol
from protocolkit.store import EventStore
from protocolkit.strategies import (
    EDGE_KINDS,
    History,
    StrategyError,
    edge_histories,
    eligible_histories,
    events,
    histories,
    reexpressed,
    retractions,
    triggering,
    unrelated_events,
    violating,
)

OTHER_DESIGNS = Path(__file__).parent / "protocols"
QUICK = settings(max_examples=15, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
#: ``find`` that shrinks: the result is the smallest example (deterministic). No explain
#: phase: it traces every line run while shrinking, ten times slower.
FIND = settings(database=None, max_examples=500, derandomize=True, deadline=None,
                phases=[Phase.generate, Phase.shrink])
#: ``find`` that only needs an example: no shrinking.
EXISTS = settings(database=None, max_examples=500, derandomize=True, deadline=None,
                  phases=[Phase.generate])


@cache
def protocol(name: str = "nct") -> Protocol:
    if name == "nct":
        return load_protocol(default_protocol_path())
    return load_protocol(OTHER_DESIGNS / f"{name}.protocol")


NCT = protocol()


@cache
def witness() -> History:
    """The smallest eligible NCT03918265 history: the witness in the protocol's zone."""
    return find(eligible_histories(NCT), lambda h: True, settings=FIND)

# --- single events --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_events_of_every_type(name: str) -> None:
    @QUICK
    @given(events(name, study="NCT03918265", subject="S-042", zone="Asia/Kathmandu"))
    def check(event: Event) -> None:
        assert type(event) is EVENT_TYPES[name]
        assert (event.study, event.subject) == ("NCT03918265", "S-042")
        assert event.occurred_at.timezone_name == "Asia/Kathmandu"
        assert event.recorded_at >= event.occurred_at - CLOCK_SKEW
        if event.time_precision is TimePrecision.DAY:
            assert event.occurred_at.time() == dt.time(0)

    check()


def test_events_of_any_type_and_by_class() -> None:
    seen = set()

    @QUICK
    @given(events())
    def check(event: Event) -> None:
        seen.add(event.event_type)

    check()
    assert seen
    assert find(events(DoseAdministered), lambda e: True, settings=FIND).drug
    with pytest.raises(Exception, match="unknown event type 'Dose'"):
        events("Dose")


def test_from_type_works_through_the_entry_point() -> None:
    hooks = [e.value for e in metadata.entry_points(group="hypothesis")]
    assert "protocolkit.strategies:_hypothesis_setup_hook" in hooks
    classes = sorted(EVENT_TYPES.values(), key=lambda c: c.__name__)
    seen = set()

    @settings(max_examples=90, deadline=None, database=None)
    @given(st.sampled_from(classes).flatmap(lambda c: st.tuples(st.just(c), st.from_type(c))))
    def check(pair: tuple[type[Event], Event]) -> None:
        cls, event = pair
        assert type(event) is cls
        seen.add(cls)

    check()
    assert len(seen) > len(classes) // 2
    assert isinstance(find(st.from_type(Event), lambda e: True, settings=EXISTS), Event)


def test_importing_the_strategies_first_loads_hypothesis_without_a_cycle() -> None:
    """Hypothesis runs its entry points on import: that loads this module while it loads."""
    code = ("import protocolkit.strategies as s, hypothesis.strategies as st\n"
            "from protocolkit import DoseAdministered\n"
            "from hypothesis import find\n"
            "assert find(st.from_type(DoseAdministered), lambda e: True).drug\n"
            "import protocolkit\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr


# --- histories: valid by construction -------------------------------------------------------


def assert_valid(history: History, *, consent_first: bool = True) -> None:
    """The promises every generated history keeps."""
    evs = history.events
    assert len({e.event_id for e in evs}) == len(evs)
    assert {(e.study, e.subject) for e in evs} == {(history.study, history.subject)}
    for e in evs:
        assert e.occurred_at <= history.at and e.recorded_at <= history.at, e
        assert e.recorded_at >= e.occurred_at - CLOCK_SKEW
    registered = [e for e in evs if isinstance(e, SubjectRegistered)]
    assert [r.time_zone for r in registered] == [history.zone]
    first = min(evs, key=lambda e: e.occurred_at)
    assert isinstance(first, SubjectRegistered)
    if consent_first:
        consent = next(e for e in evs if isinstance(e, ConsentSigned))
        others = [e for e in evs if not isinstance(e, SubjectRegistered | ConsentSigned)]
        assert all(e.occurred_at > consent.occurred_at for e in others)


@QUICK
@given(histories(NCT))
def test_histories_are_valid_by_construction(history: History) -> None:
    assert_valid(history)
    assert history.evaluate().eligibility in ("eligible", "ineligible", "pending")


@QUICK
@given(edge_histories(NCT))
def test_edge_histories_are_valid(history: History) -> None:
    assert_valid(history)
    assert history.description[0] == "edges"


@QUICK
@given(eligible_histories(NCT))
def test_eligible_histories_are_eligible_without_deviations(history: History) -> None:
    assert_valid(history)
    evaluation = history.evaluate()
    assert evaluation.eligibility == "eligible"
    assert evaluation.deviations == ()
    # Screening facts fall in the 28 days before Day 1 (D2): the layout reads the window.
    assert history.day1 is not None
    assert evaluation.day1 == history.day1.isoformat()
    ecog = [e for e in history.events if e.event_type == "EcogAssessed"]
    for e in ecog:
        assert dt.timedelta(0) < history.day1 - e.occurred_at.in_timezone(history.zone).date() \
            <= dt.timedelta(days=28)


@pytest.mark.parametrize("name", ["oncology_cyclic", "weight_based_infusion"])
def test_other_designs_get_eligible_histories_from_their_text_alone(name: str) -> None:
    """Nothing in the strategies names a trial: another design's protocol works the same."""
    other = protocol(name)

    @QUICK
    @given(eligible_histories(other))
    def check(history: History) -> None:
        assert_valid(history)
        assert history.evaluate().eligibility == "eligible"

    check()


OTHER_CRITERIA = [(name, c.id) for name in ("oncology_cyclic", "weight_based_infusion")
                  for c in protocol(name).criteria]


@pytest.mark.parametrize(("name", "criterion"), OTHER_CRITERIA)
def test_other_designs_get_violations_of_every_criterion(name: str, criterion: str) -> None:
    @settings(max_examples=5, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(violating(protocol(name), criterion))
    def check(history: History) -> None:
        evaluation = history.evaluate()
        assert evaluation.eligibility == "ineligible"
        result = evaluation.criterion(criterion)
        assert result.verdict == ("not met" if result.kind == "inclusion" else "met")

    check()


# --- shrinking --------------------------------------------------------------------------------


def test_an_eligible_history_shrinks_to_the_witness_in_the_protocols_zone() -> None:
    history = witness()
    assert history.description == ("eligible witness",)
    assert (history.zone, history.subject) == ("Asia/Shanghai", "S-001")


def test_a_violation_shrinks_to_the_simplest_change() -> None:
    history = find(violating(NCT, "INC-ECOG"), lambda h: True, settings=FIND)
    assert history.description == ("violates INC-ECOG", "EcogAssessed.score = 3")
    assert [e.score for e in history.events if e.event_type == "EcogAssessed"] == [3]


def test_a_failing_property_shrinks_to_a_readable_history() -> None:
    """Hypothesis finds the smallest history in which the subject is under 18."""

    def minor(history: History) -> bool:
        result = history.evaluate().criterion("INC-AGE")
        return result.verdict == "not met"

    history = find(edge_histories(NCT, kinds=["age"]), minor, settings=FIND)
    text = repr(history)
    assert "18 years before consent + 1 d" in text
    assert "DemographicsRecorded(date_of_birth=" in text
    born = next(e for e in history.events if isinstance(e, DemographicsRecorded))
    consent = next(e for e in history.events if isinstance(e, ConsentSigned))
    on = consent.occurred_at.in_timezone(history.zone).date()
    assert born.date_of_birth == dt.date(on.year - 18, on.month, on.day) + dt.timedelta(days=1)


# --- edges ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_every_kind_of_edge_exists_for_nct03918265(kind: str) -> None:
    history = find(edge_histories(NCT, kinds=[kind]), lambda h: True, settings=EXISTS)
    assert_valid(history)


def test_trough_timing_edges_are_one_second_outside_the_bounds() -> None:
    def late(history: History) -> bool:
        return any("13 h 1 s after its dose (outside" in note for note in history.description)

    history = find(edge_histories(NCT, kinds=["timing"]), late, settings=EXISTS)
    assert "PD-PK" in history.evaluate().deviation_codes()


def test_window_edges_reach_open_and_missing() -> None:
    def status(wanted: str) -> object:
        def check(history: History) -> bool:
            return any(e.status == wanted and e.id == "HB-M6"
                       for e in history.evaluate().endpoints)
        return check

    open_ = find(edge_histories(NCT, kinds=["window"]), status("open"), settings=EXISTS)
    missing = find(edge_histories(NCT, kinds=["window"]), status("missing"), settings=EXISTS)
    assert "PD-WIN1" not in open_.evaluate().deviation_codes()
    assert "PD-WIN1" in missing.evaluate().deviation_codes()


# --- rewritings ---------------------------------------------------------------------------------


def test_reexpressed_values_change_unit_not_value() -> None:
    base = witness()

    def other_unit(history: History) -> bool:
        return any(isinstance(e, LabResulted) and e.result.unit != e.result.canonical_unit
                   for e in history.events)

    rewritten = find(reexpressed(base, zones=False, order=False, late=False,
                                 corrections=False), other_unit, settings=EXISTS)
    before = {e.event_id: e for e in base.events}
    for e in rewritten.events:
        if isinstance(e, LabResulted):
            assert e.result.canonical_value == before[e.event_id].result.canonical_value


def test_reexpressed_corrections_restore_the_values() -> None:
    from protocolkit import effective_events

    base = witness()
    rewritten = find(reexpressed(base, units=False, zones=False, order=False, late=False),
                     lambda h: len(h.events) > len(base.events), settings=EXISTS)
    assert effective_events(rewritten.events) == effective_events(base.events)


def test_retractions_pair_a_history_with_and_without_the_event() -> None:
    base = witness()

    @QUICK
    @given(retractions(base))
    def check(pair: tuple[History, History]) -> None:
        retracted, without = pair
        retraction = [e for e in retracted.events if isinstance(e, EntryRetracted)]
        assert len(retraction) == 1
        remaining = {e.event_id for e in retracted.events} - {retraction[0].event_id,
                                                               retraction[0].retracts}
        assert remaining == {e.event_id for e in without.events}

    check()


def test_unrelated_events_are_of_sets_no_criterion_reads() -> None:
    base = witness()
    read = {"DiagnosisRecorded", "DemographicsRecorded", "ConsentSigned", "EcogAssessed",
            "PriorTherapyRecorded", "SubjectEnrolled", "OtherHaematologicalDiseaseAssessed",
            "ChildbearingPotentialAssessed", "PregnancyTestResulted", "LactationAssessed",
            "SubjectRegistered", "EntryCorrected", "EntryRetracted"}

    @QUICK
    @given(unrelated_events(base))
    def check(extra: list[Event]) -> None:
        for e in extra:
            assert e.event_type not in read
            if isinstance(e, DoseAdministered):
                assert e.drug != "tacrolimus"  # a dose of the study drug may set Day 1
            if isinstance(e, ObservationRecorded):
                assert e.code != "UNABLE-TO-COMPLY"  # EXC-COMPLY reads that code only
            assert (e.study, e.subject) == (base.study, base.subject)
            assert e.recorded_at <= base.at

    check()


# --- what cannot be generated, and wrong arguments ---------------------------------------------


def test_a_criterion_that_can_only_be_met_or_unknown_cannot_be_violated() -> None:
    with pytest.raises(StrategyError, match="INC-CONSENT is not met"):
        violating(NCT, "INC-CONSENT")


def test_unknown_rules_are_refused_with_a_suggestion() -> None:
    with pytest.raises(RuleError, match="no criterion INC-ECGO") as info:
        violating(NCT, "INC-ECGO")
    assert info.value.suggestion == "INC-ECOG"
    with pytest.raises(RuleError, match="no deviation reports code PD-WIN") as info:
        triggering(NCT, "PD-WIN")
    assert info.value.suggestion == "PD-WIN1"
    with pytest.raises(StrategyError, match="unknown edge kinds"):
        edge_histories(NCT, kinds=["ages"])
    with pytest.raises(TypeError, match="expected a loaded Protocol"):
        eligible_histories("rules/nct03918265.protocol")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="unknown time zone"):
        eligible_histories(NCT, zones=["Mars/Olympus"])


# --- the pytest plugin ------------------------------------------------------------------------


def test_the_plugin_gives_the_embedded_protocol(protocolkit_protocol: Protocol) -> None:
    assert protocolkit_protocol.id == "NCT03918265"


def test_the_plugin_gives_an_empty_store(protocolkit_store: EventStore) -> None:
    assert protocolkit_store.max_position() == 0


def test_the_plugin_loads_the_protocol_given_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_it.py").write_text(
        "def test_it(protocolkit_protocol, protocolkit_store):\n"
        "    assert protocolkit_protocol.id == 'ONC-CYCLIC-01'\n"
        "    assert protocolkit_store.max_position() == 0\n")
    path = OTHER_DESIGNS / "oncology_cyclic.protocol"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--protocolkit-protocol={path}", "test_it.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
