"""The care_sync advantage step on groups repaired by RGR (the trainer side).

A repaired rollout arrives with ``extra_fields["reflected"] = True`` and every row of the group
carries the group's ``extra_fields["rgr"]`` record. The trainer must give the reflected row one
of the K' negative slots whatever its outcome, never the anchor, scale it by s_refl when it still
failed, and report the RGR metrics in the step's metrics.
"""

import pytest
from transfer_queue import KVBatchMeta

import recipe.care.trainer as care_trainer
from recipe.care.care_config import CareConfig
from tests.recipe.care.test_trainer_advantage import FakeTQ, make_trainer, row

pytestmark = pytest.mark.timeout(120)


def rgr_record(group, success, extra_tokens=12):
    return {"group": group, "eligible": 1, "triggered": 1, "replaced": 1, "success": int(success),
            "reason": "", "extra_tokens": extra_tokens, "rollout_tokens": 400}


def repaired_group(tokenizer, uid, reflected_acc):
    """One correct rollout, six plain failures and one repaired failure (row 1), equal format."""
    rows = {}
    for i in range(8):
        acc = int(i == 0) if i != 1 else reflected_acc
        extra = {"rgr": rgr_record(uid, reflected_acc == 1), "reflected": i == 1}
        # Row 1 has the shortest think: were it eligible, it would be the anchor.
        think = "a" if i == 1 else "step " * (4 + i)
        rows[f"{uid}_{i}_0"] = row(tokenizer, uid, acc, think, "4" if acc else "5", emb_seed=i, extra=extra)
    return rows


def run_step(monkeypatch, tokenizer, rows, config=None):
    meta = KVBatchMeta(keys=list(rows), tags=[{}] * len(rows), partition_id="train")
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    metrics = {}
    make_trainer(tokenizer, config)._compute_advantage(meta, metrics)
    return {k: float(rows[k]["advantages"].sum()) for k in rows}, metrics


def test_failed_repair_takes_a_slot_scaled_by_s_refl(monkeypatch, tokenizer):
    rows = repaired_group(tokenizer, "g", reflected_acc=0)
    seq, metrics = run_step(monkeypatch, tokenizer, rows)
    assert seq["g_0_0"] > 0, "the plain correct rollout is the anchor, not the shorter reflected one"
    negatives = [k for k in rows if seq[k] < 0]
    assert "g_1_0" in negatives and len(negatives) == 4  # K' = min(K, 1 + 6 plain failures) = 4
    plain = [seq[k] for k in negatives if k != "g_1_0"]
    # Same reward as the plain failures, so the same |A_raw|: s_refl / s = 0.25 / 0.5.
    assert seq["g_1_0"] == pytest.approx(0.5 * plain[0], rel=1e-5)
    assert metrics["care/reflected_rows"] == 1
    assert metrics["care/adv/reflected_mean"] == pytest.approx(seq["g_1_0"], rel=1e-5)


def test_successful_repair_is_a_positive_member_but_never_the_anchor(monkeypatch, tokenizer):
    rows = repaired_group(tokenizer, "g", reflected_acc=1)
    seq, _ = run_step(monkeypatch, tokenizer, rows)
    assert seq["g_1_0"] > 0 and seq["g_0_0"] > 0
    # Both positives have the same reward; the anchor keeps √K exactly, the reflected row is a
    # positive member of S (same raw z-score, same equalisation).
    assert seq["g_1_0"] == pytest.approx(seq["g_0_0"], rel=1e-5)
    assert sum(v < 0 for v in seq.values()) == 3  # K' = 4: the reflected row took one slot


def test_refl_scale_from_config(monkeypatch, tokenizer):
    rows = repaired_group(tokenizer, "g", reflected_acc=0)
    seq, _ = run_step(monkeypatch, tokenizer, rows, CareConfig(refl_scale=0.5))
    plain = [seq[k] for k in rows if seq[k] < 0 and k != "g_1_0"]
    assert seq["g_1_0"] == pytest.approx(plain[0], rel=1e-5)


def test_rgr_metrics_reach_the_step_once_per_group(monkeypatch, tokenizer):
    rows = {**repaired_group(tokenizer, "g", 1), **repaired_group(tokenizer, "h", 0)}
    _, metrics = run_step(monkeypatch, tokenizer, rows)
    assert metrics["rgr/groups"] == 2 and metrics["rgr/triggered"] == 2
    assert metrics["rgr/success"] == 1 and metrics["rgr/success_rate"] == pytest.approx(0.5)
    assert metrics["rgr/extra_token_share"] == pytest.approx(24 / 800)


def test_no_rgr_records_no_rgr_metrics(monkeypatch, tokenizer):
    rows = {f"p_{i}_0": row(tokenizer, "p", int(i == 0), "x " * (i + 2), "a", emb_seed=i) for i in range(6)}
    _, metrics = run_step(monkeypatch, tokenizer, rows)
    assert not any(k.startswith("rgr/") for k in metrics)


@pytest.mark.parametrize("algo,enabled", [("care", True), ("grpo", False), ("dapo", False), ("gspo", False)])
def test_rgr_is_on_for_care_and_off_for_baselines(algo, enabled):
    from recipe.care.main_care import compose_config

    config = compose_config([], algo=algo)
    assert config.care.rgr.enable is enabled
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class == "recipe.care.agent_loop.CareAgentLoopManager"


def test_bad_rgr_block_is_rejected_at_start_up():
    from recipe.care.main_care import CareConfigError, compose_config, validate_care_config

    with pytest.raises(CareConfigError, match="care.rgr"):
        validate_care_config(compose_config(["care.rgr.mode=rethink"]))
