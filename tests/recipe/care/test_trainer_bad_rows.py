"""The trainers' accounting of skipped rows and failed rewards (no Ray: TransferQueue faked)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recipe.care.trainer as care_trainer
from recipe.care.dataset import SKIPPED_KEY
from recipe.care.trainer import BaselinePPOTrainer, PPOTrainerSync, failed_reward_rows, masked_rows
from tests.recipe.care.test_trainer_advantage import FakeTQ, make_trainer, row
from transfer_queue import KVBatchMeta
from verl.utils import tensordict_utils as tu


def test_skipped_rows_metric_per_step(monkeypatch, printed):
    stamps = [{SKIPPED_KEY: [{"row": 5, "id": "r5", "source": "chartqa", "reason": "image_undecodable"}]},
              {"id": "ok"}, {SKIPPED_KEY: [{"row": 8, "id": "r8", "source": "geometry3k", "reason": "gold_missing"}]}]
    chunk = tu.get_tensordict({"extra_info": np.array(stamps, dtype=object), "dummy_tensor": torch.zeros(3, 1)})
    monkeypatch.setattr(PPOTrainerSync, "_fetch_one_gen_batch", lambda self: chunk)
    monkeypatch.setattr(PPOTrainerSync, "prepare_step", lambda self: (self._fetch_one_gen_batch(), {})[1])
    trainer = object.__new__(BaselinePPOTrainer)
    trainer.global_steps = 4
    first = trainer.prepare_step()
    assert first == {"data/skipped_rows": 2.0}
    assert "step 4 skipped 2 training row(s): 5(id=r5 source=chartqa: image_undecodable)" in printed.text
    assert trainer.prepare_step()["data/skipped_rows"] == 2.0
    monkeypatch.setattr(PPOTrainerSync, "prepare_step", lambda self: {})  # a step that fetched nothing
    assert trainer.prepare_step() == {"data/skipped_rows": 0.0}


def _info(reason="", failed=0, **extra):
    return {"reward_extra_info": {"acc": 0, "reason": reason, "failed": failed}, **extra}


def test_failed_rows_and_whole_groups_with_an_unparseable_gold():
    fields = [_info(), _info("reward_error:TypeError", 1), _info(), _info("gold_unparseable", 1), _info("unparseable")]
    uid = ["a", "a", "b", "b", "c"]
    assert failed_reward_rows(fields, uid).tolist() == [False, True, True, True, False]


def test_masked_rows_zeroes_only_the_failed_rows_nested_and_padded():
    mask = torch.nested.nested_tensor([torch.ones(3, dtype=torch.int64), torch.ones(2, dtype=torch.int64)],
                                      layout=torch.jagged)
    out = masked_rows(mask, np.array([False, True]))
    assert [t.tolist() for t in out.unbind()] == [[1, 1, 1], [0, 0]]
    assert masked_rows(torch.ones(2, 3), np.array([True, False])).tolist() == [[0, 0, 0], [1, 1, 1]]


def _group(tokenizer, uid, accs, source="chartqa", reason="", failed=0):
    rows = {}
    for i, acc in enumerate(accs):
        r = row(tokenizer, uid, acc, "think " * (2 + i), "4" if acc else "5", emb_seed=i, source=source)
        r["extra_fields"]["reward_extra_info"].update(reason=reason or ("match" if acc else "mismatch"), failed=failed)
        r["extra_fields"]["extra_info"] = {"id": f"{uid}-{i}"}
        rows[f"{uid}_{i}_0"] = r
    return rows


def test_care_drops_failed_samples_and_bad_gold_groups_without_rescue(monkeypatch, tokenizer, printed):
    rows = {**_group(tokenizer, "mixed", [1, 0, 0, 0]), **_group(tokenizer, "badgold", [0, 0, 0, 0],
                                                                  reason="gold_unparseable", failed=1)}
    rows["mixed_3_0"]["extra_fields"]["reward_extra_info"].update(reason="reward_error:KeyError", failed=1)
    meta = KVBatchMeta(keys=list(rows), tags=[{}] * len(rows), partition_id="train")
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    metrics = {}
    make_trainer(tokenizer)._compute_advantage(meta, metrics)
    for key in ["mixed_3_0", *[f"badgold_{i}_0" for i in range(4)]]:
        assert torch.count_nonzero(rows[key]["advantages"]) == 0, key
        assert torch.count_nonzero(rows[key]["response_mask"]) == 0, key
    assert float(rows["mixed_0_0"]["advantages"].sum()) > 0  # the 3-row group still learns
    assert metrics.get("care/rescue_rate", 0.0) == 0.0, "an unparseable gold is no all-wrong group"
    assert metrics["care/groups/count"] == 1 and metrics["care/padding_rows"] == 0
    assert metrics["reward/failed_samples"] == 5 and metrics["reward/failed_samples/chartqa"] == 5
    assert metrics["reward/reason/gold_unparseable"] == pytest.approx(0.5)
    assert "id=mixed-3 source=chartqa reason=reward_error:KeyError" in printed.text


def test_baseline_masks_failed_samples_before_verls_advantage(monkeypatch, tokenizer):
    rows = _group(tokenizer, "g", [1, 0, 0])
    rows["g_1_0"]["extra_fields"]["reward_extra_info"].update(reason="internal_error:ValueError", failed=1)
    meta = KVBatchMeta(keys=list(rows), tags=[{}] * len(rows), partition_id="train")
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    seen = {}
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage",
                        lambda self, batch, metrics: seen.setdefault("masks", {k: rows[k]["response_mask"] for k in rows}))
    metrics = {}
    object.__new__(BaselinePPOTrainer)._compute_advantage(meta, metrics)
    assert torch.count_nonzero(seen["masks"]["g_1_0"]) == 0
    assert torch.count_nonzero(seen["masks"]["g_0_0"]) > 0 and torch.count_nonzero(seen["masks"]["g_2_0"]) > 0
    assert metrics["reward/failed_samples"] == 1
