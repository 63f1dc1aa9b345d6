"""The protocol language: load, check and compile a protocol file (docs/rules.md)."""

from pathlib import Path

from protocolkit.rules._loader import (
    Criterion,
    Deviation,
    Endpoint,
    Protocol,
    Report,
    load_protocol,
    parse_protocol,
)

__all__ = [
    "Criterion",
    "Deviation",
    "Endpoint",
    "Protocol",
    "Report",
    "default_protocol_path",
    "load_protocol",
    "parse_protocol",
]


def default_protocol_path() -> Path:
    """The embedded NCT03918265 protocol file (``rules/nct03918265.protocol`` in the source)."""
    return Path(__file__).resolve().parent.parent / "protocols" / "nct03918265.protocol"
