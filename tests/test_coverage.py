"""Clause coverage: what a set of evaluations exercised, and what it did not."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

from protocolkit.cli import main
from protocolkit.coverage import ClauseCoverage, recording
from protocolkit.engine import evaluate
from protocolkit.rules import default_protocol_path, load_protocol, parse_protocol
from protocolkit.serde import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
AT = pendulum.parse("2020-08-10T23:59:59+08:00")


def test_examples_exercise_part_of_the_protocol() -> None:
    protocol = load_protocol(default_protocol_path())
    events = read_jsonl((ROOT / "examples" / "nct03918265.jsonl").read_text().splitlines())
    with recording(protocol) as coverage:
        for subject in sorted({e.subject for e in events}):
            evaluate(protocol, [e for e in events if e.subject == subject], at=AT)
    assert coverage.evaluations == 12
    assert coverage.criteria["INC-ECOG"] == {"met", "not met", "unknown"}
    assert "fired" in coverage.deviations["PD-TDM"]
    assert coverage.deviations["PD-WIN1-HB-M24"] == {"silent"}
    gaps = coverage.missing()
    assert "PD-WIN1-HB-M24: never fired" in gaps
    assert "EXC-OTHER (exclusion): never met" in gaps
    assert 0 < coverage.percent() < 100
    assert "not exercised" in coverage.report()


def test_full_coverage_of_a_tiny_protocol() -> None:
    protocol = parse_protocol(
        'protocol "T" version "1" effective 2024-01-01 zone "UTC"\n'
        'inclusion INC-A "a" met when (last EcogAssessed).score <= 2\n')
    from protocolkit.events import EcogAssessed
    from tests.helpers import envelope

    at = pendulum.parse("2024-06-01T00:00:00+00:00")
    coverage = ClauseCoverage(protocol)
    for history in ([], [EcogAssessed(**envelope("A"), score=1)],
                    [EcogAssessed(**envelope("B"), score=4)]):
        coverage.add(evaluate(protocol, history, at=at))
    assert coverage.criteria["INC-A"] == {"unknown", "met", "not met"}
    assert coverage.missing() == []
    assert coverage.percent() == pytest.approx(100.0)


def test_cli_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "c.db")]
    main(["demo", *store])
    capsys.readouterr()
    assert main(["coverage", "--at", "2020-08-10", *store]) == 0
    out = capsys.readouterr().out
    assert out.startswith("clause coverage of NCT03918265 v1.0:")
    assert "PD-WIN1-HB-M24: never fired" in out


def test_pytest_option_reports_clause_coverage(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_one.py").write_text(
        "import pendulum\n"
        "from protocolkit.engine import evaluate\n"
        "def test_empty(protocolkit_protocol):\n"
        "    evaluate(protocolkit_protocol, [], at=pendulum.datetime(2024, 1, 1))\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--protocolkit-coverage", str(tmp_path / "test_one.py")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "protocolkit clause coverage" in done.stdout
    assert "clause coverage of NCT03918265 v1.0" in done.stdout
