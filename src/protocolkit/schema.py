"""A JSON Schema (draft 2020-12) of the JSON Lines interchange format, generated from the events.

The schema is derived from the attrs classes of :data:`protocolkit.events.EVENT_TYPES`: their
fields, resolved type hints, defaults, docstrings and ``#:`` attribute comments. It is a
``oneOf`` over the event types, each discriminated by its ``"type"`` const. It describes the
form :func:`protocolkit.serde.event_from_json` accepts; that function stays the authority (the
schema cannot say that a unit is accepted for an analyte, or that a date of birth precedes the
assessment), so a document valid against the schema may still be refused at the boundary.

The checked-in copy lives at :data:`SCHEMA_PATH` (relative to the project root); a test keeps
it from going stale. Regenerate it with::

    python -m protocolkit.schema > docs/schema/events.schema.json
"""

from __future__ import annotations

import ast
import datetime as dt
import enum
import functools
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import pendulum

from protocolkit import events as _events
from protocolkit.events import EVENT_TYPES
from protocolkit.units import Measurement, Quantity

__all__ = [
    "DECIMAL_PATTERN",
    "INSTANT_PATTERN",
    "SCHEMA_PATH",
    "event_json_schema",
    "schema_text",
    "write_schema",
]

#: Where the generated schema is checked in, relative to the project root.
SCHEMA_PATH = Path("docs/schema/events.schema.json")

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REGENERATE = "python -m protocolkit.schema > docs/schema/events.schema.json"

#: RFC 9557 / ISO 8601 extended date-time: a UTC offset is required (it fixes the instant);
#: the bracketed IANA zone name is optional (absent for a fixed offset).
INSTANT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)"
    r"(\[!?[A-Za-z0-9_+/-]+\])?$"
)
#: A decimal written as a string: what :func:`protocolkit.units.to_decimal` reads and
#: ``str(Decimal)`` writes (``9.80``, ``1E+3``).
DECIMAL_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"

# Classes with their own entry under ``$defs``, referenced from the fields that use them.
_OBJECT_DEFS: tuple[type[Any], ...] = (Measurement, Quantity)

# Measurement fields protocolkit computes at the boundary from the catalogue (D6): optional in
# the interchange form, and checked against the catalogue when they are given.
_COMPUTED: dict[type[Any], frozenset[str]] = {
    Measurement: frozenset({"canonical_value", "canonical_unit", "status"}),
}


def _clean(text: str) -> str:
    """Docstring text for JSON readers: dedented, RST double backticks made single."""
    return inspect.cleandoc(text).replace("``", "`")


def _class_doc(cls: type[Any]) -> str | None:
    doc = cls.__dict__.get("__doc__")
    return _clean(doc) if isinstance(doc, str) and doc.strip() else None


_ANNOTATED_NAME = re.compile(r"(\w+)\s*:")


def _attribute_docs(cls: type[Any]) -> dict[str, str]:
    """The ``#:`` comments above each attribute of ``cls`` and its attrs bases, by name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not attrs.has(klass):
            continue
        pending: list[str] = []
        for line in _class_source(klass):
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = _ANNOTATED_NAME.match(stripped)
            if match and pending:
                docs[match[1]] = _clean(" ".join(pending))
            pending = []
    return docs


def _class_source(cls: type[Any]) -> list[str]:
    """The source lines of a top-level class (none when the source is not available)."""
    lines, spans = _module_classes(cls.__module__)
    start, end = spans.get(cls.__qualname__, (0, 0))
    return lines[start:end]


@functools.cache
def _module_classes(module_name: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """A module's source lines and the line span of each top-level class, parsed once."""
    try:
        source = inspect.getsource(sys.modules[module_name])
    except (KeyError, OSError, TypeError):  # no source (a frozen app): descriptions are a nicety
        return [], {}
    spans = {
        node.name: (node.lineno - 1, node.end_lineno or node.lineno)
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
    }
    return source.splitlines(), spans


def _validators(field: attrs.Attribute[Any]) -> Sequence[Callable[..., Any]]:
    validator = field.validator
    if validator is None:
        return ()
    inner = getattr(validator, "_validators", None)  # attrs' and_() of several validators
    return tuple(inner) if inner else (validator,)


def _constraints(field: attrs.Attribute[Any]) -> dict[str, Any]:
    """What a field's validators say that JSON Schema can say too (non-blank text, ranges)."""
    found: dict[str, Any] = {}
    text_validators = {
        getattr(_events, "_text", None), getattr(_events, "_optional_text", None)
    } - {None}
    zone_validators = {getattr(_events, "_optional_time_zone", None)} - {None}
    for validator in _validators(field):
        if validator in text_validators:
            found.update(minLength=1, pattern=r"\S")
        elif validator in zone_validators:
            found.update(minLength=1, pattern=_events._TIME_ZONE_PATTERN)
        elif getattr(validator, "__qualname__", "").startswith("_int_range."):
            names = validator.__code__.co_freevars
            cells = validator.__closure__ or ()
            bounds = {n: c.cell_contents for n, c in zip(names, cells, strict=True)}
            if isinstance(bounds.get("low"), int):
                found["minimum"] = bounds["low"]
            if isinstance(bounds.get("high"), int):
                found["maximum"] = bounds["high"]
    return found


def _with_constraints(schema: dict[str, Any], constraints: dict[str, Any]) -> dict[str, Any]:
    """Add ``constraints`` to the branch of ``schema`` of the matching JSON type."""
    if not constraints:
        return schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [_with_constraints(s, constraints) for s in schema["anyOf"]]}
    wanted = "string" if "minLength" in constraints else "integer"
    return {**schema, **constraints} if schema.get("type") == wanted else schema


class _Builder:
    """Builds the schema, collecting the ``$defs`` that fields refer to."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def ref(self, name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name not in self.defs:
            self.defs[name] = {}  # reserve the name first: a definition may refer to itself
            self.defs[name] = build()
        return {"$ref": f"#/$defs/{name}"}

    def for_type(self, hint: Any, where: str) -> dict[str, Any]:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(hint)
            branches = [self.for_type(a, where) for a in args if a is not type(None)]
            if type(None) in args:
                branches.append({"type": "null"})
            return branches[0] if len(branches) == 1 else {"anyOf": branches}
        if origin is dict:
            key, _ = typing.get_args(hint)
            if key is not str:
                raise TypeError(f"{where}: only str keys can be written as JSON, not {key!r}")
            return {"type": "object"}
        if origin is not None:
            raise TypeError(f"{where}: no JSON Schema for {hint!r}")
        return self._for_class(hint, where)

    def _for_class(self, hint: Any, where: str) -> dict[str, Any]:
        # bool before int: bool is an int subclass; the pendulum and datetime checks before
        # date for the same reason.
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is str:
            return {"type": "string"}
        if hint is Any:
            return {}
        if isinstance(hint, type):
            if issubclass(hint, (pendulum.DateTime, dt.datetime)):
                return self.ref("Instant", _instant_schema)
            if issubclass(hint, dt.date):
                return {"type": "string", "format": "date"}
            if issubclass(hint, Decimal):
                return self.ref("Decimal", _decimal_schema)
            if issubclass(hint, UUID):
                return {"type": "string", "format": "uuid"}
            if issubclass(hint, enum.Enum):
                return self.ref(hint.__name__, lambda: _enum_schema(hint))
            if hint in _OBJECT_DEFS:
                return self.ref(hint.__name__, lambda: self.object_schema(hint))
        raise TypeError(f"{where}: no JSON Schema for {hint!r}; teach protocolkit.schema it")

    def object_schema(self, cls: type[Any], *, event_type: str | None = None) -> dict[str, Any]:
        """The schema of an attrs class's interchange object (an event if ``event_type``)."""
        hints = typing.get_type_hints(cls)
        docs = _attribute_docs(cls)
        computed = _COMPUTED.get(cls, frozenset())
        properties: dict[str, Any] = {}
        required: list[str] = []
        if event_type is not None:
            properties["type"] = {"const": event_type, "description": "The event type."}
            required.append("type")
        for field in attrs.fields(cls):
            where = f"{cls.__name__}.{field.name}"
            schema = _with_constraints(self.for_type(hints[field.name], where), _constraints(field))
            if field.name in docs:
                schema = {**schema, "description": docs[field.name]}
            elif field.name in computed:
                schema = {**schema, "description": (
                    "Computed by protocolkit from the analyte catalogue; if given, it must agree."
                )}
            if field.default is attrs.NOTHING:
                if field.name not in computed:
                    required.append(field.name)
            elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                schema = {**schema, "default": _json_default(field.default, where)}
            properties[field.name] = schema
        result: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        doc = _class_doc(cls)
        if doc is not None:
            result["description"] = doc
        if event_type is not None:
            result["title"] = event_type
        return result


def _json_default(value: object, where: str) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"{where}: default {value!r} has no JSON form")


def _instant_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": INSTANT_PATTERN,
        "description": (
            "An instant as RFC 9557 text: ISO 8601 with its UTC offset, then the IANA zone name "
            "in brackets when the zone is a named one "
            "(`2024-03-01T08:00:00+08:00[Asia/Shanghai]`). A naive time is refused; the offset "
            "must be the zone's offset at that instant."
        ),
        "examples": ["2024-03-01T08:00:00+08:00[Asia/Shanghai]", "2024-03-01T00:00:00+00:00"],
    }


def _decimal_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": DECIMAL_PATTERN},
            {"type": "number"},
        ],
        "description": (
            "A finite decimal. protocolkit writes a string, which keeps its digits exactly "
            "(`9.80` stays `9.80`); a JSON number is accepted too."
        ),
    }


def _enum_schema(kind: type[enum.Enum]) -> dict[str, Any]:
    values = [member.value for member in kind]
    schema: dict[str, Any] = {"enum": values}
    if all(isinstance(v, str) for v in values):
        schema["type"] = "string"
    doc = _class_doc(kind)
    if doc is not None:
        schema["description"] = doc
    return schema


def event_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of one line of the JSON Lines interchange format.

    It is generated from the attrs classes of :data:`protocolkit.events.EVENT_TYPES`, so it
    follows them: a ``oneOf`` over the event types, each an object whose ``"type"`` is a
    ``const`` naming it, with ``$defs`` per event type and for the shared types.

    Raises:
        TypeError: a field has a type this module cannot describe (teach ``_for_class`` it).
    """
    builder = _Builder()
    branches = [
        builder.ref(name, functools.partial(builder.object_schema, cls, event_type=name))
        for name, cls in sorted(EVENT_TYPES.items())
    ]
    return {
        "$schema": _DIALECT,
        "$comment": (
            "Generated by protocolkit.schema from the attrs event classes; do not edit. "
            f"Regenerate with: {_REGENERATE}"
        ),
        "title": "protocolkit event",
        "description": (
            "One line of a protocolkit JSON Lines file: an event, named by its `type`. "
            "The schema checks the shape; protocolkit's import checks the rest (units accepted "
            "for the analyte, plausibility, dates of birth, zone offsets)."
        ),
        "oneOf": branches,
        "$defs": dict(sorted(builder.defs.items())),
    }


def schema_text() -> str:
    """The schema as checked in: 2-space indent, sorted keys, UTF-8, a trailing newline."""
    return json.dumps(event_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema(path: str | os.PathLike[str] = SCHEMA_PATH) -> Path:
    """Write the schema to ``path`` (by default :data:`SCHEMA_PATH`) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


def _main(argv: Sequence[str]) -> int:
    """Print the schema, or write it to the one path given."""
    if len(argv) > 1:
        print("usage: python -m protocolkit.schema [PATH]", file=sys.stderr)
        return 2
    if argv:
        write_schema(argv[0])
    else:
        sys.stdout.buffer.write(schema_text().encode("utf-8"))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
