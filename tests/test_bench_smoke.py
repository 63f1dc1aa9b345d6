"""Smoke test of the benchmark (bench/run.py): it runs end to end at a tiny size.

No timing is asserted (CI machines vary); the run must finish, print every figure and the
final table, and judge every target. A few seconds at this size; marked ``slow`` because it
spawns processes (the multi-process replay, the memory-test children).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import FIGURES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--quick", "--subjects", "4", "--events-per-subject", "40", "--incremental-large", "200",
    "--repeats", "1", "--memory-events", "2000", "--rebuild-subjects", "2",
]


def test_bench_quick_run_prints_every_figure(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *TINY, "--workdir", str(tmp_path / "stores")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    for name in FIGURES:
        assert f"{name} [sqlite]: " in out, name  # printed as measured
        assert f"| {name} [sqlite] " in out, name  # and in the final table
    assert "events/s" in out
    assert "targets met: " in out
    # Every target is judged: full evaluation, incremental, append, memory, 2 processes.
    judged = out.split("targets met: ", 1)[1].splitlines()[0]
    assert judged.split(":")[0].endswith("of 5")
    assert "--quick: sizes scaled down" in out
    assert "this run streams 2,000" in out  # the memory figure says it is scaled down
