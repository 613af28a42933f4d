"""The mechanism signature (docs/algorithm.md sections 2 and 8) and its fit over groups.

With binary rewards, one positive and K' negatives, the z-score inside the subgroup gives the
anchor A_raw(y+) = √K' and every negative A_raw(y−) = −1/√K'. The paper checks this over groups
(Pearson r = 0.998). Over the anchored groups of a run (``care.records`` group records) this module
reports, for the anchor and for the mean of each group's negatives:

- ``r``: Pearson correlation between the group's A_raw and its theoretical value (√K' or
  −1/√K'); 1 when A_raw grows exactly like the theory across K', whatever the reward scale;
- ``r2``: coefficient of determination of the theory itself as the prediction,
  1 − Σ(A − theory)² / Σ(A − mean A)²: 1 only when the values equal the theory (binary rewards);
  format rewards or a second positive in the subgroup lower it.

Without group records the same is computed over the per-step K' buckets the trainer logs
(``care/signature/kp{K'}/{anchor,negative}_raw_mean``), each (step, K') mean one point.
Both are undefined (None) when every point has the same K' (no spread in the theory).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["SideFit", "SignatureFit", "pearson_r", "r2_against", "fit_from_groups", "fit_from_buckets",
           "signature_points_from_groups"]

_BUCKET = re.compile(r"^care/signature/kp(\d+)/(anchor|negative)_raw_mean$")
_ANCHORED_NEGATIVE_ROLES = ("negative", "reflected")


def pearson_r(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 1e-12 or syy <= 1e-12:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def r2_against(theory: list[float], ys: list[float]) -> float | None:
    """1 − SS_res/SS_tot with the theory as the prediction (None with fewer than 2 points or no spread)."""
    if len(ys) < 2:
        return None
    mean = sum(ys) / len(ys)
    ss_tot = sum((y - mean) ** 2 for y in ys)
    ss_res = sum((y - t) ** 2 for y, t in zip(ys, theory))
    if ss_tot <= 1e-12:
        return None
    return 1.0 - ss_res / ss_tot


def anchor_theory(kp: int) -> float:
    return math.sqrt(kp)


def negative_theory(kp: int) -> float:
    return -1.0 / math.sqrt(kp)


@dataclass
class SideFit:
    """The fit of one side (anchor or negatives): points (K', A_raw), r, R², per-K' means."""

    kp: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    r: float | None = None
    r2: float | None = None
    mean_by_kp: dict[int, tuple[float, int]] = field(default_factory=dict)  # K' -> (mean, count)


@dataclass
class SignatureFit:
    """source: ``groups`` (care.records) or ``buckets`` (per-step means); n: points of the anchor side."""

    source: str
    anchor: SideFit
    negative: SideFit

    @property
    def n(self) -> int:
        return len(self.anchor.values)


def _side(points: list[tuple[int, float]], theory) -> SideFit:
    side = SideFit(kp=[p[0] for p in points], values=[p[1] for p in points])
    expected = [theory(k) for k in side.kp]
    side.r = pearson_r(expected, side.values)
    side.r2 = r2_against(expected, side.values)
    by_kp = defaultdict(list)
    for k, v in points:
        by_kp[k].append(v)
    side.mean_by_kp = {k: (sum(v) / len(v), len(v)) for k, v in sorted(by_kp.items())}
    return side


def signature_points_from_groups(groups: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(K', anchor A_raw) and (K', mean negative A_raw) per anchored group (mixed, K' ≥ 1, not a rescue)."""
    anchors, negatives = [], []
    for rec in groups:
        kp, anchor = int(rec.get("k_prime") or 0), rec.get("anchor")
        if rec.get("kind") != "mixed" or kp < 1 or anchor is None or rec.get("rescue"):
            continue
        anchors.append((kp, float(rec["raw_adv"][anchor])))
        neg = [float(a) for role, a in zip(rec["roles"], rec["raw_adv"]) if role in _ANCHORED_NEGATIVE_ROLES]
        if neg:
            negatives.append((kp, sum(neg) / len(neg)))
    return anchors, negatives


def fit_from_groups(groups: list[dict]) -> SignatureFit | None:
    anchors, negatives = signature_points_from_groups(groups)
    if not anchors:
        return None
    return SignatureFit("groups", _side(anchors, anchor_theory), _side(negatives, negative_theory))


def fit_from_buckets(steps: dict[int, dict[str, float]]) -> SignatureFit | None:
    anchors, negatives = [], []
    for step in sorted(steps):
        for key, value in steps[step].items():
            match = _BUCKET.match(key)
            if match and math.isfinite(value):
                (anchors if match.group(2) == "anchor" else negatives).append((int(match.group(1)), value))
    if not anchors:
        return None
    return SignatureFit("buckets", _side(anchors, anchor_theory), _side(negatives, negative_theory))
