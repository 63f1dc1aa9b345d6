"""The engine's shortcuts never change a result.

Protocols compiled with ``OPTIMISE`` off take the general three-valued path everywhere: no
set filter computed once per evaluation, no plain predicate for a simple condition. Every
generated history must give the same evaluation, evidence included, either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.engine import evaluate
from protocolkit.events import LabResulted
from protocolkit.rules import Protocol, _compile, default_protocol_path, load_protocol
from protocolkit.rules._predicates import simple_predicate
from protocolkit.strategies import StrategyError, edge_histories, histories, triggering
from tests.helpers import hb

PROTOCOLS = Path(__file__).parent.parent / "protocols"
PATHS = [default_protocol_path(), PROTOCOLS / "oncology_cyclic.protocol",
         PROTOCOLS / "weight_based_infusion.protocol"]


def _load(path: Path, optimise: bool) -> Protocol:
    saved = _compile.OPTIMISE
    _compile.OPTIMISE = optimise
    try:
        return load_protocol(path)
    finally:
        _compile.OPTIMISE = saved


PAIRS = {path.name: (_load(path, True), _load(path, False)) for path in map(Path, PATHS)}


def _triggerable(protocol: Protocol) -> list[str]:
    """The deviation codes the strategies can raise (cross-event arithmetic they cannot)."""
    codes = []
    for code in sorted({d.code or d.id for d in protocol.deviations}):
        try:
            triggering(protocol, code)
        except StrategyError:
            continue
        codes.append(code)
    return codes


def _strategy(protocol: Protocol) -> st.SearchStrategy:  # type: ignore[type-arg]
    codes = _triggerable(protocol)
    return st.one_of(histories(protocol), edge_histories(protocol),
                     st.sampled_from(codes).flatmap(lambda c: triggering(protocol, c)))


@pytest.mark.parametrize("name", sorted(PAIRS))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_shortcuts_change_nothing(name: str, data: st.DataObject) -> None:
    fast, general = PAIRS[name]
    history = data.draw(_strategy(general))
    assert evaluate(fast, history, at=history.at) == evaluate(general, history, at=history.at)


def test_the_shortcuts_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default compile takes the shortcuts (else the property above proves nothing)."""
    calls: list[str] = []
    real = _compile.simple_predicate

    def counting(node: Any, is_member_field: Any) -> Any:
        found = real(node, is_member_field)
        calls.append("fast" if found else "general")
        return found

    monkeypatch.setattr(_compile, "simple_predicate", counting)
    load_protocol(default_protocol_path())
    assert calls.count("fast") >= 5 and "general" in calls


@pytest.mark.parametrize(("condition", "fields", "expected"), [
    ('loinc = "718-7"', {"loinc": "718-7"}, True),
    ('loinc = "718-7"', {"loinc": "777-3"}, False),
    ('loinc != "718-7"', {"loinc": "777-3"}, True),
    ('loinc = "718-7" and known(result)', {"loinc": "718-7"}, True),
    ('loinc = "718-7" or loinc = "777-3"', {"loinc": "777-3"}, True),
    ('not (loinc = "718-7")', {"loinc": "718-7"}, False),
])
def test_simple_predicates_answer_as_the_language_does(
        condition: str, fields: dict[str, str], expected: bool) -> None:
    from protocolkit.rules._loader import _parser

    tree = _parser().parse(
        'protocol "X" "x" version "1" effective 2020-01-01 zone "UTC"\n'
        f"define s = LabResulted where ({condition})\n")
    where = next(tree.find_data("where"))
    test = simple_predicate(where.children[0], lambda name: name in ("loinc", "result"))
    assert test is not None
    event = _lab(**fields)
    assert test(event) is expected


def test_a_missing_value_goes_to_the_general_path() -> None:
    """None, a code recorded as unknown or another type: the predicate does not decide."""
    test = simple_predicate(
        _compile.Tree("name", [_compile.Token("NAME", "flag")]), lambda name: True)
    assert test is not None
    assert test(_lab(loinc="718-7")) is None  # LabResulted has no boolean `flag`


def _lab(**fields: str) -> LabResulted:
    event = hb()
    return attrs.evolve(event, loinc=fields.get("loinc", event.loinc))
