"""Instants that keep their site's time zone, written as RFC 9557 text.

An instant is a time-zone-aware ``pendulum.DateTime``. Its text form is ISO 8601 with the UTC
offset, followed by the IANA zone name in brackets when the zone is a named one
(``2024-03-01T08:00:00+08:00[Asia/Shanghai]``, RFC 9557). The offset fixes the instant; the name
keeps the site's zone, which study days and "same date" questions need (D1). A naive time is
refused: it names no instant.
"""

from __future__ import annotations

import datetime as dt
import re

import pendulum
from pendulum.tz.timezone import FixedTimezone, Timezone

from protocolkit.errors import EventError

__all__ = ["format_instant", "is_aware", "parse_date", "parse_instant", "to_utc"]

_RFC9557 = re.compile(r"^(?P<stamp>[^\[\]]+?)(?:\[!?(?P<zone>[A-Za-z0-9_+\-/]+)\])?$")


def is_aware(value: dt.datetime) -> bool:
    """Return whether ``value`` names an instant (has a UTC offset)."""
    return value.tzinfo is not None and value.utcoffset() is not None


def parse_instant(text: str) -> pendulum.DateTime:
    """Parse RFC 9557 / ISO 8601 text into an aware ``pendulum.DateTime``.

    Raises:
        EventError: the text is not a date-time, has no UTC offset, names an unknown zone, or
            its offset disagrees with the zone it names.
    """
    match = _RFC9557.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise EventError(f"expected an ISO 8601 date-time with a UTC offset, got {text!r}")
    try:
        parsed = dt.datetime.fromisoformat(match["stamp"])
    except ValueError:
        raise EventError(
            f"expected an ISO 8601 date-time with a UTC offset, got {text!r}"
        ) from None
    if not is_aware(parsed):
        raise EventError(
            f"naive date-time {text!r}: add the UTC offset (and the site's zone, "
            "e.g. 2024-03-01T08:00:00+08:00[Asia/Shanghai])"
        )
    zone_name = match["zone"]
    if zone_name is None:
        offset = parsed.utcoffset()
        assert offset is not None  # is_aware checked it
        # replace(), not instance(tz=...): pendulum would turn a +00:00 offset into named UTC.
        return pendulum.instance(parsed).replace(
            tzinfo=FixedTimezone(int(offset.total_seconds()))
        )
    try:
        zone = pendulum.timezone(zone_name)
    except Exception:  # pendulum raises its own InvalidTimezone; any failure means the same
        raise EventError(f"unknown time zone {zone_name!r} in {text!r}") from None
    local = pendulum.instance(parsed).in_timezone(zone)
    if local.utcoffset() != parsed.utcoffset():
        raise EventError(
            f"{text!r}: offset {match['stamp'][-6:]} is not the offset of {zone_name} "
            f"at that instant ({local.isoformat()})"
        )
    return local


def format_instant(value: dt.datetime) -> str:
    """Return the RFC 9557 text of an aware instant (the zone name kept when it has one)."""
    if not is_aware(value):
        raise EventError(f"naive date-time {value!r} names no instant")
    text = value.isoformat()
    tz = value.tzinfo
    if isinstance(tz, Timezone) and not isinstance(tz, FixedTimezone):
        return f"{text}[{tz.name}]"
    return text


def parse_date(text: str) -> dt.date:
    """Parse an ISO 8601 calendar date (``YYYY-MM-DD``)."""
    if not isinstance(text, str):
        raise EventError(f"expected an ISO 8601 date (YYYY-MM-DD), got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise EventError(f"expected an ISO 8601 date (YYYY-MM-DD), got {text!r}") from None


def to_utc(value: dt.datetime) -> pendulum.DateTime:
    """The same instant in UTC: elapsed time is always computed on these (D1)."""
    return pendulum.instance(value).in_timezone("UTC")
