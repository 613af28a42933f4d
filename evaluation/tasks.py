"""The lmms-eval tasks behind each benchmark, and the paper's published numbers.

Judge-free reasoning variants of lmms-eval 0.7.3 (``lmms_eval/tasks/*/reasoning/*.yaml``): a
``<think>/<answer>`` system prompt, math-verify and option parsing, metric ``acc_score`` (mean over
samples), up to 49,152 new tokens. The standard MathVista/MathVerse tasks need a GPT judge, and the
standard MMMU ones cap generation at 128/256 tokens, which cuts a reasoning model off.
"""

from __future__ import annotations

BENCHMARKS = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")
LMMS_TASKS = {
    "mathvista": "mathvista_testmini_cot_reasoning",
    "mathverse": "mathverse_testmini_reasoning",
    "mathvision": "mathvision_reason_test_reasoning",
    "mmmu": "mmmu_val_reasoning",
    "mmmu_pro_standard": "mmmu_pro_standard_cot_reasoning",
    "mmmu_pro_vision": "mmmu_pro_vision_cot_reasoning",
}
# MATH-Vision's 304-problem testmini (build_bench.py --mathvision-split testmini; run_eval --mathvision-split).
MATHVISION_TESTMINI_TASK = "mathvision_reason_testmini_reasoning"
METRIC = "acc_score"  # lmms-eval writes it as "acc_score,none" (metric,filter)
TITLES = {"mathvista": "MathVista", "mathverse": "MathVerse", "mathvision": "MATH-Vision", "mmmu": "MMMU",
          "mmmu_pro_standard": "MMMU-Pro std", "mmmu_pro_vision": "MMMU-Pro vision"}

# CARE paper (arXiv 2512.19554), single-pass accuracy in %, in BENCHMARKS order.
PAPER_ROWS = {
    "Qwen2.5-VL-7B-Instruct (paper)": (68.6, 49.2, 22.4, 61.3, 36.3, 32.8),
    "+GRPO (paper)": (68.9, 50.8, 25.7, 61.1, 36.4, 32.8),
    "+DAPO (paper)": (72.6, 54.2, 29.4, 61.6, 37.3, 34.7),
    "+GSPO (paper)": (74.1, 56.0, 31.6, 62.2, 38.9, 36.4),
    "+CARE (paper)": (74.7, 56.8, 32.6, 62.5, 39.7, 37.1),
    "Qwen3-VL-8B + CARE (paper)": (82.1, 69.7, 61.7, 71.0, 46.7, 41.7),
}
# Macro averages the paper states (its own rounding; the row means differ in the last digit).
PAPER_MACRO = {"+GRPO (paper)": 45.95, "+DAPO (paper)": 48.30, "+GSPO (paper)": 49.87, "+CARE (paper)": 50.57}
