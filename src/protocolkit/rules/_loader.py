"""Load a protocol file: parse, check and compile it before any data arrives."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import pendulum
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from protocolkit.errors import RuleError, RuleErrors
from protocolkit.rules._compile import Compiler, Node, Ty
from protocolkit.rules._context import Fn, Global
from protocolkit.rules._kept import Reads
from protocolkit.rules._values import Qty
from protocolkit.units import AnalyteCatalogue, default_catalogue

__all__ = [
    "Criterion",
    "Deviation",
    "Endpoint",
    "Protocol",
    "Report",
    "load_protocol",
    "parse_protocol",
]

SetFn = Any  # Callable[[Ctx, EventView | None], SetVal]


@attrs.frozen
class Criterion:
    """An inclusion or exclusion criterion, compiled."""

    id: str
    kind: str  # "inclusion" | "exclusion"
    text: str
    met: Fn
    applies: Fn | None
    unknown_as: tuple[str, str] | None
    path: str


@attrs.frozen
class Deviation:
    """A deviation rule, compiled."""

    id: str
    text: str
    category: str
    importance: str
    important: Fn | None
    applies: Fn | None
    for_each: SetFn | None
    fires: Fn
    path: str
    #: The deviation code reported (several rules may report one code, e.g. per endpoint).
    code: str = ""
    #: For `for each` rules whose clauses read nothing of their surroundings: what they read
    #: besides each member, so that a session keeps each member's outcome. For other rules:
    #: what `important when` reads besides the occurrence, so that a session keeps each
    #: `consecutive` run's occurrence.
    kept: Reads | None = None


@attrs.frozen
class Endpoint:
    """An endpoint with its window, selection policy and response definitions."""

    id: str
    text: str
    applies: Fn | None
    values: SetFn
    window: tuple[int, int]
    anchor: str
    target: int
    ties: str
    baseline: Fn | None
    evaluable: Fn | None
    responses: tuple[tuple[str, Fn], ...]
    default: str
    path: str


@attrs.frozen
class Report:
    """A value the protocol reports for every subject (the latest valid trough...)."""

    name: str
    label: str
    fn: Fn
    path: str


@attrs.frozen
class Protocol:
    """A loaded, checked and compiled protocol."""

    id: str
    title: str
    version: str
    effective: dt.date
    zone: str | None
    source: str
    text: str = attrs.field(repr=False)
    parameters: dict[str, Any] = attrs.field(repr=False)
    globals: dict[str, Global] = attrs.field(repr=False)
    criteria: tuple[Criterion, ...] = attrs.field(repr=False)
    deviations: tuple[Deviation, ...] = attrs.field(repr=False)
    endpoints: tuple[Endpoint, ...] = attrs.field(repr=False)
    study_day_anchor: str | None = None
    reports: tuple[Report, ...] = attrs.field(default=(), repr=False)
    #: How a subject's version is chosen among amendments: "date" (the version in force at
    #: the evaluation time) or "consent" (the version of the form the subject signed).
    versions_by: str = "date"

    @property
    def digest(self) -> str:
        """SHA-256 of the protocol text (receipts and audit name the exact file)."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def tzinfo(self) -> Any:
        """The site's zone (study days and dates use it)."""
        return pendulum.timezone(self.zone) if self.zone else None


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("protocolkit.rules").joinpath("grammar.lark").read_text("utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _merge_reads(reads: list[Reads]) -> Reads:
    return Reads(frozenset().union(*(r.types for r in reads)),
                 tuple(dict.fromkeys(g for r in reads for g in r.values)),
                 any(r.now for r in reads))


def load_protocol(path: str | Path, *, catalogue: AnalyteCatalogue | None = None) -> Protocol:
    """Load a protocol file.

    Raises:
        RuleErrors: every problem in the file, each with its file, line, column and rule.
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise RuleError(f"cannot read the protocol: {exc.strerror}", source=str(path)) from None
    return parse_protocol(text, source=str(path), catalogue=catalogue)


def parse_protocol(
    text: str, *, source: str = "<protocol>", catalogue: AnalyteCatalogue | None = None
) -> Protocol:
    """Parse, check and compile protocol text (see :func:`load_protocol`)."""
    errors: list[RuleError] = []
    masked = text
    while True:
        try:
            tree = _parser().parse(masked)
            break
        except UnexpectedInput as exc:
            errors.append(_syntax_error(exc, source))
            line = getattr(exc, "line", None)
            if (not isinstance(line, int) or line < 1 or len(errors) >= 20
                    or "PROTOCOL" in (getattr(exc, "expected", None) or ())):
                break  # no header: nothing after it can be read
            # Blank out the statement holding the error (keeping every position) and parse
            # again, so each broken statement is reported once and the rest still checked.
            if getattr(exc, "column", 0) == 1 and line > 1:
                # The next statement's keyword is where an unfinished one is noticed.
                line -= 1
            masked, ok = _mask_statement(masked, line)
            if not ok:
                break
    if errors:
        raise RuleErrors(errors)
    return _Builder(text, source, catalogue or default_catalogue()).build(tree)


_STATEMENT = re.compile(
    r"^(protocol|parameter|anchor|let|define|report|inclusion|exclusion|deviation|endpoint)\b"
)


def _mask_statement(text: str, line: int) -> tuple[str, bool]:
    """Replace the statement that holds ``line`` with blanks; False if it is the header."""
    lines = text.split("\n")
    index = min(line, len(lines)) - 1
    start = index
    while start > 0 and not _STATEMENT.match(lines[start]):
        start -= 1
    if lines[start].startswith("protocol") or not _STATEMENT.match(lines[start]):
        return text, False
    end = index + 1
    while end < len(lines) and not _STATEMENT.match(lines[end]):
        end += 1
    if all(not lines[i].strip() for i in range(start, end)):
        return text, False
    for i in range(start, end):
        lines[i] = " " * len(lines[i])
    return "\n".join(lines), True


def _syntax_error(exc: UnexpectedInput, source: str) -> RuleError:
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        # Descriptions first (a name, a number), then symbols, then keywords.
        expected = sorted({_pretty(t) for t in exc.accepts or exc.expected}, key=lambda x: (
            0 if not x.startswith("'") else 1 if not x[1:-1].isalpha() else 2, x))
        got = "the end of the file" if token.type == "$END" else repr(str(token))
        message = f"syntax error: unexpected {got}; expected {', '.join(expected[:12])}"
        if len(expected) > 12:
            message += ", ..."
    elif isinstance(exc, UnexpectedCharacters):
        message = f"syntax error: unexpected character {exc.char!r}"
    else:
        message = "syntax error"
    return RuleError(message, source=source, line=line, column=column)


_PRETTY = {
    "RULE_ID": "a rule id like INC-AGE", "TYPE": "an event type", "NAME": "a name",
    "STRING": "a quoted string", "NUMBER": "a number", "INT": "an integer",
    "DATE": "a date YYYY-MM-DD", "UNIT": "a unit", "COMPOP": "a comparison",
    "CRITERION_KIND": "inclusion or exclusion", "IMPORTANCE": "important or not_important",
    "TIE": "later or earlier", "VERDICT": "met or not_met", "SIGN": "'-' or '+'",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='", "DOLLAR": "'$'", "AT": "'@'",
    "DOT": "'.'", "COLON": "':'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "LESSTHAN": "'<'", "MORETHAN": "'>'", "$END": "the end of the file",
}


def _pretty(terminal: str) -> str:
    return _PRETTY.get(terminal, repr(terminal.lower().replace("_", " ")))


class _Builder:
    def __init__(self, text: str, source: str, catalogue: AnalyteCatalogue) -> None:
        self.compiler = Compiler(source, text, catalogue)
        self.compiler._pending_refs = []
        self.compiler.local_sets = set()
        self.text = text
        self.source = source

    def path(self, node: Node, rule: str) -> str:
        return f"{self.source}:{node.meta.line}:{node.meta.column} {rule}"

    def build(self, tree: Node) -> Protocol:
        c = self.compiler
        header = tree.children[0]
        assert isinstance(header, Tree)
        strings = [str(t)[1:-1] for t in header.children if isinstance(t, Token)
                   and t.type == "STRING"]
        date_token = next(t for t in header.children if isinstance(t, Token) and t.type == "DATE")
        zone_node = next((t for t in header.children if isinstance(t, Tree)
                          and t.data == "zone"), None)
        rule_node = next((t for t in header.children if isinstance(t, Tree)
                          and t.data == "amendments"), None)
        versions_by = str(rule_node.children[0]) if rule_node is not None else "date"
        zone = str(zone_node.children[0])[1:-1] if zone_node is not None else None
        if zone is not None:
            try:
                pendulum.timezone(zone)
            except Exception:
                c.error(zone_node, f"unknown time zone {zone!r}")
        protocol_id, title, version = strings[0], (strings[1] if len(strings) == 3 else ""), \
            strings[-1]
        try:
            effective = dt.date.fromisoformat(str(date_token))
        except ValueError:
            c.error(date_token, f"not a calendar date: {date_token}")
            effective = dt.date.min
        statements = [s for s in tree.children[1:] if isinstance(s, Tree)]
        for stmt in statements:
            if stmt.data in ("criterion", "deviation", "endpoint"):
                rule_id = str(stmt.children[1] if stmt.data == "criterion" else stmt.children[0])
                if rule_id in c.rule_ids:
                    c.rule = rule_id
                    c.error(stmt, f"rule id {rule_id} is defined twice")
                c.rule_ids.add(rule_id)
        criteria: list[Criterion] = []
        deviations: list[Deviation] = []
        endpoints: list[Endpoint] = []
        reports: list[Report] = []
        for stmt in statements:
            c.rule = None
            kind = stmt.data
            if kind in ("parameter", "anchor", "let", "define"):
                self._global(stmt)
            elif kind == "criterion":
                criteria.append(self._criterion(stmt))
            elif kind == "deviation":
                deviations.append(self._deviation(stmt))
            elif kind == "endpoint":
                endpoints.append(self._endpoint(stmt))
            elif kind == "report":
                name_token, label, body = stmt.children
                c.rule = f"report {name_token}"
                if any(r.name == str(name_token) for r in reports):
                    c.error(name_token, f"report {name_token} is defined twice")
                fn, _ = c.expr(body, None)
                reports.append(Report(str(name_token), str(label)[1:-1], fn,
                                      self.path(stmt, str(name_token))))
        c.rule = None
        self._check_references(statements)
        if c.errors:
            raise RuleErrors(sorted(c.errors, key=lambda e: (e.line or 0, e.column or 0)))
        parameters = {name: g.fn(None, None) for name, g in c.globals.items()  # type: ignore[arg-type]
                      if g.kind == "parameter"}
        anchor = "day1" if "day1" in c.globals else None
        return Protocol(
            id=protocol_id, title=title, version=version, effective=effective, zone=zone,
            source=self.source, text=self.text, parameters=parameters, globals=c.globals,
            criteria=tuple(criteria), deviations=tuple(deviations), endpoints=tuple(endpoints),
            study_day_anchor=anchor, reports=tuple(reports), versions_by=versions_by,
        )

    def _check_references(self, statements: list[Node]) -> None:
        """Rule references name existing rules of the right kind and form no cycle."""
        from protocolkit.rules._compile import _suggest  # noqa: PLC0415

        c = self.compiler
        kinds = {}
        for stmt in statements:
            if stmt.data == "criterion":
                kinds[str(stmt.children[1])] = "criterion"
            elif stmt.data in ("deviation", "endpoint"):
                kinds[str(stmt.children[0])] = stmt.data
        graph: dict[str, set[str]] = {}
        for rule_id, node, inside, what in c._pending_refs:
            c.rule = inside
            if what == "eligibility":
                targets = {r for r, k in kinds.items() if k == "criterion"}
            elif rule_id not in kinds:
                c.error(node, f"no rule {rule_id}", _suggest(rule_id, sorted(kinds)))
                continue
            elif kinds[rule_id] == "deviation":
                c.error(node, f"@{rule_id}: a deviation has no verdict to read")
                continue
            elif kinds[rule_id] == "criterion" and what in ("response", "selected"):
                c.error(node, f"@{rule_id}.{what}: a criterion has .verdict (or .status); "
                              ".response and .selected are for endpoints")
                continue
            else:
                targets = {rule_id}
            if inside is not None:
                graph.setdefault(inside, set()).update(targets)
        for start in graph:
            path = _cycle(graph, start)
            if path:
                node = next(n for r, n, i, _ in c._pending_refs if i == start)
                c.rule = start
                c.error(node, "rules read each other in a cycle: " + " -> ".join(path))
        c.rule = None

    def _global(self, stmt: Node) -> None:
        c = self.compiler
        name_token, body = stmt.children
        name = str(name_token)
        c.rule = f"{stmt.data} {name}"
        if name in c.globals:
            c.error(name_token, f"{name!r} is defined twice")
        if stmt.data == "define":
            fn, ty, reads, reads_now = c.global_reads(lambda: c.set_expr(body, None))
        else:
            fn, ty, reads, reads_now = c.global_reads(lambda: c.expr(body, None))
            if stmt.data == "parameter":
                try:
                    value = fn(None, None)  # type: ignore[arg-type]
                except Exception:
                    c.error(body, f"parameter {name} must be a constant (a number, a quantity, "
                                  "a duration, a string or a date)")
                else:
                    fn = _const_fn(value)
                    if isinstance(value, Qty):
                        ty = Ty("qty", value.dimension, unit=value.unit)
        c.globals[name] = Global(stmt.data, name, fn, ty, stmt.meta.line, reads, reads_now,
                                 c.set_causality(body) if stmt.data == "define" else None)

    def _criterion(self, stmt: Node) -> Criterion:
        c = self.compiler
        kind_token, id_token, text_token, *clauses = stmt.children
        rule_id = str(id_token)
        c.rule = rule_id
        applies = None
        unknown_as = None
        met_fn: Fn | None = None
        for clause in clauses:
            if isinstance(clause, Tree) and clause.data == "applies":
                applies = self._condition(clause.children[0])
            elif isinstance(clause, Tree) and clause.data == "unknown_as":
                verdict, reason = clause.children
                unknown_as = (str(verdict).replace("_", " "), str(reason)[1:-1])
            else:
                met_fn = self._condition(clause)
        assert met_fn is not None
        return Criterion(rule_id, str(kind_token), str(text_token)[1:-1], met_fn, applies,
                         unknown_as, self.path(stmt, rule_id))

    def _condition(self, node: Any) -> Fn:
        fn, ty = self.compiler.expr(node, None)
        self.compiler._want_bool(node, ty)
        return fn

    def _deviation(self, stmt: Node) -> Deviation:
        c = self.compiler
        id_token, text_token, *clauses = stmt.children
        rule_id = str(id_token)
        c.rule = rule_id
        code = rule_id
        if isinstance(clauses[0], Tree) and clauses[0].data == "code":
            code = str(clauses.pop(0).children[0])[1:-1]
        category, importance, *clauses = clauses
        important = applies = None
        run_reads: list[Reads] | None = []  # what `important` reads, for rules without members
        for_each: SetFn | None = None
        each_ty: Ty | None = None
        fires: Fn | None = None
        c.local_sets.add("occurrence")
        # `for each` first: `important when` and `fires when` may use its `it`.
        clauses.sort(key=lambda cl: 0 if isinstance(cl, Tree) and cl.data == "for_each" else 1)
        reads: list[Reads] = []
        outside: list[str] = []
        for clause in clauses:
            data = clause.data if isinstance(clause, Tree) else ""
            if data == "for_each":
                for_each, set_ty = c.set_expr(clause.children[0], None)
                each_ty = Ty("event", None, set_ty.types, set_ty.analyte)
            elif data == "applies":
                applies = self._condition(clause.children[0])
            elif each_ty is not None:  # a clause on each member: note what else it reads
                node = clause.children[0] if data == "important" else clause
                fn, ty, read, names = c.member_condition(node, each_ty)
                c._want_bool(node, ty)
                reads.append(read)
                outside += names
                important, fires = (fn, fires) if data == "important" else (important, fn)
            elif data == "important":  # judged on each occurrence: note what else it reads
                important, ty, read, names = c.member_condition(clause.children[0], None)
                c._want_bool(clause.children[0], ty)
                run_reads = [read] if not [n for n in names if n != "occurrence"] else None
            else:
                fires = self._scoped(clause, each_ty)
        c.local_sets.discard("occurrence")
        kept = None
        if each_ty is not None and not [n for n in outside if n != "occurrence"]:
            kept = _merge_reads(reads)
        elif each_ty is None and run_reads is not None:
            kept = _merge_reads(run_reads)
        assert fires is not None
        return Deviation(rule_id, str(text_token)[1:-1], str(category)[1:-1],
                         str(importance).replace("_", " "), important, applies, for_each, fires,
                         self.path(stmt, rule_id), code, kept)

    def _scoped(self, node: Any, it: Ty | None) -> Fn:
        fn, ty = self.compiler.expr(node, it)
        self.compiler._want_bool(node, ty)
        return fn

    def _endpoint(self, stmt: Node) -> Endpoint:
        c = self.compiler
        id_token, text_token, *clauses = stmt.children
        rule_id = str(id_token)
        c.rule = rule_id
        applies = baseline = evaluable = None
        values: SetFn = None
        value_ty = Ty("set")
        window = (0, 0)
        anchor = ""
        target, ties = 0, "later"
        responses: list[tuple[str, Fn]] = []
        default = "missing"
        for clause in clauses:
            data = clause.data
            if data == "applies":
                applies = self._condition(clause.children[0])
            elif data == "endpoint_values":
                values, value_ty = c.set_expr(clause.children[0], None)
            elif data == "endpoint_window":
                window, anchor = self._window(clause)
            elif data == "select":
                number, tie = clause.children
                target = int("".join(str(t) for t in number.children))
                ties = str(tie)
                if not window[0] <= target <= window[1]:
                    c.error(clause, f"target day {target} is outside the window "
                                    f"[{window[0]}, {window[1]}]")
            else:
                it = Ty("event", None, value_ty.types, value_ty.analyte)
                scope = self._endpoint_scope(value_ty)
                if data == "baseline":
                    baseline, _ = c.expr(clause.children[0], it)
                elif data == "evaluable":
                    evaluable = self._scoped_with(clause.children[0], it, scope)
                elif data == "response":
                    category, cond = clause.children
                    responses.append((str(category)[1:-1], self._scoped_with(cond, it, scope)))
                elif data == "default":
                    default = str(clause.children[0])[1:-1]
        return Endpoint(rule_id, str(text_token)[1:-1], applies, values, window, anchor, target,
                        ties, baseline, evaluable, tuple(responses), default,
                        self.path(stmt, rule_id))

    def _endpoint_scope(self, value_ty: Ty) -> dict[str, Ty]:
        from protocolkit.rules._compile import _field_type, _has_field  # noqa: PLC0415

        elem = Ty("event", None, value_ty.types, value_ty.analyte)
        result = Ty("qty")
        if value_ty.types and all(_has_field(elem, "result") for _ in (0,)):
            result = _field_type(elem, "result", self.compiler.catalogue)
        return {"value": result, "baseline": result}

    def _scoped_with(self, node: Any, it: Ty, scope: dict[str, Ty]) -> Fn:
        c = self.compiler
        saved = dict(c.local_types)
        c.local_types.update(scope)
        try:
            fn, ty = c.expr(node, it)
            c._want_bool(node, ty)
        finally:
            c.local_types = saved
        return fn

    def _window(self, clause: Node) -> tuple[tuple[int, int], str]:
        c = self.compiler
        interval, anchor_token = clause.children
        left, lo_node, hi_node, right = interval.children
        bounds = []
        for node in (lo_node, hi_node):
            fn, _ty = c.expr(node, None)
            try:
                value = fn(None, None)  # type: ignore[arg-type]
            except Exception:
                value = None
            if not (isinstance(value, Qty) and value.is_number and value.base.denominator == 1):
                c.error(node, "a window bound is a study day number")
                bounds.append(0)
                continue
            day = int(value.base)
            if day == 0:
                c.error(node, "there is no study day 0 (CDISC: Day -1 is followed by Day 1)")
            bounds.append(day)
        lo, hi = bounds
        if left.data == "open":
            lo = lo + 1 if lo != -1 else 1
        if right.data == "open":
            hi = hi - 1 if hi != 1 else -1
        if lo > hi:
            c.error(interval, f"the window's lower bound (day {bounds[0]}) is after its upper "
                              f"bound (day {bounds[1]})")
        anchor = str(anchor_token)
        if anchor not in c.globals:
            from protocolkit.rules._compile import _suggest  # noqa: PLC0415

            c.error(anchor_token, f"unknown anchor {anchor!r}", _suggest(anchor, list(c.globals)))
        return (lo, hi), anchor


def _cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path from ``start`` back to itself through ``graph``, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _const_fn(value: Any) -> Fn:
    return lambda ctx, _it: value


