"""The one numeric equality rule (:mod:`verifiers.math_equal`), across magnitudes and spellings.

The rule scales with the gold: exact values compare exactly, a stated decimal may round the gold
within 1 %, and there is no absolute floor, so a tiny gold is never matched by 0.
"""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifiers import verify
from verifiers.math_equal import REL_TOL, numbers_match, same_number

# Every source whose math answers go through math_equal (ChartQA has its own 5 % rule).
MATH_SOURCES = ["virl39k", "geometry3k", "mathvista", "mathverse", "mathvision", "mmmu"]
SPELLINGS = ["e", "E", "times", "cdot", "cdot_tight", "unbraced", "unicode_times", "fixed"]


def _ground_truth(source: str, gold: str) -> str:
    return f"\\boxed{{{gold}}}" if source == "virl39k" else gold


def acc(source: str, pred: str, gold: str) -> int:
    return verify(source, f"<think>t</think><answer>{pred}</answer>", _ground_truth(source, gold))["acc"]


def spell(value: Decimal, style: str, shift: int = 0) -> str:
    """``value`` written in one notation; ``shift`` moves the decimal point of the mantissa."""
    if style == "fixed":
        return format(value.normalize(), "f")
    sign, digits, exponent = value.normalize().as_tuple()
    k = len(digits) - 1 - shift  # mantissa = digits * 10^-k, exponent of ten = exponent + k
    mantissa = format(Decimal((sign, digits, -k)), "f")
    e = exponent + k
    return {
        "e": f"{mantissa}e{e}",
        "E": f"{mantissa}E{e}",
        "times": f"{mantissa} \\times 10^{{{e}}}",
        "cdot": f"{mantissa}\\cdot10^{{{e}}}",
        "cdot_tight": f"{mantissa} \\cdot 10^{{{e}}}",
        "unbraced": f"{mantissa} \\times 10^{e}",
        "unicode_times": f"{mantissa} × 10^{{{e}}}",
    }[style]


# Four significant digits times 10^e: |value| from 1e-30 to ~1e30, either sign.
values = st.builds(lambda digits, e, negative: Decimal((int(negative), tuple(int(c) for c in str(digits)), e)),
                   st.integers(1000, 9999), st.integers(-33, 27), st.booleans())


@pytest.mark.parametrize("source", MATH_SOURCES)
@pytest.mark.parametrize("gold", ["1.6 \\times 10^{-19}", "1.6e-19", "-1.6\\cdot10^{-19}", "2e-20", "6.626e-34",
                                  "9.109 \\times 10^{-31}", "0.0000001"])
def test_zero_is_not_a_tiny_gold(source, gold):
    assert acc(source, "0", gold) == 0


@pytest.mark.parametrize("source", MATH_SOURCES)
@pytest.mark.parametrize("gold, pred", [("2e-20", "1e-20"), ("1.6e-19", "-1.6e-19"), ("1.6 \\times 10^{-19}", "1.6e-18"),
                                        ("1.6 \\times 10^{-19}", "3.2 \\times 10^{-19}"), ("3e8", "3e9"),
                                        ("6.02 \\times 10^{23}", "6.02 \\times 10^{22}"), ("-5e-12", "5e-12")])
def test_near_misses_at_small_and_large_magnitudes(source, gold, pred):
    assert acc(source, pred, gold) == 0


def test_compute_score_of_the_issue():
    from recipe.care.reward_manager import compute_score

    for source in ["virl39k", "geometry3k", "mathvista", "mathverse", "mathvision"]:
        gold = _ground_truth(source, "1.6 \\times 10^{-19}")
        assert compute_score(source, "<think>a</think><answer>0</answer>", gold)["acc"] == 0
        assert compute_score(source, "<think>a</think><answer>1.6e-19</answer>", gold)["acc"] == 1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from(SPELLINGS), st.sampled_from(SPELLINGS), st.integers(-2, 2),
       st.sampled_from(["virl39k", "geometry3k", "mathvision"]))
def test_same_value_in_any_spelling_matches(value, gold_style, pred_style, shift, source):
    gold, pred = spell(value, gold_style), spell(value, pred_style, shift)
    assert acc(source, pred, gold) == 1, (gold, pred)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from(SPELLINGS), st.sampled_from(SPELLINGS),
       st.sampled_from([Decimal(0), Decimal(-1), Decimal(2), Decimal("0.5"), Decimal(10), Decimal("1.02"),
                        Decimal("0.97")]),
       st.sampled_from(["virl39k", "geometry3k", "mathverse"]))
def test_zero_wrong_sign_and_factors_fail(value, gold_style, pred_style, factor, source):
    """0, the opposite sign and anything off by more than the 1 % rounding bound fail at every magnitude."""
    gold, pred = spell(value, gold_style), spell(value * factor, pred_style) if factor else "0"
    assert acc(source, pred, gold) == 0, (gold, pred)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(1, 3), st.sampled_from(SPELLINGS[:-1]), st.sampled_from(["virl39k", "geometry3k"]))
def test_rounding_matches_within_one_percent_at_any_magnitude(value, keep, pred_style, source):
    """``1.2345e-19`` rounded to ``keep`` significant digits in scientific notation (which states them;
    a plain integer such as ``1000`` states none and is exact): a match exactly when within 1 % of the
    gold (3 significant digits always are, 1 digit often is not), whatever the magnitude."""
    _, digits, exponent = value.as_tuple()
    rounded = value.quantize(Decimal((0, (1,), exponent + len(digits) - keep)))
    if rounded == value:
        return
    within = abs(rounded - value) <= abs(value) / 100
    assert keep < 3 or within
    assert acc(source, spell(rounded, pred_style), spell(value, "times")) == int(within), (value, rounded)


@settings(max_examples=25, deadline=None)
@given(st.integers(-30, 30), st.booleans())
def test_computed_values_follow_the_same_rule(e, negative):
    """Through the symbolic worker (a gold parse_number cannot read): right value passes, 0 and -x fail."""
    sign = "-" if negative else ""
    gold = f"{sign}\\sqrt{{2}} \\times 10^{{{e}}}"
    assert acc("virl39k", f"{sign}1.414 \\times 10^{{{e}}}", gold) == 1
    assert acc("virl39k", f"{sign}1.42 \\times 10^{{{e}}}", gold) == 0  # not a rounding of 1.41421
    assert acc("virl39k", "0", gold) == 0
    assert acc("virl39k", f"{'' if negative else '-'}1.414 \\times 10^{{{e}}}", gold) == 0
    # Exact against exact: math-verify's own numeric fallback chops below ~1e-14 absolute.
    assert acc("virl39k", f"{sign}\\sqrt{{3}} \\times 10^{{{e}}}", gold) == 0
    assert acc("virl39k", f"{sign}\\frac{{\\sqrt{{8}}}}{{2}} \\times 10^{{{e}}}", gold) == 1


@pytest.mark.parametrize("gold, pred, expected", [
    ("\\sqrt{2}\\times10^{-20}", "\\sqrt{3}\\times10^{-20}", 0),
    ("\\frac{1}{3}\\times10^{-20}", "\\frac{1}{4}\\times10^{-20}", 0),
    ("e^{-50}", "e^{-51}", 0),
    ("\\pi \\times 10^{-20}", "0", 0),
    ("2^{60}+1", "2^{60}", 0),
    ("\\frac{\\sqrt{2}}{10^{20}}", "\\frac{1}{\\sqrt{2}\\cdot 5\\cdot 10^{19}}", 1),
    ("e^{-50}", "\\frac{1}{e^{50}}", 1),
])
def test_exact_pairs_need_math_verify_and_the_values_to_agree(gold, pred, expected):
    assert acc("virl39k", pred, gold) == expected


def test_math_verify_six_decimal_rounding_does_not_decide_numbers():
    """math-verify rounds floats to 6 decimals, so it calls 1e-8 equal to 1e-9; the numeric rule does not."""
    assert acc("virl39k", "0.00000001", "\\frac{1}{10^{9}}") == 0
    assert acc("virl39k", "0.000000001", "\\frac{1}{10^{9}}") == 1
    assert acc("geometry3k", "0.00000141", "\\frac{\\sqrt{2}}{10^{6}}") == 1
    assert acc("geometry3k", "0.0000010", "\\frac{\\sqrt{2}}{10^{6}}") == 0


@pytest.mark.parametrize("gold, pred, equal", [
    (Fraction(0), Fraction(0), True),
    (Fraction(0), Fraction(1, 10 ** 30), False),
    (0.0, 0.0, True),
    (0.0, 1e-300, False),  # no absolute floor for a zero gold
    (1.6e-19, 1.6e-19 * (1 + REL_TOL / 2), True),
    (1.6e-19, 1.6e-19 * (1 + REL_TOL * 2), False),
    (-3e30, -3e30 * (1 - REL_TOL / 2), True),
    (2.0 ** 60 + 1, 2.0 ** 60, True),  # floats: within noise (exact pairs never get here)
    (Fraction(2 ** 60 + 1), Fraction(2 ** 60), False),  # exact values: exactly
])
def test_same_number(gold, pred, equal):
    assert same_number(gold, pred) is equal


def test_rounding_bound_is_relative_to_the_gold():
    # 3.46 rounds 2*sqrt(3); the same digits scaled by 1e-20 still do, and 0 never does.
    assert numbers_match(3.4641016151377544e-20, None, Fraction(346, 100) * Fraction(1, 10 ** 20), 22)
    assert not numbers_match(3.4641016151377544e-20, None, Fraction(0), None)
    assert not numbers_match(Fraction(1, 10 ** 20), 20, Fraction(2, 10 ** 20), 20)
