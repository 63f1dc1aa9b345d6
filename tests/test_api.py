"""The public API is exactly what __all__ says; errors share one root."""

from __future__ import annotations

import inspect

import protocolkit
from protocolkit import errors


def test_all_is_complete() -> None:
    """__all__ names every public name once (ruff's RUF022 keeps it sorted)."""
    public = {n for n in vars(protocolkit) if not n.startswith("_") and
              not inspect.ismodule(getattr(protocolkit, n))}
    assert set(protocolkit.__all__) - {"__version__"} == public
    assert len(set(protocolkit.__all__)) == len(protocolkit.__all__)


def test_every_error_is_a_protocolkit_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, protocolkit.ProtocolKitError), name
        assert isinstance(cls.exit_code, int)


def test_input_errors_are_also_value_errors() -> None:
    assert issubclass(protocolkit.EventError, ValueError)
    assert issubclass(protocolkit.UnitError, protocolkit.EventError)
