"""The CARE agent-loop worker driven through verl 0.9.1's real v1 agent-loop code.

Real: AgentLoopWorkerTQ.generate_sequences/_run_prompt, SingleTurnAgentLoop (chat template,
Qwen2.5-VL processor, image extraction), verl's _compute_score through a real RewardLoopWorker and
naive reward manager, the TransferQueue postprocess (padding-free fields, multi-modal inputs,
position ids, list_of_dict_to_tensordict). Stand-ins: the LLM server client's ``generate`` (no vLLM
on CPU) and TransferQueue's put calls (no Ray), i.e. the two seams that need a cluster.
"""

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from recipe.care.care_config import DEFAULT_CUE
from recipe.care.rgr import rgr_step_metrics
from tests.recipe.care.conftest import run

QUESTION = "<image>What is 2+2?"
RIGHT = "<think>2 plus 2 makes 4.</think>\n<answer>4</answer><|im_end|>"
WRONG = "<think>2 plus 2 makes 5 because I added one more.</think>\n<answer>5</answer><|im_end|>"
WRONG_FAR = "<think>Completely unrelated musing about colours.</think>\n<answer>7</answer><|im_end|>"
FIX = " Recount: 2 plus 2 is 4.</think>\n<answer>4</answer><|im_end|>"


class StandInServer:
    """Replaces verl's LLMServerClient.generate (the vLLM server call): scripted token-out replies."""

    def __init__(self, tokenizer, cue_ids, scripts, repair_text=FIX, repair_error=None, fail_on=None):
        from verl.workers.rollout.replica import TokenOutput

        self.TokenOutput, self.tokenizer, self.cue_ids = TokenOutput, tokenizer, list(cue_ids)
        self.scripts = {k: list(v) for k, v in scripts.items()}  # question marker -> replies in order
        self.repair_text, self.repair_error, self.fail_on = repair_text, repair_error, fail_on
        self.calls, self.repairs = [], []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None,
                       audio_data=None, mm_processor_kwargs=None, **kwargs):
        call = dict(prompt_ids=list(prompt_ids), sampling_params=dict(sampling_params), image_data=image_data)
        await asyncio.sleep(0.001)
        if list(prompt_ids[-len(self.cue_ids):]) == self.cue_ids:
            self.repairs.append(call)
            if self.repair_error:
                raise self.repair_error
            text = self.repair_text
        else:
            self.calls.append(call)
            prompt = self.tokenizer.decode(prompt_ids)
            marker = next(m for m in self.scripts if m in prompt)
            text = self.scripts[marker].pop(0)
            if self.fail_on is not None and text == self.fail_on:
                await asyncio.sleep(1.0)  # fail last, while the siblings already wait at the barrier
                raise RuntimeError("engine error on an ordinary rollout")
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return self.TokenOutput(token_ids=ids, log_probs=[-0.05] * len(ids), stop_reason="completed",
                                extra_fields={"min_global_steps": 1, "max_global_steps": 1})


class RecordingTQ:
    """Replaces transfer_queue's async put calls; keeps every write in order."""

    def __init__(self):
        self.events = []

    def init(self, *args, **kwargs):
        return None

    async def async_kv_put(self, key, partition_id, tag=None, **kwargs):
        self.events.append(("status", key, partition_id, dict(tag or {})))

    async def async_kv_batch_put(self, keys, fields=None, tags=None, partition_id=None, **kwargs):
        self.events.append(("rows", list(keys), fields, list(tags or []), partition_id))

    def rows(self, uid):
        out = {}
        for event in self.events:
            if event[0] == "rows":
                for i, key in enumerate(event[1]):
                    if key.startswith(f"{uid}_"):
                        assert key not in out, f"{key} written twice"
                        out[key] = event[2][i]
        return out

    def statuses(self, uid):
        return [e[3]["status"] for e in self.events if e[0] == "status" and e[1] == uid]

    def order(self, uid):
        """'row' / 'finished' / 'failure' events of one prompt, in write order."""
        seq = []
        for e in self.events:
            if e[0] == "rows" and any(k.startswith(f"{uid}_") for k in e[1]):
                seq.append("row")
            elif e[0] == "status" and e[1] == uid and e[3]["status"] != "running":
                seq.append(e[3]["status"])
        return seq


def _image():
    return Image.fromarray(np.full((56, 56, 3), 120, dtype=np.uint8))


def _batch(questions, validate=False):
    from verl.utils import tensordict_utils as tu

    n = len(questions)
    batch = tu.get_tensordict({
        "raw_prompt": [[{"role": "user", "content": [{"type": "image", "image": _image()},
                                                     {"type": "text", "text": q}]}] for q in questions],
        "uid": [f"uid-{i}" for i in range(n)],
        "index": list(range(n)),
        "data_source": ["stub"] * n,
        "reward_model": [{"style": "rule", "ground_truth": "4"} for _ in range(n)],
        "extra_info": [{"i": i} for i in range(n)],
    })
    tu.assign_non_tensor_data(batch, "global_steps", 1)
    if validate:
        tu.assign_non_tensor_data(batch, "validate", True)
    return batch


def drive(worker, server, questions, monkeypatch, validate=False, rgr_enable=True, timeout=90, **rgr_block):
    """Run the worker on ``questions`` until every prompt is settled; return the recorded TQ writes.
    ``server``: what replaces the worker's LLM client; ``rgr_block``: care.rgr values for this run."""
    import verl.trainer.ppo.v1.agent_loop_tq as tq_module
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    recorder = RecordingTQ()
    monkeypatch.setattr(tq_module.tq, "async_kv_put", recorder.async_kv_put)
    monkeypatch.setattr(tq_module.tq, "async_kv_batch_put", recorder.async_kv_batch_put)
    monkeypatch.setattr(worker, "llm_client", server)
    monkeypatch.setattr(worker, "rgr_config", worker.rgr_config.__class__(
        **{**worker.rgr_config.__dict__, "enable": rgr_enable, **rgr_block}))

    class Handle:  # a Ray actor handle's .remote(), in process
        def __init__(self, target):
            self.compute_score = type("M", (), {"remote": staticmethod(target.compute_score)})()

    async def main():
        reward = RewardLoopWorker(worker.config)  # built inside the running loop (it captures the loop)
        worker.reward_loop_worker_handles = [Handle(reward)]
        await worker.generate_sequences(_batch(questions, validate))
        while worker.background_tasks:
            await asyncio.gather(*list(worker.background_tasks))

    run(main(), timeout)
    return recorder


def _server(worker, tokenizer, scripts, **kw):
    return StandInServer(tokenizer, worker.rgr_tokens.cue_ids, scripts, **kw)


def test_mixed_group_gets_one_repair_written_in_place_before_finished(worker_parts, tokenizer, monkeypatch):
    worker = worker_parts
    server = _server(worker, tokenizer, {"2+2": [RIGHT, WRONG, WRONG_FAR, RIGHT]})
    tq = drive(worker, server, [QUESTION], monkeypatch)

    assert len(server.calls) == 4 and len(server.repairs) == 1
    rows = tq.rows("uid-0")
    assert sorted(rows) == [f"uid-0_{s}_0" for s in range(4)]  # every session once, none dropped or added
    assert tq.order("uid-0") == ["row"] * 4 + ["finished"]  # the repair is stored before the prompt is finished

    reflected = [k for k, f in rows.items() if f["extra_fields"].get("reflected")]
    assert len(reflected) == 1
    row = rows[reflected[0]]
    text = tokenizer.decode(row["responses"].tolist(), skip_special_tokens=True)
    # the repaired failure is the lexically nearest one (WRONG), not the unrelated one
    assert text.startswith("<think>2 plus 2 makes 5 because I added one more" + DEFAULT_CUE)
    assert text.endswith("<answer>4</answer>")

    # the decode request: that rollout's prompt + think prefix + cue, its images, the budget, the overrides
    repair = server.repairs[0]
    cue = list(worker.rgr_tokens.cue_ids)
    prompt_ids = row["prompts"].tolist()
    k = len(repair["prompt_ids"]) - len(prompt_ids) - len(cue)
    assert repair["prompt_ids"] == prompt_ids + row["responses"].tolist()[:k] + cue
    assert repair["sampling_params"]["max_tokens"] == 80 - k - len(cue)
    assert repair["sampling_params"]["temperature"] == 0.5  # care.rgr.sampling override
    assert repair["sampling_params"]["top_p"] == server.calls[0]["sampling_params"]["top_p"]  # rollout's own
    assert len(repair["image_data"]) == 1
    assert np.array_equal(np.asarray(repair["image_data"][0]), np.asarray(server.calls[0]["image_data"][0]))

    # the stored row: mask 0 / log-prob 0 on the cue, the score of the repair, multimodal inputs rebuilt
    mask, lp = row["response_mask"], row["rollout_log_probs"]
    assert mask[k:k + len(cue)].tolist() == [0] * len(cue) and lp[k:k + len(cue)].tolist() == [0.0] * len(cue)
    assert mask[:k].bool().all() and mask[k + len(cue):].bool().all()
    assert row["responses"].shape[0] <= 80
    assert torch.equal(row["input_ids"], torch.cat([row["prompts"], row["responses"]]))
    assert row["rm_scores"][-1].item() == 1.0 and row["extra_fields"]["reward_extra_info"]["acc"] == 1
    assert "pixel_values" in row["multi_modal_inputs"]
    # its siblings are the untouched originals
    originals = sorted(tokenizer.decode(f["responses"].tolist()) for key, f in rows.items() if key != reflected[0])
    assert originals == sorted([RIGHT, RIGHT, WRONG_FAR])
    assert all(f["extra_fields"]["reflected"] is False for key, f in rows.items() if key != reflected[0])
    _assert_span_records(tokenizer, rows)  # computed on the final (repaired) rollouts
    assert row["extra_fields"]["care_spans"][6] == 1  # the repaired row has a think span

    metrics = rgr_step_metrics([f["extra_fields"].get("rgr") for f in rows.values()])
    assert metrics["rgr/groups"] == 1 and metrics["rgr/eligible"] == 1 and metrics["rgr/triggered"] == 1
    assert metrics["rgr/success"] == 1 and metrics["rgr/success_rate"] == 1.0
    assert metrics["rgr/extra_token_share"] == pytest.approx(
        len(tokenizer.encode(FIX, add_special_tokens=False))
        / sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in (RIGHT, WRONG, WRONG_FAR, RIGHT)))


def test_several_prompts_each_handled_on_its_own(worker_parts, tokenizer, monkeypatch):
    worker = worker_parts
    questions = [QUESTION + " (a)", QUESTION + " (b)", QUESTION + " (c)"]
    server = _server(worker, tokenizer, {"(a)": [RIGHT, WRONG, RIGHT, RIGHT], "(b)": [RIGHT] * 4,
                                         "(c)": [WRONG, WRONG_FAR, WRONG, WRONG]})
    tq = drive(worker, server, questions, monkeypatch)
    assert len(server.repairs) == 1  # only the mixed group
    records = []
    for uid, eligible in (("uid-0", 1), ("uid-1", 0), ("uid-2", 0)):
        rows = tq.rows(uid)
        assert len(rows) == 4 and tq.order(uid)[-1] == "finished"
        recs = [f["extra_fields"]["rgr"] for f in rows.values()]
        assert all(r == recs[0] for r in recs) and recs[0]["eligible"] == eligible
        assert sum(bool(f["extra_fields"]["reflected"]) for f in rows.values()) == eligible
        records += recs
    metrics = rgr_step_metrics(records)
    assert metrics["rgr/groups"] == 3 and metrics["rgr/eligible"] == 1 and metrics["rgr/replaced"] == 1


def test_repair_decode_error_keeps_the_originals_and_is_counted(worker_parts, tokenizer, monkeypatch):
    worker = worker_parts
    server = _server(worker, tokenizer, {"2+2": [RIGHT, WRONG, RIGHT, WRONG]}, repair_error=RuntimeError("boom"))
    tq = drive(worker, server, [QUESTION], monkeypatch)
    rows = tq.rows("uid-0")
    assert len(server.repairs) == 1 and tq.order("uid-0") == ["row"] * 4 + ["finished"]
    assert sorted(tokenizer.decode(f["responses"].tolist()) for f in rows.values()) == sorted([RIGHT, WRONG] * 2)
    assert not any(f["extra_fields"]["reflected"] for f in rows.values())
    metrics = rgr_step_metrics([f["extra_fields"]["rgr"] for f in rows.values()])
    assert metrics["rgr/failed/generation_error"] == 1 and metrics["rgr/triggered"] == 1
    assert metrics["rgr/success_rate"] == 0.0


def test_a_failed_session_never_blocks_the_group(worker_parts, tokenizer, monkeypatch):
    worker = worker_parts
    server = _server(worker, tokenizer, {"2+2": [RIGHT, WRONG, "CRASH", RIGHT]}, fail_on="CRASH")
    tq = drive(worker, server, [QUESTION], monkeypatch, timeout=30)
    assert server.repairs == []  # an incomplete group is not repaired
    assert tq.order("uid-0")[-1] == "failure"  # verl's own verdict; the replay buffer drops the group
    assert len(tq.rows("uid-0")) == 3


@pytest.mark.parametrize("validate, enable", [(True, True), (False, False)])
def test_validation_and_disabled_rgr_are_plain_verl(worker_parts, tokenizer, monkeypatch, validate, enable):
    worker = worker_parts
    server = _server(worker, tokenizer, {"2+2": [RIGHT, WRONG, RIGHT, WRONG]})
    if validate:  # validation uses val_kwargs.n
        monkeypatch.setattr(worker.config.actor_rollout_ref.rollout.val_kwargs, "n", 4)
    tq = drive(worker, server, [QUESTION], monkeypatch, validate=validate, rgr_enable=enable)
    partition_rows = tq.rows("uid-0")
    assert server.repairs == [] and len(partition_rows) == 4
    assert not any("rgr" in f["extra_fields"] or "reflected" in f["extra_fields"] for f in partition_rows.values())
    # training rows carry their span record with RGR on or off (the trainer's driver decodes nothing)
    assert all(("care_spans" in f["extra_fields"]) == (not validate) for f in partition_rows.values())


def _assert_span_records(tokenizer, rows):
    from recipe.care.span_records import SPANS_KEY, span_records

    for f in rows.values():
        want = span_records(tokenizer, f["responses"].unsqueeze(0), f["response_mask"].unsqueeze(0))[0]
        assert f["extra_fields"][SPANS_KEY] == want
