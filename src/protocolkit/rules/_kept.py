"""What an engine session keeps between evaluations: filters, verdicts, merges, keys.

A session adds events to per-type lists kept in clinical order, and logs every view in the
order it was added. A kept result remembers how much of that log it accounts for; on its next
use it gives again only what the events added since can change (from :func:`change_point`),
unless something it reads changed (its :class:`Reads` stamp), and then it starts again.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from protocolkit.rules._context import Ctx, Global, SetVal, global_value
from protocolkit.rules._values import EventView, Evidence, Unknown

__all__ = [
    "Judged",
    "KeptVerdicts",
    "Reads",
    "chain_rejected",
    "change_point",
    "grown_keys",
    "keep_keys",
    "kept_merge",
    "kept_per_member",
    "kept_verdicts",
    "kept_where",
    "merged_why",
    "note_insert",
    "truncate_keys",
    "view_key",
]


def chain_rejected(own: dict[int, Any], inherited: Mapping[int, Any]) -> Mapping[int, Any]:
    """A filter's rejected members, then its input's (without copying the input's)."""
    return ChainMap(own, inherited) if inherited else own  # type: ignore[arg-type]


@attrs.define
class Judged:
    """A filter's verdicts on members, in clinical order."""

    items: list[EventView] = attrs.field(factory=list)
    #: Per member in ``items``: what its condition read (its id, or evidence).
    used: list[Any] = attrs.field(factory=list)
    uncertain: list[EventView] = attrs.field(factory=list)
    #: Per member in ``uncertain``: why.
    whys: list[Unknown] = attrs.field(factory=list)
    #: Members turned away (by view id): what their condition read. In clinical order:
    rejected: dict[int, Any] = attrs.field(factory=dict)
    turned_away: list[EventView] = attrs.field(factory=list)

    def reject(self, view: EventView, used: Any) -> None:
        """Turn a member away, keeping what its condition read (why it is out)."""
        self.rejected[id(view)] = used
        self.turned_away.append(view)

    def drop_from(self, point: Any) -> None:
        """Forget the verdicts on members at or after ``point`` (a clinical order key)."""
        at = bisect.bisect_left(self.items, point, key=view_key)
        del self.items[at:], self.used[at:]
        at = bisect.bisect_left(self.uncertain, point, key=view_key)
        del self.uncertain[at:], self.whys[at:]
        at = bisect.bisect_left(self.turned_away, point, key=view_key)
        for view in self.turned_away[at:]:
            del self.rejected[id(view)]
        del self.turned_away[at:]


def merged_why(first: Unknown | None, more: Sequence[Unknown]) -> Unknown | None:
    why = first
    for extra in more:
        why = extra if why is None else why.merge(extra)
    return why


@attrs.define
class KeptWhere:
    """A filter's verdicts kept in a session, with what they were judged from."""

    source: list[EventView]
    stamp: tuple[Any, ...]
    #: How much of the session's log of added events the verdicts account for.
    seq: int = 0
    judged: Judged = attrs.field(factory=Judged)


def kept_where(ctx: Ctx, key: object, found: SetVal, reads: Reads,
                judge: Callable[[Ctx, Sequence[EventView], Judged], None]) -> SetVal:
    """A kept filter: judge again only the members from the earliest event added since.

    The filter's input changes only where the session added events (its lists are kept in
    clinical order, and kept filters feed kept filters), so verdicts on members before the
    earliest of them stand, unless the condition reads an event type that changed, or `now`.
    Another input list (its filter started again) also starts this one again.
    """
    assert ctx.kept is not None
    log = ctx.log
    stamp = reads.stamp(ctx)
    state: KeptWhere | None = ctx.kept.get(key)
    start: int | None = 0
    if state is None or state.source is not found.items or state.stamp != stamp:
        replaced = state.judged.items if state is not None else None
        state = ctx.kept[key] = KeptWhere(found.items, stamp)
        keep_keys(ctx, state.judged.items, replaced)
    elif state.seq == len(log):
        start = None  # nothing added since
    else:
        point = change_point(log[state.seq:])
        state.judged.drop_from(point)
        truncate_keys(ctx, state.judged.items)
        start = bisect.bisect_left(found.items, point, key=view_key)
    if start is not None:
        try:
            judge(ctx, found.items[start:], state.judged)
        except BaseException:
            del ctx.kept[key]  # judged in part: start again next time
            raise
        state.seq = len(log)
    judged = state.judged
    ctx.touched.include(judged.used)
    return SetVal(judged.items, judged.uncertain, merged_why(None, judged.whys),
                  chain_rejected(judged.rejected, found.rejected))


#: Kept results are given again from this long before the earliest event added: a member
#: at the same instant, or on the same date when one side has only a date, can read it
#: through a causal read (`before it`, `within [.., it]`), and a kept set that reads so
#: changes from there, for every set built on it.
_CHANGE_MARGIN = dt.timedelta(hours=36)


def change_point(added: Sequence[EventView]) -> Any:
    """The clinical order key from which kept results must be given again."""
    return (min(view.index for view in added)[0] - _CHANGE_MARGIN,)


@attrs.frozen
class Reads:
    """What a condition on a member reads besides the member: what its kept verdicts need.

    Verdicts already given stand while the event types it reads directly, the values (and
    evidence) of the lets and anchors it reads, and `now` if it reads it, are unchanged;
    then only members from :func:`change_point` on are judged again. Types it reads only up
    to the member's instant (causal reads) are not in ``types``: a new event cannot change
    an earlier member's verdict through them.
    """

    types: frozenset[str]
    values: tuple[Global, ...]
    now: bool

    def stamp(self, ctx: Ctx) -> tuple[Any, ...]:
        """What must be unchanged for kept verdicts to stand."""
        return (tuple(ctx.versions.get(t, 0) for t in sorted(self.types)),
                ctx.now if self.now else None,
                tuple(_fingerprint(ctx, g) for g in self.values))


@attrs.define
class KeptVerdicts:
    """A condition's verdict on each member (by view), kept in a session."""

    stamp: tuple[Any, ...]
    seq: int = 0
    given: dict[Any, Any] = attrs.field(factory=dict)


def kept_per_member(ctx: Ctx, key: object, stamp: tuple[Any, ...],
                    members: list[EventView]) -> KeptVerdicts:
    """The kept per-member results under ``key``, brought up to the session's log.

    A changed stamp starts them again; otherwise the results of members from
    :func:`change_point` on are forgotten (given again by the caller).
    """
    assert ctx.kept is not None
    state: KeptVerdicts | None = ctx.kept.get(key)
    if state is None or state.stamp != stamp:
        state = ctx.kept[key] = KeptVerdicts(stamp)
    elif state.seq != len(ctx.log):
        point = change_point(ctx.log[state.seq:])
        for view in members[bisect.bisect_left(members, point, key=view_key):]:
            state.given.pop(id(view), None)
    state.seq = len(ctx.log)
    return state


def kept_verdicts(ctx: Ctx, key: object, members: list[EventView], reads: Reads,
                   judge: Callable[[EventView], Any]) -> list[Any]:
    """Each member's verdict, kept between a session's evaluations (see :class:`Reads`).

    What each judgement cited is cited again, as a fresh judgement would.
    """
    state = kept_per_member(ctx, key, reads.stamp(ctx), members)
    verdicts, used = [], []
    for view in members:
        entry = state.given.get(id(view))
        if entry is None:
            outer, ctx.touched = ctx.touched, Evidence()
            try:
                verdict = judge(view)
            finally:
                cited, ctx.touched = ctx.touched, outer
            entry = state.given[id(view)] = (verdict, cited)
        verdicts.append(entry[0])
        used.append(entry[1])
    ctx.touched.include(used)
    return verdicts


def _fingerprint(ctx: Ctx, glob: Global) -> tuple[Any, ...]:
    """A let's or anchor's value and evidence: a kept filter's verdicts stand while equal."""
    saved, ctx.touched = ctx.touched, Evidence()
    try:
        value = global_value(ctx, glob)
    finally:
        used, ctx.touched = ctx.touched, saved
    return (value, frozenset(used.ids_all()))


@attrs.define
class KeptMerge:
    """Several types' events merged in clinical order, kept in a session."""

    sources: list[list[EventView] | None]
    seq: int = 0
    items: list[EventView] = attrs.field(factory=list)


def kept_merge(ctx: Ctx, key: object, sources: list[list[EventView] | None]
                ) -> list[EventView]:
    """Several types' events in clinical order, kept in a session.

    Merged again only from the earliest event the session added since.
    """
    assert ctx.kept is not None
    log = ctx.log
    state: KeptMerge | None = ctx.kept.get(key)
    if state is not None and all(old is None or new is old
                                 for old, new in zip(state.sources, sources, strict=True)):
        if state.seq == len(log):
            return state.items
        point = change_point(log[state.seq:])
        del state.items[bisect.bisect_left(state.items, point, key=view_key):]
        truncate_keys(ctx, state.items)
        tail = [v for new in sources if new
                for v in new[bisect.bisect_left(new, point, key=view_key):]]
    else:
        replaced = state.items if state is not None else None
        state = ctx.kept[key] = KeptMerge(list(sources))
        keep_keys(ctx, state.items, replaced)
        tail = [v for new in sources if new for v in new]
    tail.sort(key=view_key)
    state.items.extend(tail)
    state.sources = list(sources)
    state.seq = len(log)
    return state.items


def view_key(view: EventView) -> Any:
    return view.index


def keep_keys(ctx: Ctx, items: list[EventView], replaced: list[EventView] | None = None
               ) -> None:
    """Keep the bisection keys of a session list that only grows at its end."""
    assert ctx.kept is not None
    if replaced is not None:
        ctx.kept.pop(("keys", id(replaced)), None)
    ctx.kept.setdefault(("keys", id(items)), [items, []])


def truncate_keys(ctx: Ctx, items: list[EventView]) -> None:
    """A kept list was cut back: its keys beyond its length go too."""
    assert ctx.kept is not None
    entry = ctx.kept.get(("keys", id(items)))
    if entry is not None and entry[1] is not None:
        del entry[1][len(items):]


def note_insert(kept: dict[Any, Any], items: list[EventView], position: int) -> None:
    """A session inserted a view into one of its lists: keep that list's keys in step."""
    entry = kept.get(("keys", id(items)))
    if entry is not None and entry[1] is not None and position < len(entry[1]):
        view = items[position]
        if view.instant.day_only:
            entry[1] = None
        else:
            entry[1].insert(position, view.instant.utc)


def grown_keys(entry: list[Any]) -> list[dt.datetime] | None:
    items, keys = entry
    if keys is not None and len(keys) < len(items):
        tail = items[len(keys):]
        if any(v.instant.day_only for v in tail):
            entry[1] = keys = None  # a date-only member: scan from now on
        else:
            keys.extend(v.instant.utc for v in tail)
    return keys  # type: ignore[no-any-return]
