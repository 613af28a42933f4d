"""Outside oracle: math-verify's own test cases, run through ``verifiers.verify`` for ViRL39K.

``data/math_verify_cases.jsonl`` holds the (gold, prediction, expected) cases of the
huggingface/Math-Verify tests at the commit named in its first line, with file and line
(regenerate with ``data/make_math_verify_cases.py``). A prediction is graded as a model answer:
``<think>…</think><answer>{prediction}</answer>``; the gold goes in as the ground truth.

- ``data/math_verify_not_applicable.jsonl``: cases outside what our verifiers do (answers to be
  found in prose, options we never set), each with its reason; excluded from the figures.
- ``data/math_verify_deliberate.jsonl``: cases we decide differently on purpose, each with its
  reason. Each must still differ, so the list cannot rot.

On the remaining (applicable) cases: no false positive, and at most 2 % false negatives outside
the deliberate list (which may hold at most 5 % of the applicable cases).
"""

import json
from pathlib import Path

import pytest

from verifiers import verify

DATA = Path(__file__).parent / "data"
MAX_FALSE_NEGATIVE_RATE = 0.02  # unlisted false negatives over applicable positive cases
MAX_DELIBERATE_SHARE = 0.05  # the deliberate list may not grow into a dumping ground
SOURCE = "virl39k"  # math-verify is the reference of ViRL39K's authors


def _jsonl(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


HEADER, *CASES = _jsonl("math_verify_cases.jsonl")
BY_ID = {case["id"]: case for case in CASES}
NOT_APPLICABLE = {row["case"]: row for row in _jsonl("math_verify_not_applicable.jsonl")}
DELIBERATE = {row["case"]: row for row in _jsonl("math_verify_deliberate.jsonl")}


def grade(case) -> int:
    return verify(SOURCE, f"<think>t</think><answer>{case['pred']}</answer>", case["gold"], timeout_s=10)["acc"]


@pytest.fixture(scope="module")
def ours(warm_pool):
    return {case["id"]: grade(case) for case in CASES}


def agreement(ours: dict) -> dict:
    applicable = [c for c in CASES if c["id"] not in NOT_APPLICABLE]
    judged = [c for c in applicable if c["id"] not in DELIBERATE]
    fn = [c["id"] for c in judged if c["expected"] == 1 and ours[c["id"]] == 0]
    fp = [c["id"] for c in judged if c["expected"] == 0 and ours[c["id"]] == 1]
    positives = sum(c["expected"] == 1 for c in applicable)
    return {
        "cases": len(CASES), "not_applicable": len(NOT_APPLICABLE), "applicable": len(applicable),
        "deliberate": len(DELIBERATE), "agree": sum(ours[c["id"]] == c["expected"] for c in applicable),
        "false_negatives": fn, "false_positives": fp, "applicable_positives": positives,
        "false_negative_rate": len(fn) / positives,
        # with the deliberate differences counted as false negatives too
        "false_negative_rate_incl_deliberate": sum(c["expected"] == 1 and ours[c["id"]] == 0 for c in applicable)
        / positives,
    }


def test_table_is_data_from_math_verify():
    assert HEADER["source"] == "https://github.com/huggingface/Math-Verify" and len(HEADER["commit"]) == 40
    assert len(CASES) >= 250 and len(BY_ID) == len(CASES)
    assert all(c["file"].startswith("tests/") and c["line"] > 0 and c["expected"] in (0, 1) for c in CASES)
    assert set(NOT_APPLICABLE) <= set(BY_ID) and set(DELIBERATE) <= set(BY_ID)
    assert not set(NOT_APPLICABLE) & set(DELIBERATE)
    assert all(row["reason"] for row in [*NOT_APPLICABLE.values(), *DELIBERATE.values()])


def test_not_applicable_labels_are_honest():
    for case_id, row in NOT_APPLICABLE.items():
        case = BY_ID[case_id]
        if row["kind"] == "prose_prediction":  # nothing boxed: the answer would have to be found in prose
            assert "boxed" not in case["pred"], case_id
        elif row["kind"] == "prose_gold":
            assert "boxed" not in case["gold"] and len(case["gold"]) > 200, case_id
        elif row["kind"].startswith("option_"):
            assert set(case["options"]) & {"precision", "strict", "allow_set_relation_comp"}, case_id
            assert case["options"].get("precision", 6) != 6 or case["options"].get("strict", True) is False \
                or case["options"].get("allow_set_relation_comp") is True, case_id
        else:
            pytest.fail(f"unknown kind {row['kind']!r}")


def test_deliberate_differences_still_differ(ours):
    still_agree = [case_id for case_id, row in DELIBERATE.items()
                   if ours[case_id] == BY_ID[case_id]["expected"] or ours[case_id] != row["ours"]]
    assert not still_agree, f"no longer a deliberate difference, remove from the table: {still_agree}"


def test_agreement_with_math_verify(ours):
    stats = agreement(ours)
    print(json.dumps({k: v for k, v in stats.items()}, indent=1))
    assert not stats["false_positives"], stats["false_positives"]
    assert stats["false_negative_rate"] <= MAX_FALSE_NEGATIVE_RATE, stats
    assert stats["deliberate"] <= MAX_DELIBERATE_SHARE * stats["applicable"], stats
