"""Answer forms a plain string match grades wrong although they are right (false negatives),
each with the near misses that must stay wrong."""

import time

import pytest

from verifiers import verify
from verifiers.format import boxed_contents, extract_answer
from verifiers.normalize import parse_number

MATH_SOURCES = ["geometry3k", "virl39k"]
PMATRIX = "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"


def _gt(source, gold):
    return [gold] if source == "chartqa" else f"\\boxed{{{gold}}}" if source == "virl39k" else gold


# (gold, prediction, acc): run through both math sources.
MATH_TABLE = [
    # decimal comma (Decision: prediction side, gold one number, not a valid thousands grouping)
    ("2.74", "2,74", 1),
    ("1000.99", "1000,99", 1),
    ("0.111", "0,111", 1),
    ("2.5", "2,5", 1),
    ("2.75", "2,74", 0),
    ("1.234", "1,234", 0),  # a valid thousands grouping stays 1234
    ("1234", "1,234", 1),
    ("1,2", "1.2", 0),  # a gold "1,2" is the list 1, 2
    ("1,22", "1.22", 0),
    # \! and other digit-group marks
    ("16386.20", "16,\\!386.20", 1),
    ("11111111100", "11,\\!111,\\!111,\\!100", 1),
    ("14916", "14{,}916", 1),
    ("1000", "1\\,000", 1),
    ("16386.20", "16,\\!387.20", 0),
    # percent words
    ("28\\%", "28 percent", 1),
    ("28\\%", "28 pct", 1),
    ("28\\%", "28 percentage", 1),
    ("28\\%", "28\\text{ percent}", 1),
    ("28\\%", "29 percent", 0),
    # scientific notation
    ("1000", "1e3", 1),
    ("1000", "1E3", 1),
    ("0.0005", "5e-4", 1),
    ("1500", "1.5e+3", 1),
    ("1500", "1.5 \\times 10^{3}", 1),
    ("1500", "1.5\\cdot10^3", 1),
    ("1000", "1e4", 0),
    ("0.0005", "5e-3", 0),
    ("1000", "1e99999", 0),  # an absurd exponent is not built
    # matrix environments
    (PMATRIX, "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", 1),
    (PMATRIX, "\\begin{matrix}1&2\\\\3&4\\end{matrix}", 1),
    (PMATRIX, "\\left[\\begin{array}{cc}1&2\\\\3&4\\end{array}\\right]", 1),
    ("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", PMATRIX, 1),
    (PMATRIX, "\\begin{bmatrix}1&2\\\\3&5\\end{bmatrix}", 0),
    (PMATRIX, "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", 0),  # a determinant is a number
    ("-2", "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", 1),
    # \textnormal and friends around units
    ("125", "125\\textnormal{ miles}", 1),
    ("12", "12\\textrm{ cm}", 1),
    ("12", "13\\textnormal{ cm}", 0),
    # several answers: several boxes, "and", \quad
    ("1, 2", "\\boxed{1} and \\boxed{2}", 1),
    ("1, 2", "\\boxed{2}, \\boxed{1}", 1),
    ("(2, 2), (6, 2)", "\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", 1),
    ("1, 2, 3", "1 and 2 and 3", 1),
    ("6, 8", "6 \\text{ and } 8", 1),
    ("1, 2", "1 and 3", 0),
    ("5", "\\boxed{5} or \\boxed{6}", 0),  # hedging is graded as the list of both
    ("6", "\\boxed{5} or \\boxed{6}", 0),
    ("5", "\\boxed{5}, so \\boxed{5}", 1),  # repeating one answer is fine
    # lines: equal up to a nonzero factor after moving everything to one side
    ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", 1),
    ("y=-\\frac12x+\\frac34", "2x+4y-3=0", 1),
    ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", 1),
    ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{2}", 0),
    ("2x+4y-3=0", "y=\\frac{1}{2}x+\\frac{3}{4}", 0),
]


@pytest.mark.parametrize("source", MATH_SOURCES)
@pytest.mark.parametrize("gold, pred, acc", MATH_TABLE)
def test_math_answer_forms(warm_pool, respond, source, gold, pred, acc):
    # Several-box predictions are written as the model would: boxes inside the answer span.
    result = verify(source, respond(pred), _gt(source, gold))
    assert result["acc"] == acc, result


@pytest.mark.parametrize(
    "label, pred, acc",
    [
        ("1000", "1e3", 1),
        ("0.0005", "5e-4", 1),
        ("0.0005", "5 \\times 10^{-4}", 1),
        ("1200", "1.2e3", 1),
        ("1200", "1.2e4", 0),
        ("2.74", "2,74", 1),
        ("1.234", "1,234", 0),
        ("28", "28 percent", 1),
        ("28%", "28 pct", 1),
    ],
)
def test_chartqa_answer_forms(respond, label, pred, acc):
    assert verify("chartqa", respond(pred), [label])["acc"] == acc


@pytest.mark.parametrize("source", ["chartqa", "geometry3k", "virl39k"])
def test_decimal_comma_switch(respond, source):
    assert verify(source, respond("2,74"), _gt(source, "2.74"))["acc"] == 1
    assert verify(source, respond("2,74"), _gt(source, "2.74"), decimal_comma=False)["acc"] == 0
    assert verify(source, respond("1,000"), _gt(source, "1000"), decimal_comma=False)["acc"] == 1


@pytest.mark.parametrize(
    "text, decimal_comma, value",
    [
        ("2,74", True, "2.74"), ("2,74", False, None), ("1,234", True, "1234"), ("0,5", True, "0.5"),
        ("12,345.6", True, "12345.6"), ("1,2,3", True, None), ("5\\times10^{-4}", False, "0.0005"),
        ("1\\times10^{301}", False, None),
    ],
)
def test_parse_number_rules(text, decimal_comma, value):
    from decimal import Decimal
    from fractions import Fraction

    parsed = parse_number(text, decimal_comma=decimal_comma)
    assert (parsed and parsed[0]) == (value and Fraction(Decimal(value)))


def test_several_boxes_scan_is_linear():
    text = "\\boxed{1}" * 50_000 + "\\boxed{" * 50_000
    start = time.perf_counter()
    contents, unclosed = boxed_contents(text)
    assert unclosed and len(contents) == 50_000
    assert extract_answer(f"<answer>{text}</answer>") == (None, "unclosed_boxed")
    assert time.perf_counter() - start < 2.0


def test_gold_with_several_boxes(respond):
    # ViRL39K golds carry one box; a gold with boxes separated by punctuation is a list, a gold
    # with words between its boxes is a worked solution whose last box is the answer.
    assert verify("virl39k", respond("1,2"), "$\\boxed{1}\\boxed{2}$")["acc"] == 1
    assert verify("virl39k", respond("1,2"), "\\boxed{1} no no no \\boxed{2}")["acc"] == 0
    assert verify("virl39k", respond("2"), "\\boxed{1} no no no \\boxed{2}")["acc"] == 1
