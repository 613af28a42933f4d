"""The verl custom_reward_function of benchmarks/bench_rgr_rollout.py: acc = the <answer> equals the ground truth.

A file of its own: verl loads it by path (``load_extern_object``), outside the benchmark's module.
"""

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    found = re.search(r"<answer>(.*?)</answer>", solution_str, re.S)
    acc = int(found is not None and found.group(1).strip() == str(ground_truth))
    return {"score": float(acc), "acc": acc, "format": int(found is not None)}
