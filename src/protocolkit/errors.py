"""The exception tree: every error protocolkit raises on purpose is a ``ProtocolKitError``.

Each error knows its CLI exit status (``exit_code``) and how to present itself
(``format_message``), on the pattern of click's ``ClickException``. Errors about input carry
the place they refer to (file, line, field) as attributes, not only in the text, so that a
caller can point a user at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "ConcurrencyError",
    "EventError",
    "EventValidationError",
    "ProtocolKitError",
    "RuleError",
    "RuleErrors",
    "RuleEvaluationError",
    "StoreError",
    "StoreIntegrityError",
    "UnitError",
]


class ProtocolKitError(Exception):
    """Root of every error protocolkit raises on purpose."""

    #: The CLI's exit status for this kind of error (sysexits.h numbers where one fits).
    exit_code: ClassVar[int] = 1

    def format_message(self) -> str:
        """Return the message a user sees, on one or more lines."""
        return str(self)


class EventError(ProtocolKitError, ValueError):
    """An event (or a line of an import file) is not acceptable; nothing was appended."""

    exit_code: ClassVar[int] = 65  # EX_DATAERR

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.line = line
        self.source = source

    def located(
        self, *, line: int | None = None, source: str | None = None, prefix: str | None = None
    ) -> EventError:
        """Return a copy of this error placed at ``source:line`` (and under field ``prefix``)."""
        field = self.field
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        clone = type(self).__new__(type(self))
        EventError.__init__(
            clone,
            self.message,
            field=field,
            line=self.line if line is None else line,
            source=self.source if source is None else source,
        )
        return clone

    def __str__(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source if self.line is None else f"{self.source}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class UnitError(EventError):
    """A unit is not UCUM, is unknown, or cannot be compared with the unit expected (D6)."""


class EventValidationError(EventError):
    """Several problems found in one input; ``errors`` holds each of them."""

    def __init__(self, errors: Sequence[EventError], *, source: str | None = None) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else None
        super().__init__(
            f"{len(self.errors)} invalid event(s)",
            line=first.line if first else None,
            source=source,
        )

    def __str__(self) -> str:
        return self.format_message()

    def format_message(self) -> str:
        """One line per problem, each naming its line and field."""
        return "\n".join(str(e) for e in self.errors)


class StoreError(ProtocolKitError):
    """The event store cannot do what was asked (bad URL, foreign table, database refusal)."""

    exit_code: ClassVar[int] = 74  # EX_IOERR


class ConcurrencyError(StoreError):
    """Another writer appended to the same subject first; reload and retry. Nothing was appended."""

    exit_code: ClassVar[int] = 75  # EX_TEMPFAIL: try again


class StoreIntegrityError(StoreError):
    """The stored log breaks an invariant (an attempt to update or delete, or a foreign table)."""


class RuleError(ProtocolKitError, ValueError):
    """A protocol file is wrong: syntax, an unknown name, a type or unit mismatch, a window.

    Every rule error names the file, line and column, and the rule it is in.
    """

    exit_code: ClassVar[int] = 65  # EX_DATAERR

    def __init__(
        self,
        message: str,
        *,
        source: str = "<protocol>",
        line: int | None = None,
        column: int | None = None,
        rule: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.rule = rule
        self.suggestion = suggestion

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        rule = f" [{self.rule}]" if self.rule else ""
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{where}{rule}: {self.message}{hint}"


class RuleErrors(RuleError):
    """Every problem found in one protocol file; ``errors`` lists them in file order."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(
            f"{len(self.errors)} problem(s)", source=first.source, line=first.line,
            column=first.column, rule=first.rule,
        )

    def __str__(self) -> str:
        return self.format_message()

    def format_message(self) -> str:
        """One line per problem."""
        return "\n".join(str(e) for e in self.errors)


class RuleEvaluationError(ProtocolKitError):
    """A rule failed while being evaluated (a bug in the protocol that loading cannot see)."""

    exit_code: ClassVar[int] = 70
