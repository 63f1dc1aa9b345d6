"""Units at the boundary (D6): UCUM parsing, canonical conversion, plausibility."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocolkit.errors import EventError, UnitError
from protocolkit.units import (
    MeasurementStatus,
    Quantity,
    default_catalogue,
    measure,
    parse_unit,
)
from tests.strategies import CATALOGUED, UNCATALOGUED_CODES, decimals, measurements

HB, PLATELETS, TACROLIMUS, CREATININE = "718-7", "777-3", "11253-2", "2160-0"

# --- D6 conversions, exactly ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "unit", "canonical", "canonical_unit"),
    [
        pytest.param(HB, "9.8", "g/dL", "98", "g/L", id="Hb g/dL x10"),
        pytest.param(HB, "12.35", "g/dL", "123.5", "g/L", id="Hb g/dL x10 keeps digits"),
        pytest.param(HB, "6.2", "mmol/L", "99.882", "g/L", id="Hb mmol/L x16.11"),
        pytest.param(HB, "8", "mmol/L", "128.88", "g/L", id="Hb mmol/L x16.11 integer"),
        pytest.param(HB, "98", "g/L", "98", "g/L", id="Hb canonical unchanged"),
        pytest.param(PLATELETS, "150", "10*3/uL", "150", "10*9/L", id="platelets 10*3/uL x1"),
        pytest.param(PLATELETS, "150000", "/uL", "150", "10*9/L", id="platelets /uL /1000"),
        pytest.param(PLATELETS, "25500", "/uL", "25.5", "10*9/L", id="platelets /uL decimal"),
        pytest.param("26515-7", "30", "10*3/uL", "30", "10*9/L", id="platelets alias code"),
        pytest.param(TACROLIMUS, "8.5", "ug/L", "8.5", "ng/mL", id="tacrolimus ug/L x1"),
        pytest.param(TACROLIMUS, "8500", "pg/mL", "8.5", "ng/mL", id="tacrolimus pg/mL /1000"),
        pytest.param("77348-1", "12", "ng/mL", "12", "ng/mL", id="tacrolimus trough alias"),
        pytest.param(CREATININE, "1.2", "mg/dL", "106.08", "umol/L", id="creatinine x88.4"),
    ],
)
def test_d6_conversion(
    code: str, value: str, unit: str, canonical: str, canonical_unit: str
) -> None:
    """Each conversion of D6 gives the exact canonical value, written without noise."""
    result = measure(code, value, unit)
    assert result.status is MeasurementStatus.VALID
    assert result.usable
    assert result.canonical_value == Decimal(canonical)
    assert str(result.canonical_value) == canonical  # exact: no 98.0000000001, no 9.8E+1
    assert result.canonical_unit == canonical_unit
    assert (result.value, result.unit) == (Decimal(value), unit)  # as received, kept


@given(decimals(Decimal("2"), Decimal("25")))
def test_hb_g_per_dl_is_times_ten(value: Decimal) -> None:
    """Hb in g/dL is exactly ten times as much in g/L, for every plausible value."""
    assert measure(HB, value, "g/dL").canonical_value == value * 10


@given(st.integers(0, 5_000_000))
def test_platelets_per_ul_is_divided_by_1000(count: int) -> None:
    """Platelets in /uL are exactly a thousandth as much in 10*9/L, as are 10*3/uL x1."""
    per_litre = Decimal(count) / 1000
    assert measure(PLATELETS, count, "/uL").canonical_value == per_litre
    assert measure(PLATELETS, per_litre, "10*3/uL").canonical_value == per_litre


@given(decimals(0, 300))
def test_tacrolimus_ug_per_l_equals_ng_per_ml(value: Decimal) -> None:
    """Tacrolimus: 1 ug/L is 1 ng/mL and 1000 pg/mL."""
    in_ug = measure(TACROLIMUS, value, "ug/L")
    assert in_ug.canonical_value == value
    assert measure(TACROLIMUS, value * 1000, "pg/mL").canonical_value == value


def test_value_forms_accepted() -> None:
    """A value may come as a string, an int or a float; a float keeps its shortest text."""
    assert measure(HB, 9.8, "g/dL").value == Decimal("9.8")
    assert measure(HB, 10, "g/dL").canonical_value == Decimal(100)
    assert measure(HB, "9.80", "g/dL").value.as_tuple().exponent == -2


@pytest.mark.parametrize("value", [True, None, "nine", "NaN", "Infinity", [9.8]])
def test_value_must_be_a_finite_number(value: object) -> None:
    """Booleans, text and non-finite numbers are refused, naming the value field."""
    with pytest.raises(EventError) as raised:
        measure(HB, value, "g/dL")
    assert raised.value.field == "value"
    assert not isinstance(raised.value, UnitError)


# --- UCUM -----------------------------------------------------------------------------------


def test_ucum_is_case_sensitive() -> None:
    """`mg` is a milligram, `Mg` a megagram: a factor of 10^9 apart; `MG` is nothing."""
    assert parse_unit("mg").factor == Fraction(1, 1000)
    assert parse_unit("Mg").factor == Fraction(10**6)
    assert parse_unit("Mg").factor_to(parse_unit("mg")) == 10**9
    assert parse_unit("mg").dimension == parse_unit("g").dimension
    with pytest.raises(UnitError):
        parse_unit("MG")
    with pytest.raises(UnitError):
        measure(HB, "9.8", "G/DL")


@pytest.mark.parametrize(
    "code",
    ["gm/dL", "mcg/L", "cc", "IU/L", "x10^9/L", "10^9 /L", "µg/L", "mg/", "", "(mg", "10*"],
)
def test_non_ucum_units_are_refused(code: str) -> None:
    """Common non-UCUM spellings are refused with a UnitError naming the unit field."""
    with pytest.raises(UnitError) as raised:
        parse_unit(code)
    assert raised.value.field == "unit"
    assert "is not a UCUM unit" in raised.value.message


@pytest.mark.parametrize(
    ("code", "factor"),
    [
        ("10*9/L", Fraction(10**12)),
        ("10*3/uL", Fraction(10**12)),
        ("/uL", Fraction(10**9)),
        ("g/dL", Fraction(10**4)),
        ("mg/(kg.d)", Fraction(1, 86_400 * 10**6)),
        ("{cells}/uL", Fraction(10**9)),
        ("kg.m-2", Fraction(1000)),
        ("[lb_av]", Fraction(45359237, 100000)),
        ("%", Fraction(1, 100)),
    ],
)
def test_parse_unit_factors(code: str, factor: Fraction) -> None:
    """Factors to coherent base units (g, m, s, mol) are exact rationals."""
    assert parse_unit(code).factor == factor


def test_a_unit_that_cannot_be_compared_is_refused() -> None:
    """g/L cannot be converted to 10*9/L (D6: an error with a clear message)."""
    with pytest.raises(UnitError, match="cannot be converted"):
        parse_unit("g/L").factor_to(parse_unit("10*9/L"))
    with pytest.raises(UnitError, match="cannot be converted"):
        Quantity("1", "g/L").to("ng")


def test_unit_not_accepted_for_the_analyte() -> None:
    """A UCUM unit the catalogue does not accept for the analyte is an error (Hb in ng/mL)."""
    with pytest.raises(UnitError) as raised:
        measure(HB, "9.8", "ng/mL")
    assert raised.value.field == "unit"
    assert "not accepted for Haemoglobin" in raised.value.message
    assert "g/L, g/dL, mmol/L" in raised.value.message


def test_negative_catalogued_value_is_refused() -> None:
    """A negative value is impossible in any unit: an EventError on the value, not a query."""
    with pytest.raises(EventError) as raised:
        measure(HB, "-9.8", "g/dL")
    assert raised.value.field == "value"
    assert not isinstance(raised.value, UnitError)


# --- plausibility ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "unit"), [("9.8", "g/L"), ("98", "g/dL"), ("300", "g/L")])
def test_implausible_values_are_recorded_without_canonical_value(value: str, unit: str) -> None:
    """Hb 9.8 g/L or 98 g/dL: recorded as received, implausible, never converted by guessing."""
    result = measure(HB, value, unit)
    assert result.status is MeasurementStatus.IMPLAUSIBLE
    assert result.canonical_value is None
    assert result.canonical_unit == "g/L"
    assert (result.value, result.unit) == (Decimal(value), unit)
    assert not result.usable
    assert "[implausible]" in str(result)


_CODES = sorted({code for code, _ in CATALOGUED}) + list(UNCATALOGUED_CODES)


@given(st.data(), st.sampled_from(_CODES))
def test_measurement_invariants(data: st.DataObject, code: str) -> None:
    """A result is valid and in range, implausible and unconverted, or uncatalogued as received."""
    result = data.draw(measurements(code))
    analyte = default_catalogue().analytes.get(code)
    if analyte is None:
        assert result.status is MeasurementStatus.UNCATALOGUED
        assert (result.canonical_value, result.canonical_unit) == (result.value, result.unit)
        return
    exact = Fraction(result.value) * analyte.factor_from(result.unit)
    in_range = (analyte.minimum is None or exact >= analyte.minimum) and (
        analyte.maximum is None or exact <= analyte.maximum
    )
    assert result.canonical_unit == analyte.canonical_unit
    if in_range:
        assert result.status is MeasurementStatus.VALID
        assert result.canonical_value is not None
        assert abs(Fraction(result.canonical_value) - exact) <= exact * Fraction(1, 10**11)
        assert result.usable
    else:
        assert result.status is MeasurementStatus.IMPLAUSIBLE
        assert result.canonical_value is None
        assert not result.usable


@pytest.mark.parametrize(("code", "unit"), CATALOGUED)
def test_catalogue_units_convert(code: str, unit: str) -> None:
    """Every accepted unit of every catalogued code converts to its canonical unit."""
    analyte = default_catalogue().analytes[code]
    factor = analyte.factor_from(unit)
    assert factor > 0
    if unit == analyte.canonical_unit:
        assert factor == 1


@pytest.mark.parametrize("code", UNCATALOGUED_CODES)
def test_uncatalogued_codes_are_kept_as_received(code: str) -> None:
    """A code the catalogue lacks keeps the value and unit received (even a negative one)."""
    result = measure(code, "-3.20", "mmol/L")
    assert result.status is MeasurementStatus.UNCATALOGUED
    assert result.usable
    assert str(result.value) == "-3.20"
    assert (result.canonical_value, result.canonical_unit) == (Decimal("-3.20"), "mmol/L")
    with pytest.raises(UnitError):
        measure(code, "1", "gm/dL")  # still UCUM


# --- Quantity.to ----------------------------------------------------------------------------

# Units whose ratios to each other are powers of ten: conversions are exact both ways.
_DECIMAL_FAMILIES = (
    ("g", "kg", "mg", "ug", "ng", "pg"),
    ("L", "dL", "mL", "uL", "fL"),
    ("g/L", "g/dL", "mg/dL", "mg/mL", "ug/L", "ng/mL", "pg/mL"),
    ("10*9/L", "10*3/uL", "/uL", "10*12/L", "/mL"),
    ("mol/L", "mmol/L", "umol/L", "nmol/L"),
    ("m", "cm", "mm", "km"),
    ("%", "[ppm]", "10*3"),
)
# Commensurable units whose ratios need not terminate (1/7 week per day, pounds).
_OTHER_FAMILIES = (
    ("s", "min", "h", "d", "wk"),
    ("kg", "g", "[lb_av]"),
    ("m", "cm", "[in_i]"),
    ("mg/(kg.d)", "ug/(kg.h)", "mg/(g.wk)"),
)


@st.composite
def _unit_pairs(draw: st.DrawFn, families: tuple[tuple[str, ...], ...]) -> tuple[str, str]:
    family = draw(st.sampled_from(families))
    return draw(st.sampled_from(family)), draw(st.sampled_from(family))


@given(decimals(0, 10**6), _unit_pairs(_DECIMAL_FAMILIES))
def test_quantity_to_round_trips_exactly(value: Decimal, units: tuple[str, str]) -> None:
    """a -> b -> a gives the same quantity when the units differ by a power of ten."""
    a, b = units
    there = Quantity(value, a).to(b)
    assert there.unit == b
    assert Fraction(there.value) == Fraction(value) * parse_unit(a).factor_to(parse_unit(b))
    assert there.to(a) == Quantity(value, a)


@given(decimals(Decimal("0.001"), 10**6), _unit_pairs(_OTHER_FAMILIES))
def test_quantity_to_round_trips_to_twelve_digits(value: Decimal, units: tuple[str, str]) -> None:
    """a -> b -> a is within 12 significant digits for any commensurable units."""
    a, b = units
    back = Quantity(value, a).to(b).to(a)
    assert back.unit == a
    assert abs(back.value - value) <= value * Decimal("2E-11")  # two roundings to 12 digits


def test_quantity_to_large_values() -> None:
    """Large exact results keep every digit (1E15 kg is 10^30 pg), small ones too."""
    assert Quantity("1E15", "kg").to("pg").value == Decimal(10**30)
    assert Quantity("1", "pg").to("kg").value == Decimal("1E-15")


def test_huge_catalogued_values_are_refused_or_implausible() -> None:
    """A value no analyte can have is an error on the value or an implausible record."""
    try:
        result = measure(PLATELETS, "1E40", "/uL")
    except EventError as exc:
        assert exc.field == "value"
    else:
        assert result.status is MeasurementStatus.IMPLAUSIBLE


# --- parse_unit algebra ---------------------------------------------------------------------

_ATOMS = (
    "g", "mg", "ug", "kg", "L", "dL", "mL", "uL", "m", "cm", "s", "min", "h", "d", "wk", "mol",
    "mmol", "umol", "[iU]", "[IU]", "U", "eq", "meq", "%", "[lb_av]", "[in_i]", "10*3", "10*9",
    "{cells}",
)
_LETTER_ATOMS = tuple(a for a in _ATOMS if a[-1].isalpha() or a.endswith("]"))


@given(st.sampled_from(_ATOMS), st.sampled_from(_ATOMS))
def test_product_factor_is_the_product(a: str, b: str) -> None:
    """factor(a.b) = factor(a) * factor(b); dimensions add; the order does not matter."""
    ua, ub, product = parse_unit(a), parse_unit(b), parse_unit(f"{a}.{b}")
    assert product.factor == ua.factor * ub.factor
    assert product.dimension == tuple(x + y for x, y in zip(ua.dimension, ub.dimension,
                                                            strict=True))
    assert parse_unit(f"{b}.{a}").factor == product.factor


@given(st.sampled_from(_ATOMS), st.sampled_from(_ATOMS))
def test_quotient_factor_is_the_quotient(a: str, b: str) -> None:
    """factor(a/b) = factor(a) / factor(b), and factor(/a) = 1 / factor(a)."""
    ua, ub = parse_unit(a), parse_unit(b)
    assert parse_unit(f"{a}/{b}").factor == ua.factor / ub.factor
    inverse = parse_unit(f"/{a}")
    assert inverse.factor == 1 / ua.factor
    assert inverse.dimension == tuple(-x for x in ua.dimension)
    assert parse_unit(f"{a}/{a}").dimension == (0, 0, 0, 0, 0, 0)
    assert parse_unit(f"{a}/{a}").factor == 1


@given(st.sampled_from(_LETTER_ATOMS), st.integers(-3, 3).filter(bool))
def test_exponent_factor_is_the_power(a: str, n: int) -> None:
    """factor(a^n) = factor(a)^n (UCUM writes a^n as `an`, as in `m2`, `m-2`)."""
    ua, power = parse_unit(a), parse_unit(f"{a}{n}")
    assert power.factor == ua.factor**n
    assert power.dimension == tuple(x * n for x in ua.dimension)
