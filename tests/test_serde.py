"""The JSON Lines interchange format: round trips, the JSON Schema, bad input at the boundary."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from protocolkit.errors import EventError, EventValidationError, UnitError
from protocolkit.events import EVENT_TYPES, Event, LabResulted
from protocolkit.schema import event_json_schema, schema_text
from protocolkit.serde import (
    decode_stored,
    dumps_event,
    encode_stored,
    event_from_json,
    event_to_json,
    read_jsonl,
    write_jsonl,
)
from protocolkit.units import MeasurementStatus, measure
from tests.strategies import events

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "schema" / "events.schema.json"
REGENERATE = "python -m protocolkit.schema > docs/schema/events.schema.json"
ALL_TYPES = sorted(EVENT_TYPES)


def _checked_in_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text("utf-8"))
    return schema


VALIDATOR = Draft202012Validator(
    _checked_in_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
)
BRANCH_VALIDATORS = {
    name: Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": _checked_in_schema()["$defs"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    for name in EVENT_TYPES
}


def _zone_of(value: dt.datetime) -> tuple[str, str]:
    tz = value.tzinfo
    return type(tz).__name__, str(getattr(tz, "name", tz))


def _assert_same_instant(before: dt.datetime, after: dt.datetime) -> None:
    # == on datetimes sharing a tzinfo compares wall times and ignores fold: check the instant.
    assert after.timestamp() == before.timestamp()
    assert after.utcoffset() == before.utcoffset()
    assert _zone_of(after) == _zone_of(before)


# --- round trips ----------------------------------------------------------------------------


def _check_json_round_trip(event: Event) -> None:
    text = dumps_event(event)
    back = event_from_json(orjson.loads(text))
    assert back == event
    assert type(back) is type(event)
    assert event_from_json(event_to_json(event)) == event  # the dict form, without JSON text
    for name in ("occurred_at", "recorded_at"):
        _assert_same_instant(getattr(event, name), getattr(back, name))
    assert dumps_event(back) == text  # a second round trip writes the same text
    assert dumps_event(event_from_json(orjson.loads(dumps_event(back)))) == text


def _check_stored_round_trip(event: Event) -> None:
    state = encode_stored(event)
    back = decode_stored(event.event_type, state)
    assert back == event
    assert type(back) is type(event)
    for name in ("occurred_at", "recorded_at"):
        _assert_same_instant(getattr(event, name), getattr(back, name))
    assert encode_stored(back) == state
    assert "type" not in orjson.loads(state)  # the store keeps the type beside the state


def _check_schema(event: Event) -> None:
    document = orjson.loads(dumps_event(event))
    assert next(iter(document)) == "type"
    # The event's own branch of the oneOf: ten times faster than the whole schema, and the
    # same verdict, as every other branch refuses the "type" const (test_schema_*).
    BRANCH_VALIDATORS[event.event_type].validate(document)


# One property per event type, checking all three: drawing the event costs more than checking.
@pytest.mark.parametrize("event_type", ALL_TYPES)
@given(data=st.data())
def test_event_round_trips_and_matches_schema(event_type: str, data: st.DataObject) -> None:
    """For every event type and valid event e.

    * event_from_json(event_to_json(e)) == e, keeping the instants and their zone names, and
      the JSON text is the same after a second round trip;
    * decode_stored(e.event_type, encode_stored(e)) == e;
    * e's JSON validates against docs/schema/events.schema.json.
    """
    event = data.draw(events(event_type))
    _check_json_round_trip(event)
    _check_stored_round_trip(event)
    _check_schema(event)


@given(events())
def test_events_validate_against_the_whole_schema(event: Event) -> None:
    """Any event's JSON is valid against the whole schema (exactly one oneOf branch)."""
    VALIDATOR.validate(orjson.loads(dumps_event(event)))


@given(st.lists(events(), max_size=4))
def test_jsonl_stream_round_trip(batch: list[Event]) -> None:
    """read_jsonl(write_jsonl(events)) gives the events back, in order."""
    lines = list(write_jsonl(batch))
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert read_jsonl(lines) == batch


def test_boundary_computes_canonical_values() -> None:
    """A result sent as received (value and unit only) gets its canonical value at the boundary."""
    document = _line_dict("LabResulted", loinc="718-7", result={"value": "9.80", "unit": "g/dL"})
    event = event_from_json(document)
    assert isinstance(event, LabResulted)
    assert event.result == measure("718-7", "9.80", "g/dL")
    assert str(event.result.canonical_value) == "98"
    assert event.result.status is MeasurementStatus.VALID
    assert event_to_json(event)["result"]["value"] == "9.80"  # the digits received are kept


def test_stored_implausible_result_stays_unusable() -> None:
    """An implausible result read back from the store is still not usable by rules."""
    event = event_from_json(
        _line_dict("LabResulted", loinc="718-7", result={"value": "9.8", "unit": "g/L"})
    )
    assert isinstance(event, LabResulted)
    assert not event.result.usable
    back = decode_stored(event.event_type, encode_stored(event))
    assert isinstance(back, LabResulted)
    assert back.result.status is MeasurementStatus.IMPLAUSIBLE
    assert not back.result.usable


# --- the JSON Schema ------------------------------------------------------------------------


def test_schema_file_is_current() -> None:
    """The checked-in schema is what protocolkit.schema generates now."""
    assert SCHEMA_FILE.read_text("utf-8") == schema_text(), (
        f"{SCHEMA_FILE.relative_to(ROOT)} is stale; regenerate it with: {REGENERATE}"
    )
    assert _checked_in_schema() == event_json_schema()


def test_schema_main_prints_the_schema() -> None:
    """`python -m protocolkit.schema` prints exactly the checked-in text."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "protocolkit.schema"], capture_output=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("utf-8") == SCHEMA_FILE.read_text("utf-8")


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The schema itself is valid, covers every event type and names the dialect."""
    schema = _checked_in_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {branch["$ref"] for branch in schema["oneOf"]} == {
        f"#/$defs/{name}" for name in EVENT_TYPES
    }
    for name, cls in EVENT_TYPES.items():
        definition = schema["$defs"][name]
        assert definition["properties"]["type"] == {"const": name, "description": "The event type."}
        assert definition["additionalProperties"] is False
        assert cls.__doc__ is not None
        assert definition["description"] == inspect.cleandoc(cls.__doc__).replace("``", "`")


def test_schema_required_fields_are_those_without_defaults() -> None:
    """required lists the type and every field without a default; event_id is optional."""
    import attrs

    schema = _checked_in_schema()
    for name, cls in EVENT_TYPES.items():
        expected = ["type"] + [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
        assert schema["$defs"][name]["required"] == expected
        assert "event_id" not in expected
    assert schema["$defs"]["Measurement"]["required"] == ["value", "unit"]
    assert schema["$defs"]["Quantity"]["required"] == ["value", "unit"]


def test_schema_carries_the_validators_it_can_express() -> None:
    """Ranges and non-blank text come from the attrs validators; docs from `#:` comments."""
    defs = _checked_in_schema()["$defs"]
    assert defs["EcogAssessed"]["properties"]["score"] == {
        "type": "integer", "minimum": 0, "maximum": 5,
    }
    assert defs["PriorTherapyRecorded"]["properties"]["line"]["maximum"] == 20
    recorded_by = defs["VisitOccurred"]["properties"]["recorded_by"]
    assert (recorded_by["type"], recorded_by["pattern"]) == ("string", r"\S")
    assert "attributable actor" in recorded_by["description"]
    arm = defs["SubjectEnrolled"]["properties"]["arm"]
    assert arm["anyOf"][1] == {"type": "null"} and arm["default"] is None
    assert defs["TimePrecision"]["enum"] == ["instant", "day"]
    assert defs["Sex"]["enum"] == ["F", "M", "U"]
    assert defs["DemographicsRecorded"]["properties"]["date_of_birth"] == {
        "type": "string", "format": "date",
    }


def _valid_document() -> dict[str, Any]:
    event = event_from_json(
        _line_dict("LabResulted", loinc="718-7", result={"value": "9.8", "unit": "g/dL"})
    )
    document: dict[str, Any] = orjson.loads(dumps_event(event))
    return document


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "LabResult"}, "unknown type"),
        ({"colour": "red"}, "extra field"),
        ({"occurred_at": "2024-03-01T08:00:00"}, "naive instant"),
        ({"occurred_at": "2024-03-01 08:00:00+08:00"}, "not ISO 8601 extended"),
        ({"event_id": "not-a-uuid"}, "uuid format"),
        ({"recorded_by": " "}, "blank text"),
        ({"schema_version": 0}, "below minimum"),
        ({"time_precision": "hour"}, "enum"),
        ({"result": {"value": "9.8"}}, "result without unit"),
        ({"result": {"value": "nine", "unit": "g/dL"}}, "not a decimal"),
        ({"result": {"value": True, "unit": "g/dL"}}, "bool is no number"),
        ({"loinc": None}, "null for a required string"),
    ],
)
def test_schema_rejects(change: dict[str, Any], why: str) -> None:
    """The schema is not vacuous: each of these documents is invalid."""
    document = {**_valid_document(), **change}
    assert VALIDATOR.is_valid(_valid_document())
    assert not VALIDATOR.is_valid(document), why


def test_schema_requires_labelled_trough_and_shapes_the_site_zone() -> None:
    """labelled_trough has no default; time_zone is an IANA-looking name or null."""
    level = {**_line_dict("DrugLevelResulted", drug="tacrolimus", loinc="77348-1",
                          result={"value": "7.2", "unit": "ng/mL"}), "labelled_trough": False}
    assert VALIDATOR.is_valid(level)
    assert not VALIDATOR.is_valid({k: v for k, v in level.items() if k != "labelled_trough"})
    registered = _line_dict("SubjectRegistered", site="PUMCH", time_zone="Asia/Shanghai")
    assert VALIDATOR.is_valid(registered)
    assert VALIDATOR.is_valid({**registered, "time_zone": None})
    assert VALIDATOR.is_valid({k: v for k, v in registered.items() if k != "time_zone"})
    for bad in ("", "Asia/Shanghai ", "+08:00 Beijing", 8):
        assert not VALIDATOR.is_valid({**registered, "time_zone": bad}), bad


def test_schema_rejects_missing_required_field() -> None:
    """A document without a required field (recorded_by) is invalid; without event_id valid."""
    document = _valid_document()
    assert VALIDATOR.is_valid({k: v for k, v in document.items() if k != "event_id"})
    assert not VALIDATOR.is_valid({k: v for k, v in document.items() if k != "recorded_by"})


def test_schema_accepts_numbers_for_decimals_and_a_bad_date_is_refused() -> None:
    """Decimals may be JSON numbers; a date must be a calendar date (format checked)."""
    assert VALIDATOR.is_valid({**_valid_document(), "result": {"value": 9.8, "unit": "g/dL"}})
    demographics = _line_dict("DemographicsRecorded", date_of_birth="1980-02-29", sex="F")
    assert VALIDATOR.is_valid(demographics)
    assert not VALIDATOR.is_valid({**demographics, "date_of_birth": "1981-02-29"})


# --- bad input at the boundary --------------------------------------------------------------

_ENVELOPE: dict[str, Any] = {
    "study": "NCT03918265",
    "subject": "S-001",
    "occurred_at": "2024-03-01T08:00:00+08:00[Asia/Shanghai]",
    "recorded_at": "2024-03-01T10:00:00+08:00[Asia/Shanghai]",
    "recorded_by": "coordinator",
}
_EVENT_ID = "1b4e28ba-2fa1-4d2b-883f-0016d3cca427"


def _line_dict(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, **_ENVELOPE, **fields}


def _line(event_type: str, *, drop: str | None = None, **fields: Any) -> str:
    document = _line_dict(event_type, **fields)
    if drop is not None:
        del document[drop]
    return json.dumps(document)


_ECOG = _line("EcogAssessed", score=1)
_HB = {"loinc": "718-7"}

BAD_LINES = [
    pytest.param('{"type": "EcogAssessed", "score": ', EventError, None, "malformed JSON",
                 id="malformed-json"),
    pytest.param(_line("EcogAssesed", score=1), EventError, "type",
                 "did you mean 'EcogAssessed'?", id="unknown-type"),
    pytest.param(_line("EcogAssessed", drop="recorded_by", score=1), EventError, "recorded_by",
                 "required field missing", id="missing-envelope-field"),
    pytest.param(_line("EcogAssessed"), EventError, "score", "required field missing",
                 id="missing-payload-field"),
    pytest.param(_line("EcogAssessed", score=1, colour="red"), EventError, "colour",
                 "unknown field", id="unknown-extra-field"),
    pytest.param(_line("EcogAssessed", score=1, occurred_at="2024-03-01T08:00:00"), EventError,
                 "occurred_at", "naive date-time", id="naive-datetime"),
    pytest.param(_line("EcogAssessed", score=1,
                       recorded_at="2024-03-01T08:00:00+01:00[Asia/Shanghai]"),
                 EventError, "recorded_at", "is not the offset of Asia/Shanghai",
                 id="offset-disagrees-with-zone"),
    pytest.param(_line("EcogAssessed", score=1,
                       occurred_at="2024-03-01T08:00:00+08:00[Asia/Shangai]"),
                 EventError, "occurred_at", "unknown time zone 'Asia/Shangai'", id="unknown-zone"),
    pytest.param(_line("LabResulted", **_HB, result={"value": "9.8", "unit": "gm/dL"}),
                 UnitError, "result.unit", "'gm/dL' is not a UCUM unit", id="non-ucum-unit"),
    pytest.param(_line("LabResulted", **_HB, result={"value": "9.8", "unit": "ng/mL"}),
                 UnitError, "result.unit", "not accepted for Haemoglobin",
                 id="unit-not-accepted-for-analyte"),
    pytest.param(_line("LabResulted", **_HB, result={"value": "-9.8", "unit": "g/dL"}),
                 EventError, "result.value", "cannot be negative", id="negative-value"),
    pytest.param(_line("DoseAdministered", drug="tacrolimus", dose={"value": -1, "unit": "mg"}),
                 EventError, "dose", "cannot be negative", id="negative-dose"),
    pytest.param(_line("EntryCorrected", corrects=_EVENT_ID, changes={"score": 2}), EventError,
                 "reason", "required field missing", id="correction-without-reason"),
    pytest.param(_line("EntryCorrected", corrects=_EVENT_ID, changes={"score": 2}, reason=" "),
                 EventError, "reason", "non-empty string", id="correction-with-blank-reason"),
    pytest.param(_line("EcogAssessed", score=7), EventError, "score", "must be 0 to 5, got 7",
                 id="ecog-7"),
    pytest.param(_line("EcogAssessed", score="1"), EventError, "score",
                 "expected an integer, got '1'", id="string-for-int"),
    pytest.param(_line("EcogAssessed", score=True), EventError, "score",
                 "expected an integer, got True", id="bool-for-int"),
    pytest.param(_line("LabResulted", **_HB,
                       result={"value": "9.8", "unit": "g/dL", "canonical_value": "9.8"}),
                 EventError, "result.canonical_value", "disagrees with the catalogue",
                 id="canonical-value-disagrees"),
    pytest.param(_line("DemographicsRecorded", date_of_birth="2030-01-01", sex="F"), EventError,
                 "date_of_birth", "after the assessment", id="born-after-assessment"),
    pytest.param(_line("DoseAdministered", drug="tacrolimus", dose={"value": 1, "unit": "mg/d"}),
                 EventError, "dose.unit", "unit 'mg/d' is not a dose unit: allowed are a mass",
                 id="dose-rate-unit"),
    pytest.param(_line("TransfusionGiven", product="RBC", amount={"value": 1, "unit": "mg"}),
                 EventError, "amount.unit", "allowed are a volume (mL) or a count",
                 id="transfusion-in-mg"),
    pytest.param(_line("SubjectRegistered", site="PUMCH", time_zone="Asia/Shangai"), EventError,
                 "time_zone", "unknown time zone 'Asia/Shangai'", id="unknown-site-zone"),
    pytest.param(_line("EcogAssessed", score=1,
                       recorded_at="2024-03-01T07:50:00+08:00[Asia/Shanghai]"),
                 EventError, "recorded_at",
                 "recorded 2024-03-01T07:50:00+08:00[Asia/Shanghai] before it occurred",
                 id="recorded-before-occurred"),
    pytest.param(_line("DrugLevelResulted", drug="tacrolimus", loinc="77348-1",
                       result={"value": "7.2", "unit": "ng/mL"}),
                 EventError, "labelled_trough", "required field missing",
                 id="level-without-labelled-trough"),
]


@pytest.mark.parametrize(("line", "error_class", "field", "message"), BAD_LINES)
def test_read_jsonl_reports_bad_line(
    line: str, error_class: type[EventError], field: str | None, message: str
) -> None:
    """Each bad line is reported with its error class, line number, field and reason."""
    with pytest.raises(EventValidationError) as raised:
        read_jsonl([_ECOG, "", line, _ECOG], source="visit-3.jsonl")
    assert len(raised.value.errors) == 1
    error = raised.value.errors[0]
    assert type(error) is error_class
    assert error.line == 3  # blank lines count
    assert error.source == "visit-3.jsonl"
    assert error.field == field
    assert message in error.message
    assert str(error).startswith(
        "visit-3.jsonl:3" + (f", field '{field}'" if field else "") + ": "
    )


def test_read_jsonl_reports_every_error_at_once() -> None:
    """All bad lines of an input are reported in one EventValidationError, in line order."""
    lines: list[str | bytes] = [
        _ECOG,
        "{not json",
        "",
        _line("EcogAssessed", score=7),
        _ECOG.encode(),  # bytes lines are read too
        _line("LabResulted", **_HB, result={"value": "9.8", "unit": "ng/mL"}).encode(),
        _line("Enrolled"),
    ]
    with pytest.raises(EventValidationError) as raised:
        read_jsonl(lines, source="batch.jsonl")
    errors = raised.value.errors
    assert [(e.line, type(e), e.field) for e in errors] == [
        (2, EventError, None),
        (4, EventError, "score"),
        (6, UnitError, "result.unit"),
        (7, EventError, "type"),
    ]
    assert raised.value.line == 2
    assert raised.value.source == "batch.jsonl"
    assert str(raised.value).splitlines() == [str(e) for e in errors]


def test_read_jsonl_reports_every_field_of_a_line() -> None:
    """Several type errors in one line are each reported, each naming its field."""
    line = _line("EcogAssessed", score="1", event_id="nope", recorded_by=3)
    with pytest.raises(EventValidationError) as raised:
        read_jsonl([line])
    assert sorted((e.line, e.field) for e in raised.value.errors) == [
        (1, "event_id"), (1, "recorded_by"), (1, "score"),
    ]


def test_read_jsonl_accepts_good_lines() -> None:
    """Good lines (str or bytes, blank lines between) become events."""
    parsed = read_jsonl([_ECOG, "  ", _ECOG.encode()])
    assert [type(e).__name__ for e in parsed] == ["EcogAssessed", "EcogAssessed"]
    assert parsed[0].occurred_at.timezone_name == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (_line("EcogAssessed", score=1, time_precision="hour"), "time_precision"),
        (_line("DemographicsRecorded", date_of_birth="1980-01-01", sex="X"), "sex"),
    ],
)
def test_read_jsonl_names_the_field_of_a_bad_enum_value(line: str, field: str) -> None:
    """An enum value not allowed is reported with the field it was given for."""
    with pytest.raises(EventValidationError) as raised:
        read_jsonl([line])
    assert [e.field for e in raised.value.errors] == [field]


@pytest.mark.parametrize("name", [["EcogAssessed"], {"name": "EcogAssessed"}, 3, None])
def test_read_jsonl_reports_a_non_string_type(name: object) -> None:
    """A "type" that is not a string is an error of that line, not a crash."""
    with pytest.raises(EventValidationError) as raised:
        read_jsonl([json.dumps({**_line_dict("EcogAssessed", score=1), "type": name})])
    assert [(type(e), e.line, e.field) for e in raised.value.errors] == [(EventError, 1, "type")]


def test_read_jsonl_reports_a_huge_value() -> None:
    """A huge value is recorded (implausible) or reported, never a crash."""
    line = _line("LabResulted", loinc="777-3", result={"value": "1E40", "unit": "/uL"})
    try:
        parsed = read_jsonl([line])
    except EventValidationError as exc:
        assert [e.field for e in exc.errors] == ["result.value"]
    else:
        assert isinstance(parsed[0], LabResulted)
        assert parsed[0].result.status is MeasurementStatus.IMPLAUSIBLE


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-01T00:00:00+00:00",
        "2024-03-01T00:00:00+00:00[UTC]",
        "2024-03-01T08:00:00+08:00",
        "2024-03-01T08:00:00.000250+08:00[Asia/Shanghai]",
        "2024-11-03T01:30:00-04:00[America/New_York]",
        "2024-11-03T01:30:00-05:00[America/New_York]",
    ],
)
def test_instant_text_round_trips(text: str) -> None:
    """An instant comes back as written: a bare offset stays bare, a zone name stays named."""
    later = "2024-12-01T10:00:00+08:00[Asia/Shanghai]"  # recorded after every one of them
    event = read_jsonl([_line("EcogAssessed", score=1, occurred_at=text, recorded_at=later)])[0]
    assert event_to_json(event)["occurred_at"] == text
    assert event_to_json(event)["recorded_at"] == later
