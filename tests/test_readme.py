"""The README's quick start stays true: exactly two one-line commands, the second one in CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the Quick start section must hold one ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_one_line_commands() -> None:
    commands = _quick_start()
    assert len(commands) == 2
    assert "protocolkit demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quick_start()[1] in ci.splitlines()
