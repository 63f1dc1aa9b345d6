"""The runtime context of one evaluation: what compiled closures read and write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from protocolkit.rules._values import EventView, Evidence, Instant, Unknown

if TYPE_CHECKING:
    from protocolkit.rules._compile import Ty

__all__ = ["Ctx", "Fn", "Global", "SetVal", "global_value"]

Fn = Callable[["Ctx", EventView | None], Any]


@attrs.define
class Ctx:
    """Everything one subject's evaluation needs; built by the engine."""

    by_type: dict[str, list[EventView]]
    now: Instant
    zone: Any
    #: Values computed once per evaluation: globals by name, invariant set filters by key.
    memo: dict[Any, Any] = attrs.field(factory=dict)
    touched: Evidence = attrs.field(factory=Evidence)
    locals: dict[str, Any] = attrs.field(factory=dict)
    rules: Any = None  # the engine's rule-result lookup (status of / response of)
    #: Sorted UTC keys of member lists, by list identity (bisection of before/after).
    keys: dict[int, list[dt.datetime]] = attrs.field(factory=dict)
    pinned: list[Any] = attrs.field(factory=list)
    #: A session's filters kept between evaluations, and its per-type change counts.
    kept: dict[Any, Any] | None = None
    versions: dict[str, int] = attrs.field(factory=dict)
    #: The session's views in the order they were added (kept results follow it).
    log: list[EventView] = attrs.field(factory=list)

    def touch(self, view: EventView) -> None:
        """Record an event as evidence of the verdict being computed."""
        self.touched.add(view.event.event_id)


@attrs.frozen
class SetVal:
    """A set of events: those surely in it, and those whose membership is unknown."""

    items: list[EventView]
    uncertain: list[EventView] = attrs.field(factory=list)
    why: Unknown | None = None
    #: For members a `where` turned away: the events its condition read (why they are out).
    rejected: Mapping[int, Any] = attrs.field(factory=dict)


@attrs.frozen
class Global:
    """A parameter, anchor, let or define."""

    kind: str
    name: str
    fn: Fn
    ty: Ty
    line: int
    #: The event types its value reads ("*": any), and whether it reads `now`.
    reads: frozenset[str] = frozenset()
    reads_now: bool = False
    #: For a define whose membership of an event depends only on that event, events up to
    #: its instant, and the values of these lets and anchors: them (empty: on the event
    #: alone). None for any other set.
    causal: tuple[Global, ...] | None = None


def global_value(ctx: Ctx, glob: Global) -> Any:
    """The value of a parameter, anchor, let or define for this subject (computed once).

    The events a let or anchor used are remembered with its value and added to the evidence
    of every verdict that reads it; a define's are not (its members become evidence only
    when a query picks them).
    """
    entry = ctx.memo.get(glob.name)
    if entry is None:
        saved = ctx.touched
        ctx.touched = Evidence()
        try:
            value = glob.fn(ctx, None)
        finally:
            used, ctx.touched = ctx.touched, saved
        entry = (value, Evidence() if glob.kind == "define" else used)
        ctx.memo[glob.name] = entry
    ctx.touched |= entry[1]
    return entry[0]
