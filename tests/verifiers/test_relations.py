"""Relations, negations, converse and chained inequalities, equations vs bare expressions.

Every case runs with the gold and the prediction each written in every spelling (ASCII ``<=``,
LaTeX ``\\leq`` and ``\\le``, Unicode ``≤``), through every source that grades math. A wrong
relation must never score (RL would learn to exploit it); the same relation in another spelling
must.
"""

import itertools

import pytest

from verifiers import verify
from verifiers.normalize import canonical_relations, clean_math, inequality_signature

SPELLINGS = {
    "ascii": {"le": "<=", "ge": ">=", "ne": "!=", "lt": "<", "gt": ">"},
    "latex": {"le": "\\leq", "ge": "\\geq", "ne": "\\neq", "lt": "\\lt", "gt": "\\gt"},
    "latex_short": {"le": "\\le", "ge": "\\ge", "ne": "\\ne", "lt": "<", "gt": ">"},
    "unicode": {"le": "≤", "ge": "≥", "ne": "≠", "lt": "<", "gt": ">"},
}
MATH_SOURCES = ["geometry3k", "virl39k"]

# (gold, prediction): must NOT match in any spelling.
WRONG = [
    # converse and strictness
    ("x {le} 2", "x {ge} 2"),
    ("x {le} 2", "x {lt} 2"),
    ("x {lt} 2", "x {le} 2"),
    ("x {ge} 2", "x {gt} 2"),
    ("x {gt} 0", "x {ge} 0"),
    ("x {lt} 2", "x {gt} 2"),
    ("x {le} 2", "2 {le} x"),  # sides swapped without turning the operator: x >= 2
    ("x {lt} 2", "2 {lt} x"),
    ("x {gt} 5", "5 {gt} x"),
    ("-x {ge} -1", "x {ge} 1"),
    ("x {lt} 2", "-x {lt} -2"),
    ("2x {le} 6", "x {le} 6"),
    # other bound
    ("x {le} 2", "x {le} 3"),
    ("x {ge} -1", "x {ge} 1"),
    ("x {le} 2.5", "x {le} 2"),
    # relation vs value, value vs relation
    ("x {le} 2", "2"),
    ("x {le} 2", "x = 2"),
    ("x = 2", "x {ge} 2"),
    ("x = 2", "x {le} 2"),
    ("2", "x {ge} 2"),
    ("2", "x {ne} 2"),
    ("x^2 {ge} 4", "x^2 = 4"),
    # negations
    ("x {ne} 3", "3"),
    ("x {ne} 3", "x = 3"),
    ("x = 3", "x {ne} 3"),
    ("x {ne} 3", "x {lt} 3"),
    ("x {lt} 3", "x {ne} 3"),
    ("a {ne} b", "a = b"),
    ("x {ne} 0", "0"),
    # chained inequalities
    ("1 {lt} x {lt} 3", "1 {le} x {le} 3"),
    ("1 {lt} x {lt} 3", "1 {lt} x {le} 3"),
    ("1 {lt} x {lt} 3", "x {lt} 3"),
    ("1 {lt} x {lt} 3", "x {gt} 1"),
    ("1 {lt} x {lt} 3", "1 {lt} x {lt} 4"),
    ("1 {lt} x {lt} 3", "3 {gt} x {ge} 1"),
    ("1 {lt} x {lt} 3", "1 {gt} x {gt} 3"),
    ("x {ne} 3", "3 {ne} y"),
    ("0 {lt} y {lt} 1", "[0, 1]"),
    ("x {lt} 2", "(2, \\infty)"),
    # equations vs bare expressions; a number on the left is not a name to drop
    ("7 = 11a+c", "11a+c"),
    ("7 = 11a+c", "7"),
    ("y = 2x+1", "x = 2x+1"),
    ("y = 2x+1", "y {le} 2x+1"),
    ("y {le} 2x+1", "y = 2x+1"),
    ("y = 2x+1", "y = 4x+2"),
]

# (gold, prediction): must match in every spelling.
RIGHT = [
    ("x {le} 2", "x {le} 2"),
    ("x {le} 2", "2 {ge} x"),
    ("x {lt} 3", "3 {gt} x"),
    ("x {ge} 5", "5 {le} x"),
    ("x {le} 1", "-x {ge} -1"),
    ("x {ne} 3", "x {ne} 3"),
    ("1 {lt} x {lt} 3", "1 {lt} x {lt} 3"),
    ("1 {le} x {lt} 3", "1 {le} x {lt} 3"),
    ("1 {lt} x {lt} 3", "3 {gt} x {gt} 1"),  # a chain read from the other end
    ("1 {le} x {lt} 3", "3 {gt} x {ge} 1"),
    ("x {ne} 3", "3 {ne} x"),
    ("0 {lt} y {lt} 1", "(0, 1)"),
    ("x = 2", "2"),
    ("x = 2", "x = 2"),
    ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}"),  # a line, rearranged and scaled
    ("x^2+y^2=1", "2x^2+2y^2=2"),
]


def _spell(template: str, style: str) -> str:
    for name, op in SPELLINGS[style].items():  # not str.format: LaTeX has braces of its own
        template = template.replace("{" + name + "}", op)
    return template


def _variants(gold: str, pred: str):
    seen = set()
    for g_style, p_style in itertools.product(SPELLINGS, SPELLINGS):
        pair = (_spell(gold, g_style), _spell(pred, p_style))
        if pair not in seen:
            seen.add(pair)
            yield pair


def _ground_truth(source: str, gold: str) -> str:
    return f"\\boxed{{{gold}}}" if source == "virl39k" else gold


def test_tables_are_big_enough():
    spelled_wrong = {pair for g, p in WRONG for pair in _variants(g, p)}
    assert len(WRONG) >= 40 and len(spelled_wrong) >= 3 * 40


@pytest.mark.parametrize("source", MATH_SOURCES)
@pytest.mark.parametrize("gold, pred", WRONG)
def test_no_false_positive_on_relations(warm_pool, respond, source, gold, pred):
    accepted = [(g, p) for g, p in _variants(gold, pred)
                if verify(source, respond(p), _ground_truth(source, g))["acc"]]
    assert not accepted, accepted


@pytest.mark.parametrize("source", MATH_SOURCES)
@pytest.mark.parametrize("gold, pred", RIGHT)
def test_same_relation_in_any_spelling_matches(warm_pool, respond, source, gold, pred):
    rejected = [(g, p, r["reason"]) for g, p in _variants(gold, pred)
                for r in [verify(source, respond(p), _ground_truth(source, g))] if not r["acc"]]
    assert not rejected, rejected


@pytest.mark.parametrize("style", sorted(SPELLINGS))
def test_one_canonical_spelling(style):
    assert " ".join(canonical_relations(_spell("x {le} 1 {lt} y {ne} z {ge} w {gt} v", style)).split()) == \
        "x \\leq 1 < y \\neq z \\geq w > v"


@pytest.mark.parametrize(
    "text, kept",
    [
        ("x <= 2", "x \\leq 2"),  # never split on the `=` inside `<=`
        ("x != 3", "x \\neq 3"),
        ("7 = 11a+c", "7 = 11a+c"),  # a number on the left is not a variable name
        ("y = 2x+1", "y = 2x+1"),  # an equation with variables on the right is kept whole
        ("x = 48", "48"),  # a name equal to a value: the value
        ("m\\angle ABC = 48", "48"),
        ("\\left( x \\right) \\le 2", "( x ) \\leq 2"),  # \left is not \le followed by "ft"
    ],
)
def test_clean_math_keeps_relations(text, kept):
    assert " ".join(clean_math(text).split()) == " ".join(kept.split())


def test_signature_is_direction_free():
    assert inequality_signature(clean_math("x < 2")) == inequality_signature(clean_math("2 > x"))
    assert inequality_signature(clean_math("x >= 2")) == inequality_signature(clean_math("2 \\le x"))
    assert inequality_signature(clean_math("x < 2")) != inequality_signature(clean_math("x <= 2"))
    assert inequality_signature(clean_math("x = 2")) == ()
