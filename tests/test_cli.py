"""The command line: import, export, log, subjects, demo; exit codes; nothing appended on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from protocolkit.cli import main
from protocolkit.serde import dumps_event, read_jsonl
from protocolkit.store import open_store
from tests.helpers import correct, dose, hb, retract


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    wrong = hb("A", value="9.8", unit="g/dL")
    events = [dose("A"), wrong, correct(wrong, result={"value": "10.8", "unit": "g/dL"}),
              dose("B"), hb("B")]
    return _write(tmp_path / "events.jsonl", [dumps_event(e) for e in events])


def _store_args(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "cli.db")]


def test_import_then_log_then_export(
    events_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(events_file), *_store_args(tmp_path)]) == 0
    assert "imported 5 events for 2 subjects" in capsys.readouterr().out

    assert main(["log", "A", *_store_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "STUDY / A: 3 events" in out
    assert "9.8 g/dL (= 98 g/L)" in out
    assert "corrected by #3" in out
    assert '"value":"10.8"' in out  # the correction row shows the new values

    out_file = tmp_path / "out.jsonl"
    assert main(["export", "-o", str(out_file), *_store_args(tmp_path)]) == 0
    assert read_jsonl(out_file.read_text().splitlines()) == read_jsonl(
        events_file.read_text().splitlines()
    )


def test_log_as_json(events_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["import", str(events_file), *_store_args(tmp_path)])
    capsys.readouterr()
    assert main(["log", "B", "--format", "json", *_store_args(tmp_path)]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[1]["result"]["canonical_unit"] == "g/L"


def test_reimport_is_refused_and_skip_existing_is_a_no_op(
    events_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(events_file), *_store_args(tmp_path)]) == 0
    assert main(["import", str(events_file), *_store_args(tmp_path)]) == 65
    assert "already recorded" in capsys.readouterr().err
    assert main(["import", "--skip-existing", str(events_file), *_store_args(tmp_path)]) == 0
    assert "imported 0 events" in capsys.readouterr().out
    with open_store(tmp_path / "cli.db") as store:
        assert store.max_position() == 5


BAD_LINES = {
    "malformed": (b'{"type": "DoseAdministered",', "malformed JSON", None),
    "unknown type": (b'{"type": "DoseAdministred"}', "did you mean 'DoseAdministered'", "type"),
    "missing field": (b"MISSING", "required field missing", "drug"),
    "naive datetime": (b"NAIVE", "naive date-time", "occurred_at"),
    "unknown unit": (b"UNIT", "not a UCUM unit", "result.unit"),
    "impossible value": (b"NEGATIVE", "cannot be negative", "result.value"),
    "correction without reason": (b"NOREASON", "required field missing", "reason"),
}


def _bad_line(kind: bytes) -> bytes:
    good = orjson.loads(dumps_event(hb("A")))
    if kind == b"MISSING":
        good = orjson.loads(dumps_event(dose("A")))
        del good["drug"]
    elif kind == b"NAIVE":
        good["occurred_at"] = "2024-03-01T08:00:00"
    elif kind == b"UNIT":
        good["result"] = {"value": "9.8", "unit": "gm/dL"}
    elif kind == b"NEGATIVE":
        good["result"] = {"value": "-9.8", "unit": "g/dL"}
    elif kind == b"NOREASON":
        good = orjson.loads(dumps_event(retract(hb("A"))))
        del good["reason"]
    else:
        return kind
    return orjson.dumps(good)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_one_bad_line_appends_nothing_and_names_line_and_field(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, message, field = BAD_LINES[kind]
    with open_store(tmp_path / "cli.db") as store:
        store.append([dose("Z")])  # already recorded: must survive untouched
    good = [dumps_event(dose("A")), dumps_event(hb("A"))]
    path = _write(tmp_path / "bad.jsonl", [good[0], good[1], _bad_line(raw)])
    assert main(["import", str(path), *_store_args(tmp_path)]) == 65
    err = capsys.readouterr().err
    assert f"{path}:3" in err
    assert message in err
    if field:
        assert f"field '{field}'" in err
    with open_store(tmp_path / "cli.db") as store:
        assert [r.event.subject for r in store.events()] == ["Z"]


def test_every_bad_line_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_bad_line(raw) for raw, _, _ in BAD_LINES.values()]
    path = _write(tmp_path / "bad.jsonl", lines)
    assert main(["import", str(path), *_store_args(tmp_path)]) == 65
    err = capsys.readouterr().err
    for number in range(1, len(lines) + 1):
        assert f"{path}:{number}" in err


def test_usage_errors_exit_64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(tmp_path / "missing.jsonl"), *_store_args(tmp_path)]) == 64
    assert main(["no-such-command"]) == 64
    assert main(["log", "nobody", *_store_args(tmp_path)]) == 1
    assert "no events for subject 'nobody'" in capsys.readouterr().err


def test_store_errors_exit_74(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["subjects", "--store", "mysql://nowhere/db"]) == 74
    assert "unknown store URL scheme" in capsys.readouterr().err


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["import"], ["export"], ["log"], ["subjects"], ["demo"], ["schema"]):
        assert main([*command, "--help"]) == 0
        assert "--help" in capsys.readouterr().out


def test_demo_imports_examples_once_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *_store_args(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert "461 example events imported" in first
    rows = {line.split()[0]: line for line in first.splitlines() if line.startswith("PUMCH-")}
    assert len(rows) == 12
    assert "eligible" in rows["PUMCH-001"] and "126 g/L complete" in rows["PUMCH-001"]
    assert "ineligible (INC-DIAG)" in rows["PUMCH-004"]
    assert "pending (INC-ECOG)" in rows["PUMCH-006"]
    assert "PD-ICF!" in rows["PUMCH-007"]
    assert "PD-PK, PD-TDM!" in rows["PUMCH-009"]
    assert "missing" in rows["PUMCH-012"]
    assert main(["demo", *_store_args(tmp_path)]) == 0
    assert "0 example events imported (461 already stored)" in capsys.readouterr().out


def test_demo_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--format", "json", *_store_args(tmp_path)]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert [d["subject"] for d in data][:2] == ["PUMCH-001", "PUMCH-002"]
    assert data[0]["eligibility"] == "eligible"


def test_check_rules_evaluate_and_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-rules", "rules/nct03918265.protocol"]) == 0
    assert "ok: NCT03918265" in capsys.readouterr().out
    broken = tmp_path / "broken.protocol"
    broken.write_text('protocol "X" version "1" effective 2020-01-01\n'
                      "anchor day1 = first DoseAdministred\n"
                      "inclusion INC-A \"a\" met when nothing > 3 days\n")
    assert main(["check-rules", str(broken)]) == 65
    err = capsys.readouterr().err
    assert f"{broken}:2:21 [anchor day1]: unknown event type 'DoseAdministred'" in err
    assert "did you mean 'DoseAdministered'?" in err
    assert f"{broken}:3:" in err and "[INC-A]" in err

    main(["demo", *_store_args(tmp_path)])
    capsys.readouterr()
    at = ["--at", "2020-08-10"]
    assert main(["evaluate", "PUMCH-009", *at, *_store_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Eligibility: ELIGIBLE" in out and "PD-TDM" in out
    assert main(["evaluate", "PUMCH-009", "--format", "json", *at, *_store_args(tmp_path)]) == 0
    [data] = orjson.loads(capsys.readouterr().out)
    assert {d["code"] for d in data["deviations"]} == {"PD-PK", "PD-TDM"}
    assert main(["explain", "PUMCH-009", "PD-TDM", *at, *_store_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PD-TDM: fired (important)" in out
    assert out.count("DrugLevelResulted") == 2
    assert main(["evaluate", "NOBODY", *at, *_store_args(tmp_path)]) == 1


def test_console_script_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "protocolkit", "subjects", *_store_args(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "study" in done.stdout


def test_status_and_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", *_store_args(tmp_path)])
    capsys.readouterr()
    at = ["--at", "2020-08-10"]
    assert main(["status", *at, *_store_args(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("PUMCH-")}
    assert "ineligible" in rows["PUMCH-004"] and "pending" in rows["PUMCH-006"]
    assert "PD-PK, PD-TDM" in rows["PUMCH-009"]
    assert main(["status", "PUMCH-009", *at, *_store_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "regimen: tacrolimus 0.5 mg BID" in out and "latest_trough: 6.9 ng/mL" in out
    assert main(["study", *at, "--format", "json", *_store_args(tmp_path)]) == 0
    study = orjson.loads(capsys.readouterr().out)
    assert (study["enrolled"], study["target"], study["screened"]) == (9, 80, 12)
    assert main(["status", "NOBODY", *at, *_store_args(tmp_path)]) == 1
