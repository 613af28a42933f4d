"""The six benchmark sources through ``verifiers.verify``: a table per benchmark answer style.

Each row: (source, gold, extra_info, prediction, expected acc). The extra_info is what
``data_prep/build_bench.py`` writes for that benchmark's rows.
"""

import numpy as np
import pytest

from verifiers import VERIFIERS, resolve_source, verify
from verifiers.benchmarks import BENCHMARK_NAMES

pytestmark = pytest.mark.timeout(120)


def mc(choices):
    return {"question_type": "multi_choice", "choices": choices, "answer_type": "text", "precision": None,
            "unit": "", "answers": None}


def ff(answers=None, answer_type="text", precision=None, unit=""):
    return {"question_type": "free_form", "choices": [], "answer_type": answer_type, "precision": precision,
            "unit": unit, "answers": answers}


VISTA_MC = mc(["the left one", "the middle one", "the right one", "0.5"])
VERSE_MC = mc(["30°", "45°", "60°", "90°"])
MMMU_MC = mc(["$2\\pi$", "$4\\pi$", "a bar chart", "A cat"])
PRO10 = mc([f"option {k}" for k in range(10)])

TABLE = [
    # MathVista multiple choice (gold stored as the letter of the option text)
    ("mathvista", "B", VISTA_MC, "B", 1),
    ("mathvista", "B", VISTA_MC, "(B)", 1),
    ("mathvista", "B", VISTA_MC, "B.", 1),
    ("mathvista", "B", VISTA_MC, "B. the middle one", 1),
    ("mathvista", "B", VISTA_MC, "The Middle One.", 1),
    ("mathvista", "B", VISTA_MC, "\\boxed{B}", 1),
    ("mathvista", "B", VISTA_MC, "b", 1),
    ("mathvista", "D", VISTA_MC, "\\frac{1}{2}", 1),  # an option's value, written differently
    ("mathvista", "B", VISTA_MC, "C", 0),
    ("mathvista", "B", VISTA_MC, "the right one", 0),
    ("mathvista", "B", VISTA_MC, "C. the middle one", 0),  # letter and text disagree
    ("mathvista", "B", VISTA_MC, "B. the right one", 0),
    ("mathvista", "B", VISTA_MC, "E", 0),  # not an option
    ("mathvista", "B", VISTA_MC, "middle", 0),
    ("mathvista", "B", VISTA_MC, "The answer is B because the middle bar is tallest", 0),
    ("mathvista", "B", VISTA_MC, "B or C", 0),
    ("mathvista", "B", VISTA_MC, "", 0),
    # MathVista free form: integer, float with precision, unit, text, list
    ("mathvista", "3", ff(answer_type="integer"), "3", 1),
    ("mathvista", "3", ff(answer_type="integer"), "3.0", 1),
    ("mathvista", "3", ff(answer_type="integer"), "4", 0),
    ("mathvista", "1.5", ff(answer_type="float", precision=1), "1.5", 1),
    ("mathvista", "1.5", ff(answer_type="float", precision=1), "1.54", 1),  # the benchmark rounds to 1 decimal
    ("mathvista", "1.5", ff(answer_type="float", precision=1), "3/2", 1),
    ("mathvista", "1.5", ff(answer_type="float", precision=1), "1.56", 0),
    ("mathvista", "1.5", ff(answer_type="float", precision=1), "15", 0),
    ("mathvista", "0.67", ff(answer_type="float", precision=2), "0.667", 1),
    ("mathvista", "0.67", ff(answer_type="float", precision=2), "0.7", 0),
    ("mathvista", "12", ff(answer_type="integer", unit="cm"), "12 cm", 1),
    ("mathvista", "12", ff(answer_type="integer", unit="cm"), "13 cm", 0),
    ("mathvista", "Yes", ff(answer_type="text"), "yes", 1),
    ("mathvista", "Yes", ff(answer_type="text"), "no", 0),
    ("mathvista", "[1, 2, 3]", ff(answer_type="list"), "[1, 2, 3]", 1),
    ("mathvista", "[1, 2, 3]", ff(answer_type="list"), "[1, 2, 4]", 0),
    # MathVerse: letters (options inside the question), free-form math
    ("mathverse", "B", VERSE_MC, "B", 1),
    ("mathverse", "B", VERSE_MC, "45°", 1),
    ("mathverse", "B", VERSE_MC, "B:45°", 1),
    ("mathverse", "B", VERSE_MC, "45", 1),
    ("mathverse", "B", VERSE_MC, "60°", 0),
    ("mathverse", "B", VERSE_MC, "A", 0),
    ("mathverse", "C", mc([]), "C", 1),  # Vision Only: the options are in the image
    ("mathverse", "C", mc([]), "(c)", 1),
    ("mathverse", "C", mc([]), "D", 0),
    ("mathverse", "C", mc([]), "C. 12", 0),  # the options are not known: only a bare letter counts
    ("mathvista", "B", VISTA_MC, "B because it is the tallest", 0),
    ("mathvista", "B", VISTA_MC, "option B", 1),
    ("mathverse", "24", ff(), "24", 1),
    ("mathverse", "2\\sqrt{3}", ff(), "\\sqrt{12}", 1),
    ("mathverse", "2\\sqrt{3}", ff(), "3.46", 1),
    ("mathverse", "2\\sqrt{3}", ff(), "3.5", 0),
    ("mathverse", "\\frac{3}{2}", ff(), "1.5", 1),
    ("mathverse", "y=2x+1", ff(), "y=2x+1", 1),
    ("mathverse", "y=2x+1", ff(), "y=2x+2", 0),
    ("mathverse", "x \\leq 2", ff(), "x < 2", 0),
    # MATH-Vision: letters over five options, free-form values
    ("mathvision", "C", mc(["1", "2", "3", "4", "5"]), "C", 1),
    ("mathvision", "C", mc(["1", "2", "3", "4", "5"]), "3", 1),
    ("mathvision", "C", mc(["1", "2", "3", "4", "5"]), "C. 3", 1),
    ("mathvision", "C", mc(["1", "2", "3", "4", "5"]), "C. 4", 0),
    ("mathvision", "C", mc(["1", "2", "3", "4", "5"]), "4", 0),
    ("mathvision", "7", ff(), "7", 1),
    ("mathvision", "7", ff(), "seven", 0),
    ("mathvision", "\\frac{3}{2}", ff(), "\\dfrac{3}{2}", 1),
    ("mathvision", "\\frac{3}{2}", ff(), "\\frac{2}{3}", 0),
    # MMMU: letters with LaTeX and word options; open questions with several accepted answers
    ("mmmu", "B", MMMU_MC, "B", 1),
    ("mmmu", "B", MMMU_MC, "$4\\pi$", 1),
    ("mmmu", "B", MMMU_MC, "4\\pi", 1),
    ("mmmu", "B", MMMU_MC, "2\\pi", 0),
    ("mmmu", "D", MMMU_MC, "A cat", 1),  # an option's text starting with a letter is that option
    ("mmmu", "A", MMMU_MC, "A cat", 0),
    ("mmmu", "C", MMMU_MC, "a bar chart", 1),
    ("mmmu", "24.5", ff(answers=["24.5", "24.50"]), "24.5", 1),
    ("mmmu", "24.5", ff(answers=["24.5", "24.50"]), "$24.50", 1),
    ("mmmu", "24.5", ff(answers=["24.5", "24.50"]), "24", 0),
    ("mmmu", "24.5", ff(answers=["24.5", "24.50"]), "124.5", 0),  # MMMU's substring rule would accept it
    ("mmmu", "triangle", ff(answers=["triangle"]), "Triangle", 1),
    ("mmmu", "triangle", ff(answers=["triangle"]), "a right triangle", 0),
    ("mmmu", "2", ff(answers=["2"]), "12", 0),
    # MMMU-Pro: ten options, letters up to J
    ("mmmu_pro_standard", "H", PRO10, "H", 1),
    ("mmmu_pro_standard", "H", PRO10, "(H)", 1),
    ("mmmu_pro_standard", "H", PRO10, "option 7", 1),
    ("mmmu_pro_standard", "H", PRO10, "J", 0),
    ("mmmu_pro_standard", "H", PRO10, "K", 0),  # past the last option
    ("mmmu_pro_vision", "J", PRO10, "J", 1),
    ("mmmu_pro_vision", "J", PRO10, "J. option 9", 1),
    ("mmmu_pro_vision", "J", PRO10, "I", 0),
    ("mmmu_pro_vision", "J", PRO10, "J. option 3", 0),
]


@pytest.mark.parametrize("source, gold, info, pred, expected", TABLE)
def test_table(warm_pool, respond, source, gold, info, pred, expected):
    result = verify(source, respond(pred), gold, info)
    assert result["acc"] == expected, result


def test_every_benchmark_has_a_table_with_both_outcomes():
    for name in BENCHMARK_NAMES:
        outcomes = {exp for src, *_, exp in TABLE if src == name}
        assert outcomes == {0, 1}, name
        assert name in VERIFIERS and resolve_source(name) == name


def test_extra_info_as_verl_passes_it(warm_pool, respond):
    """verl hands list columns to the reward function as numpy arrays."""
    info = {**VISTA_MC, "choices": np.array(VISTA_MC["choices"], dtype=object)}
    assert verify("mathvista", respond("the middle one"), "B", info)["acc"] == 1
    assert verify("mmmu", respond("24.50"), np.array(["24.5"], dtype=object),
                  {**ff(), "answers": np.array(["24.5", "24.50"], dtype=object)})["acc"] == 1


def test_bare_call_reads_a_letter_gold_as_multiple_choice(warm_pool, respond):
    assert verify("mmmu_pro_vision", respond("(C)"), "C")["acc"] == 1
    assert verify("mmmu_pro_vision", respond("D"), "C")["acc"] == 0


@pytest.mark.parametrize("source", BENCHMARK_NAMES)
@pytest.mark.parametrize("response", [None, 12, "", "<answer>" + "9^" * 5000 + "9</answer>",
                                      "<think></think><answer>\\frac{" * 300 + "</answer>",
                                      "<think>x</think><answer>B\x00</answer>"])
def test_never_raises_on_hostile_output(warm_pool, source, response):
    for info in (None, VISTA_MC, ff(answer_type="float", precision=1), {"choices": "not a list"}):
        result = verify(source, response, "B" if info is VISTA_MC else "1.5", info)
        assert result["acc"] == 0 and not result["reason"].startswith("internal_error"), result


def test_multiple_choice_gold_must_be_a_letter(respond):
    assert verify("mmmu", respond("B"), "24", mc(["1", "2"]))["reason"] == "gold_not_a_letter"
