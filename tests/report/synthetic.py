"""Synthetic group records: what ``build_group_records`` writes for ideal groups (binary rewards)."""

from __future__ import annotations

import math


def ideal_group(step: int, uid: str, k_prime: int, n: int = 6, k: int = 4) -> dict:
    """One positive (the anchor, slot 0), K' negatives, the rest outside S: A_raw = √K' / −1/√K'."""
    roles = ["anchor"] + ["negative"] * k_prime + ["none"] * (n - 1 - k_prime)
    raw = [math.sqrt(k_prime)] + [-1 / math.sqrt(k_prime)] * k_prime + [0.0] * (n - 1 - k_prime)
    eq = math.sqrt(k / k_prime)
    adv = [raw[0] * eq] + [-0.5 * abs(r) * eq for r in raw[1:1 + k_prime]] + [0.0] * (n - 1 - k_prime)
    return {"step": step, "group": uid, "kind": "mixed", "k": k, "k_prime": k_prime, "equalize": eq,
            "rescue": False, "anchor": 0, "roles": roles, "acc": [1] + [0] * (n - 1), "reflected": [False] * n,
            "raw_adv": raw, "adv": adv}
