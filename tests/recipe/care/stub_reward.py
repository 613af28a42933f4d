"""A verl custom_reward_function for the adapter tests: acc = the <answer> equals the ground truth."""

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    found = re.search(r"<answer>(.*?)</answer>", solution_str, re.S)
    acc = int(found is not None and found.group(1).strip() == str(ground_truth))
    return {"score": float(acc), "acc": acc, "format": int(found is not None)}
