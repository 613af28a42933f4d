import pytest

from verifiers import verify
from verifiers.virl39k import gold_answer, gold_choice


@pytest.mark.parametrize(
    "pred, gold, acc",
    [
        # multiple choice: the letter, with or without parentheses, or with its option text
        ("B", "\\boxed{B}", 1),
        ("(B)", "\\boxed{B}", 1),
        ("B)", "\\boxed{B}", 1),
        ("B.", "\\boxed{B}", 1),
        ("B: 12 cm", "\\boxed{B}", 1),
        ("(B) 12 cm", "\\boxed{B}", 1),
        ("\\text{B}", "\\boxed{B}", 1),
        ("$B$", "\\boxed{B}", 1),
        ("(b)", "\\boxed{B}", 1),
        ("Option B", "\\boxed{B}", 1),
        ("C", "\\boxed{B}", 0),
        ("(C) 12 cm", "\\boxed{B}", 0),
        ("12 cm", "\\boxed{B}", 0),
        ("BC", "\\boxed{B}", 0),
        ("K", "\\boxed{K}", 1),
        ("(A)", "\\boxed{(A)}", 1),
        # text answers: normalised string match, never symbolic
        ("stop", "\\boxed{stop}", 1),
        ("pots", "\\boxed{stop}", 0),  # math-verify would say equal
        ("tops", "\\boxed{stop}", 0),
        ("Stop.", "\\boxed{stop}", 1),
        ("\\text{increasing}", "\\boxed{\\text{increasing}}", 1),
        ("decreasing", "\\boxed{\\text{increasing}}", 0),
        ("Yes", "\\boxed{Yes}", 1),
        ("no", "\\boxed{Yes}", 0),
        ("None", "\\boxed{None}", 1),
        # numbers and expressions: math-verify equivalence
        ("17", "\\boxed{17^\\circ}", 1),
        ("17^\\circ", "\\boxed{17}", 1),
        ("18", "\\boxed{17^\\circ}", 0),
        ("\\frac{1}{2}", "\\boxed{0.5}", 1),
        ("0.5", "\\boxed{\\frac{1}{2}}", 1),
        ("1,000", "\\boxed{1000}", 1),
        ("45\\%", "\\boxed{45\\%}", 1),
        ("x^2+1", "\\boxed{1+x^2}", 1),
        ("x^2-1", "\\boxed{(x-1)(x+1)}", 1),
        ("x^2+2", "\\boxed{1+x^2}", 0),
        ("(1,2)", "\\boxed{(1, 2)}", 1),
        ("[1,2)", "\\boxed{(1,2)}", 0),
        ("2^{2010}", "\\boxed{2^{2010}}", 1),
        ("y=2x+1", "\\boxed{y=2x+1}", 1),
        ("x=3", "\\boxed{3}", 1),
        ("\\infty", "\\boxed{\\infty}", 1),
        ("3", "\\boxed{4}", 0),
        ("\\sqrt{2}/2", "\\boxed{\\frac{\\sqrt{2}}{2}}", 1),
        ("3.46", "\\boxed{2\\sqrt{3}}", 1),
    ],
)
def test_virl39k_table(respond, pred, gold, acc):
    result = verify("virl39k", respond(pred), gold)
    assert result["acc"] == acc, result
    assert result["verifier"] == "virl39k"


def test_text_answers_never_reach_symbolic(respond, monkeypatch):
    import verifiers.math_equal as math_equal

    def boom(*args, **kwargs):
        raise AssertionError("symbolic comparison called for a word answer")

    monkeypatch.setattr(math_equal, "symbolic_compare", boom)
    for pred in ("pots", "tops", "opts", "stop"):
        result = verify("TIGER-Lab/ViRL39K", respond(pred), "\\boxed{stop}")
        assert result["acc"] == (pred == "stop"), result
        assert not result["reason"].startswith("internal_error")


def test_gold_parsing():
    assert gold_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert gold_answer("12") == "12"
    assert gold_choice("B") == "B" and gold_choice("(C)") == "C" and gold_choice("\\text{D}") == "D"
    assert gold_choice("x") is None and gold_choice("AB") is None and gold_choice("L") is None
