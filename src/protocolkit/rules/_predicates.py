"""Plain predicates for the simplest `where` conditions, beside their three-valued closures.

Most filters in a protocol test a member's own text, code or flag against a constant
(``drug = "tacrolimus"``, ``labelled_trough``, ``loinc = "718-7" and known(result)``). The
general closures answer these through field values, Kleene comparison and evidence tracking,
at a few microseconds per member; the predicate here reads the attribute and answers ``True``
or ``False`` in a fraction of that. It answers ``None`` whenever the general path could say
anything else (a missing value, a code recorded as unknown, an unexpected type), and the
caller then asks the general closure: the fast path never decides what it cannot decide
exactly as the general one would.

Every shape accepted reads at least one field of the member, so its evidence is always the
member itself, as with the general path.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from lark import Token, Tree

from protocolkit.events import Event
from protocolkit.units import Measurement, MeasurementStatus

__all__ = ["Predicate", "simple_predicate"]

#: True or False, or None for "ask the general closure".
Predicate = Callable[[Event], bool | None]


def simple_predicate(node: Any, is_member_field: Callable[[str], bool]) -> Predicate | None:
    """A plain predicate for the condition ``node`` of a `where`, or None if it has none.

    ``is_member_field(name)`` says whether a bare name is a field of the member (and not a
    local or defined name, which shadow fields in the language).
    """
    if not isinstance(node, Tree):
        return None
    kind = node.data
    if kind in ("and_expr", "or_expr"):
        parts = [simple_predicate(c, is_member_field) for c in node.children]
        if any(p is None for p in parts):
            return None
        return _all(parts) if kind == "and_expr" else _any(parts)  # type: ignore[arg-type]
    if kind == "not_":
        inner = simple_predicate(node.children[0], is_member_field)
        return None if inner is None else _negated(inner)
    if kind == "compare":
        left, op, right = node.children
        name = _member_field(left, is_member_field)
        constant = _constant(right)
        if name is None or constant is None or str(op) not in ("=", "!="):
            return None
        return _equals(name, constant, negate=str(op) == "!=")
    if kind == "call" and str(node.children[0]) == "known" and len(node.children) == 2:
        name = _member_field(node.children[1], is_member_field)
        return None if name is None else _known(name)
    name = _member_field(node, is_member_field)
    return None if name is None else _flag(name)


def _member_field(node: Any, is_member_field: Callable[[str], bool]) -> str | None:
    if not isinstance(node, Tree):
        return None
    if node.data == "name":
        name = str(node.children[0])
        return name if is_member_field(name) else None
    if node.data == "field":
        target, token = node.children
        if isinstance(target, Tree) and target.data == "it" and isinstance(token, Token):
            return str(token)
    return None


def _constant(node: Any) -> str | bool | None:
    if not isinstance(node, Tree):
        return None
    if node.data == "string":
        return str(node.children[0])[1:-1]
    if node.data in ("true", "false"):
        return node.data == "true"
    return None


def _equals(name: str, constant: str | bool, *, negate: bool) -> Predicate:
    def test(event: Event) -> bool | None:
        value = getattr(event, name, None)
        if type(value) is not type(constant):
            if not isinstance(value, enum.Enum) or value.name == "UNKNOWN":
                return None  # missing, recorded as unknown, or another type: general path
            value = str(value.value)
            if type(constant) is not str:
                return None
        return (value == constant) is not negate

    return test


def _known(name: str) -> Predicate:
    def test(event: Event) -> bool | None:
        value = getattr(event, name, None)
        if isinstance(value, Measurement):
            return value.status is not MeasurementStatus.IMPLAUSIBLE
        if isinstance(value, enum.Enum):
            return value.name != "UNKNOWN"
        return None

    return test


def _flag(name: str) -> Predicate:
    def test(event: Event) -> bool | None:
        value = getattr(event, name, None)
        return value if type(value) is bool else None

    return test


def _negated(inner: Predicate) -> Predicate:
    def test(event: Event) -> bool | None:
        verdict = inner(event)
        return None if verdict is None else not verdict

    return test


def _all(parts: list[Predicate]) -> Predicate:
    def test(event: Event) -> bool | None:
        for part in parts:
            verdict = part(event)
            if verdict is not True:
                return verdict  # False decides; None hands the member to the general path
        return True

    return test


def _any(parts: list[Predicate]) -> Predicate:
    def test(event: Event) -> bool | None:
        for part in parts:
            verdict = part(event)
            if verdict is not False:
                return verdict
        return False

    return test
