"""Evaluation results: JSON matches its checked-in schema; the text summary reads right."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pendulum
import pytest

from protocolkit.engine import Evaluation, evaluate
from protocolkit.report import evaluation_to_json, explain, render_summary, render_text, schema_text
from protocolkit.rules import default_protocol_path, load_protocol
from protocolkit.serde import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
AT = pendulum.parse("2020-08-10T23:59:59+08:00")


@pytest.fixture(scope="module")
def evaluations() -> list[Evaluation]:
    protocol = load_protocol(default_protocol_path())
    events = read_jsonl((ROOT / "examples" / "nct03918265.jsonl").read_text().splitlines())
    subjects = sorted({e.subject for e in events})
    return [evaluate(protocol, [e for e in events if e.subject == s], at=AT) for s in subjects]


def test_schema_file_is_current() -> None:
    path = ROOT / "docs" / "schema" / "evaluation.schema.json"
    assert path.read_text() == schema_text(), (
        "regenerate: python -m protocolkit.report > docs/schema/evaluation.schema.json"
    )


def test_every_evaluation_validates(evaluations: list[Evaluation]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(schema_text()))
    for evaluation in evaluations:
        data = json.loads(json.dumps(evaluation_to_json(evaluation)))
        validator.validate(data)
    bad = evaluation_to_json(evaluations[0]) | {"eligibility": 3}
    assert not validator.is_valid(json.loads(json.dumps(bad)))


def test_text_and_summary(evaluations: list[Evaluation]) -> None:
    text = render_text(evaluations[8])
    assert "PUMCH-009" in text and "Eligibility: ELIGIBLE" in text
    assert "PD-TDM" in text and "important" in text
    summary = render_summary(evaluations)
    assert summary.count("PUMCH-") == 12
    assert "pending (INC-ECOG)" in summary


def test_explain_names_rule_path_and_evidence(evaluations: list[Evaluation]) -> None:
    protocol_events = read_jsonl((ROOT / "examples" / "nct03918265.jsonl").read_text()
                                 .splitlines())
    mine = [e for e in protocol_events if e.subject == "PUMCH-005"]
    text = explain(evaluations[4], "INC-AGE", mine)
    assert text.startswith("INC-AGE: not met")
    assert "nct03918265.protocol:" in text
    assert "ConsentSigned" in text and "DemographicsRecorded" in text
    assert "no verdict" in explain(evaluations[4], "NOPE-1", mine)
