"""The protocol language: load, check and compile a protocol file (docs/rules.md)."""

from protocolkit.rules._loader import (
    Criterion,
    Deviation,
    Endpoint,
    Protocol,
    load_protocol,
    parse_protocol,
)

__all__ = ["Criterion", "Deviation", "Endpoint", "Protocol", "load_protocol", "parse_protocol"]
