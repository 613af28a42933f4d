"""CARE's per-step diagnostics (docs/algorithm.md section 8), pure functions over the advantage step.

All inputs are the real (non-padding) rows of one step; every value returned is a plain float,
ready for verl's metrics dict (and so for every verl logger). Names:

- ``care/failure_signal_share``: Σ_{acc=0} Σ_t |a_t| / Σ_all Σ_t |a_t|.
- ``care/variance_ratio``: E[A²] over the negatives of anchored subgroups / E[A²] over their
  positives. With equalisation every anchor gets exactly √K, so the plain variance of the
  positives is 0; the second moment about 0 (each row's contribution to the gradient variance)
  is the ratio that stays finite. ``care/adv_var/{negatives,positives}`` are the plain variances.
- ``care/signature/kp{K'}/{anchor,negative}_raw_mean``: mean A_raw of anchors / negatives of mixed
  groups with that K'; with binary rewards they equal √K' and −1/√K' exactly.
- ``care/k_prime/{K'}``: number of groups per K' (0 = no subgroup: all correct, or all wrong
  without rescue); ``care/groups/{all_correct,mixed,all_wrong}_frac``; ``care/rescue_rate``:
  share of all-wrong groups that got a rescue subgroup.
- ``care/adv/{anchor,negative,reflected,rescue_anchor,rescue_negative}_mean``: final advantages.
- ``care/acc``, ``care/format`` and ``care/acc/<data_source>``, ``care/format/<data_source>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from recipe.care.core_algos import ROLE_NAMES

_GROUP_KINDS = ("all_correct", "mixed", "all_wrong")
_MIXED = 1
_ALL_WRONG = 2


def _role(name: str) -> int:
    return ROLE_NAMES.index(name)


def _mean(values: torch.Tensor) -> float | None:
    return float(values.float().mean()) if values.numel() else None


def care_advantage_metrics(
    seq_adv: torch.Tensor,
    token_adv: torch.Tensor,
    acc: torch.Tensor,
    info: Mapping[str, torch.Tensor],
    k: int,
) -> dict[str, float]:
    """Section-8 diagnostics of one advantage step.

    seq_adv: float [B]; token_adv: float [B, L]; acc: [B] 0/1; info: the per-row dict returned by
    ``compute_care_sequence_advantages`` (role, in_subgroup, raw_adv, k_prime, group_kind, group_id);
    k: the configured K (K' buckets 0..K).
    """
    metrics: dict[str, float] = {}
    acc = torch.as_tensor(acc).bool()
    role, members, raw = info["role"], info["in_subgroup"].bool(), info["raw_adv"].float()
    group_kind, group_id, k_prime = info["group_kind"], info["group_id"], info["k_prime"]
    seq_adv = seq_adv.float()

    signal = token_adv.float().abs().sum(dim=-1)
    total = float(signal.sum())
    metrics["care/failure_signal_share"] = float(signal[~acc].sum()) / total if total > 0 else 0.0

    mixed_rows = group_kind == _MIXED
    neg = members & mixed_rows & ~acc
    pos = members & mixed_rows & acc
    if neg.any() and pos.any():
        pos_moment = float((seq_adv[pos] ** 2).mean())
        if pos_moment > 0:
            metrics["care/variance_ratio"] = float((seq_adv[neg] ** 2).mean()) / pos_moment
        metrics["care/adv_var/negatives"] = float(seq_adv[neg].var(unbiased=False))
        metrics["care/adv_var/positives"] = float(seq_adv[pos].var(unbiased=False))

    for kp in range(1, k + 1):
        bucket = mixed_rows & (k_prime == kp)
        for name in ("anchor", "negative"):
            value = _mean(raw[bucket & (role == _role(name))])
            if value is not None:
                metrics[f"care/signature/kp{kp}/{name}_raw_mean"] = value

    # One entry per group: its kind and K'.
    n_groups = int(group_id.max()) + 1 if group_id.numel() else 0
    kind_of = torch.full((n_groups,), -1, dtype=torch.long)
    kp_of = torch.zeros(n_groups, dtype=torch.long)
    rescued_of = torch.zeros(n_groups, dtype=torch.bool)
    kind_of[group_id] = group_kind.long()
    kp_of[group_id] = k_prime.long()
    rescued_of[group_id[role == _role("rescue_anchor")]] = True
    present = kind_of >= 0
    metrics["care/groups/count"] = float(present.sum())
    for kind_index, kind in enumerate(_GROUP_KINDS):
        metrics[f"care/groups/{kind}_frac"] = float((kind_of[present] == kind_index).float().mean()) if present.any() else 0.0
    for kp in range(0, k + 1):
        metrics[f"care/k_prime/{kp}"] = float((kp_of[present] == kp).sum())
    all_wrong = kind_of == _ALL_WRONG
    if all_wrong.any():
        metrics["care/rescue_rate"] = float(rescued_of[all_wrong].float().mean())

    for name in ("anchor", "negative", "reflected", "rescue_anchor", "rescue_negative"):
        value = _mean(seq_adv[role == _role(name)])
        if value is not None:
            metrics[f"care/adv/{name}_mean"] = value
    metrics["care/subgroup_frac"] = float(members.float().mean()) if members.numel() else 0.0
    return metrics


def data_source_metrics(data_source: Sequence[str], acc: torch.Tensor, fmt: torch.Tensor | None) -> dict[str, float]:
    """Train accuracy and format rate overall and per ``data_source`` (real rows only)."""
    acc = torch.as_tensor(acc).float()
    sources = np.asarray([str(s) for s in data_source], dtype=object)
    metrics = {"care/acc": float(acc.mean())} if acc.numel() else {}
    if fmt is not None and acc.numel():
        metrics["care/format"] = float(torch.as_tensor(fmt).float().mean())
    for source in sorted(set(sources.tolist())):
        rows = torch.from_numpy(sources == source)
        metrics[f"care/acc/{source}"] = float(acc[rows].mean())
        if fmt is not None:
            metrics[f"care/format/{source}"] = float(torch.as_tensor(fmt).float()[rows].mean())
    return metrics


def clip_fraction_by_sign(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> dict[str, float]:
    """Section 8's clip fraction split by advantage sign, for the token-level PPO clip.

    All tensors [B, L]; fractions are of all response tokens, so ``pos + neg`` equals verl's
    ``actor/pg_clipfrac`` for the vanilla loss (a token is clipped when the clip term is the larger
    loss: ratio > 1 + clip_high with A > 0, ratio < 1 − clip_low with A < 0). Shares of the tokens
    whose advantage has that sign are ``clipfrac / token_frac``. Fractions of all tokens rather
    than of each sign's tokens keep every micro-batch's value defined (a micro-batch may hold no
    negative token), which verl's per-micro-batch MEAN aggregation needs.
    """
    mask = response_mask.bool()
    n_tokens = mask.sum().clamp_min(1).float()
    # The same ratio as verl's vanilla loss (log-ratio clamped to [-20, 20] before exp).
    ratio = torch.exp(torch.clamp(log_prob.detach() - old_log_prob, -20.0, 20.0))
    pos = mask & (advantages > 0)
    neg = mask & (advantages < 0)
    clipped_pos = pos & (ratio > 1.0 + clip_high)
    clipped_neg = neg & (ratio < 1.0 - clip_low)
    return {
        "actor/pg_clipfrac/pos_adv": float(clipped_pos.sum() / n_tokens),
        "actor/pg_clipfrac/neg_adv": float(clipped_neg.sum() / n_tokens),
        "actor/token_frac/pos_adv": float(pos.sum() / n_tokens),
        "actor/token_frac/neg_adv": float(neg.sum() / n_tokens),
    }
