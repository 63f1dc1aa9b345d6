"""Evaluations as JSON (with a published schema) and as a readable text summary."""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from protocolkit.engine import (
    CriterionResult,
    DataQuery,
    DeviationResult,
    EndpointResult,
    Evaluation,
    ReportValue,
)
from protocolkit.events import Event

__all__ = [
    "evaluation_json_schema",
    "evaluation_to_json",
    "explain",
    "render_summary",
    "render_text",
]


def evaluation_to_json(evaluation: Evaluation) -> dict[str, Any]:
    """The JSON form of an evaluation (see ``docs/schema/evaluation.schema.json``)."""
    return attrs.asdict(evaluation)


def _schema_of(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if origin in (typing.Union, types.UnionType):
        options = [_schema_of(a) for a in args if a is not type(None)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        if type(None) in args:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_of(args[0])}
        return {"type": "array", "prefixItems": [_schema_of(a) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if attrs.has(annotation):
        return {"$ref": f"#/$defs/{annotation.__name__}"}
    raise TypeError(f"no JSON Schema for {annotation!r}")


def _class_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    return {
        "type": "object",
        "description": (cls.__doc__ or "").strip().splitlines()[0],
        "properties": {f.name: _schema_of(hints[f.name]) for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def evaluation_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :func:`evaluation_to_json`'s output."""
    defs = {cls.__name__: _class_schema(cls) for cls in
            (CriterionResult, DeviationResult, EndpointResult, DataQuery, ReportValue)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://protocolkit.invalid/schema/evaluation.schema.json",
        "title": "protocolkit evaluation",
        **_class_schema(Evaluation),
        "$defs": defs,
    }


def render_text(evaluation: Evaluation) -> str:
    """A readable summary: eligibility with each criterion, deviations, endpoints, queries."""
    e = evaluation
    lines = [f"{e.study} / {e.subject}  ({e.protocol} v{e.protocol_version}, evaluated at "
             f"{e.evaluated_at})"]
    if e.day1:
        lines.append(f"  Day 1: {e.day1}")
    lines.append(f"  Eligibility: {e.eligibility.upper()}")
    for c in e.criteria:
        detail = ""
        if c.verdict == "unknown" and c.missing:
            detail = f"  -- needs: {'; '.join(c.missing)}"
        elif c.note:
            detail = f"  -- {c.note}"
        lines.append(f"    {c.verdict:<15} {c.id:<12} {c.text}{detail}")
    if e.deviations:
        lines.append(f"  Deviations: {len(e.deviations)}")
        for d in e.deviations:
            when = f"Day {d.study_day} ({d.date})" if d.study_day is not None else (d.date or "")
            lines.append(f"    {d.code:<8} {d.category:<18} {d.importance:<14} {when:<20} "
                         f"{d.text} [{len(d.evidence)} evidence event(s)]")
    else:
        lines.append("  Deviations: none")
    if e.endpoints:
        lines.append("  Endpoints:")
    for p in e.endpoints:
        lines.append(f"    {p.id:<10} {_endpoint_text(p)}")
    if e.reports:
        lines.append("  Reported:")
        for r in e.reports:
            value = f"{r.value} {r.unit or ''}".strip() if r.value is not None else "unknown"
            when = f" ({r.date})" if r.date else ""
            lines.append(f"    {r.label}: {value}{when}")
    if e.data_queries:
        lines.append(f"  Data queries: {len(e.data_queries)}")
        for q in e.data_queries:
            lines.append(f"    {q.rule or '-':<10} {q.reason}")
    return "\n".join(lines)


def render_summary(evaluations: Sequence[Evaluation], endpoints: int = 2) -> str:
    """One row per subject: eligibility, deviations, and the first endpoints' value/response."""
    if not evaluations:
        return "(no subjects)"
    shown = [p.id for p in evaluations[0].endpoints[:endpoints]]
    header = ["subject", "eligibility", "deviations", *shown]
    rows = []
    for e in evaluations:
        devs = ", ".join(f"{d.code}{'!' if d.importance == 'important' else ''}"
                         for d in e.deviations) or "-"
        if e.eligibility == "pending":
            pending = [c.id for c in e.criteria if c.verdict == "unknown"]
            status = f"pending ({', '.join(pending)})"
        elif e.eligibility == "ineligible":
            failed = [c.id for c in e.criteria if (c.kind, c.verdict) in
                      (("inclusion", "not met"), ("exclusion", "met"))]
            status = f"ineligible ({', '.join(failed)})"
        else:
            status = e.eligibility
        cells = []
        for rule_id in shown:
            p = e.endpoint(rule_id)
            if p.value is not None:
                cells.append(f"{p.value} {p.unit or ''} {p.response or ''}".strip())
            else:
                cells.append(p.status)
        rows.append([e.subject, status, devs, *cells])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    lines.append("(! = important deviation)")
    return "\n".join(lines)


def _endpoint_text(p: EndpointResult) -> str:
    parts = [p.status]
    if p.value is not None:
        value = f"{p.value} {p.unit or ''}".strip()
        if p.as_received and p.as_received.replace(" ", "") != value.replace(" ", ""):
            value += f" (as received {p.as_received})"
        parts.append(value)
        parts.append(f"Day {p.study_day} ({p.date})")
    if p.window:
        parts.append(f"window {p.window[0]}..{p.window[1]}")
    if p.response:
        parts.append(f"response: {p.response}")
    if p.missing:
        parts.append(f"needs: {'; '.join(p.missing)}")
    return ", ".join(parts)


def explain(
    evaluation: Evaluation, rule_id: str, events: Iterable[Event]
) -> str:
    """The evidence of one verdict: the rule, the verdict, what is missing, the events used."""
    by_id = {str(e.event_id): e for e in events}
    found: Sequence[Any] = [  # criteria and endpoints by id, deviations by code
        r for r in (*evaluation.criteria, *evaluation.endpoints)
        if getattr(r, "id", None) == rule_id
    ] or [d for d in evaluation.deviations if d.code == rule_id]
    if not found:
        known = sorted({c.id for c in evaluation.criteria} | {p.id for p in evaluation.endpoints}
                       | {d.code for d in evaluation.deviations})
        return f"{rule_id}: no verdict for this subject (rules with verdicts: {', '.join(known)})"
    lines = []
    for result in found:
        verdict = getattr(result, "verdict", None) or getattr(result, "status", None) or (
            f"fired ({result.importance})")
        lines.append(f"{rule_id}: {verdict}")
        lines.append(f"  rule: {result.path}")
        for key in ("text", "missing", "note", "value", "unit", "date", "study_day", "window",
                    "response", "baseline", "category", "importance"):
            value = getattr(result, key, None)
            if value not in (None, (), ""):
                lines.append(f"  {key}: {value}")
        lines.append(f"  evidence ({len(result.evidence)} event(s)):")
        for event_id in result.evidence:
            event = by_id.get(event_id)
            if event is None:
                lines.append(f"    {event_id}")
                continue
            lines.append(f"    {event.occurred_at.isoformat()}  {event.event_type:<26} "
                         f"{event_id}  recorded by {event.recorded_by}")
    return "\n".join(lines)


def schema_text() -> str:
    """The evaluation schema as checked in (``docs/schema/evaluation.schema.json``)."""
    return json.dumps(evaluation_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
