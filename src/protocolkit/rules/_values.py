"""Runtime values of the protocol language: quantities, instants, Kleene truth, event views."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any, Union

import attrs

from protocolkit.errors import EventError
from protocolkit.events import Event, TimePrecision
from protocolkit.units import Measurement, MeasurementStatus, Quantity, Unit, parse_unit

__all__ = [
    "EventView",
    "Evidence",
    "Instant",
    "Qty",
    "Unknown",
    "Value",
    "is_unknown",
    "kleene_and",
    "kleene_not",
    "kleene_or",
]


@attrs.frozen
class Unknown:
    """A value the facts do not decide. ``reasons`` name what would decide it."""

    reasons: tuple[str, ...] = ()
    #: True when the reason is a data problem to query (implausible value, same-day order).
    query: bool = False

    def merge(self, other: Unknown) -> Unknown:
        """Both unknowns' reasons, in order, without repeats."""
        reasons = tuple(dict.fromkeys(self.reasons + other.reasons))
        return Unknown(reasons, self.query or other.query)


def is_unknown(value: object) -> bool:
    """Whether ``value`` is :class:`Unknown`."""
    return isinstance(value, Unknown)


@attrs.frozen(order=False)
class Qty:
    """A quantity in coherent base units (exact), remembering the unit it was written in."""

    base: Fraction
    dimension: tuple[int, ...]
    unit: str

    @classmethod
    def of(cls, value: Any, unit: str) -> Qty:
        """The quantity ``value unit``."""
        parsed: Unit = parse_unit(unit)
        return cls(Fraction(value) * parsed.factor, parsed.dimension, unit)

    @classmethod
    def number(cls, value: Any) -> Qty:
        """A dimensionless number."""
        return cls(Fraction(value), (0, 0, 0, 0, 0, 0), "1")

    @property
    def is_number(self) -> bool:
        """Whether this is a plain number (dimensionless, written without a unit)."""
        return self.unit == "1"

    def in_unit(self, unit: str) -> Fraction:
        """The magnitude in ``unit``."""
        return self.base / parse_unit(unit).factor

    def shown(self) -> str:
        """Text in the unit it was written in."""
        value = self.in_unit(self.unit) if self.unit != "1" else self.base
        number = _fraction_text(value)
        return number if self.unit == "1" else f"{number} {self.unit}"


def _fraction_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"


@attrs.frozen(order=False)
class Instant:
    """A point in time: UTC timestamp, the site-local date, and whether only the date is known."""

    utc: dt.datetime
    local_date: dt.date
    day_only: bool = False

    def shown(self) -> str:
        """Text: the local date, or the UTC time."""
        return self.local_date.isoformat() if self.day_only else self.utc.isoformat()


@attrs.frozen(eq=False)
class EventView:
    """An event as rules see it: its instant in the site's zone and its fields."""

    event: Event
    instant: Instant
    #: Its clinical-time order key (UTC instant, type, event id as an integer; see
    #: ``engine.order_key``): views compare by it as their events are ordered.
    index: Any

    @property
    def type(self) -> str:
        """The event type name."""
        return self.event.event_type


class Evidence:
    """The events a verdict used: event ids, plus whole evidence or event lists, by reference.

    Including is constant time: a condition that cites every dose of a long history (``any
    $dose``) does not copy their ids, and most such evidence is never read (a let's, a
    filter's). Results read it once each, through :meth:`ids_all`. What is included must not
    change while this evidence is in use: an evaluation's lists do not.
    """

    __slots__ = ("ids", "parts")

    def __init__(self, ids: Iterable[Any] = ()) -> None:
        self.ids: set[Any] = set(ids)
        self.parts: list[Evidence | Sequence[Any]] = []

    def add(self, event_id: Any) -> None:
        """Cite one event by id."""
        self.ids.add(event_id)

    def include(self, other: Evidence | Sequence[Any]) -> None:
        """Cite everything ``other`` cites: evidence, or a list of views, ids or evidence."""
        if other is not self:
            self.parts.append(other)

    def __ior__(self, other: Evidence | Iterable[Any]) -> Evidence:
        if isinstance(other, Evidence):
            self.include(other)
        else:
            self.ids.update(other)
        return self

    def ids_all(self) -> set[Any]:
        """Every event id cited, directly or through what was included."""
        found = set(self.ids)
        stack = list(self.parts)
        visited = {id(self)}
        while stack:
            part = stack.pop()
            if id(part) in visited:
                continue
            visited.add(id(part))
            if isinstance(part, Evidence):
                found |= part.ids
                stack.extend(part.parts)
                continue
            for item in part:  # event views, event ids, or evidence
                if isinstance(item, EventView):
                    found.add(item.event.event_id)
                elif isinstance(item, Evidence):
                    stack.append(item)
                else:
                    found.add(item)
        return found

    def __iter__(self) -> Iterator[Any]:
        return iter(self.ids_all())

    def __bool__(self) -> bool:
        return bool(self.ids) or any(bool(part) for part in self.parts)

    def copy(self) -> Evidence:
        """A copy that later citations to this one do not reach."""
        copied = Evidence(self.ids)
        copied.parts = list(self.parts)
        return copied


Value = Union[
    bool, Qty, Instant, dt.date, str, EventView, "list[EventView]", "list[list[EventView]]",
    Unknown, None,
]


def kleene_not(value: object) -> object:
    """Three-valued not."""
    if isinstance(value, Unknown):
        return value
    return not _truth(value)


def kleene_and(values: Sequence[object]) -> object:
    """Three-valued and: false wins, then unknown."""
    unknown: Unknown | None = None
    for value in values:
        if isinstance(value, Unknown):
            unknown = value if unknown is None else unknown.merge(value)
        elif not _truth(value):
            return False
    return unknown if unknown is not None else True


def kleene_or(values: Sequence[object]) -> object:
    """Three-valued or: true wins, then unknown."""
    unknown: Unknown | None = None
    for value in values:
        if isinstance(value, Unknown):
            unknown = value if unknown is None else unknown.merge(value)
        elif _truth(value):
            return True
    return unknown if unknown is not None else False


def _truth(value: object) -> bool:
    if isinstance(value, list):
        return bool(value)
    return bool(value)


def field_value(view: EventView, name: str, zone: Any) -> object:
    """A field of an event as a rule value (measurements as canonical quantities)."""
    event = view.event
    if name == "occurred_at":
        return view.instant
    if name == "recorded_at":
        return instant_of(event.recorded_at, zone, TimePrecision.INSTANT)
    value = getattr(event, name)
    if isinstance(value, Measurement):
        if value.status is MeasurementStatus.IMPLAUSIBLE:
            return Unknown(
                (f"{event.event_type} {event.event_id}: {value.value} {value.unit} is "
                 "implausible for its unit (data query)",),
                query=True,
            )
        assert value.canonical_value is not None and value.canonical_unit is not None
        return Qty.of(value.canonical_value, value.canonical_unit)
    if isinstance(value, Quantity):
        return Qty.of(value.value, value.unit)
    if isinstance(value, dt.datetime):
        return instant_of(value, zone, TimePrecision.INSTANT)
    if isinstance(value, enum.Enum):
        if value.name == "UNKNOWN":  # recorded as unknown: the fact is not known
            return Unknown((f"{event.event_type}.{name} recorded as unknown",))
        return str(value.value)
    if isinstance(value, bool | dt.date | str) or value is None:
        return value
    if isinstance(value, int):
        return Qty.number(value)
    return str(value)


def instant_of(value: dt.datetime, zone: Any, precision: TimePrecision) -> Instant:
    """The instant of an aware datetime, with its date in ``zone`` (the site's, D1/D8)."""
    return instant_at(value, utc_of(value), zone, precision)


def utc_of(value: dt.datetime) -> dt.datetime:
    """An aware datetime as a plain stdlib UTC datetime.

    Built field by field: pendulum's conversions and arithmetic run Python code and are several
    times slower (this runs for every event of every evaluation), and pendulum's arithmetic on
    a UTC DateTime can drop the zone.
    """
    offset = _utcoffset(value)
    if offset is None:
        raise EventError(f"a naive datetime {value!r} names no instant: give its UTC offset")
    return dt.datetime(value.year, value.month, value.day, value.hour, value.minute,
                       value.second, value.microsecond, tzinfo=dt.UTC) - offset


def instant_at(value: dt.datetime, utc: dt.datetime, zone: Any,
               precision: TimePrecision) -> Instant:
    """:func:`instant_of` when ``utc`` (``utc_of(value)``) is already known."""
    if precision is TimePrecision.DAY:
        # A date-only fact: its date is the one written, in the zone it was written in.
        return Instant(utc, _date(value), True)
    if zone is None or value.tzinfo is zone:
        return Instant(utc, _date(value), False)
    return Instant(utc, _date(utc.astimezone(zone)), False)


# The stdlib's C methods, called directly: pendulum's overrides run Python code per call.
_utcoffset = dt.datetime.utcoffset
_date = dt.datetime.date
