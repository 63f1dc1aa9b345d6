"""Clause coverage: which parts of a protocol a set of evaluations exercised, in which value.

For every criterion, the verdicts seen (met, not met, unknown, not applicable); for every
deviation rule, whether it fired, stayed silent, or could not be decided (a data query); for
every endpoint, the statuses seen and which response branch (each ``response`` clause and the
``else``) was taken. What was never seen is what a protocol's tests do not exercise.

Collect with :class:`ClauseCoverage` (``add`` each evaluation), or record every evaluation
made while a block runs with :func:`recording` (the pytest option
``--protocolkit-coverage`` does this for a whole test run).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs

from protocolkit import engine
from protocolkit.engine import Evaluation
from protocolkit.rules import Protocol

__all__ = ["VERDICTS", "ClauseCoverage", "recording"]

VERDICTS = ("met", "not met", "unknown", "not applicable")
DEVIATION_OUTCOMES = ("fired", "silent", "undecided")


@attrs.define
class ClauseCoverage:
    """Accumulates what evaluations of one protocol exercised."""

    protocol: Protocol
    criteria: dict[str, set[str]] = attrs.field(factory=dict)
    deviations: dict[str, set[str]] = attrs.field(factory=dict)
    statuses: dict[str, set[str]] = attrs.field(factory=dict)
    responses: dict[str, set[str]] = attrs.field(factory=dict)
    evaluations: int = 0

    def __attrs_post_init__(self) -> None:
        for c in self.protocol.criteria:
            self.criteria.setdefault(c.id, set())
        for d in self.protocol.deviations:
            self.deviations.setdefault(d.id, set())
        for p in self.protocol.endpoints:
            self.statuses.setdefault(p.id, set())
            self.responses.setdefault(p.id, set())

    def add(self, evaluation: Evaluation) -> None:
        """Count one evaluation (of this protocol; others are ignored)."""
        if (evaluation.protocol, evaluation.protocol_version) != (self.protocol.id,
                                                                  self.protocol.version):
            return
        self.evaluations += 1
        for c in evaluation.criteria:
            self.criteria.setdefault(c.id, set()).add(c.verdict)
        fired = {d.path for d in evaluation.deviations}
        undecided = {q.rule for q in evaluation.data_queries}
        for rule in self.protocol.deviations:
            outcome = ("fired" if rule.path in fired
                       else "undecided" if rule.id in undecided else "silent")
            self.deviations[rule.id].add(outcome)
        for p in evaluation.endpoints:
            self.statuses.setdefault(p.id, set()).add(p.status)
            if p.status == "in window" and p.response is not None:
                self.responses.setdefault(p.id, set()).add(p.response)

    def branches(self, endpoint_id: str) -> list[str]:
        """The response branches an endpoint declares (each ``response``, then ``else``)."""
        rule = next(p for p in self.protocol.endpoints if p.id == endpoint_id)
        names = [category for category, _ in rule.responses]
        return list(dict.fromkeys([*names, rule.default]))

    def missing(self) -> list[str]:
        """Every (clause, value) never exercised, as text."""
        gaps = []
        for rule_id, seen in self.criteria.items():
            kind = next(c.kind for c in self.protocol.criteria if c.id == rule_id)
            wanted = ["met", "not met", "unknown"]
            if any(c.id == rule_id and c.applies for c in self.protocol.criteria):
                wanted.append("not applicable")
            gaps += [f"{rule_id} ({kind}): never {v}" for v in wanted if v not in seen]
        for rule_id, seen in self.deviations.items():
            gaps += [f"{rule_id}: never {v}" for v in ("fired", "silent") if v not in seen]
        for endpoint_id, seen in self.responses.items():
            gaps += [f"{endpoint_id}: response branch {b!r} never taken"
                     for b in self.branches(endpoint_id) if b not in seen]
        return gaps

    def percent(self) -> float:
        """The share of (clause, value) pairs exercised, in percent."""
        total = covered = 0
        for seen in self.criteria.values():
            total += 3
            covered += len(seen & {"met", "not met", "unknown"})
        for seen in self.deviations.values():
            total += 2
            covered += len(seen & {"fired", "silent"})
        for endpoint_id, seen in self.responses.items():
            branches = self.branches(endpoint_id)
            total += len(branches)
            covered += len(seen & set(branches))
        return 100.0 * covered / total if total else 100.0

    def report(self) -> str:
        """A readable table of what was exercised and what was not."""
        lines = [f"clause coverage of {self.protocol.id} v{self.protocol.version}: "
                 f"{self.percent():.0f}% over {self.evaluations} evaluation(s)"]
        for rule_id, seen in self.criteria.items():
            marks = "  ".join(f"{v}:{'x' if v in seen else '-'}" for v in VERDICTS)
            lines.append(f"  {rule_id:<16} {marks}")
        for rule_id, seen in self.deviations.items():
            marks = "  ".join(f"{v}:{'x' if v in seen else '-'}" for v in DEVIATION_OUTCOMES)
            lines.append(f"  {rule_id:<16} {marks}")
        for endpoint_id, seen in self.responses.items():
            marks = "  ".join(f"{b}:{'x' if b in seen else '-'}"
                              for b in self.branches(endpoint_id))
            statuses = ", ".join(sorted(self.statuses.get(endpoint_id, ())))
            lines.append(f"  {endpoint_id:<16} {marks}   (statuses: {statuses or '-'})")
        gaps = self.missing()
        if gaps:
            lines.append(f"  not exercised ({len(gaps)}):")
            lines += [f"    {g}" for g in gaps]
        return "\n".join(lines)


@contextmanager
def recording(protocol: Protocol) -> Iterator[ClauseCoverage]:
    """Count every evaluation of ``protocol`` made inside the block."""
    coverage = ClauseCoverage(protocol)
    engine.OBSERVERS.append(coverage.add)
    try:
        yield coverage
    finally:
        engine.OBSERVERS.remove(coverage.add)
