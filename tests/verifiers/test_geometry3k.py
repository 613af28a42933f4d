import pytest

from verifiers import verify
from verifiers.math_equal import numbers_match

SQRT3 = "2\\sqrt{3}"
FORTY_THIRDS = "\\frac{40}{3}"


@pytest.mark.parametrize(
    "pred, gold, acc",
    [
        # plain values, degrees, units, assignments
        ("48", "48", 1),
        ("49", "48", 0),
        ("48^\\circ", "48", 1),
        ("48^{\\circ}", "48", 1),
        ("48°", "48", 1),
        ("48 degrees", "48", 1),
        ("17°", "17", 1),  # a known gap of grade_answer's string path
        ("m \\angle ABC = 48", "48", 1),
        ("x = 48", "48", 1),
        ("12 cm", "12", 1),
        ("12\\text{ cm}", "12", 1),
        ("12 square units", "12", 1),
        ("8.50", "8.5", 1),
        ("8.6", "8.5", 0),
        ("$48$", "48", 1),
        # radicals
        (SQRT3, SQRT3, 1),
        ("2\\sqrt3", SQRT3, 1),
        ("2 \\sqrt { 3 }", SQRT3, 1),
        ("\\sqrt{12}", SQRT3, 1),
        ("5\\sqrt{2}", "\\sqrt{50}", 1),
        ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", 1),
        ("3\\sqrt{2}", SQRT3, 0),
        # fractions
        (FORTY_THIRDS, FORTY_THIRDS, 1),
        ("\\dfrac{40}{3}", FORTY_THIRDS, 1),
        ("40/3", FORTY_THIRDS, 1),
        ("\\frac{80}{6}", FORTY_THIRDS, 1),
        ("\\frac{41}{3}", FORTY_THIRDS, 0),
        # pi
        ("4\\pi", "4\\pi", 1),
        ("4 \\pi", "4\\pi", 1),
        ("12.57", "4\\pi", 1),
        ("12.6", "4\\pi", 1),
        ("12", "4\\pi", 0),
        # rounding tolerance (Decision): decimals as roundings of exact values
        ("3.46", SQRT3, 1),
        ("3.464", SQRT3, 1),
        ("3.4641", SQRT3, 1),
        ("3.47", SQRT3, 0),  # not a rounding of 3.4641
        ("3.5", SQRT3, 0),  # a rounding, but 1.04 % off
        ("3", SQRT3, 0),  # integers are exact
        ("13.33", FORTY_THIRDS, 1),
        ("13.3", FORTY_THIRDS, 1),
        ("13", FORTY_THIRDS, 0),
        (SQRT3, "3.46", 1),  # a rounded gold accepts the exact value
        ("7.24", "7.2", 1),
        ("7.26", "7.2", 0),
        ("48.3", "48", 0),
        # text against a number never goes symbolic
        ("forty-eight", "48", 0),
    ],
)
def test_geometry3k_table(respond, pred, gold, acc):
    result = verify("geometry3k", respond(pred), gold)
    assert result["acc"] == acc, result
    assert result["verifier"] == "geometry3k"


def test_rounding_tolerance_switch(respond):
    assert verify("geometry3k", respond("3.46"), SQRT3, rounding_tolerance=False)["acc"] == 0
    assert verify("geometry3k", respond("\\sqrt{12}"), SQRT3, rounding_tolerance=False)["acc"] == 1
    assert verify("geometry3k", respond("3.5"), SQRT3, rounding_rel_tol=0.02)["acc"] == 1


@pytest.mark.parametrize(
    "pred, acc",
    [("B", 1), ("(B)", 1), ("B.", 1), ("B. 12", 1), ("C", 0), ("(D)", 0), ("12", 1), ("18", 0)],
)
def test_letter_answers_map_through_choices(respond, pred, acc):
    extra = {"choices": ["6", "12", "18", "24"]}
    assert verify("geometry3k", respond(pred), "12", extra)["acc"] == acc


def test_letter_gold_maps_through_choices(respond):
    extra = {"choices": ["6", "2\\sqrt{3}", "18", "24"]}
    assert verify("geometry3k", respond("\\sqrt{12}"), "B", extra)["acc"] == 1
    assert verify("geometry3k", respond("B"), "B", extra)["acc"] == 1
    assert verify("geometry3k", respond("A"), "B", extra)["acc"] == 0


def test_letter_without_choices_is_not_a_value(respond):
    assert verify("hiyouga/geometry3k", respond("B"), "12")["acc"] == 0


@pytest.mark.parametrize(
    "gold, gold_dec, pred, pred_dec, expected",
    [
        (3.4641016, None, 3.46, 2, True),
        (3.4641016, None, 3.465, 3, False),  # 3.464 is the rounding at 3 decimals
        (3.4641016, None, 3.5, 1, False),
        (100.4, None, 100.0, None, False),  # an integer states no rounding: exact only
        (100.4, None, 100.0, 0, True),  # 1.00e2 is stated to units: a rounding of 100.4
        (2971.0, None, 3000.0, -3, True),  # 3e3: stated to thousands, 0.98 % off
        (2960.0, None, 3000.0, -3, False),  # 1.35 % off: beyond the relative bound
        (100.0, 1, 100.04, 2, True),
        (0.0, 1, 0.04, 2, False),  # gold 0: relative bound rejects
    ],
)
def test_numbers_match_rule(gold, gold_dec, pred, pred_dec, expected):
    assert numbers_match(gold, gold_dec, pred, pred_dec) is expected
