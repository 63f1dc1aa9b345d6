"""Compile a parsed protocol into closures, checking names, types and units on the way.

Every expression becomes a function ``f(ctx, it) -> value`` (``it`` is the event a ``where``
clause is looking at). Checking happens while compiling, so a protocol that loads has no
unknown name, no unit mismatch and no inverted window; every problem is collected with its
line and column and reported together.
"""

from __future__ import annotations

import bisect
import datetime as dt
import difflib
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import attrs
from lark import Token, Tree

from protocolkit.errors import EventError, RuleError
from protocolkit.events import EVENT_TYPES, Event
from protocolkit.rules._context import Ctx, Fn, Global, SetVal, global_value
from protocolkit.rules._kept import (
    Judged,
    Reads,
    chain_rejected,
    grown_keys,
    keep_keys,
    kept_merge,
    kept_verdicts,
    kept_where,
    merged_why,
    view_key,
)
from protocolkit.rules._predicates import simple_predicate
from protocolkit.rules._values import (
    EventView,
    Evidence,
    Instant,
    Qty,
    Unknown,
    field_value,
    kleene_and,
    kleene_not,
    kleene_or,
)
from protocolkit.units import AnalyteCatalogue, parse_unit

#: Compile the shortcuts (set filters computed once per evaluation, plain predicates for
#: simple conditions). They never change a result; the tests compile without them to prove it.
OPTIMISE = True
#: A lark parse-tree node. Lark types children as ``Token | Tree``; the grammar fixes which
#: each child is, so the compiler treats nodes as Any rather than narrowing at every step.
Node = Any

_UNIT_HINTS = {
    "days": "d", "day": "d", "hours": "h", "hour": "h", "hr": "h", "hrs": "h",
    "weeks": "wk", "week": "wk", "w": "wk", "minutes": "min", "mins": "min",
    "years": "a", "year": "a", "months": "mo", "month": "mo", "mcg": "ug", "cc": "mL",
}
_TIME = (0, 0, 1, 0, 0, 0)
_NUMBER = (0, 0, 0, 0, 0, 0)
_DAY = Fraction(86400)


@attrs.frozen
class Ty:
    """A static type: ``kind`` and, for quantities, the dimension; for events, the types."""

    kind: str  # bool qty instant date string event set runs any none
    dim: tuple[int, ...] | None = None
    types: frozenset[str] | None = None
    analyte: str | None = None
    #: The unit a literal or parameter was written in (checked against an analyte's units).
    unit: str | None = None

    def describe(self) -> str:
        """Human text of the type."""
        if self.kind == "qty" and self.unit and self.unit != "1":
            return f"a quantity in {self.unit}"
        if self.kind == "qty" and self.analyte:
            return f"a result of {self.analyte}"
        if self.kind == "qty" and self.dim is not None:
            if self.dim == _NUMBER:
                return "a number"
            return f"a quantity of {_DIMENSION_NAMES.get(self.dim, f'dimension {self.dim}')}"
        if self.kind in ("event", "set") and self.types:
            noun = "an event" if self.kind == "event" else "events"
            return f"{noun} of type {', '.join(sorted(self.types))}"
        return {"qty": "a quantity", "bool": "a truth value", "instant": "a date-time",
                "date": "a date", "string": "a string", "runs": "runs of events",
                "any": "a value", "none": "nothing", "event": "an event",
                "set": "events"}[self.kind]


_DIMENSION_NAMES: dict[tuple[int, ...], str] = {
    (1, -3, 0, 0, 0, 0): "mass concentration (like g/L)",
    (0, -3, 0, 1, 0, 0): "substance concentration (like mmol/L)",
    (0, -3, 0, 0, 0, 0): "number concentration (like 10*9/L)",
    (0, 0, 1, 0, 0, 0): "duration (like h or d)",
    (1, 0, 0, 0, 0, 0): "mass (like mg)",
    (0, 1, 0, 0, 0, 0): "length (like cm)",
    (0, 3, 0, 0, 0, 0): "volume (like mL)",
    (0, 2, 0, 0, 0, 0): "area (like m2)",
}

ANY = Ty("any")
BOOL = Ty("bool")
STRING = Ty("string")
INSTANT = Ty("instant")
DATE = Ty("date")


class Compiler:
    """Compiles one protocol's trees; collects errors instead of stopping at the first."""

    def __init__(self, source: str, text: str, catalogue: AnalyteCatalogue) -> None:
        self.source = source
        self.text = text
        self.catalogue = catalogue
        self.errors: list[RuleError] = []
        self.globals: dict[str, Global] = {}
        self.rule_ids: set[str] = set()
        self.rule: str | None = None
        self.local_types: dict[str, Ty] = {}
        # What the expressions compiled so far read besides globals and constants: `it` (or
        # the member's fields) and locals/rule results. A set filter that reads neither from
        # outside gives the same members wherever it is evaluated, so it is computed once
        # per evaluation (see set_expr).
        self._cur_refs = 0
        self._local_refs: list[str] = []
        # The event types and `now` they read (a kept filter's verdicts depend on nothing else).
        self._type_refs: list[str] = []
        self._now_refs = 0
        # How each type in _type_refs is read: None (directly), ("global", g) (through the
        # value of let/anchor g), or ("causal", it) (only events up to the member `it`'s
        # instant: a filter kept for that member need not judge earlier members again).
        self._ref_tags: list[Any] = []
        self._direct_now_refs = 0
        # Per set expression compiled: whether its membership is causal (see Global.causal).
        self._causal_sets: dict[int, tuple[Global, ...] | None] = {}
        self._last_where: tuple[Reads, list[str]] | None = None

    # --- errors ------------------------------------------------------------------------------

    def error(self, node: Node | None, message: str,
              suggestion: str | None = None) -> None:
        line, column = _position(node)
        self.errors.append(RuleError(message, source=self.source, line=line, column=column,
                                     rule=self.rule, suggestion=suggestion))

    def snippet(self, node: Node) -> str:
        """The source text of a node (how an unknown names its missing fact)."""
        start = getattr(node, "start_pos", None)
        end = getattr(node, "end_pos", None)
        if start is None:
            meta = getattr(node, "meta", None)
            if meta is None or getattr(meta, "empty", True):
                return str(node)
            start, end = meta.start_pos, meta.end_pos
        return " ".join(self.text[start:end].split())

    # --- expressions -------------------------------------------------------------------------

    def expr(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        """Compile an expression; ``it`` is the type of the event in scope, if any."""
        if isinstance(node, Token):
            return self._token(node, it)
        method = getattr(self, f"_x_{node.data}", None)
        if method is None:
            return self._x_query(node, it)
        result: tuple[Fn, Ty] = method(node, it)
        return result

    def _token(self, token: Token, it: Ty | None) -> tuple[Fn, Ty]:
        self.error(token, f"unexpected {token!r}")
        return _const(None), ANY

    def _x_number(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        value = Qty.number(Fraction(str(node.children[0])))
        return _const(value), Ty("qty", _NUMBER)

    def _x_quantity(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        number, unit = node.children
        try:
            value = Qty.of(Fraction(str(number)), str(unit))
        except EventError as exc:
            hint = _UNIT_HINTS.get(str(unit))
            self.error(unit, f"unknown unit {str(unit)!r}: {exc.message}", hint)
            return _const(None), Ty("qty")
        return _const(value), Ty("qty", value.dimension, unit=value.unit)

    def _x_string(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return _const(str(node.children[0])[1:-1]), STRING

    def _x_date(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        try:
            value = dt.date.fromisoformat(str(node.children[0]))
        except ValueError:
            self.error(node, f"not a calendar date: {node.children[0]}")
            return _const(None), DATE
        return _const(value), DATE

    def _x_true(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return _const(True), BOOL

    def _x_false(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return _const(False), BOOL

    def _x_now(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        self._now_refs += 1
        self._direct_now_refs += 1
        return (lambda ctx, _it: ctx.now), INSTANT

    def _x_it(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        if it is None:
            self.error(node, "'it' is only defined inside 'where (...)' and endpoint clauses")
            return _const(None), ANY
        self._cur_refs += 1
        return (lambda ctx, cur: cur), it

    def _x_name(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        name = str(node.children[0])
        is_field = it is not None and bool(it.types) and _has_field(it, name)
        if name in self.local_types:
            ty = self.local_types[name]
            self._local_refs.append(name)
            return (lambda ctx, _it: ctx.locals.get(name, Unknown((f"no {name}",)))), ty
        if name in self.globals:
            if is_field:
                self.error(node, f"{name!r} is both a field of the event and a defined name; "
                                 f"write it.{name} or rename the definition")
            glob = self.globals[name]
            if glob.kind == "define":
                self.error(node, f"{name!r} is a set of events: write ${name}")
            self._read_global(glob, ("global", glob))
            return _memo(glob), glob.ty
        if is_field or (it is not None and not it.types and it.kind in ("event", "any")):
            assert it is not None  # an untyped event ($occurrence): the field is checked late
            self._cur_refs += 1
            return self._field(lambda ctx, cur: cur, it, name, node)
        known = list(self.globals) + list(self.local_types)
        if it is not None and it.types:
            known += _fields_of(it)
        self.error(node, f"unknown name {name!r}", _suggest(name, known))
        return _const(None), ANY

    def _read_global(self, glob: Global, tag: Any = None) -> None:
        # A value read is logged even when it reads no event type (a parameter, or a let on
        # `now` alone), so that conditions reading it know it ("" is no type).
        self._log_types(glob.reads or {""}, tag)
        self._now_refs += glob.reads_now

    def _log_types(self, names: Iterable[str], tag: Any = None) -> None:
        for name in names:
            self._type_refs.append(name)
            self._ref_tags.append(tag)

    def global_reads(self, compile_: Callable[[], tuple[Fn, Ty]]
                     ) -> tuple[Fn, Ty, frozenset[str], bool]:
        """Compile a global; also say which event types and whether `now` its value reads.

        A value read through a rule result (``@RULE...``, ``eligibility``) may read any
        type: it is marked as reading every one (``"*"``).
        """
        type_mark, now_mark, local_mark = (
            len(self._type_refs), self._now_refs, len(self._local_refs))
        fn, ty = compile_()
        reads = set(self._type_refs[type_mark:])
        if "@" in self._local_refs[local_mark:]:
            reads.add("*")
        return fn, ty, frozenset(reads), self._now_refs != now_mark

    def set_causality(self, node: Any) -> tuple[Global, ...] | None:
        """For a compiled set expression: see :attr:`Global.causal`."""
        return self._causal_sets.get(id(node))

    def member_condition(self, node: Any, elem: Ty | None) -> tuple[Fn, Ty, Reads, list[str]]:
        """Compile a condition on a member (``elem``, its `it`), saying what else it reads.

        Also returns the locals it reads (aliases, `$occurrence`, rule results as "@"): a
        condition reading none besides its own member's may keep its verdicts.
        """
        cur_mark, local_mark = self._cur_refs, len(self._local_refs)
        type_mark, now_mark = len(self._type_refs), self._direct_now_refs
        fn, ty = self.expr(node, elem)
        self._cur_refs = cur_mark  # `it` in the condition is the member, not the outer it
        tags = self._ref_tags[type_mark:]
        types = frozenset(t for t, tag in zip(self._type_refs[type_mark:], tags, strict=True)
                          if tag is None or (tag[0] == "causal" and tag[1] is not elem))
        values = tuple(dict.fromkeys(tag[1] for tag in tags if tag and tag[0] == "global"))
        reads_now = self._direct_now_refs != now_mark
        return fn, ty, Reads(types, values, reads_now), self._local_refs[local_mark:]

    def _causal(self, base: Any, first: Any) -> bool:
        """Whether ``base`` cut first by ``first`` keeps only events up to `it`'s instant.

        ``base`` must be events of a type, or a set defined on each member alone.
        """
        if not isinstance(base, Tree) or not isinstance(first, Tree):
            return False
        if base.data == "defined":
            glob = self.globals.get(str(base.children[0]))
            if glob is None or glob.causal is None:
                return False
        elif base.data not in ("of_type", "of_types"):
            return False
        if first.data in ("before", "on_or_before"):
            bound = first.children[0]
        elif first.data == "within":
            bound = first.children[0].children[2]  # the interval's upper bound
        else:
            return False
        return isinstance(bound, Tree) and bound.data == "it"

    def _is_member_field(self, name: str, it: Ty) -> bool:
        """Whether a bare ``name`` in a condition on ``it`` reads a field of the member."""
        return (name not in self.local_types and name not in self.globals
                and bool(it.types) and _has_field(it, name))

    def _x_field(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        target, name_token = node.children
        fn, ty = self.expr(target, it)
        return self._field(fn, ty, str(name_token), name_token)

    def _field(self, fn: Fn, ty: Ty, name: str, node: Any) -> tuple[Fn, Ty]:
        if ty.kind not in ("event", "any"):
            self.error(node, f".{name} needs an event, not {ty.describe()}")
            return _const(None), ANY
        if ty.types and not _has_field(ty, name):
            self.error(node, f"{', '.join(sorted(ty.types))} has no field {name!r}",
                       _suggest(name, _fields_of(ty)))
            return _const(None), ANY
        result_ty = _field_type(ty, name, self.catalogue)

        def get(ctx: Ctx, cur: EventView | None) -> Any:
            view = fn(ctx, cur)
            if isinstance(view, Unknown):
                return view
            if not isinstance(view, EventView):
                return Unknown((f"no event for .{name}",))
            ctx.touch(view)
            return field_value(view, name, ctx.zone)

        return get, result_ty

    def _x_not_(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fn, ty = self.expr(node.children[0], it)
        self._want_bool(node.children[0], ty)
        return (lambda ctx, cur: kleene_not(_truthy(fn(ctx, cur)))), BOOL

    def _x_and_expr(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fns = [self._bool_operand(c, it) for c in node.children]

        def both(ctx: Ctx, cur: EventView | None) -> Any:
            values = []
            for f in fns:
                value = _truthy(f(ctx, cur))
                if value is False:
                    return False  # short-circuit: false wins whatever else is unknown
                values.append(value)
            return kleene_and(values)

        return both, BOOL

    def _x_or_expr(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fns = [self._bool_operand(c, it) for c in node.children]

        def either(ctx: Ctx, cur: EventView | None) -> Any:
            values = []
            for f in fns:
                value = _truthy(f(ctx, cur))
                if value is True:
                    return True
                values.append(value)
            return kleene_or(values)

        return either, BOOL

    def _bool_operand(self, node: Any, it: Ty | None) -> Fn:
        fn, ty = self.expr(node, it)
        self._want_bool(node, ty)
        return fn

    def _want_bool(self, node: Any, ty: Ty) -> None:
        if ty.kind not in ("bool", "any", "runs", "set", "event"):
            self.error(node, f"expected a condition, got {ty.describe()}")

    def _x_coalesce(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        compiled = [self.expr(c, it) for c in node.children]
        fns = [f for f, _ in compiled]

        def first_known(ctx: Ctx, cur: EventView | None) -> Any:
            unknown: Unknown | None = None
            for f in fns:
                value = f(ctx, cur)
                if not isinstance(value, Unknown) and value is not None:
                    return value
                if isinstance(value, Unknown):
                    unknown = value if unknown is None else unknown.merge(value)
            return unknown or Unknown(("no value",))

        return first_known, compiled[0][1]

    def _x_compare(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        left, op_token, right = node.children
        lf, lt = self.expr(left, it)
        rf, rt = self.expr(right, it)
        op = str(op_token)
        self._check_comparable(node, lt, rt, op)
        lf, rf = self._to_analyte(lf, lt, rt), self._to_analyte(rf, rt, lt)

        def compare(ctx: Ctx, cur: EventView | None) -> Any:
            return _compare(lf(ctx, cur), rf(ctx, cur), op)

        return compare, BOOL

    def _check_comparable(self, node: Any, lt: Ty, rt: Ty, op: str) -> None:
        lk, rk = _time_kind(lt), _time_kind(rt)
        if "any" in (lk, rk):
            return
        if lk != rk:
            self.error(node, f"cannot compare {lt.describe()} with {rt.describe()}")
            return
        for measured, other in ((lt, rt), (rt, lt)):
            analyte = self.catalogue.analytes.get(measured.analyte or "")
            if analyte is not None and other.unit and other.unit not in analyte.accepted_units:
                self.error(node, f"unit mismatch: {other.unit} cannot be compared with "
                                 f"{analyte.name} ({analyte.code}, {analyte.canonical_unit}); "
                                 f"use one of {', '.join(analyte.accepted_units)}")
                return  # one mismatch, one error
        if (lk == "qty" and lt.dim is not None and rt.dim is not None and lt.dim != rt.dim
                and not self._analyte_converts(lt, rt) and not self._analyte_converts(rt, lt)):
            self.error(node, f"unit mismatch: cannot compare {lt.describe()} with "
                             f"{rt.describe()}")
        if lk in ("string", "bool") and op not in ("=", "!="):
            self.error(node, f"{op} does not order {lt.describe()}")

    def _analyte_converts(self, measured: Ty, other: Ty) -> bool:
        """A threshold in a unit the analyte accepts converts through its factor (molar)."""
        analyte = self.catalogue.analytes.get(measured.analyte or "")
        return analyte is not None and other.unit is not None and (
            other.unit in analyte.accepted_units)

    def _to_analyte(self, fn: Fn, own: Ty, other: Ty) -> Fn:
        """Convert a threshold to the analyte's canonical unit when dimensions differ."""
        if not self._analyte_converts(other, own) or own.dim == other.dim:
            return fn
        analyte = self.catalogue.analytes[other.analyte or ""]
        unit = own.unit or ""
        factor = analyte.factor_from(unit)

        def converted(ctx: Ctx, cur: EventView | None) -> Any:
            value = fn(ctx, cur)
            if not isinstance(value, Qty):
                return value
            return Qty.of(value.in_unit(unit) * factor, analyte.canonical_unit)

        return converted

    def _x_in_set(self, node: Node, it: Ty | None, negate: bool = False) -> tuple[Fn, Ty]:
        left, literal = node.children
        lf, lt = self.expr(left, it)
        members = [self.expr(c, it) for c in literal.children if c is not None]
        for (_, mt), child in zip(members, literal.children, strict=False):
            self._check_comparable(child, lt, mt, "=")
        fns = [f for f, _ in members]

        def inside(ctx: Ctx, cur: EventView | None) -> Any:
            value = lf(ctx, cur)
            result = kleene_or([_compare(value, f(ctx, cur), "=") for f in fns])
            return kleene_not(result) if negate else result

        return inside, BOOL

    def _x_not_in_set(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._x_in_set(node, it, negate=True)

    def _x_in_interval(
        self, node: Node, it: Ty | None, negate: bool = False
    ) -> tuple[Fn, Ty]:
        left, interval = node.children
        lf, lt = self.expr(left, it)
        check = self.interval(interval, it, lt)

        def inside(ctx: Ctx, cur: EventView | None) -> Any:
            result = check(ctx, cur, lf(ctx, cur))
            return kleene_not(result) if negate else result

        return inside, BOOL

    def _x_not_in_interval(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._x_in_interval(node, it, negate=True)

    def interval(self, node: Node, it: Ty | None, of: Ty) -> _Interval:
        """Compile ``[a, b]`` (either bracket); return a membership test."""
        left, lo_node, hi_node, right = node.children
        lo_fn, lo_ty = self.expr(lo_node, it)
        hi_fn, hi_ty = self.expr(hi_node, it)
        self._check_comparable(lo_node, of, lo_ty, "<=")
        self._check_comparable(hi_node, of, hi_ty, "<=")
        self._check_comparable(node, lo_ty, hi_ty, "<=")
        lo_fn, hi_fn = self._to_analyte(lo_fn, lo_ty, of), self._to_analyte(hi_fn, hi_ty, of)
        lo_closed, hi_closed = left.data == "closed", right.data == "closed"
        self._check_static_window(node, lo_fn, hi_fn, lo_ty, hi_ty)

        return _Interval(lo_fn, hi_fn, lo_closed, hi_closed)

    def _check_static_window(self, node: Any, lo_fn: Fn, hi_fn: Fn, lo_ty: Ty, hi_ty: Ty) -> None:
        if lo_ty.kind not in {"qty", "date"}:
            return
        try:
            lo, hi = lo_fn(_STATIC, None), hi_fn(_STATIC, None)
        except Exception:  # depends on data: checked when evaluated
            return
        if isinstance(lo, Qty | dt.date) and isinstance(hi, Qty | dt.date):
            bigger = _compare(lo, hi, ">")
            if bigger is True:
                self.error(node, "the window's lower bound is after its upper bound")

    def _x_in_defined(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        left, name = node.children
        lf, lt = self.expr(left, it)
        if lt.kind not in ("event", "any"):
            self.error(node, f"'in ${name}' needs an event, not {lt.describe()}")
        mark = len(self._type_refs)
        defined = Tree("defined", [name], getattr(node, "meta", None))
        set_fn, _ = self._set_base(defined)
        glob = self.globals.get(str(name))
        if (it is not None and isinstance(left, Tree) and left.data == "it"
                and glob is not None and glob.causal is not None):
            # Whether the member belongs depends on events up to its instant only.
            self._tag_causal(mark, it, defined)

        def member(ctx: Ctx, cur: EventView | None) -> Any:
            view = lf(ctx, cur)
            if isinstance(view, Unknown):
                return view
            found = set_fn(ctx, cur)
            if _holds(found.items, view):
                return True
            if _holds(found.uncertain, view):
                return found.why or Unknown(("membership uncertain",))
            ctx.touched |= found.rejected.get(id(view), ())  # why it is not a member
            return False

        return member, BOOL

    def _x_is_missing(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fn, _ = self.expr(node.children[0], it)
        return (lambda ctx, cur: _absent(fn(ctx, cur))), BOOL

    def _x_is_present(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fn, _ = self.expr(node.children[0], it)
        return (lambda ctx, cur: not _absent(fn(ctx, cur))), BOOL

    def _x_add(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._arith(node, it, "+")

    def _x_sub(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._arith(node, it, "-")

    def _x_mul(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._arith(node, it, "*")

    def _x_div(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._arith(node, it, "/")

    def _x_neg(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fn, ty = self.expr(node.children[0], it)

        def negate(ctx: Ctx, cur: EventView | None) -> Any:
            value = fn(ctx, cur)
            if isinstance(value, Qty):
                return Qty(-value.base, value.dimension, value.unit)
            return value

        return negate, ty

    def _arith(self, node: Node, it: Ty | None, op: str) -> tuple[Fn, Ty]:
        lf, lt = self.expr(node.children[0], it)
        rf, rt = self.expr(node.children[1], it)
        result = _arith_type(lt, rt, op)
        if result is None:
            self.error(node, f"cannot compute {lt.describe()} {op} {rt.describe()}")
            result = ANY
        elif lt.kind == "date" and rt.kind == "qty" and op in "+-":
            try:
                step = rf(_STATIC, None)
            except Exception:  # depends on data
                step = None
            if isinstance(step, Qty) and (step.unit in ("mo", "a") or step.base % _DAY):
                self.error(node.children[1], f"a date moves by whole days: {step.shown()} is "
                           "not a whole number of days (use d or wk; mo and a are for ages)")

        def compute(ctx: Ctx, cur: EventView | None) -> Any:
            return _arith(lf(ctx, cur), rf(ctx, cur), op, ctx.zone)

        return compute, result

    def _x_call(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        name = str(node.children[0])
        args = [self.expr(c, it) for c in node.children[1:] if c is not None]
        spec = _FUNCTIONS.get(name)
        if spec is None:
            self.error(node, f"unknown function {name!r}", _suggest(name, list(_FUNCTIONS)))
            return _const(None), ANY
        arity, result_ty, impl = spec
        if len(args) != arity:
            self.error(node, f"{name}() takes {arity} argument(s), got {len(args)}")
            return _const(None), ANY
        if name == "starts_with":
            for (_, ty), child in zip(args, node.children[1:], strict=False):
                if ty.kind not in ("string", "any"):
                    self.error(child, f"starts_with() compares text, not {ty.describe()}")
        fns = [f for f, _ in args]
        sees_unknown = name in ("known", "needs")

        def call(ctx: Ctx, cur: EventView | None) -> Any:
            values = [f(ctx, cur) for f in fns]
            if sees_unknown:
                return impl(ctx, values)
            unknowns = [v for v in values if isinstance(v, Unknown)]
            if unknowns:
                merged = unknowns[0]
                for extra in unknowns[1:]:
                    merged = merged.merge(extra)
                return merged
            return impl(ctx, values)

        ty = result_ty if result_ty is not None else (args[-1][1] if args else ANY)
        return call, ty

    def _x_study_day_date(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        number_node, anchor = node.children
        day = _signed(number_node)
        if day == 0:
            self.error(number_node, "there is no study day 0 (CDISC: Day -1 is followed by Day 1)")
        anchor_fn, anchor_ty = self.expr(anchor, it)
        if _time_kind(anchor_ty) not in ("time", "any"):
            self.error(anchor, f"day N of ... needs a date or an event, not {anchor_ty.describe()}")

        def date_of_day(ctx: Ctx, cur: EventView | None) -> Any:
            return study_day_date(anchor_fn(ctx, cur), day)

        return date_of_day, DATE

    def _x_rule_ref(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        rule_id, what_token = (str(c) for c in node.children)
        if what_token not in ("status", "response", "selected", "verdict"):
            self.error(node.children[1], f"@{rule_id}.{what_token}: a rule has .status, "
                       ".response, .selected (endpoints) or .verdict (criteria)",
                       _suggest(what_token, ["status", "response", "selected", "verdict"]))
        self._pending_refs.append((rule_id, node, self.rule, what_token))
        self._local_refs.append("@")  # a rule result has side effects on the verdict's date
        self._log_types(["*"])  # and may read any event type
        what = "status" if what_token == "verdict" else what_token

        def lookup(ctx: Ctx, cur: EventView | None) -> Any:
            return ctx.rules(rule_id, what)

        return lookup, (STRING if what != "selected" else Ty("event"))

    #: (rule referred to, node, rule it is in, what is read) for the checks after loading.
    _pending_refs: list[tuple[str, Any, str | None, str]]

    def _x_eligibility(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        self._pending_refs.append(("", node, self.rule, "eligibility"))
        self._local_refs.append("@")
        self._log_types(["*"])
        return (lambda ctx, _it: ctx.rules("", "eligibility")), STRING

    # --- queries over the history ------------------------------------------------------------

    def _x_query(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        handler = getattr(self, f"_q_{node.data}", None)
        if handler is None:
            self.error(node, f"unsupported construct {node.data!r}")
            return _const(None), ANY
        result: tuple[Fn, Ty] = handler(node, it)
        return result

    def _q_first(self, node: Node, it: Ty | None, last: bool = False) -> tuple[Fn, Ty]:
        set_node = node.children[0]
        fn, ty = self.set_expr(set_node, it)
        label = f"no {self.snippet(set_node)}"

        def pick(ctx: Ctx, cur: EventView | None) -> Any:
            found = fn(ctx, cur)
            items = found.items
            chosen = (items[-1] if last else items[0]) if items else None
            if found.uncertain:
                edge = found.uncertain[-1] if last else found.uncertain[0]
                if chosen is None or (edge.index > chosen.index if last
                                      else edge.index < chosen.index):
                    ctx.touch(edge)
                    return found.why or Unknown((f"{label} (uncertain)",))
            if chosen is None:
                return Unknown((label,))
            ctx.touch(chosen)
            return chosen

        return pick, Ty("event", None, ty.types, ty.analyte)

    def _q_last(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._q_first(node, it, last=True)

    def _q_count(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        fn, _ = self.set_expr(node.children[0], it)

        def count(ctx: Ctx, cur: EventView | None) -> Any:
            found = fn(ctx, cur)
            ctx.touched.include(found.items)
            if found.uncertain:
                for view in found.uncertain:
                    ctx.touch(view)
                return found.why or Unknown(("count uncertain",))
            return Qty.number(len(found.items))

        return count, Ty("qty", _NUMBER)

    def _q_any_(self, node: Node, it: Ty | None, negate: bool = False) -> tuple[Fn, Ty]:
        fn, _ = self.set_expr(node.children[0], it)

        def exists(ctx: Ctx, cur: EventView | None) -> Any:
            found = fn(ctx, cur)
            if found.items:
                ctx.touched.include(found.items)
                return not negate
            if found.uncertain:
                for view in found.uncertain:
                    ctx.touch(view)  # the events whose membership is in doubt are the evidence
                return found.why or Unknown(("uncertain",))
            return negate

        return exists, BOOL

    def _q_no(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        return self._q_any_(node, it, negate=True)

    def _q_every(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        set_fn, set_ty = self.set_expr(node.children[0], it)
        cond, cond_ty = self.expr(node.children[1], Ty("event", None, set_ty.types,
                                                       set_ty.analyte))
        self._want_bool(node.children[1], cond_ty)

        def every(ctx: Ctx, cur: EventView | None) -> Any:
            found = set_fn(ctx, cur)
            results = []
            for view in found.items:
                ctx.touch(view)
                results.append(_truthy(cond(ctx, view)))
            for view in found.uncertain:
                # A member that may or may not belong: it matters only if it would fail.
                if _truthy(cond(ctx, view)) is not True:
                    results.append(found.why or Unknown(("membership uncertain",)))
            return kleene_and(results)

        return every, BOOL

    def _q_closest(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        set_fn, set_ty = self.set_expr(node.children[0], it)
        target_fn, _ = self.expr(node.children[1], it)

        def closest(ctx: Ctx, cur: EventView | None) -> Any:
            target = _as_time(target_fn(ctx, cur))
            if isinstance(target, Unknown):
                return target
            found = set_fn(ctx, cur)
            if not found.items:
                return Unknown((f"no {self.snippet(node.children[0])}",))
            best = max(found.items, key=lambda v: (-_distance(v, target), v.index))
            ctx.touch(best)
            return best

        return closest, Ty("event", None, set_ty.types, set_ty.analyte)

    def _q_consecutive(self, node: Node, it: Ty | None) -> tuple[Fn, Ty]:
        count = int(str(node.children[0]))
        set_node = node.children[1]
        between = node.children[2] if len(node.children) > 2 else None
        filters = list(set_node.children[1:])
        if not filters or filters[-1].data != "where":
            self.error(set_node, "consecutive needs the run's condition last: "
                                 "consecutive N <events> where (<condition>)")
            return _const([]), Ty("runs")
        base_fn, base_ty = self.set_expr(Tree("set_expr", set_node.children[:-1],
                                              set_node.meta), it)
        pred, _, reads, outside = self.member_condition(
            filters[-1].children[0], Ty("event", None, base_ty.types, base_ty.analyte))
        keep = OPTIMISE and not outside
        key = object()
        between_fn = None
        if between is not None:
            between_fn, _ = self.set_expr(between.children[0], it)

        def scan(seq: list[EventView], verdicts: list[Any], blockers: list[EventView],
                 maybe: bool) -> list[list[EventView]]:
            found: list[list[EventView]] = []
            run: list[EventView] = []
            for view, verdict in zip(seq, verdicts, strict=True):
                matches = verdict is True or (maybe and isinstance(verdict, Unknown))
                if matches and run and not _any_between(blockers, run[-1], view):
                    run.append(view)
                elif matches:
                    run = [view]
                else:
                    run = []
                if len(run) == count:
                    found.append(run)
                    run = []
            return found

        def runs(ctx: Ctx, cur: EventView | None) -> Any:
            seq = base_fn(ctx, cur).items
            blockers = between_fn(ctx, cur).items if between_fn else []
            if keep and ctx.kept is not None:
                verdicts = kept_verdicts(ctx, key, seq, reads,
                                          lambda view: _truthy(pred(ctx, view)))
            else:
                verdicts = [_truthy(pred(ctx, view)) for view in seq]
            found = scan(seq, verdicts, blockers, maybe=False)
            unknowns = [v for v in verdicts if isinstance(v, Unknown)]
            if not found and unknowns and scan(seq, verdicts, blockers, maybe=True):
                # Kleene: a run might exist through a value we cannot read.
                merged = unknowns[0]
                for extra in unknowns[1:]:
                    merged = merged.merge(extra)
                return merged
            return found

        return runs, Ty("runs", None, base_ty.types, base_ty.analyte)

    # --- sets --------------------------------------------------------------------------------

    def set_expr(self, node: Node, it: Ty | None) -> tuple[Callable[[Ctx, EventView | None],
                                                                             SetVal], Ty]:
        """Compile a set expression: a base (types or a defined set) and its filters."""
        base = node.children[0]
        base_mark = len(self._type_refs)
        if isinstance(base, Tree) and base.data == "set_expr":
            base_fn, ty = self.set_expr(base, it)
        else:
            base_fn, ty = self._set_base(base)
        if it is not None and len(node.children) > 1 and self._causal(base, node.children[1]):
            self._tag_causal(base_mark, it, base)
        if isinstance(base, Tree) and base.data == "set_expr":
            causality = self._causal_sets.get(id(base))
        elif isinstance(base, Tree) and base.data == "defined":
            glob = self.globals.get(str(base.children[0]))
            causality = glob.causal if glob is not None else None
        else:
            causality = ()
        fn = base_fn
        filters = list(node.children[1:])
        alias = None
        if filters and isinstance(filters[0], Tree) and filters[0].data == "alias":
            alias = str(filters.pop(0).children[0])
            if alias in self.globals:
                self.error(node, f"'{alias}' is already a defined name; choose another alias")
        saved = dict(self.local_types)
        if alias is not None:
            # `X as name where (...)`: the member is also `name`, visible in nested wheres.
            self.local_types[alias] = Ty("event", None, ty.types, ty.analyte)
        invariant = not (isinstance(base, Tree) and base.data == "defined"
                         and str(base.children[0]) in self.local_sets)
        try:
            for flt in filters:
                cur_mark, local_mark = self._cur_refs, len(self._local_refs)
                self._last_where = None
                fn, ty = self._set_filter(flt, fn, ty, it, alias, invariant=invariant)
                causality = self._causality_after(causality, flt, alias)
                outside = [n for n in self._local_refs[local_mark:] if n != alias
                           or flt.data != "where"]
                invariant = invariant and self._cur_refs == cur_mark and not outside
                if invariant and OPTIMISE:
                    fn = _once_per_evaluation(fn)
        finally:
            self.local_types = saved
        self._causal_sets[id(node)] = causality
        return fn, ty

    def _causality_after(self, causality: tuple[Global, ...] | None, flt: Any,
                         alias: str | None) -> tuple[Global, ...] | None:
        """A set's causality once filtered by ``flt`` (a bound read ends it)."""
        if causality is None or flt.data != "where" or self._last_where is None:
            return None
        reads, outside = self._last_where
        if reads.types or reads.now or [n for n in outside if n != alias]:
            return None
        return tuple(dict.fromkeys((*causality, *reads.values)))

    def _tag_causal(self, mark: int, it: Ty, base: Any) -> None:
        """The types logged since ``mark`` are read only up to the member ``it``'s instant."""
        for at in range(mark, len(self._type_refs)):
            self._ref_tags[at] = ("causal", it)
        if isinstance(base, Tree) and base.data == "defined":
            glob = self.globals.get(str(base.children[0]))
            for value in (glob.causal or ()) if glob is not None else ():
                self._read_global(value, ("global", value))  # its membership reads them

    def _set_base(self, node: Node) -> tuple[Callable[[Ctx, EventView | None], SetVal],
                                                      Ty]:
        if node.data == "of_type":
            names = [str(node.children[0])]
        elif node.data == "of_types":
            names = [str(c) for c in node.children]
        else:  # defined
            name = str(node.children[0])
            if name in self.local_sets:
                self._local_refs.append(name)
                return (lambda ctx, _it: SetVal(list(ctx.locals.get(name, [])))), Ty(
                    "set", None, None)
            glob = self.globals.get(name)
            if glob is None or glob.kind != "define":
                known = [g for g, v in self.globals.items() if v.kind == "define"]
                self.error(node, f"unknown set ${name}", _suggest(name, known))
                return (lambda ctx, _it: SetVal([])), Ty("set")
            self._read_global(glob)
            memo = _memo(glob)
            return memo, glob.ty
        self._log_types(names)
        for name in names:
            if name not in EVENT_TYPES:
                self.error(node, f"unknown event type {name!r}", _suggest(name, list(EVENT_TYPES)))
                return (lambda ctx, _it: SetVal([])), Ty("set")
        if len(names) == 1:
            only = names[0]

            def of_type(ctx: Ctx, _it: EventView | None) -> SetVal:
                items = ctx.by_type.get(only)
                if items is None:
                    return SetVal([])
                if ctx.kept is not None:
                    keep_keys(ctx, items)
                return SetVal(items)

            return of_type, Ty("set", None, frozenset(names))

        key = object()

        def merged(ctx: Ctx, _it: EventView | None) -> SetVal:
            if ctx.kept is not None:
                return SetVal(kept_merge(ctx, key, [ctx.by_type.get(n) for n in names]))
            views = [v for n in names for v in ctx.by_type.get(n, [])]
            return SetVal(sorted(views, key=lambda v: v.index))

        return merged, Ty("set", None, frozenset(names))

    local_sets: set[str]

    def _set_filter(self, node: Node, fn: Callable[[Ctx, EventView | None], SetVal],
                    ty: Ty, it: Ty | None, alias: str | None = None, *,
                    invariant: bool = False
                    ) -> tuple[Callable[[Ctx, EventView | None], SetVal], Ty]:
        kind = node.data
        if kind == "where":
            # The analyte a where pins is known inside it too (`loinc = "718-7" and result > x`).
            analyte = ty.analyte or _analyte_in(node.children[0], self.catalogue)
            elem = Ty("event", None, ty.types, analyte)
            cond, cond_ty, reads, outside = self.member_condition(node.children[0], elem)
            self._last_where = (reads, outside)
            self._want_bool(node.children[0], cond_ty)
            fast = simple_predicate(node.children[0],
                                    lambda name: self._is_member_field(name, elem)
                                    ) if OPTIMISE else None
            # A filter that reads nothing of its surroundings is kept between a session's
            # evaluations (see _kept_where).
            keep = OPTIMISE and invariant and not [n for n in outside if n != alias]
            key = object()

            def judge(ctx: Ctx, members: Sequence[EventView], out: Judged) -> None:
                for view in members:
                    if fast is not None:
                        # The simple shapes read the member's own fields: it is the evidence.
                        passed = fast(view.event)
                        if passed is True:
                            out.items.append(view)
                            out.used.append(view.event.event_id)
                            continue
                        if passed is False:
                            out.reject(view, {view.event.event_id})
                            continue
                    # Only members that pass cite what their condition read; what turned
                    # a member away is kept for `not (it in $set)`.
                    outer, ctx.touched = ctx.touched, Evidence()
                    if alias is not None:
                        ctx.locals[alias] = view
                    verdict = _truthy(cond(ctx, view))
                    used, ctx.touched = ctx.touched, outer
                    if verdict is True:
                        out.items.append(view)
                        out.used.append(used)
                    elif isinstance(verdict, Unknown):
                        out.uncertain.append(view)
                        out.whys.append(verdict)
                    else:
                        out.reject(view, used)

            def where(ctx: Ctx, cur: EventView | None) -> SetVal:
                found = fn(ctx, cur)
                if keep and ctx.kept is not None and not found.uncertain and found.why is None:
                    return kept_where(ctx, key, found, reads, judge)
                out = Judged()
                judge(ctx, found.items, out)
                ctx.touched.include(out.used)
                return SetVal(out.items, [*found.uncertain, *out.uncertain],
                              merged_why(found.why, out.whys),
                              chain_rejected(out.rejected, found.rejected))

            return where, Ty("set", None, ty.types, analyte)
        if kind == "within":
            member = self.interval(node.children[0], it, INSTANT)

            def within(ctx: Ctx, cur: EventView | None) -> SetVal:
                found = fn(ctx, cur)
                lo, hi = member.bounds(ctx, cur)
                lo_t, hi_t = _as_time(lo), _as_time(hi)
                if (isinstance(lo_t, Instant) and isinstance(hi_t, Instant)
                        and not (lo_t.day_only or hi_t.day_only) and not found.uncertain):
                    keys = _keys(ctx, found.items)
                    if keys is not None:
                        start = (bisect.bisect_left if member.lo_closed
                                 else bisect.bisect_right)(keys, lo_t.utc)
                        end = (bisect.bisect_right if member.hi_closed
                               else bisect.bisect_left)(keys, hi_t.utc)
                        return SetVal(found.items[start:max(start, end)])
                return _filter(found, lambda v: member.test(v.instant, lo, hi))

            return within, ty
        operand_fn, operand_ty = self.expr(node.children[0], it)
        self._check_comparable(node, INSTANT, operand_ty, "<")
        op = {"before": "<", "after": ">", "on_or_before": "<=", "on_or_after": ">=",
              "known_before": "<", "on_date": "="}[kind]

        def filtered(ctx: Ctx, cur: EventView | None) -> SetVal:
            bound = operand_fn(ctx, cur)
            if isinstance(bound, Unknown):
                found = fn(ctx, cur)
                return SetVal([], found.items + found.uncertain, bound)
            if kind == "known_before":
                return _filter(fn(ctx, cur), lambda v: _compare(
                    field_value(v, "recorded_at", ctx.zone), bound, op))
            if kind == "on_date":
                return _on_date(ctx, fn(ctx, cur), _as_date(bound))
            found = fn(ctx, cur)
            point = _as_time(bound)
            if (isinstance(point, Instant) and not point.day_only and not found.uncertain
                    and not any(v.instant.day_only for v in found.items[:1])):
                return _cut(ctx, found, point, op)
            return _filter(found, lambda v: _compare(v.instant, bound, op))

        return filtered, ty


# --- helpers -----------------------------------------------------------------------------------

class _StaticCtx:
    """A context with no data: evaluating against it raises, so only constants fold."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


_STATIC: Any = _StaticCtx()


def _const(value: Any) -> Fn:
    return lambda ctx, _it: value


def _holds(views: list[EventView], view: EventView) -> bool:
    """Whether ``view`` is one of ``views`` (in clinical order, so found by bisection)."""
    at = bisect.bisect_left(views, view.index, key=view_key)
    return at < len(views) and views[at] is view


def _once_per_evaluation(fn: Callable[[Ctx, EventView | None], SetVal]
                         ) -> Callable[[Ctx, EventView | None], SetVal]:
    """A set filter that reads nothing of its surroundings, computed once per evaluation.

    Like a let, it replays the evidence its first computation cited on every later use.
    """
    key = object()

    def once(ctx: Ctx, cur: EventView | None) -> SetVal:
        entry = ctx.memo.get(key)
        if entry is None:
            saved = ctx.touched
            ctx.touched = Evidence()
            try:
                value = fn(ctx, cur)
            finally:
                used, ctx.touched = ctx.touched, saved
            entry = ctx.memo[key] = (value, used)
        ctx.touched |= entry[1]
        result: SetVal = entry[0]
        return result

    return once


def _memo(glob: Global) -> Fn:
    return lambda ctx, _it: global_value(ctx, glob)


def _position(node: Any) -> tuple[int | None, int | None]:
    if isinstance(node, Token):
        return node.line, node.column
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return meta.line, meta.column
    for child in getattr(node, "children", []):
        line, column = _position(child)
        if line is not None:
            return line, column
    return None, None


def _suggest(name: str, known: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _fields_of(ty: Ty) -> list[str]:
    names: list[str] = ["occurred_at", "recorded_at"]
    for type_name in sorted(ty.types or ()):
        cls = EVENT_TYPES[type_name]
        names += [f.name for f in attrs.fields(cls)]
    return list(dict.fromkeys(names))


def _has_field(ty: Ty, name: str) -> bool:
    if not ty.types:
        return ty.kind in ("event", "any")
    return all(name in {f.name for f in attrs.fields(EVENT_TYPES[t])} | {"occurred_at",
                                                                           "recorded_at"}
               for t in ty.types)


def _field_type(ty: Ty, name: str, catalogue: AnalyteCatalogue) -> Ty:
    if name in ("occurred_at", "recorded_at"):
        return INSTANT
    if not ty.types:
        return ANY
    kinds = set()
    for type_name in ty.types:
        cls: type[Event] = EVENT_TYPES[type_name]
        attribute = attrs.fields_dict(cls)[name]
        kinds.add(_kind_of(attribute.type))
    if len(kinds) != 1:
        return ANY
    kind = kinds.pop()
    if kind == "measurement":
        if ty.analyte and ty.analyte in catalogue.analytes:
            unit = parse_unit(catalogue.analytes[ty.analyte].canonical_unit)
            return Ty("qty", unit.dimension, analyte=ty.analyte)
        return Ty("qty")
    if kind == "quantity":
        return Ty("qty")
    if kind == "int":
        return Ty("qty", _NUMBER)
    return Ty(kind)


def _kind_of(annotation: Any) -> str:
    text = str(annotation)
    for needle, kind in (("Measurement", "measurement"), ("Quantity", "quantity"),
                         ("DateTime", "instant"), ("datetime.datetime", "instant"),
                         ("date", "date"), ("bool", "bool"), ("int", "int")):
        if needle in text:
            return kind
    return "string"


def _analyte_in(node: Any, catalogue: AnalyteCatalogue) -> str | None:
    """The analyte a where-clause pins (``loinc = "718-7"`` or ``code = "..."``), if any."""
    if isinstance(node, Tree):
        if node.data == "compare" and str(node.children[1]) == "=":
            left, right = node.children[0], node.children[2]
            if (isinstance(left, Tree) and left.data == "name"
                    and str(left.children[0]) in ("loinc", "code")
                    and isinstance(right, Tree) and right.data == "string"):
                code = str(right.children[0])[1:-1]
                return code if code in catalogue.analytes else None
        if node.data == "and_expr":
            for child in node.children:
                found = _analyte_in(child, catalogue)
                if found:
                    return found
    return None


def _time_kind(ty: Ty) -> str:
    if ty.kind in ("instant", "date", "event"):
        return "time"
    return ty.kind


def _truthy(value: Any) -> Any:
    if isinstance(value, Unknown | bool):
        return value
    if isinstance(value, list):
        return bool(value)
    return value is not None


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, Unknown) and not value.query)


def _as_time(value: Any) -> Any:
    if isinstance(value, EventView):
        return value.instant
    return value


def _as_date(value: Any) -> Any:
    value = _as_time(value)
    if isinstance(value, Instant):
        return value.local_date
    return value


def _compare(left: Any, right: Any, op: str) -> Any:
    if isinstance(left, Unknown) or isinstance(right, Unknown):
        if isinstance(left, Unknown) and isinstance(right, Unknown):
            return left.merge(right)
        return left if isinstance(left, Unknown) else right
    left, right = _as_time(left), _as_time(right)
    if left is None or right is None:
        return Unknown(("no value",))
    order = _order(left, right)
    if isinstance(order, Unknown):
        return order
    if order is None:
        return Unknown((f"cannot compare {left!r} with {right!r}",), query=True)
    return {"=": order == 0, "!=": order != 0, "<": order < 0, "<=": order <= 0,
            ">": order > 0, ">=": order >= 0}[op]


def _order(left: Any, right: Any) -> int | Unknown | None:
    if isinstance(left, Qty) and isinstance(right, Qty):
        if left.dimension != right.dimension:
            return None
        return (left.base > right.base) - (left.base < right.base)
    if isinstance(left, Instant | dt.date) and isinstance(right, Instant | dt.date):
        if isinstance(left, Instant) and isinstance(right, Instant) and not (
            left.day_only or right.day_only
        ):
            return (left.utc > right.utc) - (left.utc < right.utc)
        ld = left.local_date if isinstance(left, Instant) else left
        rd = right.local_date if isinstance(right, Instant) else right
        if ld != rd:
            return (ld > rd) - (ld < rd)
        if not (isinstance(left, Instant) and isinstance(right, Instant)):
            return 0  # compared with a calendar date: the instant's date decides
        precise = [isinstance(x, Instant) and not x.day_only for x in (left, right)]
        if any(precise) and not all(precise):
            # One side has only a date, the other a time on that date: cannot be ordered.
            return Unknown(("same date, time not known: cannot be ordered (data query)",),
                           query=True)
        return 0
    if type(left) is type(right) and isinstance(left, str | bool):
        return 0 if left == right else (1 if str(left) > str(right) else -1)
    return None


def _arith_type(lt: Ty, rt: Ty, op: str) -> Ty | None:
    if "any" in (lt.kind, rt.kind):
        return ANY
    lk, rk = _time_kind(lt), _time_kind(rt)
    if lk == "time" and rk == "qty" and op in "+-":
        if rt.dim not in (None, _TIME):
            return None
        return DATE if lt.kind == "date" else INSTANT
    if lk == "time" and rk == "time" and op == "-":
        return Ty("qty", _TIME)
    if lk == "qty" and rk == "qty":
        if op in "+-":
            if lt.dim is not None and rt.dim is not None and lt.dim != rt.dim:
                return None
            return lt if lt.analyte or not rt.analyte else rt
        if lt.dim is None or rt.dim is None:
            return Ty("qty")
        sign = 1 if op == "*" else -1
        return Ty("qty", tuple(a + sign * b for a, b in zip(lt.dim, rt.dim, strict=True)))
    return None


def _arith(left: Any, right: Any, op: str, zone: Any) -> Any:
    if isinstance(left, Unknown) or isinstance(right, Unknown):
        if isinstance(left, Unknown) and isinstance(right, Unknown):
            return left.merge(right)
        return left if isinstance(left, Unknown) else right
    left, right = _as_time(left), _as_time(right)
    if isinstance(left, Qty) and isinstance(right, Qty):
        if op in "+-":
            if left.dimension != right.dimension:
                return Unknown((f"unit mismatch: {left.shown()} {op} {right.shown()}",), True)
            base = left.base + right.base if op == "+" else left.base - right.base
            return Qty(base, left.dimension, left.unit)
        if op == "*":
            dim = tuple(a + b for a, b in zip(left.dimension, right.dimension, strict=True))
            unit = _join_unit(left.unit, right.unit, ".")
            return Qty(left.base * right.base, dim, unit)
        if right.base == 0:
            return Unknown(("division by zero",), True)
        dim = tuple(a - b for a, b in zip(left.dimension, right.dimension, strict=True))
        return Qty(left.base / right.base, dim, _join_unit(left.unit, right.unit, "/"))
    if isinstance(left, Instant) and isinstance(right, Qty):
        seconds = right.base if op == "+" else -right.base
        if left.day_only:
            return Instant(left.utc, left.local_date + dt.timedelta(days=int(seconds / _DAY)),
                           True)
        utc = left.utc + dt.timedelta(seconds=float(seconds))
        local = utc.astimezone(zone).date() if zone is not None else utc.date()
        return Instant(utc, local, False)
    if isinstance(left, dt.date) and isinstance(right, Qty):
        days = right.base / _DAY
        return left + dt.timedelta(days=int(days if op == "+" else -days))
    if isinstance(left, Instant) and isinstance(right, Instant) and op == "-":
        if left.day_only or right.day_only:
            return Qty((left.local_date - right.local_date).days * _DAY, _TIME, "d")
        seconds = Fraction((left.utc - right.utc).total_seconds())
        return Qty(seconds, _TIME, "h")
    if isinstance(left, dt.date | Instant) and isinstance(right, dt.date | Instant) and op == "-":
        return Qty((_as_date(left) - _as_date(right)).days * _DAY, _TIME, "d")
    return Unknown((f"cannot compute {left!r} {op} {right!r}",), True)


def _join_unit(a: str, b: str, sep: str) -> str:
    if a == "1":
        return b if sep == "." else f"/{b}" if b != "1" else "1"
    if b == "1":
        return a
    return f"{a}{sep}{b}"


@attrs.frozen
class _Interval:
    """A compiled interval: its bounds, their brackets, and a membership test."""

    lo_fn: Fn
    hi_fn: Fn
    lo_closed: bool
    hi_closed: bool

    def bounds(self, ctx: Ctx, cur: EventView | None) -> tuple[Any, Any]:
        """The bounds' values for this subject and event."""
        return self.lo_fn(ctx, cur), self.hi_fn(ctx, cur)

    def test(self, value: Any, lo: Any, hi: Any) -> Any:
        """Whether ``value`` lies between the bounds (Kleene)."""
        low = _compare(value, lo, ">=" if self.lo_closed else ">")
        high = _compare(value, hi, "<=" if self.hi_closed else "<")
        return kleene_and([low, high])

    def __call__(self, ctx: Ctx, cur: EventView | None, value: Any) -> Any:
        lo, hi = self.bounds(ctx, cur)
        return self.test(value, lo, hi)


def _keys(ctx: Ctx, items: list[EventView]) -> list[dt.datetime] | None:
    """The members' UTC instants (cached per list), or None if one has only a date."""
    if ctx.kept is not None:
        entry = ctx.kept.get(("keys", id(items)))
        if entry is not None and entry[0] is items:
            return grown_keys(entry)
    keys = ctx.keys.get(id(items))
    if keys is None or len(keys) != len(items):
        if any(v.instant.day_only for v in items):
            return None
        keys = [v.instant.utc for v in items]
        ctx.keys[id(items)] = keys
        ctx.pinned.append(items)  # keep the list alive while its id is a cache key
    return keys


def _on_date(ctx: Ctx, found: SetVal, day: Any) -> SetVal:
    """``on date``: bisect to the day's neighbourhood (dates follow instants), then test."""
    items = found.items
    keys = _keys(ctx, items) if isinstance(day, dt.date) and not found.uncertain else None
    if keys is None:
        return _filter(found, lambda v: v.instant.local_date == day)
    # A day's events are within a day and a half of its UTC midnight in any zone; the margin
    # covers every offset (and a midnight that a clock change repeats).
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    lo = bisect.bisect_left(keys, midnight - dt.timedelta(hours=36))
    hi = bisect.bisect_right(keys, midnight + dt.timedelta(hours=60))
    return SetVal([v for v in items[lo:hi] if v.instant.local_date == day])


def _cut(ctx: Ctx, found: SetVal, point: Instant, op: str) -> SetVal:
    """``before``/``after`` a precise instant by bisection: members are in clinical order.

    Falls back to a scan when a member has only a date (it may be unknown against a time).
    """
    items = found.items
    keys = _keys(ctx, items)
    if keys is None:
        return _filter(found, lambda v: _compare(v.instant, point, op))
    if op == "<":
        return SetVal(items[:bisect.bisect_left(keys, point.utc)])
    if op == "<=":
        return SetVal(items[:bisect.bisect_right(keys, point.utc)])
    if op == ">":
        return SetVal(items[bisect.bisect_right(keys, point.utc):])
    return SetVal(items[bisect.bisect_left(keys, point.utc):])


def _filter(found: SetVal, test: Callable[[EventView], Any]) -> SetVal:
    items: list[EventView] = []
    uncertain = list(found.uncertain)
    why = found.why
    for view in found.items:
        verdict = test(view)
        if verdict is True:
            items.append(view)
        elif isinstance(verdict, Unknown):
            uncertain.append(view)
            why = verdict if why is None else why.merge(verdict)
    return SetVal(items, uncertain, why)


def _distance(view: EventView, target: Any) -> float:
    if isinstance(target, Instant) and not target.day_only:
        return abs((view.instant.utc - target.utc).total_seconds())
    days: int = (view.instant.local_date - _as_date(target)).days
    return abs(days) * 86400.0


def _any_between(blockers: list[EventView], first: EventView, last: EventView) -> bool:
    return any(first.instant.utc < b.instant.utc < last.instant.utc for b in blockers)


def _signed(node: Any) -> int:
    parts = [str(c) for c in node.children]
    return int("".join(parts))


def study_day_date(anchor: Any, day: int) -> Any:
    """The calendar date of study day ``day`` (CDISC: no Day 0) from ``anchor``'s date."""
    if isinstance(anchor, Unknown):
        return anchor
    base = _as_date(anchor)
    if not isinstance(base, dt.date):
        return Unknown(("no anchor date",))
    return base + dt.timedelta(days=day - 1 if day > 0 else day)


def study_day(date: dt.date, day1: dt.date) -> int:
    """CDISC study day of ``date`` when Day 1 is ``day1``: no Day 0."""
    delta = (date - day1).days
    return delta + 1 if delta >= 0 else delta


def years_between(born: dt.date, on: dt.date) -> int:
    """Completed years from ``born`` to ``on``; a 29 February birthday advances on 1 March."""
    years = on.year - born.year
    if (on.month, on.day) < (born.month, born.day):
        years -= 1
    return years


def _fn_date(ctx: Ctx, args: list[Any]) -> Any:
    value = _as_date(args[0])
    return value if isinstance(value, dt.date) else Unknown(("not a date",), True)


def _fn_years_between(ctx: Ctx, args: list[Any]) -> Any:
    a, b = (_as_date(x) for x in args)
    if not (isinstance(a, dt.date) and isinstance(b, dt.date)):
        return Unknown(("years_between needs two dates",), True)
    return Qty.number(years_between(a, b))


def _fn_elapsed(ctx: Ctx, args: list[Any]) -> Any:
    return _arith(args[1], args[0], "-", ctx.zone)


def _fn_study_day(ctx: Ctx, args: list[Any]) -> Any:
    a, b = (_as_date(x) for x in args)
    if not (isinstance(a, dt.date) and isinstance(b, dt.date)):
        return Unknown(("study_day needs a date and an anchor",), True)
    return Qty.number(study_day(a, b))


def _fn_abs(ctx: Ctx, args: list[Any]) -> Any:
    value = args[0]
    return Qty(abs(value.base), value.dimension, value.unit) if isinstance(value, Qty) else value


def _fn_min(ctx: Ctx, args: list[Any]) -> Any:
    return args[0] if _compare(args[0], args[1], "<=") is True else args[1]


def _fn_max(ctx: Ctx, args: list[Any]) -> Any:
    return args[0] if _compare(args[0], args[1], ">=") is True else args[1]


def _fn_bsa(ctx: Ctx, args: list[Any]) -> Any:
    height, weight = args
    if not (isinstance(height, Qty) and isinstance(weight, Qty)):
        return Unknown(("bsa needs a height and a weight",), True)
    if height.dimension != (0, 1, 0, 0, 0, 0) or weight.dimension != (1, 0, 0, 0, 0, 0):
        return Unknown(("bsa needs a length and a mass",), True)
    # Mosteller: sqrt(height[cm] x weight[kg] / 3600) m2.
    product = float(height.in_unit("cm") * weight.in_unit("kg")) / 3600
    return Qty.of(Fraction(round(product ** 0.5, 4)).limit_denominator(10**6), "m2")


_FUNCTIONS: dict[str, tuple[int, Ty | None, Callable[[Ctx, list[Any]], Any]]] = {
    # known() and needs() see unknowns: the call wrapper does not short-circuit them.
    "known": (1, BOOL, lambda ctx, args: not isinstance(args[0], Unknown)),
    "needs": (2, None, lambda ctx, args: args[0] if isinstance(args[0], Unknown) else args[1]),
    "bsa": (2, Ty("qty", (0, 2, 0, 0, 0, 0)), _fn_bsa),
    "starts_with": (2, BOOL, lambda ctx, args: Unknown(("no text to match",))
                    if args[0] is None else str(args[0]).startswith(str(args[1]))),
    "date": (1, DATE, _fn_date),
    "years_between": (2, Ty("qty", _NUMBER), _fn_years_between),
    "elapsed": (2, Ty("qty", _TIME), _fn_elapsed),
    "study_day": (2, Ty("qty", _NUMBER), _fn_study_day),
    "abs": (1, None, _fn_abs),
    "min": (2, None, _fn_min),
    "max": (2, None, _fn_max),
}

__all__ = ["Compiler", "Ctx", "Global", "SetVal", "Ty", "global_value", "study_day",
           "study_day_date", "years_between"]

