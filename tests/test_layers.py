"""Imports point one way (docs/design.md): a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import protocolkit

SRC = Path(protocolkit.__file__).parent

# Each module's layer; a module may import only from layers at or below its own.
LAYERS = {
    "errors": 0,
    "timeutil": 1,
    "units": 1,
    "events": 2,
    "serde": 3,
    "schema": 3,
    "corrections": 4,
    "store": 5,
    "ingest": 6,
    "rules": 6,
    "engine": 7,
    "report": 8,
    "projections": 8,
    "strategies": 8,
    "pytest_plugin": 9,
    "audit": 8,
    "coverage": 8,
    "protocols": 6,
    "examples": 6,
    "cli": 9,
    "__main__": 9,
    "__init__": 9,
}


def _layer_of(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "protocolkit"
    name = parts[1] if len(parts) > 1 else "__init__"
    assert name in LAYERS, f"add {name} to LAYERS in tests/test_layers.py"
    return LAYERS[name]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        found.append((name.removesuffix(".__init__") if name.endswith("__init__") and
                      name != "protocolkit.__init__" else name, path))
    return found


def test_imports_point_down() -> None:
    problems = []
    for name, path in _modules():
        own = _layer_of(name if name != "protocolkit" else "protocolkit.__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                target = node.module
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                target = next((t for t in targets if t.startswith("protocolkit")), "")
            else:
                continue
            if target.startswith("protocolkit.") and _layer_of(target) > own:
                problems.append(f"{name} imports {target}")
    assert not problems, problems


def test_hypothesis_is_not_loaded_by_import() -> None:
    import subprocess
    import sys

    code = "import sys, protocolkit; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
