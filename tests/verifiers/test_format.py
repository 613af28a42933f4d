import pytest

from verifiers import verify
from verifiers.format import answer_span, check_format, extract_answer, last_boxed

GOOD = "<think>2+2 is 4</think><answer>4</answer>"


@pytest.mark.parametrize(
    "text, strict, lenient",
    [
        (GOOD, 1, 1),
        ("  <think>a</think>\n\n<answer>4</answer>\n", 1, 1),
        ("< think >a</ think ><answer>4</answer>", 1, 1),  # Qwen2.5-VL spacing
        ("<THINK>a</THINK><Answer>4</Answer>", 1, 1),
        ("<think>a</think>So the answer is<answer>4</answer>", 0, 1),  # text between spans
        ("Sure! <think>a</think><answer>4</answer>", 0, 1),  # text before
        ("<think>a</think><answer>4</answer> Hope it helps", 0, 1),  # text after
        ("<answer>4</answer><think>a</think>", 0, 0),  # wrong order
        ("<think>a</think>", 0, 0),  # no answer
        ("<answer>4</answer>", 0, 0),  # no think
        ("<think>a<answer>4</answer>", 0, 0),  # think never closes
        ("<think>a</think><answer>4", 0, 0),  # answer never closes
        ("<think> </think><answer>4</answer>", 0, 0),  # empty think
        ("<think>a</think><answer>  </answer>", 0, 0),  # empty answer
        ("<think>a</think><answer>4</answer><answer>5</answer>", 0, 1),  # two answers
        ("The answer is \\boxed{4}", 0, 0),
        ("", 0, 0),
    ],
)
def test_format_strict_and_lenient(text, strict, lenient):
    assert check_format(text, strict=True) == bool(strict)
    assert check_format(text, strict=False) == bool(lenient)


def test_format_weight_reaches_score_and_is_independent_of_acc():
    # format is logged apart from acc: a well-formatted wrong answer has format 1, acc 0.
    wrong = verify("chartqa", "<think>a</think><answer>5</answer>", ["4"])
    assert (wrong["acc"], wrong["format"]) == (0, 1)
    assert wrong["score"] == pytest.approx(0.1)
    right_unformatted = verify("chartqa", "The answer is \\boxed{4}", ["4"])
    assert (right_unformatted["acc"], right_unformatted["format"]) == (1, 0)
    assert right_unformatted["score"] == pytest.approx(0.9)
    lenient = verify("chartqa", "<think>a</think>so<answer>4</answer>", ["4"], strict_format=False)
    assert lenient["format"] == 1


@pytest.mark.parametrize(
    "text, pred, reason",
    [
        (GOOD, "4", "answer_span"),
        ("<think>a</think><answer>The value is \\boxed{12}.</answer>", "12", "answer_span"),
        # several different boxes in the answer span are several answers, graded as one list
        ("<think>a</think><answer>\\boxed{1} then \\boxed{\\frac{1}{2}}</answer>", "1, \\frac{1}{2}", "answer_span"),
        ("<think>a</think><answer>\\boxed{5}, i.e. \\boxed{5}</answer>", "5", "answer_span"),  # repeats collapse
        ("<think>a</think><answer>\\boxed{\\boxed{5}}</answer>", "5", "answer_span"),
        ("\\boxed{1} reasoning then \\boxed{2}", "2", "boxed_fallback"),  # no span: last box only
        ("<think>\\boxed{9}</think><answer>7</answer>", "7", "answer_span"),  # a box in think is not the answer
        ("<think>a</think><answer>3</answer><answer>5</answer>", "5", "answer_span"),  # last span
        ("<think>a</think><answer>\\boxed {x^{2}}</answer>", "x^{2}", "answer_span"),
        ("no tags but \\boxed{42}", "42", "boxed_fallback"),
        ("no tags, no box: 42", None, "no_answer"),
        ("<think>a</think><answer>\\boxed{5</answer>", None, "unclosed_boxed"),
        ("<think>a</think><answer>\\boxed{5} and \\boxed{6</answer>", None, "unclosed_boxed"),
        ("<think>a</think><answer>   </answer>", None, "empty_answer"),
    ],
)
def test_extract_answer(text, pred, reason):
    assert extract_answer(text) == (pred, reason)


def test_boxed_fallback_switch():
    assert extract_answer("\\boxed{42}", boxed_fallback=False) == (None, "no_answer_span")
    assert verify("chartqa", "\\boxed{42}", ["42"], boxed_fallback=False)["acc"] == 0
    assert verify("chartqa", "\\boxed{42}", ["42"])["acc"] == 1


def test_last_boxed_nested_and_missing():
    assert last_boxed("\\boxed{\\frac{\\sqrt{3}}{2}}") == ("\\frac{\\sqrt{3}}{2}", True)
    assert last_boxed("nothing here") == (None, False)
    assert last_boxed("\\boxed{{{") == (None, True)
    # mathruler's extract_boxed_content says "None" for a missing box; ours tells the cases apart.
    assert last_boxed("\\boxed{None}") == ("None", True)


def test_answer_span_tolerates_tag_spacing():
    assert answer_span("<think>a</think>< answer >B</ answer >") == "B"
    assert answer_span("<answer>unclosed") is None
