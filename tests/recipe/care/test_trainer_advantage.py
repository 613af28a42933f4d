"""care_sync's _compute_advantage on TensorDicts shaped exactly as TransferQueue returns them.

TransferQueue needs Ray; the trainer's only TQ calls are patched at the narrowest seam
(``recipe.care.trainer.tq``) by a store of real TensorDicts built with verl's own
``list_of_dict_to_tensordict`` (what the agent loop and the balance padding put into TQ).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from transfer_queue import KVBatchMeta

import recipe.care.trainer as care_trainer
from recipe.care.care_config import CareConfig
from recipe.care.trainer import CarePPOTrainer, MissingRewardInfo
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

H = 16


class FakeTQ:
    def __init__(self, rows: dict):
        self.rows = rows  # key -> field dict

    def kv_batch_get(self, keys, partition_id, select_fields):
        return list_of_dict_to_tensordict([{f: self.rows[k][f] for f in select_fields if f in self.rows[k]} for k in keys])

    def kv_batch_put(self, keys, partition_id, fields: TensorDict, tags=None):
        for i, key in enumerate(keys):
            for name, value in fields.items():
                self.rows[key][name] = value[i] if not value.is_nested else value.unbind()[i]
        return KVBatchMeta(keys=list(keys), tags=[{}] * len(keys), partition_id=partition_id)


def row(tokenizer, uid, acc, think, answer, fmt=1.0, emb_seed=0, source="geo3k", extra=None):
    text = (f"<think>{think}</think>" if think is not None else "") + f"<answer>{answer}</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids)
    rm = torch.zeros(n)
    rm[-1] = 0.9 * acc + 0.1 * fmt
    g = torch.Generator().manual_seed(emb_seed)
    info = {"acc": acc, "format": fmt, "verifier": "mathruler", "pred": answer}
    return {
        "uid": uid,
        "responses": torch.tensor(ids),
        "response_mask": torch.ones(n, dtype=torch.int64),
        "rm_scores": rm,
        "old_log_probs": -torch.rand(n, generator=g),
        "think_emb": F.normalize(torch.randn(H, generator=g), dim=0),
        "extra_fields": {"reward_extra_info": info, **(extra or {})},
        "data_source": source,
    }


def padding_row(template):
    # verl/trainer/ppo/padding_utils.py: one EOS response token, mask 0, extra_fields copied from a real row
    return {**template, "uid": "pad0123", "responses": torch.tensor([151643]), "response_mask": torch.zeros(1, dtype=torch.int64),
            "rm_scores": torch.zeros(1), "old_log_probs": torch.zeros(1), "think_emb": torch.zeros(H)}


@pytest.fixture
def batch(tokenizer):
    rows, tags = {}, []
    # mixed group: 2 correct, 6 wrong (K' = 4)
    for i in range(8):
        acc = int(i in (2, 5))
        rows[f"m_{i}_0"] = row(tokenizer, "mixed", acc, "step " * (3 + i), "4" if acc else "5", emb_seed=i)
    # all-wrong group (rescue) and all-correct group (zeros)
    for i in range(8):
        rows[f"w_{i}_0"] = row(tokenizer, "wrong", 0, "guess " * (2 + i), "1", emb_seed=100 + i, source="chartqa")
        rows[f"c_{i}_0"] = row(tokenizer, "right", 1, "sure " * (2 + i), "2", emb_seed=200 + i, source="chartqa")
    rows["pad0123_0_0"] = padding_row(rows["m_2_0"])  # a copied acc=1: must not become an anchor
    keys = list(rows)
    tags = [{"is_padding": k.startswith("pad")} for k in keys]
    return rows, KVBatchMeta(keys=keys, tags=tags, partition_id="train")


def make_trainer(tokenizer, config=None):
    trainer = object.__new__(CarePPOTrainer)  # as verl's *_on_cpu tests do: no Ray, no workers
    trainer.tokenizer = tokenizer
    trainer.care_config = config or CareConfig()
    return trainer


def test_trainer_is_registered_and_behaves_as_sync():
    assert get_trainer_cls("care_sync") is CarePPOTrainer
    trainer = object.__new__(CarePPOTrainer)
    trainer.trainer_mode = "care_sync"
    assert trainer.trainer_mode == "sync" and trainer.registered_mode == "care_sync"


def test_baseline_trainer_is_verls_sync_trainer_plus_the_benchmark_macro(monkeypatch):
    """ALGO=grpo|dapo|gspo run care_baseline_sync: none of CARE's overrides, but the same
    val-core/macro/acc (the six benchmarks only) as CARE, so the A/B compares one number, and the
    same kill-safe checkpoints (test_trainer_checkpoints.py)."""
    from data_prep.schema import BENCHMARKS
    from recipe.care.trainer import BaselinePPOTrainer, PPOTrainerSync, SyncTrainerWithBenchmarkMacro

    assert get_trainer_cls("care_baseline_sync") is BaselinePPOTrainer
    # _compute_advantage: verl's, after masking rollouts whose reward failed (test_trainer_bad_rows.py)
    assert BaselinePPOTrainer._compute_advantage.__qualname__.startswith("SyncTrainerWithBenchmarkMacro.")
    for name in ("_compute_old_log_prob", "_init_resource_pool_mgr", "__init__"):
        assert getattr(BaselinePPOTrainer, name) is getattr(PPOTrainerSync, name), name
    for name in ("fit", "_save_checkpoint", "_load_checkpoint", "_update_actor"):
        assert getattr(BaselinePPOTrainer, name) is getattr(SyncTrainerWithBenchmarkMacro, name), name
    trainer = object.__new__(BaselinePPOTrainer)
    trainer.trainer_mode = "care_baseline_sync"
    assert trainer.trainer_mode == "sync" and trainer.registered_mode == "care_baseline_sync"
    logged = {f"val-core/{b}/acc/mean@1": 0.1 * (i + 1) for i, b in enumerate(BENCHMARKS)}
    logged["val-core/chartqa/acc/mean@1"] = 1.0  # the mix's val split: not part of the macro
    monkeypatch.setattr(PPOTrainerSync, "_val_metrics_update", lambda self, *a, **k: dict(logged))
    assert trainer._val_metrics_update()["val-core/macro/acc"] == pytest.approx(0.35)
    del logged["val-core/mmmu/acc/mean@1"]  # five of six: no macro
    assert "val-core/macro/acc" not in trainer._val_metrics_update()


def test_compute_advantage_on_tq_shaped_batch(monkeypatch, tokenizer, batch):
    rows, meta = batch
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    metrics = {}
    make_trainer(tokenizer)._compute_advantage(meta, metrics)

    adv = {k: rows[k]["advantages"] for k in rows}
    for k in rows:
        torch.testing.assert_close(rows[k]["returns"], adv[k])
        assert adv[k].shape == rows[k]["response_mask"].shape
    assert torch.count_nonzero(adv["pad0123_0_0"]) == 0
    assert all(torch.count_nonzero(adv[f"c_{i}_0"]) == 0 for i in range(8)), "all-correct group gets zeros"
    # mixed group: the anchor is the correct rollout with the shorter think span; a sequence's token
    # advantages sum to its sequence advantage: √K for the anchor (mechanism signature, binary acc)
    seq = {k: float(adv[k].sum()) for k in rows}
    assert seq["m_2_0"] > 0 and seq["m_5_0"] == pytest.approx(0.0)
    negatives = [k for k in rows if k.startswith("m_") and seq[k] < 0]
    assert len(negatives) == 4
    # rescue: the all-wrong group gets a pseudo-anchor (positive) and K' pseudo-negatives
    wrong = [seq[f"w_{i}_0"] for i in range(8)]
    assert sum(a > 0 for a in wrong) == 1 and sum(a < 0 for a in wrong) == 4

    assert metrics["care/groups/count"] == 3
    assert metrics["care/groups/mixed_frac"] == pytest.approx(1 / 3)
    assert metrics["care/rescue_rate"] == 1.0
    assert metrics["care/k_prime/4"] == 2 and metrics["care/k_prime/0"] == 1
    assert metrics["care/padding_rows"] == 1
    assert metrics["care/acc/geo3k"] == pytest.approx(2 / 8) and metrics["care/acc/chartqa"] == pytest.approx(0.5)
    assert metrics["care/format"] == 1.0
    assert 0 < metrics["care/failure_signal_share"] < 1
    assert "care/signature/kp4/anchor_raw_mean" in metrics


def test_binary_rewards_follow_the_mechanism_signature(monkeypatch, tokenizer):
    rows = {f"s_{i}_0": row(tokenizer, "g", int(i == 0), "x " * (i + 2), "a", fmt=0.0, emb_seed=i) for i in range(8)}
    meta = KVBatchMeta(keys=list(rows), tags=[{}] * 8, partition_id="train")
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    metrics = {}
    make_trainer(tokenizer)._compute_advantage(meta, metrics)
    assert metrics["care/signature/kp4/anchor_raw_mean"] == pytest.approx(2.0, abs=1e-4)  # √K'
    assert metrics["care/signature/kp4/negative_raw_mean"] == pytest.approx(-0.5, abs=1e-4)  # −1/√K'
    assert float(rows["s_0_0"]["advantages"].sum()) == pytest.approx(2.0, abs=1e-4)  # √K after equalisation


def test_missing_acc_names_the_reward_manager(monkeypatch, tokenizer, batch):
    rows, meta = batch
    del rows["m_0_0"]["extra_fields"]["reward_extra_info"]["acc"]
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    with pytest.raises(MissingRewardInfo, match="reward.reward_manager.name=care"):
        make_trainer(tokenizer)._compute_advantage(meta, {})


def test_missing_think_emb_is_a_clear_error(monkeypatch, tokenizer, batch):
    rows, meta = batch
    for r in rows.values():
        del r["think_emb"]
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    with pytest.raises(KeyError, match="think_emb"):
        make_trainer(tokenizer)._compute_advantage(meta, {})


def test_old_log_prob_step_asks_for_embeddings_and_drops_the_flag(monkeypatch, tokenizer, batch):
    rows, meta = batch
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    seen = {}

    def fake_parent(self, batch, metrics):
        seen["flag"] = batch.extra_info.get("care_think_emb")
        return batch

    monkeypatch.setattr(care_trainer.PPOTrainerSync, "_compute_old_log_prob", fake_parent)
    out = make_trainer(tokenizer)._compute_old_log_prob(meta, {})
    assert seen["flag"] is True and "care_think_emb" not in out.extra_info
    mask = rows["m_0_0"]["care_pool_mask"]
    assert mask.shape == rows["m_0_0"]["responses"].shape
    assert 0 < int(mask.sum()) < mask.numel()  # think span only, tags excluded
    assert int(rows["pad0123_0_0"]["care_pool_mask"].sum()) == 0


def test_span_records_from_the_rollout_spare_the_driver_any_decoding(monkeypatch, tokenizer, batch):
    """With each row's span record (written by the CARE agent-loop worker), neither driver step decodes
    a response, and advantages and pool masks equal those computed by decoding on the driver."""
    import copy

    from recipe.care.span_records import SPANS_KEY, span_records

    rows, meta = batch
    decoded = copy.deepcopy(rows)
    monkeypatch.setattr(care_trainer.PPOTrainerSync, "_compute_old_log_prob", lambda self, batch, metrics: batch)
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(decoded))
    make_trainer(tokenizer)._compute_old_log_prob(meta, {})
    make_trainer(tokenizer)._compute_advantage(meta, {})

    for key, fields in rows.items():
        if not key.startswith("pad"):
            ids, mask = fields["responses"].unsqueeze(0), fields["response_mask"].unsqueeze(0)
            fields["extra_fields"][SPANS_KEY] = span_records(tokenizer, ids, mask)[0]
    rows["pad0123_0_0"]["extra_fields"] = rows["m_2_0"]["extra_fields"]  # verl copies a real row's

    def no_decoding(*args, **kwargs):
        raise AssertionError("the driver decoded responses although every row has a span record")

    monkeypatch.setattr(care_trainer, "compute_response_spans", no_decoding)
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    make_trainer(tokenizer)._compute_old_log_prob(meta, {})
    make_trainer(tokenizer)._compute_advantage(meta, {})
    for key in rows:
        torch.testing.assert_close(rows[key]["advantages"], decoded[key]["advantages"])
        assert torch.equal(rows[key]["care_pool_mask"], decoded[key]["care_pool_mask"])
    assert any(float(rows[k]["advantages"].abs().sum()) > 0 for k in rows)
