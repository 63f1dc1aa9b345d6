"""Units at the boundary: a UCUM parser, conversion to canonical units, plausibility (D6).

UCUM codes are case-sensitive (``mg`` is not ``Mg``). This module parses the UCUM syntax
(prefixes, ``.`` and ``/``, integer exponents, ``10*N`` powers, ``{annotations}``, parentheses)
over the base and derived units clinical results use, and reduces every unit to a dimension
vector and an exact rational factor. Two units convert iff their dimensions are equal;
amount of substance (``mol``) is kept as its own dimension, so a molar unit converts to a mass
unit only through an analyte's molar mass.

The :class:`AnalyteCatalogue` (data, not code: ``data/analytes.toml``) says, per LOINC code,
the canonical unit, the units accepted, the molar mass where one is needed, and the range of
values possible for that analyte. :func:`measure` applies it to a value as received and
returns a :class:`Measurement` holding both the value as received and the canonical one.
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from protocolkit.errors import EventError, UnitError

__all__ = [
    "Analyte",
    "AnalyteCatalogue",
    "Measurement",
    "MeasurementStatus",
    "Quantity",
    "Unit",
    "default_catalogue",
    "measure",
    "parse_unit",
    "to_decimal",
]

# Base dimensions: mass, length, time, amount of substance, international unit, temperature.
_BASES = ("g", "m", "s", "mol", "[iU]", "K")
Dimension = tuple[int, int, int, int, int, int]
_NONE: Dimension = (0, 0, 0, 0, 0, 0)


def _dim(**exps: int) -> Dimension:
    return tuple(exps.get(b, 0) for b in ("g", "m", "s", "mol", "iu", "K"))  # type: ignore[return-value]


# atom -> (factor to coherent base, dimension, metric: may take a prefix)
_ATOMS: dict[str, tuple[Fraction, Dimension, bool]] = {
    "g": (Fraction(1), _dim(g=1), True),
    "m": (Fraction(1), _dim(m=1), True),
    "s": (Fraction(1), _dim(s=1), True),
    "mol": (Fraction(1), _dim(mol=1), True),
    "K": (Fraction(1), _dim(K=1), True),
    "L": (Fraction(1, 1000), _dim(m=3), True),
    "l": (Fraction(1, 1000), _dim(m=3), True),
    "min": (Fraction(60), _dim(s=1), False),
    "h": (Fraction(3600), _dim(s=1), False),
    "d": (Fraction(86400), _dim(s=1), False),
    "wk": (Fraction(604800), _dim(s=1), False),
    "a": (Fraction(31557600), _dim(s=1), False),  # Julian year, as UCUM defines it
    "mo": (Fraction(2629800), _dim(s=1), False),  # mean Julian month
    "[iU]": (Fraction(1), _dim(iu=1), True),
    "[IU]": (Fraction(1), _dim(iu=1), True),
    "U": (Fraction(1, 60_000_000), _dim(mol=1, s=-1), True),  # umol/min
    "eq": (Fraction(1), _dim(mol=1), True),
    "%": (Fraction(1, 100), _NONE, False),
    "[ppm]": (Fraction(1, 1_000_000), _NONE, False),
    "10*": (Fraction(10), _NONE, False),
    "10^": (Fraction(10), _NONE, False),
    "[lb_av]": (Fraction(45359237, 100000), _dim(g=1), False),
    "[in_i]": (Fraction(254, 10000), _dim(m=1), False),
    "Cel": (Fraction(1), _dim(K=1), False),  # offset scale: only converted to itself
}
_PREFIXES: dict[str, Fraction] = {
    "Y": Fraction(10) ** 24, "Z": Fraction(10) ** 21, "E": Fraction(10) ** 18,
    "P": Fraction(10) ** 15, "T": Fraction(10) ** 12, "G": Fraction(10) ** 9,
    "M": Fraction(10) ** 6, "k": Fraction(10) ** 3, "h": Fraction(10) ** 2,
    "da": Fraction(10), "d": Fraction(1, 10), "c": Fraction(1, 100), "m": Fraction(1, 1000),
    "u": Fraction(1, 10**6), "n": Fraction(1, 10**9), "p": Fraction(1, 10**12),
    "f": Fraction(1, 10**15), "a": Fraction(1, 10**18), "z": Fraction(1, 10**21),
    "y": Fraction(1, 10**24),
}
_TOKEN = re.compile(r"\{[^{}]*\}|\(|\)|\.|/|10\*|10\^|\[[^\[\]]+\]|[+-]?\d+|[A-Za-z%]+")


@attrs.frozen
class Unit:
    """A parsed UCUM unit: its code, exact factor to coherent base units, and dimension."""

    code: str
    factor: Fraction
    dimension: Dimension

    def commensurable(self, other: Unit) -> bool:
        """Return whether a value in this unit can be converted to ``other``."""
        return self.dimension == other.dimension

    def factor_to(self, other: Unit) -> Fraction:
        """The exact factor that converts a value in this unit to ``other``."""
        if not self.commensurable(other):
            raise UnitError(f"unit {self.code!r} cannot be converted to {other.code!r}")
        return self.factor / other.factor


class _UnitParser:
    def __init__(self, code: str) -> None:
        self.code = code
        self.tokens: list[str] = _TOKEN.findall(code)
        if "".join(self.tokens) != code:
            raise self.error("contains characters outside the UCUM syntax")
        self.pos = 0

    def error(self, why: str) -> UnitError:
        return UnitError(f"{self.code!r} is not a UCUM unit: {why}", field="unit")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token: str = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> tuple[Fraction, Dimension]:
        if not self.tokens:
            raise self.error("empty")
        if self.peek() == "/":
            self.take()
            factor, dim = self.component()
            result = (1 / factor, _scale(dim, -1))
        else:
            result = self.component()
        result = self.term_rest(result)
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r}")
        return result

    def term_rest(self, left: tuple[Fraction, Dimension]) -> tuple[Fraction, Dimension]:
        while self.peek() in (".", "/"):
            op = self.take()
            factor, dim = self.component()
            if op == ".":
                left = (left[0] * factor, _add(left[1], dim))
            else:
                left = (left[0] / factor, _add(left[1], _scale(dim, -1)))
        return left

    def component(self) -> tuple[Fraction, Dimension]:
        token = self.peek()
        if token is None:
            raise self.error("ends where a unit was expected")
        if token == "(":
            self.take()
            inner = self.component()
            inner = self.term_rest(inner)
            if self.peek() != ")":
                raise self.error("unbalanced parenthesis")
            self.take()
            return inner
        if token.startswith("{"):
            self.take()
            return Fraction(1), _NONE
        if re.fullmatch(r"\d+", token):
            self.take()
            return Fraction(int(token)), _NONE
        self.take()
        factor, dim = self._atom(token)
        nxt = self.peek()
        if nxt is not None and re.fullmatch(r"[+-]?\d+", nxt):
            exp = int(self.take())
            factor, dim = factor**exp, _scale(dim, exp)
        elif token in ("10*", "10^"):
            raise self.error(f"{token} needs an exponent, as in 10*9")
        if self.peek() is not None and self.peek().startswith("{"):  # type: ignore[union-attr]
            self.take()
        return factor, dim

    def _atom(self, token: str) -> tuple[Fraction, Dimension]:
        if token in _ATOMS:
            factor, dim, _ = _ATOMS[token]
            return factor, dim
        # A letter run may end in digits that are the exponent: the tokenizer split them off.
        for size in (2, 1):
            prefix, rest = token[:size], token[size:]
            if prefix in _PREFIXES and rest in _ATOMS and _ATOMS[rest][2]:
                factor, dim, _ = _ATOMS[rest]
                return _PREFIXES[prefix] * factor, dim
        raise self.error(f"unknown unit atom {token!r}")


def _add(a: Dimension, b: Dimension) -> Dimension:
    return tuple(x + y for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _scale(a: Dimension, k: int) -> Dimension:
    return tuple(x * k for x in a)  # type: ignore[return-value]


@lru_cache(maxsize=512)
def parse_unit(code: str) -> Unit:
    """Parse a UCUM unit code (case-sensitive).

    >>> parse_unit("10*9/L").factor_to(parse_unit("/uL"))
    Fraction(1000, 1)

    Raises:
        UnitError: the code is not UCUM (``gm/dL``, ``mcg/L``) or uses an atom this parser lacks.
    """
    if not isinstance(code, str):
        raise UnitError(f"a unit must be a UCUM code string, got {code!r}", field="unit")
    factor, dim = _UnitParser(code).parse()
    return Unit(code=code, factor=factor, dimension=dim)


def to_decimal(value: object, *, field: str = "value") -> Decimal:
    """Read a finite decimal from JSON-ish input (a string, an int or a float, never a bool)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EventError(f"expected a number, got {value!r}", field=field)
    else:
        try:
            # repr of a float is its shortest round-tripping text: 9.8 stays 9.8.
            result = Decimal(repr(value) if isinstance(value, float) else value)
        except InvalidOperation:
            raise EventError(f"expected a number, got {value!r}", field=field) from None
    if not result.is_finite():
        raise EventError(f"expected a finite number, got {value!r}", field=field)
    if result and abs(result.adjusted()) > _MAX_DIGITS:
        # Bounded before any arithmetic: 1E-1000000 would stall exact conversion for seconds.
        raise EventError(f"{value!r} is out of range", field=field)
    return result


_CANONICAL_DIGITS = Context(prec=12)
#: No clinical value, in any unit, reaches 10**15 (1e15 /uL would still be 1e12 per litre).
_MAX_EXPONENT = 15
#: No number protocolkit reads has more than 30 digits before or after the point.
_MAX_DIGITS = 30


def _fraction_to_decimal(value: Fraction) -> Decimal:
    # 12 significant digits: exact for decimal factors, bounded for 1/18 or 1/113.12.
    result = _CANONICAL_DIGITS.divide(Decimal(value.numerator), Decimal(value.denominator))
    # Drop the noise of exact division (98.000 -> 98) but keep an integer's digits.
    normal = result.normalize()
    if normal == normal.to_integral_value():
        return Decimal(int(normal))  # 1E+2 -> 100, without quantize's precision limit
    return normal


@attrs.frozen
class Quantity:
    """A value with its UCUM unit, as given (a dose of 1 mg, a height of 170 cm)."""

    value: Decimal = attrs.field(converter=to_decimal)
    unit: str = attrs.field()

    @unit.validator
    def _check_unit(self, _: attrs.Attribute[str], unit: str) -> None:
        parse_unit(unit)

    def to(self, unit: str) -> Quantity:
        """Return the same quantity in ``unit`` (exact; raises ``UnitError`` if incomparable)."""
        factor = parse_unit(self.unit).factor_to(parse_unit(unit))
        return Quantity(_fraction_to_decimal(Fraction(self.value) * factor), unit)

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"


class MeasurementStatus(enum.StrEnum):
    """Whether a measured value may be used by rules."""

    #: Converted to the canonical unit and possible for the analyte.
    VALID = "valid"
    #: Impossible for its unit (Hb 9.8 g/L): recorded, not converted, raises a data query (D6).
    IMPLAUSIBLE = "implausible"
    #: The analyte is not in the catalogue: kept in the unit received, no range known.
    UNCATALOGUED = "uncatalogued"


@attrs.frozen
class Measurement:
    """A measured value as received (value and UCUM unit) and, when valid, its canonical value."""

    value: Decimal = attrs.field(converter=to_decimal)
    unit: str
    canonical_value: Decimal | None
    canonical_unit: str | None
    status: MeasurementStatus

    @property
    def usable(self) -> bool:
        """Whether rules may use the canonical value (False for an implausible value)."""
        return self.status is not MeasurementStatus.IMPLAUSIBLE

    def __str__(self) -> str:
        shown = f"{self.value} {self.unit}"
        if self.canonical_unit and self.canonical_unit != self.unit:
            shown += f" (= {self.canonical_value} {self.canonical_unit})"
        if self.status is MeasurementStatus.IMPLAUSIBLE:
            shown += " [implausible]"
        return shown


@attrs.frozen
class Analyte:
    """One entry of the analyte catalogue."""

    code: str
    name: str
    canonical_unit: str
    accepted_units: tuple[str, ...]
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    molar_mass_g_per_mol: Decimal | None = None
    #: Conventional factors that win over the computed ones (creatinine mg/dL x 88.4).
    factors: Mapping[str, Decimal] = attrs.field(factory=dict)

    def factor_from(self, unit: str) -> Fraction:
        """The factor from ``unit`` to the canonical unit (stated, exact, or via molar mass)."""
        if unit in self.factors:
            return Fraction(self.factors[unit])
        source, target = parse_unit(unit), parse_unit(self.canonical_unit)
        if source.commensurable(target):
            return source.factor_to(target)
        mol = _dim(mol=1)
        if self.molar_mass_g_per_mol is not None:
            mass = Fraction(self.molar_mass_g_per_mol)
            if _add(source.dimension, _dim(g=1)) == _add(target.dimension, mol):
                return source.factor * mass / target.factor  # mol -> g
            if _add(source.dimension, mol) == _add(target.dimension, _dim(g=1)):
                return source.factor / mass / target.factor  # g -> mol
        raise UnitError(
            f"unit {unit!r} cannot be compared with {self.canonical_unit!r} "
            f"for {self.name} ({self.code})",
            field="unit",
        )


@attrs.frozen
class AnalyteCatalogue:
    """Analytes by code (LOINC): canonical unit, accepted units and possible range."""

    analytes: Mapping[str, Analyte]

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<analytes>") -> AnalyteCatalogue:
        """Load a catalogue from TOML text (``[analyte."718-7"]`` tables)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise EventError(f"{source}: {exc}") from None
        analytes: dict[str, Analyte] = {}
        for code, entry in data.get("analyte", {}).items():
            analytes[code] = _analyte_from_toml(code, entry, source)
            for alias in entry.get("aliases", []):
                analytes[alias] = attrs.evolve(analytes[code], code=alias)
        return cls(analytes)

    def merged(self, other: AnalyteCatalogue) -> AnalyteCatalogue:
        """Return a catalogue with ``other``'s entries added (they win on the same code)."""
        return AnalyteCatalogue({**self.analytes, **other.analytes})

    def measure(self, code: str, value: object, unit: str) -> Measurement:
        """Check and convert a value as received (see :func:`measure`)."""
        number = to_decimal(value)
        if number and number.adjusted() > _MAX_EXPONENT:
            raise EventError(f"{value!r} is out of range for a clinical value", field="value")
        parse_unit(unit)
        analyte = self.analytes.get(code)
        if analyte is None:
            return Measurement(number, unit, number, unit, MeasurementStatus.UNCATALOGUED)
        if unit not in analyte.accepted_units:
            raise UnitError(
                f"unit {unit!r} is not accepted for {analyte.name} ({code}); "
                f"accepted: {', '.join(analyte.accepted_units)}",
                field="unit",
            )
        if number < 0:
            raise EventError(f"{analyte.name} cannot be negative ({number} {unit})", field="value")
        canonical = _fraction_to_decimal(Fraction(number) * analyte.factor_from(unit))
        low, high = analyte.minimum, analyte.maximum
        if (low is not None and canonical < low) or (high is not None and canonical > high):
            # D6: impossible for its unit; keep what was received, never guess a conversion.
            return Measurement(number, unit, None, analyte.canonical_unit,
                               MeasurementStatus.IMPLAUSIBLE)
        return Measurement(number, unit, canonical, analyte.canonical_unit,
                           MeasurementStatus.VALID)


def _analyte_from_toml(code: str, entry: Mapping[str, Any], source: str) -> Analyte:
    where = f'{source}: analyte "{code}"'
    try:
        canonical = entry["canonical_unit"]
        accepted = tuple(entry.get("accepted_units", [canonical]))
        low, high = entry.get("plausible", [None, None])
        molar = entry.get("molar_mass_g_per_mol")
        analyte = Analyte(
            code=code,
            name=entry.get("name", code),
            canonical_unit=canonical,
            accepted_units=accepted if canonical in accepted else (canonical, *accepted),
            minimum=None if low is None else to_decimal(low),
            maximum=None if high is None else to_decimal(high),
            molar_mass_g_per_mol=None if molar is None else to_decimal(molar),
            factors={u: to_decimal(f) for u, f in entry.get("factors", {}).items()},
        )
        for unit in analyte.accepted_units:
            analyte.factor_from(unit)
    except (KeyError, ValueError, TypeError) as exc:
        raise EventError(f"{where}: {exc}") from None
    if isinstance(low, float) and math.isnan(low):
        raise EventError(f"{where}: plausible range must be numbers")
    return analyte


@lru_cache(maxsize=1)
def default_catalogue() -> AnalyteCatalogue:
    """The catalogue shipped in ``protocolkit/data/analytes.toml``."""
    text = resources.files("protocolkit").joinpath("data/analytes.toml").read_text("utf-8")
    return AnalyteCatalogue.from_toml(text, source="protocolkit/data/analytes.toml")


def load_catalogue(path: Path) -> AnalyteCatalogue:
    """The default catalogue extended by the TOML file at ``path``."""
    return default_catalogue().merged(
        AnalyteCatalogue.from_toml(path.read_text("utf-8"), source=str(path))
    )


def measure(code: str, value: object, unit: str) -> Measurement:
    """Check a value as received against the default catalogue and convert it (D6).

    >>> m = measure("718-7", "9.8", "g/dL")
    >>> (m.canonical_value, m.canonical_unit, m.status.value)
    (Decimal('98'), 'g/L', 'valid')
    >>> measure("718-7", "9.8", "g/L").status.value     # impossible for its unit: a data query
    'implausible'

    Raises:
        UnitError: the unit is not UCUM, or is not accepted for the analyte.
        EventError: the value is not a finite number, or is impossible in any unit (negative).
    """
    return default_catalogue().measure(code, value, unit)
