"""rgr_step_metrics: per-row records of a batch -> step metrics, each group counted once."""

import pytest

from recipe.care.rgr import FAILURE_REASONS, SKIP_REASONS, RGROutcome, rgr_step_metrics


def _rows(uid, outcome, n):
    return [outcome.record(uid) for _ in range(n)]


def test_counts_each_group_once_whatever_its_rows():
    success = RGROutcome(eligible=True, triggered=True, success=True, extra_tokens=30, rollout_tokens=400)
    success.repaired = object()
    failed = RGROutcome(eligible=True, triggered=True, reason="no_budget", rollout_tokens=600)
    kept_wrong = RGROutcome(eligible=True, triggered=True, extra_tokens=20, rollout_tokens=500)
    kept_wrong.repaired = object()
    untouched = RGROutcome(rollout_tokens=500)
    skipped = RGROutcome(reason="no_reward")
    rows = (_rows("a", success, 8) + _rows("b", failed, 8) + _rows("c", kept_wrong, 8) + _rows("d", untouched, 8)
            + _rows("e", skipped, 8))
    rows += [success.record("a")]  # a balance-padding copy of a real row
    rows += [None, {}, {"reflected": True}]  # rows without a record
    m = rgr_step_metrics(rows)
    assert m["rgr/groups"] == 5 and m["rgr/eligible"] == 3 and m["rgr/triggered"] == 3
    assert m["rgr/replaced"] == 2 and m["rgr/success"] == 1
    assert m["rgr/success_rate"] == pytest.approx(1 / 3)
    assert m["rgr/extra_tokens"] == 50
    assert m["rgr/extra_token_share"] == pytest.approx(50 / 2000)
    assert m["rgr/failed/no_budget"] == 1 and m["rgr/skipped/no_reward"] == 1
    assert sum(m[f"rgr/failed/{r}"] for r in FAILURE_REASONS) == 1
    assert sum(m[f"rgr/skipped/{r}"] for r in SKIP_REASONS) == 1


def test_no_records_no_metrics_and_no_division_by_zero():
    assert rgr_step_metrics([None, {"acc": 1}]) == {}
    m = rgr_step_metrics(_rows("x", RGROutcome(), 4))
    assert m["rgr/groups"] == 1 and m["rgr/triggered"] == 0 and "rgr/success_rate" not in m
    assert m["rgr/extra_token_share"] == 0.0


def test_rgr_wall_time_is_the_longest_triggered_group_and_the_mean():
    slow = RGROutcome(eligible=True, triggered=True, wall_s=3.0)
    fast = RGROutcome(eligible=True, triggered=True, wall_s=1.0)
    untouched = RGROutcome(wall_s=0.5)  # all-correct group: nothing triggered, not counted
    m = rgr_step_metrics(_rows("a", slow, 8) + _rows("b", fast, 8) + _rows("c", untouched, 8))
    assert m["timing_s/rgr"] == 3.0 and m["rgr/wall_s_mean"] == pytest.approx(2.0)
    m = rgr_step_metrics(_rows("c", untouched, 8))
    assert m["timing_s/rgr"] == 0.0 and "rgr/wall_s_mean" not in m


def test_early_choice_rate_counts_only_compared_groups():
    same, other, untimed = (RGROutcome(eligible=True, triggered=True, choice_differs=v) for v in (0, 1, -1))
    m = rgr_step_metrics(_rows("a", same, 4) + _rows("b", other, 4) + _rows("c", other, 4) + _rows("d", untimed, 4))
    assert m["rgr/early_choice_differs_rate"] == pytest.approx(2 / 3)
    assert "rgr/early_choice_differs_rate" not in rgr_step_metrics(_rows("d", untimed, 4))  # after_group runs
