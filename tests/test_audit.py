"""Auditors' replay: as known at, verdict diffs, receipts, amendments, the CLI."""

from __future__ import annotations

from pathlib import Path

import attrs
import orjson
import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocolkit.audit import (
    ProtocolSet,
    ReceiptError,
    diff_verdicts,
    make_receipt,
    verify_receipt,
)
from protocolkit.cli import main
from protocolkit.engine import evaluate
from protocolkit.events import Event
from protocolkit.report import evaluation_to_json
from protocolkit.rules import default_protocol_path, parse_protocol
from protocolkit.store import open_store
from tests.scenarios.builders import Subject, protocol

AT = pendulum.parse("2024-12-31T12:00:00+08:00")


def _corrected() -> tuple[list[Event], pendulum.DateTime]:
    """ECOG 2 corrected to 3 on Day 5: eligible before the correction, ineligible after."""
    subject = Subject("A-001").ecog(2).correct("ecog", on=(5, "10:00"), score=3)
    events = subject.events()
    fix = events[-1]
    return events, fix.recorded_at


def test_replay_as_known_before_a_correction_reproduces_the_earlier_result() -> None:
    events, fixed_at = _corrected()
    before = evaluate(protocol(), events, at=AT, known_at=fixed_at.subtract(seconds=1))
    without = evaluate(protocol(), events[:-1], at=AT, known_at=fixed_at.subtract(seconds=1))
    assert evaluation_to_json(before) == evaluation_to_json(without)
    assert before.eligibility == "eligible"
    assert evaluate(protocol(), events, at=AT).eligibility == "ineligible"


@settings(max_examples=20, deadline=None)
@given(cut=st.integers(0, 60))
def test_known_at_equals_the_log_cut_at_that_time(cut: int) -> None:
    events, _ = _corrected()
    ordered = sorted(events, key=lambda e: e.recorded_at)
    known = ordered[min(cut, len(ordered) - 1)].recorded_at
    visible = [e for e in events if e.recorded_at <= known]
    assert evaluation_to_json(evaluate(protocol(), events, at=AT, known_at=known)) == \
        evaluation_to_json(evaluate(protocol(), visible, at=AT, known_at=known))


def test_diff_names_the_verdicts_and_the_correction_with_its_reason() -> None:
    events, fixed_at = _corrected()
    changes = diff_verdicts(events, protocol(), known_from=fixed_at.subtract(seconds=1),
                            known_to=fixed_at, at=AT)
    rules = {c.rule: (c.before, c.after) for c in changes}
    assert rules["INC-ECOG"] == ("met", "not met")
    assert rules["eligibility"] == ("eligible", "ineligible")
    why = next(c for c in changes if c.rule == "INC-ECOG").events
    assert [e["change"] for e in why] == ["corrected"]
    assert why[0]["reason"] == "transcription error" and why[0]["recorded_by"]


def test_a_receipt_verifies_and_any_change_fails_it() -> None:
    events, _ = _corrected()
    result = evaluate(protocol(), events, at=AT)
    receipt = make_receipt(result, events, protocol())
    assert verify_receipt(receipt, events, [protocol()]).eligibility == "ineligible"
    changed = [attrs.evolve(events[0], recorded_by="someone else"), *events[1:]]
    with pytest.raises(ReceiptError, match="events differ"):
        verify_receipt(receipt, changed, [protocol()])
    amended = attrs.evolve(protocol(), text=protocol().text + "\n# edited\n")
    with pytest.raises(ReceiptError, match="protocol"):
        verify_receipt(receipt, events, [amended])
    with pytest.raises(ReceiptError, match="result differs"):
        verify_receipt({**receipt, "result_sha256": "0" * 64}, events, [protocol()])


def _versions(tmp_path: Path, rule: str) -> ProtocolSet:
    text = default_protocol_path().read_text()
    v1 = text.replace('effective 2019-05-04 zone "Asia/Shanghai"',
                      f'effective 2019-05-04 zone "Asia/Shanghai" versions by {rule}')
    v2 = v1.replace('version "1.0" effective 2019-05-04', 'version "2.0" effective 2024-06-01')
    v2 = v2.replace("parameter age_max = 80", "parameter age_max = 90")
    folder = tmp_path / rule
    folder.mkdir()
    (folder / "v1.protocol").write_text(v1)
    (folder / "v2.protocol").write_text(v2)
    return ProtocolSet.load(folder)


def test_amendments_switch_at_the_effective_date(tmp_path: Path) -> None:
    pset = _versions(tmp_path, "date")
    old = Subject("A-002").born(pendulum.date(1939, 1, 1)).events()  # 85 at consent in 2024
    early = pset.evaluate(old, at=pendulum.parse("2024-05-31T12:00:00+08:00"))
    late = pset.evaluate(old, at=pendulum.parse("2024-06-01T12:00:00+08:00"))
    assert (early.protocol_version, early.criterion("INC-AGE").verdict) == ("1.0", "not met")
    assert (late.protocol_version, late.criterion("INC-AGE").verdict) == ("2.0", "met")


def test_a_subject_consented_under_version_1_keeps_it(tmp_path: Path) -> None:
    pset = _versions(tmp_path, "consent")
    old = Subject("A-003").born(pendulum.date(1939, 1, 1))
    signed_v1 = old.events()  # the builder's consent form is "1.0"
    result = pset.evaluate(signed_v1, at=pendulum.parse("2024-12-01T12:00:00+08:00"))
    assert result.protocol_version == "1.0"
    assert result.criterion("INC-AGE").verdict == "not met"


def test_versions_by_is_part_of_the_language() -> None:
    header = 'protocol "X" version "1" effective 2024-01-01 zone "UTC" versions by consent\n'
    assert parse_protocol(header).versions_by == "consent"
    assert parse_protocol(header.replace(" versions by consent", "")).versions_by == "date"


def test_cli_verify_receipts_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "a.db")]
    events, fixed_at = _corrected()
    with open_store(tmp_path / "a.db") as s:
        s.append(events)
    assert main(["verify", *store]) == 0
    assert "ok: " in capsys.readouterr().out
    receipt = tmp_path / "r.jsonl"
    at = ["--at", "2024-12-31"]
    assert main(["evaluate", "A-001", *at, "--receipt", str(receipt), "--format", "json",
                 *store]) == 0
    capsys.readouterr()
    assert main(["verify-receipt", str(receipt), *store]) == 0
    assert "A-001: ok" in capsys.readouterr().out
    forged = orjson.loads(receipt.read_bytes())
    forged["result_sha256"] = "1" * 64
    receipt.write_bytes(orjson.dumps(forged) + b"\n")
    assert main(["verify-receipt", str(receipt), *store]) == 1
    assert "FAILED" in capsys.readouterr().err
    before = fixed_at.subtract(seconds=1).isoformat()
    assert main(["diff", "A-001", "--from", before, "--to", fixed_at.isoformat(), *at,
                 *store]) == 0
    out = capsys.readouterr().out
    assert "INC-ECOG: met -> not met" in out and "transcription error" in out
