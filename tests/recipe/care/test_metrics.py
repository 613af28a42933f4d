"""Section-8 diagnostics (recipe/care/metrics.py): which keys a step reports, and their values."""

from __future__ import annotations

import math

import pytest
import torch

from recipe.care.care_config import CareConfig, RescueConfig
from recipe.care.core_algos import compute_care_sequence_advantages
from recipe.care.metrics import care_advantage_metrics, clip_fraction_by_sign
from tests.recipe.care.test_core_algos import make_batch

pytestmark = pytest.mark.timeout(60)


def step_metrics(acc_groups, k=4, **cfg):
    config = CareConfig(k=k, m=max(k, 6), **cfg)
    batch = make_batch(acc_groups)
    seq_adv, info = compute_care_sequence_advantages(**batch, config=config)
    token_adv = seq_adv[:, None].expand(-1, 8).clone()  # uniform spread: only sums matter here
    return care_advantage_metrics(seq_adv, token_adv, batch["acc"], info, k=k), seq_adv, info


def test_mixed_group_reports_variance_ratio_and_signature():
    metrics, seq_adv, info = step_metrics([[1, 0, 0, 0, 0, 0]])
    assert metrics["care/groups/mixed_frac"] == 1.0 and metrics["care/k_prime/4"] == 1
    # binary rewards, one positive and K' = 4 negatives: the mechanism signature √K', −1/√K'
    assert metrics["care/signature/kp4/anchor_raw_mean"] == pytest.approx(2.0, rel=1e-4)
    assert metrics["care/signature/kp4/negative_raw_mean"] == pytest.approx(-0.5, rel=1e-4)
    members = info["in_subgroup"].bool()
    pos, neg = members & (seq_adv > 0), members & (seq_adv < 0)
    expected = float((seq_adv[neg] ** 2).mean() / (seq_adv[pos] ** 2).mean())
    assert metrics["care/variance_ratio"] == pytest.approx(expected)
    assert "care/rescue_rate" not in metrics, "no all-wrong group: a rescue rate would be made up"


def test_all_wrong_step_has_rescue_rate_but_no_variance_ratio():
    metrics, _, _ = step_metrics([[0] * 6, [0] * 6])
    assert metrics["care/groups/all_wrong_frac"] == 1.0 and metrics["care/rescue_rate"] == 1.0
    assert "care/variance_ratio" not in metrics and not any(k.startswith("care/signature") for k in metrics)
    # the pseudo-anchor is a failure too: all of the step's signal comes from failures
    assert metrics["care/failure_signal_share"] == 1.0 and metrics["care/adv/rescue_anchor_mean"] > 0

    without_rescue, _, _ = step_metrics([[0] * 6], rescue=RescueConfig(enable=False))
    assert without_rescue["care/rescue_rate"] == 0.0 and without_rescue["care/k_prime/0"] == 1


def test_all_correct_step_reports_group_mix_only():
    metrics, seq_adv, _ = step_metrics([[1] * 6])
    assert torch.count_nonzero(seq_adv) == 0
    assert metrics["care/groups/all_correct_frac"] == 1.0 and metrics["care/k_prime/0"] == 1
    assert metrics["care/failure_signal_share"] == 0.0 and metrics["care/subgroup_frac"] == 0.0
    assert "care/rescue_rate" not in metrics and "care/variance_ratio" not in metrics
    assert all(math.isfinite(v) for v in metrics.values())


# ------------------------------------------------------------------ clip fraction by advantage sign


def test_clip_split_counts_each_side_of_the_clip_range():
    # ratios e^(Δ) per token; clip range [1 - 0.2, 1 + 0.3]
    ratio = torch.tensor([[1.5, 1.1, 0.7, 0.9, 1.5, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0, 0.0]])
    mask = torch.ones_like(adv, dtype=torch.bool)
    old = torch.zeros_like(adv)
    m = clip_fraction_by_sign(old, ratio.log(), adv, mask, clip_low=0.2, clip_high=0.3)
    # A>0 clipped only above 1.3 (token 0); A<0 only below 0.8 (token 2); A=0 never
    assert m["actor/pg_clipfrac/pos_adv"] == pytest.approx(1 / 6)
    assert m["actor/pg_clipfrac/neg_adv"] == pytest.approx(1 / 6)
    assert m["actor/token_frac/pos_adv"] == pytest.approx(2 / 6)
    assert m["actor/token_frac/neg_adv"] == pytest.approx(3 / 6)

    masked = clip_fraction_by_sign(old, ratio.log(), adv, torch.tensor([[0, 1, 1, 1, 1, 1]]), 0.2, 0.3)
    assert masked["actor/pg_clipfrac/pos_adv"] == 0.0 and masked["actor/pg_clipfrac/neg_adv"] == pytest.approx(1 / 5)


def test_clip_split_of_an_empty_micro_batch_is_zero_not_nan():
    z = torch.zeros(2, 3)
    m = clip_fraction_by_sign(z, z, z, z.bool(), 0.2, 0.2)
    assert set(m.values()) == {0.0}
