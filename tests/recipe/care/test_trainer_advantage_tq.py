"""care_sync's _compute_advantage on the real TransferQueue (TransferQueue 0.1.11 on a local Ray cluster).

The batch goes into a real TQ partition the way verl 0.9.1 writes it during a step:
rollout rows with ``list_of_dict_to_tensordict`` and per-sample tags (agent_loop_tq.py:182-225),
a balance-padding row from verl's own ``upsample_batch_to_divisible_size`` (padding_utils.py,
tag ``is_padding``), then ``old_log_probs`` and ``think_emb`` for every row as the actor's
old-log-prob output (what ``tqbridge`` writes). The trainer is built like verl's ``*_on_cpu.py``
tests do (``object.__new__`` plus the attributes ``_compute_advantage`` uses); TQ is initialised
like ``verl.trainer.main_ppo`` does (``tq.init(config.transfer_queue)`` after ``ray.init``).

The body runs in a child process under a hard timeout: ``ray.get`` can ignore pytest's signal.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
H = 16
TIMEOUT_S = 240


def _rows(tokenizer):
    """(key, fields) of three groups of 4: mixed, all-wrong, all-correct; rewards carry acc and format."""
    import torch

    rows = []
    groups = [("mixed", "geo3k", [1, 0, 0, 1]), ("wrong", "chartqa", [0, 0, 0, 0]), ("right", "chartqa", [1, 1, 1, 1])]
    for g, (uid, source, accs) in enumerate(groups):
        for s, acc in enumerate(accs):
            think = " ".join(["step"] * (2 + 3 * s + g))
            answer = "4" if acc else str(5 + s)
            prompt = tokenizer(f"Question {uid}: 2+2?", add_special_tokens=False)["input_ids"]
            text = f"<think>{think}</think><answer>{answer}</answer>"
            response = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            n = len(response)
            fmt = 1.0 if s != 3 else 0.0
            rm = torch.zeros(n)
            rm[-1] = 0.9 * acc + 0.1 * fmt
            input_ids = torch.tensor(prompt + response)
            fields = {
                "uid": uid,
                "session_id": s,
                "data_source": source,
                "prompts": torch.tensor(prompt),
                "responses": torch.tensor(response),
                "response_mask": torch.ones(n, dtype=torch.int64),
                "loss_mask": torch.ones(n, dtype=torch.int64),
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "position_ids": torch.arange(len(input_ids)),
                "rm_scores": rm,
                "num_turns": 2,
                "extra_fields": {"reward_extra_info": {"acc": acc, "format": fmt, "score": float(rm[-1])}},
            }
            rows.append((f"{uid}_{s}_0", fields))
    return rows


def _old_log_prob_outputs(keys, lengths, seed=0):
    """What the actor's old-log-prob pass returns per row: nested log-probs and a unit think embedding."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    logp = [-torch.rand(n, generator=g) for n in lengths]
    emb = F.normalize(torch.randn(len(keys), H, generator=g), dim=-1)
    return logp, emb


def child() -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import numpy as np
    import ray
    import torch
    import transfer_queue as tq
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from transfer_queue import KVBatchMeta

    from recipe.care.care_config import CareConfig
    from recipe.care.core_algos import compute_care_sequence_advantages, compute_region_weighted_token_advantages
    from recipe.care.main_care import compose_config
    from recipe.care.spans import compute_response_spans
    from smoke.tiny_models import load_qwen25_tokenizer
    from recipe.care.trainer import CarePPOTrainer
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tokenizer = load_qwen25_tokenizer()
    config = compose_config([])
    tq_conf = config.transfer_queue
    OmegaConf.set_struct(tq_conf, False)
    tq_conf.enable = True
    tq_conf.backend.SimpleStorage.num_data_storage_units = 1  # 2 shared cores: one storage actor

    ray.init(num_cpus=32, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        tq.init(tq_conf)
        result = {}
        care = CareConfig(k=2, m=3)

        trainer = object.__new__(CarePPOTrainer)  # as verl's *_on_cpu tests: no Ray workers, no __init__
        trainer.tokenizer = tokenizer
        trainer.care_config = care

        def rollout(partition, rows, drop_source=()):
            """Agent loop: one kv_batch_put per finished session, tags as in agent_loop_tq.py:204-225."""
            keys, tags = [], []
            for key, fields in rows:
                fields = {k: v for k, v in fields.items() if not (k == "data_source" and key in drop_source)}
                tag = {"status": "success", "prompt_len": len(fields["prompts"]), "response_len": len(fields["responses"]),
                       "seq_len": len(fields["input_ids"]), "global_steps": 1}
                tq.kv_batch_put(keys=[key], partition_id=partition, fields=list_of_dict_to_tensordict([fields]), tags=[tag])
                keys.append(key)
                tags.append(tag)
            return KVBatchMeta(keys=keys, tags=tags, partition_id=partition)

        def old_log_prob(batch):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"])
            lengths = [len(m) for m in data["response_mask"].unbind()]
            logp, emb = _old_log_prob_outputs(batch.keys, lengths)
            fields = TensorDict({"old_log_probs": torch.nested.as_nested_tensor(logp, layout=torch.jagged), "think_emb": emb},
                                batch_size=len(batch))
            tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
            return logp, emb

        # --- 1. a step's batch, with verl's balance padding (12 rows -> 16 for a multiple of 8)
        rows = _rows(tokenizer)
        batch = rollout("train", rows)
        batch = upsample_batch_to_divisible_size(batch, batch_multiple=8, eos_token_id=tokenizer.eos_token_id)
        is_padding = np.array([bool(t.get("is_padding", False)) for t in batch.tags])
        result["n_rows"], result["n_padding"] = len(batch), int(is_padding.sum())
        logp, emb = old_log_prob(batch)

        metrics = {}
        trainer._compute_advantage(batch, metrics)
        back = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "returns", "response_mask"])
        adv = [a.float() for a in back["advantages"].unbind()]
        ret = [r.float() for r in back["returns"].unbind()]
        result["returns_equal_advantages"] = all(torch.equal(a, r) for a, r in zip(adv, ret, strict=True))
        result["shapes_match_response"] = all(a.shape == m.shape for a, m in zip(adv, back["response_mask"].unbind(), strict=True))
        result["padding_adv_nonzero"] = int(sum(torch.count_nonzero(a) for a, p in zip(adv, is_padding, strict=True) if p))

        # Direct call of the core on the same rows (real rows only, in batch order).
        real = [i for i, p in enumerate(is_padding) if not p]
        by_key = dict(rows)
        width = max(len(by_key[batch.keys[i]]["responses"]) for i in real)
        responses = torch.zeros(len(real), width, dtype=torch.long)
        mask = torch.zeros(len(real), width)
        old = torch.zeros(len(real), width)
        for j, i in enumerate(real):
            r = by_key[batch.keys[i]]["responses"]
            responses[j, : len(r)] = r
            mask[j, : len(r)] = 1
            old[j, : len(r)] = logp[i]
        acc = torch.tensor([by_key[batch.keys[i]]["extra_fields"]["reward_extra_info"]["acc"] for i in real])
        spans = compute_response_spans(tokenizer, responses, mask.long())
        seq_adv, _ = compute_care_sequence_advantages(
            rewards=torch.stack([by_key[batch.keys[i]]["rm_scores"].sum() for i in real]),
            acc=acc,
            index=np.array([by_key[batch.keys[i]]["uid"] for i in real], dtype=object),
            think_len=spans.think_len,
            answer_len=spans.answer_len,
            think_emb=emb[real],
            logp_sum=(old * mask).sum(-1),
            response_len=mask.sum(-1).long(),
            reflected=torch.zeros(len(real), dtype=torch.bool),
            config=care,
        )
        expected = compute_region_weighted_token_advantages(
            seq_adv=seq_adv, acc=acc, think_mask=spans.think_mask, answer_mask=spans.answer_mask,
            response_mask=mask.long(), config=care,
        )
        err = 0.0
        for j, i in enumerate(real):
            n = len(adv[i])
            err = max(err, float((adv[i] - expected[j, :n].float()).abs().max()))
        result["max_abs_err_vs_core"] = err
        result["seq_adv"] = {batch.keys[i]: float(adv[i].sum()) for i in real}
        result["metrics"] = {k: float(v) for k, v in metrics.items() if k.startswith(("care/acc", "care/format", "care/padding", "care/groups", "care/rescue", "care/rows_without"))}

        # --- 2. a row without `data_source` (e.g. a data set without the column) in a real TQ partition
        batch2 = rollout("nosource", rows, drop_source={rows[0][0]})
        old_log_prob(batch2)
        try:
            got = tq.kv_batch_get(keys=batch2.keys, partition_id="nosource", select_fields=["uid", "data_source"])
            result["kv_batch_get_missing_field"] = "column present" if "data_source" in got.keys() else "column dropped"
        except Exception as exc:  # noqa: BLE001 - recording what TQ does
            result["kv_batch_get_missing_field"] = f"{type(exc).__name__}: {exc}"[:300]
        metrics2 = {}
        trainer._compute_advantage(batch2, metrics2)
        back2 = tq.kv_batch_get(keys=batch2.keys, partition_id="nosource", select_fields=["advantages"])
        adv2 = [a.float() for a in back2["advantages"].unbind()]
        result["nosource_matches"] = all(torch.equal(a2, adv[batch.keys.index(k)]) for k, a2 in zip(batch2.keys, adv2, strict=True))
        result["nosource_metrics"] = {k: float(v) for k, v in metrics2.items() if k.startswith(("care/acc/", "care/rows_without"))}

        # --- 3. no row has `data_source`
        batch3 = rollout("nosourceatall", rows, drop_source={k for k, _ in rows})
        old_log_prob(batch3)
        metrics3 = {}
        trainer._compute_advantage(batch3, metrics3)
        result["nosource_at_all_metrics"] = {k: float(v) for k, v in metrics3.items() if k.startswith(("care/acc/", "care/rows_without"))}
        return result
    finally:
        try:
            tq.close()
        finally:
            ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_compute_advantage_on_real_transfer_queue():
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed (rc={proc.returncode}):\n{proc.stderr[-5000:]}"
    r = json.loads(lines[-1][len("RESULT "):])

    assert r["n_rows"] == 16 and r["n_padding"] == 4, "verl's balance padding appended rows tagged is_padding"
    assert r["shapes_match_response"] and r["returns_equal_advantages"]
    assert r["padding_adv_nonzero"] == 0
    assert r["max_abs_err_vs_core"] < 1e-6, "TQ round trip must give exactly the core's advantages"
    seq = r["seq_adv"]
    assert all(abs(seq[f"right_{s}_0"]) < 1e-6 for s in range(4)), "all-correct group gets zeros"
    assert sum(seq[f"wrong_{s}_0"] > 0 for s in range(4)) == 1, "all-wrong group: one pseudo-anchor (rescue)"
    assert seq["mixed_0_0"] > 0 or seq["mixed_3_0"] > 0
    m = r["metrics"]
    assert m["care/padding_rows"] == 4
    assert m["care/groups/count"] == 3 and m["care/rescue_rate"] == 1.0
    assert m["care/acc/geo3k"] == pytest.approx(0.5) and m["care/acc/chartqa"] == pytest.approx(0.5)
    assert m["care/format"] == pytest.approx(0.75)

    assert m["care/rows_without_data_source"] == 0

    # TransferQueue 0.1.11 does not raise when one row lacks a selected field: it silently leaves
    # the field out for the whole batch (every row's data_source would be lost) ...
    assert r["kv_batch_get_missing_field"] == "column dropped"
    # ... the trainer computes the same advantages, keeps the other rows' sources and counts the row
    assert r["nosource_matches"]
    n = r["nosource_metrics"]
    assert n["care/rows_without_data_source"] == 1 and n["care/acc/unknown"] == 1.0
    assert n["care/acc/geo3k"] == pytest.approx(1 / 3) and n["care/acc/chartqa"] == pytest.approx(0.5)
    assert r["nosource_at_all_metrics"] == {"care/acc/unknown": 0.5, "care/rows_without_data_source": 12.0}


if __name__ == "__main__":
    print("RESULT " + json.dumps(child()), flush=True)
