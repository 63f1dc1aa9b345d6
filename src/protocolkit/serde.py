"""Serialisation: the package's one cattrs converter and the JSON Lines interchange format.

An event's interchange form is a JSON object with ``"type"`` (the event type) first, then the
envelope, then its own fields. Instants are RFC 9557 text (offset plus zone name), dates ISO
8601, decimals strings (exact: ``"9.80"`` stays ``9.80``), ids hex-with-dashes UUIDs.

Two ways in:

* :func:`event_from_json` is the **boundary**: strict about types, refuses unknown fields,
  recomputes canonical values of measured results from the analyte catalogue (D6), and
  reports the field at fault.
* :func:`decode_stored` reads what the store wrote earlier and trusts it: the canonical value a
  result was stored with is the one it keeps, even if the catalogue later changes.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import operator
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast
from uuid import UUID, SafeUUID

import attrs
import cattrs
import orjson
import pendulum
from cattrs.gen import make_dict_structure_fn
from pendulum.tz.timezone import FixedTimezone, Timezone

from protocolkit.errors import EventError, EventValidationError
from protocolkit.events import EVENT_TYPES, Event
from protocolkit.timeutil import format_instant, parse_date, parse_instant
from protocolkit.units import (
    AnalyteCatalogue,
    Measurement,
    Quantity,
    default_catalogue,
    to_decimal,
)

__all__ = [
    "converter",
    "decode_stored",
    "dumps_event",
    "encode_stored",
    "event_from_json",
    "event_to_json",
    "read_jsonl",
    "write_jsonl",
]

T = TypeVar("T")


def _strict(kind: type[T], name: str) -> Callable[[Any, type[T]], T]:
    def structure(value: Any, _: type[T]) -> T:
        if isinstance(value, bool) and kind is not bool:
            raise EventError(f"expected {name}, got {value!r}")
        if not isinstance(value, kind):
            raise EventError(f"expected {name}, got {value!r}")
        return value

    return structure


def _structure_uuid(value: Any, _: type[UUID]) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise EventError(f"expected a UUID, got {value!r}") from None


def _structure_instant(value: Any, _: type[Any]) -> pendulum.DateTime:
    if isinstance(value, pendulum.DateTime):
        return value
    return parse_instant(value)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_unstructure_hook(pendulum.DateTime, format_instant)
    conv.register_structure_hook(pendulum.DateTime, _structure_instant)
    conv.register_unstructure_hook(dt.date, dt.date.isoformat)
    conv.register_structure_hook(
        dt.date, lambda v, _: v if isinstance(v, dt.date) else parse_date(v)
    )
    conv.register_unstructure_hook(Decimal, str)
    conv.register_structure_hook(Decimal, lambda v, _: to_decimal(v))
    conv.register_unstructure_hook(UUID, str)
    conv.register_structure_hook(UUID, _structure_uuid)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    # StrEnum first: its MRO puts str before Enum, and the strict str hook must not win.
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook(enum.Enum, _structure_enum)
    conv.register_structure_hook_func(lambda t: t == dict[str, Any], _structure_changes)
    measurement = make_dict_structure_fn(Measurement, conv, _cattrs_forbid_extra_keys=True)
    conv.register_structure_hook(
        Measurement, lambda v, t: v if isinstance(v, Measurement) else measurement(v, t)
    )
    for cls in EVENT_TYPES.values():
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
        )
    return conv


def _structure_enum(value: Any, kind: type[enum.Enum]) -> enum.Enum:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise EventError(f"{value!r} is not one of {allowed}") from None


def _structure_changes(value: Any, _: type[Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventError(f"expected an object of field names to new values, got {value!r}")
    return value


#: The package's converter. Prefer the functions of this module; use it to build your own.
converter = _make_converter()


def event_to_json(event: Event) -> dict[str, Any]:
    """Return the interchange form of ``event`` (a JSON-ready dict, ``"type"`` first)."""
    body = converter.unstructure(event)
    return {"type": event.event_type, **body}


def dumps_event(event: Event) -> bytes:
    """Return one JSON Lines record (no newline) for ``event``."""
    return orjson.dumps(event_to_json(event))


def _unknown_type(name: object) -> EventError:
    if name is None:
        return EventError("required field missing", field="type")
    if not isinstance(name, str):
        return EventError(f"expected the event type as a string, got {name!r}", field="type")
    close = difflib.get_close_matches(name, list(EVENT_TYPES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return EventError(f"unknown event type {name!r}{hint}", field="type")


def _field_errors(exc: BaseException, prefix: str = "") -> Iterator[EventError]:
    """Flatten a cattrs validation group into EventErrors naming the field at fault."""
    if isinstance(exc, EventError):
        yield exc.located(prefix=prefix or None) if prefix else exc
        return
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            field = f"{prefix}.{key}" if prefix else key
            yield EventError("unknown field", field=field)
        return
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            name = ""
            for note in getattr(sub, "__notes__", []):
                if hasattr(note, "name"):
                    name = note.name
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            yield from _field_errors(sub, path)
        return
    if isinstance(exc, KeyError):
        field = f"{prefix}" if prefix else str(exc)
        yield EventError("required field missing", field=field)
        return
    yield EventError(str(exc) or type(exc).__name__, field=prefix or None)


def _measure_at_boundary(
    cls: type[Event], data: dict[str, Any], catalogue: AnalyteCatalogue
) -> None:
    if cls.measured is None:
        return
    code_field, result_field = cls.measured
    raw = data.get(result_field)
    if raw is None:
        return
    if not isinstance(raw, dict) or "value" not in raw or "unit" not in raw:
        raise EventError("expected an object with 'value' and 'unit'", field=result_field)
    extra = set(raw) - {f.name for f in attrs.fields(Measurement)}
    if extra:
        raise EventError("unknown field", field=f"{result_field}.{sorted(extra)[0]}")
    code = data.get(code_field)
    if not isinstance(code, str):
        raise EventError(f"expected a code string, got {code!r}", field=code_field)
    try:
        measured = catalogue.measure(code, raw["value"], raw["unit"])
    except EventError as exc:
        raise exc.located(prefix=result_field) from None
    given = {k: raw[k] for k in ("canonical_value", "canonical_unit", "status") if k in raw}
    computed = converter.unstructure(measured)
    for key, value in given.items():
        if key == "canonical_value" and value is not None and computed[key] is not None:
            same = to_decimal(value) == measured.canonical_value
        else:
            same = value == computed[key]
        if not same:
            raise EventError(
                f"{key} {value!r} disagrees with the catalogue's {computed[key]!r}; "
                "send the value and unit as received and let protocolkit convert",
                field=f"{result_field}.{key}",
            )
    data[result_field] = measured


def event_from_json(
    data: Any, *, catalogue: AnalyteCatalogue | None = None
) -> Event:
    """Build an event from its interchange form, checking everything (the boundary).

    Raises:
        EventError: the first problem found, naming the field (``UnitError`` for units).
        EventValidationError: several fields are wrong; ``errors`` lists each.
    """
    if not isinstance(data, dict):
        raise EventError(f"expected a JSON object, got {type(data).__name__}")
    body = dict(data)
    name = body.pop("type", None)
    cls = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _unknown_type(name)
    _measure_at_boundary(cls, body, catalogue or default_catalogue())
    return _structure(cls, body)


def _structure(cls: type[Event], body: dict[str, Any]) -> Event:
    try:
        event: Event = converter.structure(body, cls)
    except EventError:
        raise
    except Exception as exc:  # cattrs wraps field errors in a validation group
        errors = list(_field_errors(exc))
        if len(errors) == 1:
            raise errors[0] from None
        raise EventValidationError(errors) from None
    return event


def encode_stored(event: Event) -> bytes:
    """The bytes the store writes for ``event`` (its interchange form, without ``"type"``).

    Written field by field by a per-class encoder: the same bytes as
    ``orjson.dumps(converter.unstructure(event))``, about 4x faster.
    """
    encode = _ENCODERS.get(type(event))
    if encode is None:  # a class outside the catalogue: cattrs knows it, if anyone does
        return orjson.dumps(converter.unstructure(event))
    return orjson.dumps(encode(event))


def decode_stored(event_type: str, state: bytes) -> Event:
    """Rebuild an event the store wrote, trusting its stored canonical values.

    The store only ever holds events that passed the boundary, so decoding builds them
    without re-running the validators (about 10x faster than :func:`event_from_json`); a
    row that does not have the shape written is reported as an ``EventError``.
    """
    build = _TRUSTED.get(event_type)
    if build is None:
        raise _unknown_type(event_type)
    body = orjson.loads(state)
    try:
        return build(body)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise EventError(f"stored {event_type} does not have the shape written: {exc!r}")\
            from None


# --- the stored encoder: cattrs' unstructure, compiled per class ---------------------------------

_NAMED_ZONE = Timezone


def _stored_instant(value: dt.datetime) -> str:
    # format_instant's text, without its generic checks for pendulum's two zone types (an
    # event's instants are always one of them once the envelope has converted them).
    tz = value.tzinfo
    kind = type(tz)
    if kind is _NAMED_ZONE:
        return f"{value.isoformat()}[{tz.name}]"  # type: ignore[union-attr]
    if kind is FixedTimezone:
        return value.isoformat()
    return format_instant(value)


def _encode_hook(kind: Any) -> Callable[[Any], Any] | None:
    """How to write a field of type ``kind``; None when orjson writes the value as cattrs would.

    orjson writes str, int, bool, None, UUID (as ``str(uuid)``) and enums (their value)
    natively, exactly as cattrs' unstructured form would be written.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        inner = _encode_hook(args[0]) if len(args) == 1 else _cattrs_hook(kind)
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if kind is pendulum.DateTime:
        return _stored_instant
    if kind is dt.date:
        return dt.date.isoformat
    if kind is Decimal:
        return str
    if kind in (str, int, bool, UUID) or (isinstance(kind, type) and issubclass(kind, enum.Enum)):
        return None
    if isinstance(kind, type) and attrs.has(kind):
        return _stored_encoder(kind)
    return _cattrs_hook(kind)  # dict[str, Any] (EntryCorrected.changes): cattrs' own walk


def _cattrs_hook(kind: Any) -> Callable[[Any], Any]:
    unstructure = converter.unstructure
    return lambda v: unstructure(v, kind)


def _stored_encoder(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """A function giving ``converter.unstructure(obj)`` for an attrs class, field by field."""
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in attrs.fields(cls))
    hooks = [(n, h) for n in names if (h := _encode_hook(hints[n])) is not None]
    # One C call to read every field (attrgetter gives a bare value for a single name).
    getter = operator.attrgetter(*names)
    values = getter if len(names) > 1 else lambda obj: (getter(obj),)

    def encode(obj: Any) -> dict[str, Any]:
        body = dict(zip(names, values(obj), strict=True))
        for name, hook in hooks:
            body[name] = hook(body[name])
        return body

    return encode


_ENCODERS: dict[type[Event], Callable[[Any], dict[str, Any]]] = {
    cls: _stored_encoder(cls) for cls in EVENT_TYPES.values()
}


# --- the trusted decoder: what the store wrote, rebuilt without validation -----------------------

#: Zones by the text after "[" (name and "]"), fixed zones by offset: one object per zone.
_ZONES: dict[str, Timezone] = {}
_OFFSETS: dict[dt.timedelta, FixedTimezone] = {}
_DATETIME: Callable[..., pendulum.DateTime] = pendulum.DateTime
#: A datetime's state: (class, (bytes of its fields and fold, tzinfo)).
_REDUCE = cast(Callable[[dt.datetime, int], tuple[Any, tuple[Any, ...]]],
               dt.datetime.__reduce_ex__)
_FROM_ISO = dt.datetime.fromisoformat


def _named_zone(rest: str) -> Timezone:
    if not rest.endswith("]"):
        raise ValueError(f"not a zone name: [{rest!r}")
    try:
        zone = pendulum.timezone(rest[:-1])
    except Exception as exc:  # InvalidTimezone, or zoneinfo's ValueError/OSError
        raise ValueError(f"unknown zone [{rest!r}: {exc}") from None
    if not isinstance(zone, Timezone):  # pragma: no cover - a name always gives a Timezone
        raise ValueError(f"not a zone name: [{rest!r}")
    _ZONES[rest] = zone
    return zone


def _trusted_instant(text: str) -> pendulum.DateTime:
    stamp, bracket, rest = text.partition("[")
    parsed = _FROM_ISO(stamp)
    if bracket:
        zone = _ZONES.get(rest) or _named_zone(rest)
        # astimezone gives the wall time and fold in the zone (the written ones, unless the
        # zone's rules changed since). The datetime's own state tuple (bytes with the fold, and
        # the zone) rebuilds it as a pendulum DateTime in one C call: pendulum's Python
        # replace()/constructor path costs twice as much, and this runs twice per event.
        local = parsed.astimezone(zone)
    else:
        offset = parsed.utcoffset()
        if offset is None:
            raise ValueError(f"not an instant: {text!r}")
        fixed = _OFFSETS.get(offset)
        if fixed is None:
            fixed = _OFFSETS[offset] = FixedTimezone(int(offset.total_seconds()))
        return _DATETIME(_REDUCE(parsed, 4)[1][0], fixed)
    return _DATETIME(*_REDUCE(local, 4)[1])


_UUID_NEW = object.__new__
_UUID_INT = UUID.__dict__["int"].__set__
_UUID_SAFE = UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = SafeUUID.unknown


def _trusted_uuid(text: str) -> UUID:
    # str(uuid) as the store wrote it: UUID.__init__'s parsing of the other spellings (braces,
    # urn:, bytes) is half of its cost. The slots are set as UUID.__init__ sets them.
    digits = text.replace("-", "")
    if len(digits) != 32:
        raise ValueError(f"not a UUID: {text!r}")
    uuid = _UUID_NEW(UUID)
    _UUID_INT(uuid, int(digits, 16))
    _UUID_SAFE(uuid, _UNKNOWN_SAFETY)
    return uuid


def _trusted_hook(kind: Any) -> Callable[[Any], Any] | None:
    """How to rebuild a field of type ``kind`` from JSON; None when JSON already has it."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = _trusted_hook(next(a for a in typing.get_args(kind) if a is not type(None)))
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if kind is pendulum.DateTime:
        return _trusted_instant
    if kind is dt.date:
        return dt.date.fromisoformat
    if kind is UUID:
        return _trusted_uuid
    if kind is Decimal:
        return Decimal
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        members = dict(kind._value2member_map_)
        return members.__getitem__
    if isinstance(kind, type) and attrs.has(kind):
        return _trusted_builder(kind, shared=kind in _SHARED_VALUES)
    return None  # str, int, bool, dict: JSON already has them


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """Set attribute ``name`` of a frozen instance (its slot's descriptor when it has one)."""
    for klass in cls.__mro__:
        slot = klass.__dict__.get(name)
        if slot is not None and type(slot).__name__ == "member_descriptor":
            return slot.__set__  # type: ignore[no-any-return]
    setter = object.__setattr__
    return lambda instance, value: setter(instance, name, value)  # pragma: no cover - slotted


def _getter(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` in a JSON object, in one C call (a KeyError if one is missing)."""
    if not names:
        return lambda body: ()
    get = operator.itemgetter(*names)
    return get if len(names) > 1 else lambda body: (get(body),)


#: Frozen value objects of scalars, shared between the events that hold equal ones.
_SHARED_VALUES = (Quantity, Measurement)
#: How many of each are kept (the cache is emptied when it reaches this size).
_SHARED_LIMIT = 4096


def _trusted_builder(cls: type[T], *, shared: bool = False) -> Callable[[dict[str, Any]], T]:
    """Build ``cls`` from the JSON object written for it, field by field, without validation.

    With ``shared``, for frozen value objects made of scalars (a dose, a lab result), equal
    JSON gives the same instance: a study's 24,000 doses hold four distinct quantities.
    """
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _trusted_hook(hints[f.name])) for f in attrs.fields(cls)]  # type: ignore[arg-type]
    plain = [name for name, hook in fields if hook is None]
    hooked = [(name, hook) for name, hook in fields if hook is not None]
    plain_values = _getter(plain)
    hooked_values = _getter([name for name, _ in hooked])
    plain_setters = [_slot_setter(cls, name) for name in plain]
    hooked_plan = [(_slot_setter(cls, name), hook) for name, hook in hooked]
    new = object.__new__

    def build(body: dict[str, Any]) -> T:
        instance = new(cls)
        for setter, value in zip(plain_setters, plain_values(body), strict=True):
            setter(instance, value)
        for (setter, hook), value in zip(hooked_plan, hooked_values(body), strict=True):
            setter(instance, hook(value))
        return instance

    if not shared:
        return build
    everything = _getter([name for name, _ in fields])
    cache: dict[tuple[Any, ...], T] = {}

    def build_shared(body: dict[str, Any]) -> T:
        key = everything(body)  # the raw JSON values: "1" and "1.0" stay apart
        value = cache.get(key)
        if value is None:
            if len(cache) >= _SHARED_LIMIT:
                cache.clear()
            value = cache[key] = build(body)
        return value

    return build_shared


_TRUSTED: dict[str, Callable[[dict[str, Any]], Event]] = {
    name: _trusted_builder(cls) for name, cls in EVENT_TYPES.items()
}


def read_jsonl(
    lines: Iterable[str | bytes],
    *,
    source: str = "<input>",
    catalogue: AnalyteCatalogue | None = None,
) -> list[Event]:
    """Parse JSON Lines into events, checking every line; blank lines are skipped.

    Every problem of every line is collected, so one run reports them all.

    Raises:
        EventValidationError: one or more lines are bad; each error names its line and field.
    """
    events: list[Event] = []
    errors: list[EventError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(EventError(f"malformed JSON: {exc}", line=number, source=source))
            continue
        try:
            events.append(event_from_json(data, catalogue=catalogue))
        except EventValidationError as group:
            errors.extend(e.located(line=number, source=source) for e in group.errors)
        except EventError as exc:
            errors.append(exc.located(line=number, source=source))
    if errors:
        raise EventValidationError(errors, source=source)
    return events


def write_jsonl(events: Iterable[Event]) -> Iterator[bytes]:
    """Yield one JSON Lines record (with its newline) per event."""
    for event in events:
        yield dumps_event(event) + b"\n"
