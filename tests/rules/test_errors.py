"""A gallery of broken protocol files: every error names its file, line, column and rule.

Each case is a whole file (the header is line 1). Loading it raises ``RuleErrors`` (a
``RuleError``, a ``ProtocolKitError`` and a ``ValueError``) listing every problem found, in
file order; the first problem of each case is checked exactly. Gaps found while writing these
are marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from protocolkit.errors import ProtocolKitError, RuleError, RuleErrors
from protocolkit.rules import load_protocol, parse_protocol
from tests.rules.conftest import HEADER

SOURCE = "bad.protocol"


class Case(NamedTuple):
    """A broken file and the first error it must give."""

    body: str
    line: int
    column: int
    rule: str | None
    message: str
    suggestion: str | None = None


ENDPOINT = ('anchor day1 = first DoseAdministered\n'          # line 2
            'endpoint EP-A "a" values LabResulted\n'          # line 3
            '  window days {window} from {anchor}\n'          # line 4
            '  select closest to day {target}, ties later\n'  # line 5
            '  else "x"\n')


def endpoint(window: str = "[169, 197]", anchor: str = "day1", target: str = "183") -> str:
    return ENDPOINT.format(window=window, anchor=anchor, target=target)


GALLERY: dict[str, Case] = {
    "syntax error": Case(
        'inclusion INC-A "a"\n  met when 1 = = 1\n', 3, 16, None,
        "syntax error: unexpected '='; expected a date YYYY-MM-DD, a name, a number, "
        "a quoted string, '(', '-', '@', 'any', "),
    "unexpected character": Case(
        'inclusion INC-A "a" met when 1 = 1;\n', 2, 35, None,
        "syntax error: unexpected character ';'"),
    "unclosed parenthesis": Case(
        'inclusion INC-A "a" met when (1 = 1\n', 2, 35, None,
        "syntax error: unexpected the end of the file; expected ')'"),
    "unknown event type": Case(
        'inclusion INC-A "a"\n  met when any LabResult where (loinc = "718-7")\n', 3, 16, "INC-A",
        "unknown event type 'LabResult'", "LabResulted"),
    "unknown field": Case(
        'inclusion INC-A "a"\n  met when (last LabResulted).reslt > 1 g/L\n', 3, 31, "INC-A",
        "LabResulted has no field 'reslt'", "result"),
    "unknown field in where": Case(
        'inclusion INC-A "a"\n  met when any LabResulted where (lonc = "718-7")\n', 3, 35, "INC-A",
        "unknown name 'lonc'", "loinc"),
    "unknown name": Case(
        'let dob = (last DemographicsRecorded).date_of_birth\n'
        'inclusion INC-A "a"\n  met when years_between(dobb, now) >= 18\n', 4, 26, "INC-A",
        "unknown name 'dobb'", "dob"),
    "unknown unit days": Case(
        "parameter fresh = 28 days\n", 2, 22, "parameter fresh",
        "unknown unit 'days': 'days' is not a UCUM unit: unknown unit atom 'days'", "d"),
    "unknown unit hours": Case(
        'inclusion INC-A "a" met when 12 h in [11 hours, 13 h]\n', 2, 42, "INC-A",
        "unknown unit 'hours': 'hours' is not a UCUM unit: unknown unit atom 'hours'", "h"),
    "Hb compared with ng/mL": Case(
        'inclusion INC-A "Hb"\n'
        '  met when (last LabResulted where (loinc = "718-7")).result >= 5 ng/mL\n', 3, 12, "INC-A",
        "unit mismatch: ng/mL cannot be compared with Haemoglobin (718-7, g/L); "
        "use one of g/L, g/dL, mmol/L"),
    "Hb compared with a ng/mL parameter": Case(
        "parameter low = 5 ng/mL\n"
        'inclusion INC-A "Hb" met when (last LabResulted where (loinc = "718-7")).result > low\n',
        3, 31, "INC-A",
        "unit mismatch: ng/mL cannot be compared with Haemoglobin (718-7, g/L); "
        "use one of g/L, g/dL, mmol/L"),
    "a date compared with a quantity": Case(
        'inclusion INC-A "a" met when 2024-01-01 > 5 g/L\n', 2, 30, "INC-A",
        "cannot compare a date with a quantity in g/L"),
    "a string compared with a number": Case(
        'inclusion INC-A "a" met when (last DemographicsRecorded).sex = 1\n', 2, 30, "INC-A",
        "cannot compare a string with a number"),
    "inverted endpoint window": Case(
        endpoint(window="[197, 169]"), 4, 15, "EP-A",
        "the window's lower bound (day 197) is after its upper bound (day 169)"),
    "inverted interval": Case(
        'inclusion INC-A "a" met when 5 ng/mL in [10 ng/mL, 1 ng/mL]\n', 2, 41, "INC-A",
        "the window's lower bound is after its upper bound"),
    "study day 0 in a window": Case(
        endpoint(window="[0, 5]", target="3"), 4, 16, "EP-A",
        "there is no study day 0 (CDISC: Day -1 is followed by Day 1)"),
    "study day 0 in day N of": Case(
        'anchor day1 = first DoseAdministered\n'
        'inclusion INC-A "a" met when day 0 of day1 > 2024-01-01\n', 3, 34, "INC-A",
        "there is no study day 0 (CDISC: Day -1 is followed by Day 1)"),
    "window bound not a whole day": Case(
        endpoint(window="[1.5, 3]", target="2"), 4, 16, "EP-A",
        "a window bound is a study day number"),
    "target day outside the window": Case(
        endpoint(target="200"), 5, 3, "EP-A",
        "target day 200 is outside the window [169, 197]"),
    "unknown anchor": Case(
        endpoint(anchor="dya1"), 4, 31, "EP-A", "unknown anchor 'dya1'", "day1"),
    "duplicate rule id": Case(
        'inclusion INC-A "a" met when true\nexclusion INC-A "b" met when false\n', 3, 1, "INC-A",
        "rule id INC-A is defined twice"),
    "duplicate name": Case(
        "let a = 1\nlet a = 2\n", 3, 5, "let a", "'a' is defined twice"),
    "it outside where": Case(
        'inclusion INC-A "a" met when it.score > 1\n', 2, 30, "INC-A",
        "'it' is only defined inside 'where (...)' and endpoint clauses"),
    "unknown function": Case(
        'inclusion INC-A "a" met when year_between(2000-01-01, 2020-01-01) > 1\n', 2, 30, "INC-A",
        "unknown function 'year_between'", "years_between"),
    "wrong arity": Case(
        'inclusion INC-A "a" met when years_between(2000-01-01) > 1\n', 2, 30, "INC-A",
        "years_between() takes 2 argument(s), got 1"),
    "reference to a missing rule": Case(
        'inclusion INC-A "a" met when true\n'
        'inclusion INC-B "b" met when @INC-C.status = "met"\n', 3, 30, "INC-B",
        "no rule INC-C", "INC-B"),
    "unknown rule attribute": Case(
        'inclusion INC-A "a" met when true\n'
        'inclusion INC-B "b" met when @INC-A.verdit = "met"\n', 3, 37, "INC-B",
        "@INC-A.verdit: a rule has .status, .response, .selected (endpoints) or "
        ".verdict (criteria)", "verdict"),
    "unknown set": Case(
        'define valid = LabResulted\ninclusion INC-A "a" met when any $vaild\n', 3, 34, "INC-A",
        "unknown set $vaild", "valid"),
    "a set used as a value": Case(
        'define valid = LabResulted\ninclusion INC-A "a" met when valid\n', 3, 30, "INC-A",
        "'valid' is a set of events: write $valid"),
    "$occurrence outside a deviation": Case(
        'inclusion INC-A "a" met when any $occurrence\n', 2, 34, "INC-A",
        "unknown set $occurrence"),
    "not a condition": Case(
        'inclusion INC-A "a" met when 5 g/L\n', 2, 30, "INC-A",
        "expected a condition, got a quantity in g/L"),
    "strings are not ordered": Case(
        'inclusion INC-A "a" met when (last DemographicsRecorded).sex < "M"\n', 2, 30, "INC-A",
        "< does not order a string"),
    "adding a mass concentration and a duration": Case(
        'inclusion INC-A "a" met when 5 g/L + 2 h > 1 g/L\n', 2, 30, "INC-A",
        "cannot compute a quantity in g/L + a quantity in h"),
    "not a calendar date": Case(
        'inclusion INC-A "a" met when now > 2024-02-30\n', 2, 36, "INC-A",
        "not a calendar date: 2024-02-30"),
    "parameter not a constant": Case(
        "parameter p = first DoseAdministered\n", 2, 15, "parameter p",
        "parameter p must be a constant (a number, a quantity, a duration, a string or a date)"),
    "consecutive without its condition": Case(
        'deviation PD-A "a" category "C" importance important\n'
        "  fires when consecutive 2 LabResulted\n", 3, 28, "PD-A",
        "consecutive needs the run's condition last: consecutive N <events> where (<condition>)"),
    "a field of a number": Case(
        'inclusion INC-A "a" met when (5).score > 1\n', 2, 34, "INC-A",
        ".score needs an event, not a number"),
    "a date field compared with a duration": Case(
        'inclusion INC-A "a" met when (last DemographicsRecorded).date_of_birth < 18 a\n',
        2, 30, "INC-A", "cannot compare a date with a quantity in a"),
    "Hb against ng/mL inside the where that pins it": Case(
        'inclusion INC-A "Hb" met when any LabResulted where (loinc = "718-7" and '
        'result > 5 ng/mL)\n', 2, 74, "INC-A",
        "unit mismatch: ng/mL cannot be compared with Haemoglobin (718-7, g/L); "
        "use one of g/L, g/dL, mmol/L"),
    ".selected of a criterion": Case(
        'inclusion INC-A "a" met when true\n'
        'inclusion INC-B "b" met when @INC-A.selected is present\n', 3, 30, "INC-B",
        "@INC-A.selected: a criterion has .verdict (or .status); .response and .selected are "
        "for endpoints"),
    "the verdict of a deviation": Case(
        'deviation PD-A "a" category "C" importance important fires when true\n'
        'inclusion INC-B "b" met when @PD-A.verdict = "met"\n', 3, 30, "INC-B",
        "@PD-A: a deviation has no verdict to read"),
    "eligibility inside a criterion": Case(
        'inclusion INC-A "a" met when eligibility = "eligible"\n', 2, 30, "INC-A",
        "rules read each other in a cycle: INC-A -> INC-A"),
    "a criterion reading itself": Case(
        'inclusion INC-A "a" met when @INC-A.verdict = "met"\n', 2, 30, "INC-A",
        "rules read each other in a cycle: INC-A -> INC-A"),
    "two criteria reading each other": Case(
        'inclusion INC-A "a" met when @INC-B.verdict = "met"\n'
        'inclusion INC-B "b" met when @INC-A.verdict = "met"\n', 2, 30, "INC-A",
        "rules read each other in a cycle: INC-A -> INC-B -> INC-A"),
    "day N of a number": Case(
        'inclusion INC-A "a" met when day 3 of 5 > 2024-01-01\n', 2, 39, "INC-A",
        "day N of ... needs a date or an event, not a number"),
}


def _errors(text: str, source: str = SOURCE) -> list[RuleError]:
    with pytest.raises(RuleErrors) as caught:
        parse_protocol(text, source=source)
    return caught.value.errors


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery(name: str) -> None:
    case = GALLERY[name]
    errors = _errors(HEADER + case.body)
    first = errors[0]
    assert isinstance(first, RuleError)
    assert (first.source, first.line, first.column, first.rule) == (
        SOURCE, case.line, case.column, case.rule)
    assert first.message.startswith(case.message)
    assert first.suggestion == case.suggestion
    where = f"{SOURCE}:{case.line}:{case.column}" + (f" [{case.rule}]" if case.rule else "")
    hint = f" (did you mean {case.suggestion!r}?)" if case.suggestion else ""
    assert str(first) == f"{where}: {first.message}{hint}"


def test_the_gallery_is_large_enough() -> None:
    assert len(GALLERY) >= 15


def test_rule_errors_is_a_rule_error_a_protocolkit_error_and_a_value_error() -> None:
    with pytest.raises(RuleErrors) as caught:
        parse_protocol(HEADER + GALLERY["unknown event type"].body, source=SOURCE)
    error = caught.value
    assert isinstance(error, RuleError)
    assert isinstance(error, ProtocolKitError)
    assert isinstance(error, ValueError)
    assert error.exit_code == 65
    assert (error.line, error.column, error.rule) == (3, 16, "INC-A")   # the first problem's


def test_an_unknown_time_zone_in_the_header() -> None:
    header = 'protocol "T-1" version "1" effective 2024-01-01 zone "Asia/Shangai"\n'
    [error] = _errors(header + 'inclusion INC-A "a" met when true\n')
    assert (error.line, error.column, error.rule) == (1, 49, None)
    assert error.message == "unknown time zone 'Asia/Shangai'"


def test_an_impossible_effective_date_in_the_header() -> None:
    [error] = _errors('protocol "T-1" version "1" effective 2024-13-01\n'
                      'inclusion INC-A "a" met when true\n')
    assert (error.line, error.column) == (1, 38)
    assert error.message == "not a calendar date: 2024-13-01"


def test_a_missing_header() -> None:
    error = _errors('inclusion INC-A "a" met when true\n')[0]
    assert (error.line, error.column) == (1, 1)
    assert error.message.startswith("syntax error: unexpected 'inclusion'; expected 'protocol'")


MANY = HEADER + (
    "parameter fresh = 28 days\n"                                               # 2
    "anchor day1 = first DoseAdministred\n"                                     # 3
    'inclusion INC-A "a"\n'                                                     # 4
    '  met when (last LabResulted where (loinc = "718-7")).result >= 5 ng/mL\n'  # 5
    'inclusion INC-A "again" met when 1 < it.score\n'                           # 6
    'inclusion INC-B "b" met when year_between(2000-01-01, now) > 1\n'          # 7
    "let day1 = 2\n"                                                            # 8
)


def test_every_problem_in_a_file_is_reported_at_once_in_file_order() -> None:
    errors = _errors(MANY)
    assert [(e.line, e.column, e.rule, e.suggestion) for e in errors] == [
        (2, 22, "parameter fresh", "d"),
        (3, 21, "anchor day1", "DoseAdministered"),
        (5, 12, "INC-A", None),
        (6, 1, "INC-A", None),
        (6, 38, "INC-A", None),
        (7, 30, "INC-B", "years_between"),
        (8, 5, "let day1", None),
    ]
    assert [e.message.split(":")[0] for e in errors] == [
        "unknown unit 'days'",
        "unknown event type 'DoseAdministred'",
        "unit mismatch",
        "rule id INC-A is defined twice",
        "'it' is only defined inside 'where (...)' and endpoint clauses",
        "unknown function 'year_between'",
        "'day1' is defined twice",
    ]


def test_the_message_of_many_errors_has_one_line_per_problem() -> None:
    with pytest.raises(RuleErrors) as caught:
        parse_protocol(MANY, source=SOURCE)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.errors) == 7
    assert lines[0] == (f"{SOURCE}:2:22 [parameter fresh]: unknown unit 'days': 'days' is not a "
                        "UCUM unit: unknown unit atom 'days' (did you mean 'd'?)")
    assert lines[3] == f"{SOURCE}:6:1 [INC-A]: rule id INC-A is defined twice"


def test_several_syntax_errors_are_reported_together() -> None:
    errors = _errors(HEADER + 'inclusion INC-A "a" met when true\n'
                     'inclusion INC-B "b" met when (1 = = 1)\n'
                     'inclusion INC-C "c" met when true\n'
                     'inclusion INC-D "d" met when (2 = = 2)\n')
    assert [(e.line, e.column) for e in errors] == [(3, 35), (5, 35)]


def test_a_protocol_file_names_itself_in_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.protocol"
    path.write_text(HEADER + GALLERY["unknown field"].body, encoding="utf-8")
    with pytest.raises(RuleErrors) as caught:
        load_protocol(path)
    assert str(caught.value) == (f"{path}:3:31 [INC-A]: LabResulted has no field 'reslt' "
                                 "(did you mean 'result'?)")


def test_a_missing_protocol_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as caught:
        load_protocol(tmp_path / "nowhere.protocol")
    assert not isinstance(caught.value, RuleErrors)
    assert caught.value.message.startswith("cannot read the protocol")


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.protocol"
    path.write_text(HEADER + 'inclusion INC-A "a" met when true  # a comment\n', "utf-8")
    proto = load_protocol(path)
    assert (proto.id, proto.title, proto.version, proto.zone) == (
        "T-1", "Test protocol", "1", "Asia/Shanghai")
    assert proto.criteria[0].path == f"{path}:2:1 INC-A"
    assert len(proto.digest) == 64


# ---- regressions and gaps ----------------------------------------------------------------------

def test_unit_errors_name_the_units() -> None:
    [error] = _errors(HEADER + GALLERY["adding a mass concentration and a duration"].body)
    assert "g/L" in error.message and " h" in error.message
    assert "dimension (" not in error.message


def test_a_cycle_is_reported_once_per_rule_in_it() -> None:
    errors = _errors(HEADER + GALLERY["two criteria reading each other"].body)
    assert [(e.line, e.rule, e.message) for e in errors] == [
        (2, "INC-A", "rules read each other in a cycle: INC-A -> INC-B -> INC-A"),
        (3, "INC-B", "rules read each other in a cycle: INC-B -> INC-A -> INC-B"),
    ]


def test_a_report_name_is_defined_once() -> None:
    errors = _errors(HEADER + 'report n "a" = 1\nreport n "b" = 2\n')
    assert (errors[0].line, errors[0].column) == (3, 8)


def test_starts_with_a_number_is_an_error() -> None:
    errors = _errors(HEADER + 'inclusion INC-A "a" met when '
                     'starts_with((last EcogAssessed).score, "1")\n')
    assert errors[0].rule == "INC-A"


def test_one_unit_mismatch_is_one_error() -> None:
    errors = _errors(HEADER + 'inclusion INC-A "Hb" met when '
                     '(last LabResulted where (loinc = "718-7")).result > 5 h\n')
    assert len(errors) == 1


def test_syntax_errors_show_the_tokens_to_type() -> None:
    error = _errors(HEADER + 'inclusion INC-A "a" met when count v > 1\n')[0]
    assert error.message.startswith("syntax error: unexpected 'v'; expected")
    assert "lbrace" not in error.message
    assert "'{'" in error.message


def test_one_syntax_error_is_one_error() -> None:
    errors = _errors(HEADER + 'inclusion INC-A "a" met when ((true)\n'
                     'inclusion INC-B "b" met when true\n')
    assert len(errors) == 1
