"""Drive CareActorRolloutRefWorker through verl's real FSDP engine on CPU/gloo; print JSON results.

Run as a subprocess by test_worker_embeddings.py (own process: verl reads the platform at import
time and a process group is per process):
    python tests/recipe/care/engine_probe.py --model qwen2|qwen25vl|qwen3vl --layout packed|padded

The reference is a plain transformers forward of the same checkpoint, one sample at a time, run
*before* the worker builds its model: verl's monkey patches replace transformers' class methods
(``Qwen2_5_VLModel.forward`` and, with remove-padding, the attention forward) process-wide.

Qwen2.5-VL rows are built the way verl's v1 agent loop builds them before they go to
TransferQueue (verl/trainer/ppo/v1/agent_loop_tq.py:184-202): prompt ids from the real processor
over real (PIL) images, ``multi_modal_inputs`` and the ``[4, L]`` M-RoPE position ids from
``AgentLoopWorker._compute_multi_modal_inputs`` / ``_compute_position_ids`` (verl's own methods,
called on an ``object.__new__`` worker that only holds the processor).
"""

import argparse
import json
import os
import socket
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import verl_cpu as cpu  # noqa: E402

cpu.install()

# (prompt, response): one row without a think span, one with an unclosed one.
TEXT_SAMPLES = [
    ("Question: 2+2?", "<think>two plus two is four</think><answer>4</answer>"),
    ("What is the capital of France? Answer briefly.", "Paris is the capital.<answer>Paris</answer>"),
    ("Count: a b c", "<think>a, b, c: three letters so the count is 3</think>\n<answer>3</answer>"),
    ("Hi", "<think>unclosed reasoning that runs on"),
    ("Tell me a number between one and ten please, any number", "<think>pick</think><answer>7</answer>"),
]

# (image sizes, question, response). Consecutive pairs form the fixed micro-batches of 2 of the
# padded layout: [image, image], [two images, text-only], [text-only, text-only]. The last pair is a
# micro-batch without any image, as CARE's mix produces (ViRL39K's DeepScaleR rows have no image).
VL_SAMPLES = [
    ([(90, 60)], "What shape is drawn?", "<think>a yellow disc on blue</think><answer>circle</answer>"),
    ([(56, 84)], "Which colour dominates?", "The background is mostly red.<answer>red</answer>"),
    ([(64, 64), (112, 56)], "Are the two pictures the same?", "<think>sizes differ, shapes differ</think><answer>no</answer>"),
    ([], "Question: 3*3?", "<think>three threes make nine</think><answer>9</answer>"),
    ([], "Name a prime.", "<think>two is the smallest prime, it is even"),
    ([], "Say yes.", "<answer>yes</answer>"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nested(xs):
    return torch.nested.as_nested_tensor(xs, layout=torch.jagged)


def test_image(index: int, size: tuple[int, int]):
    """A small drawn RGB picture (distinct per index), decoded by the real image processor."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, ((40 * index) % 256, 120, (200 - 30 * index) % 256))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 6, h // 6, w // 2 + index, h // 2 + index), fill=(250, 200, 0))
    draw.rectangle((w // 2, h // 3, w - 4, h - 4), outline=(0, 0, 0), width=2)
    draw.line((0, h - 1, w - 1, 0), fill=(255, 255, 255), width=1)
    return img


def text_rows(tokenizer):
    rows = []
    for prompt, response in TEXT_SAMPLES:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor(p + r)
        rows.append({"prompts": torch.tensor(p), "responses": torch.tensor(r), "input_ids": ids,
                     "position_ids": torch.arange(len(ids)), "ref_inputs": {}})
    return rows


def vl_rows(path):
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker
    from verl.utils import hf_processor

    processor = hf_processor(path)  # verl's loader: binds the model's get_rope_index to the processor
    assert processor is not None and hasattr(processor, "get_rope_index"), "no Qwen2.5-VL processor (torchvision?)"
    tokenizer = processor.tokenizer
    builder = object.__new__(AgentLoopWorker)
    builder.processor, builder.tokenizer, builder.mm_processor_kwargs = processor, tokenizer, {}
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    rows, n_image = [], 0
    for sizes, question, response in VL_SAMPLES:
        images = [test_image(n_image + k, size) for k, size in enumerate(sizes)]
        n_image += len(images)
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        encoded = processor(text=[text], images=images or None, return_tensors="pt")
        p = encoded["input_ids"][0].tolist()
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        output = AgentLoopOutput(prompt_ids=p, response_ids=r, response_mask=[1] * len(r),
                                 multi_modal_data={"images": images} if images else None, metrics=AgentLoopMetrics())
        # verl/trainer/ppo/v1/agent_loop_tq.py:184-191, in that order (_compute_position_ids pops
        # mm_token_type_ids from multi_modal_inputs).
        input_ids = torch.tensor(p + r, dtype=torch.int64)
        attention_mask = torch.ones_like(input_ids)
        multi_modal_inputs = builder._compute_multi_modal_inputs(output, input_ids)
        position_ids = builder._compute_position_ids(input_ids.unsqueeze(0), attention_mask.unsqueeze(0), multi_modal_inputs).squeeze(0)
        assert position_ids.shape == (4, len(input_ids)), position_ids.shape
        assert ("pixel_values" in multi_modal_inputs) == bool(images)
        ref_inputs = {"mm_token_type_ids": (input_ids == image_token_id).long().unsqueeze(0)}
        if images:  # the processor's own tensors for the plain transformers reference
            ref_inputs.update(pixel_values=encoded["pixel_values"], image_grid_thw=encoded["image_grid_thw"])
            assert int((input_ids == image_token_id).sum()) == int(encoded["image_grid_thw"].prod(-1).sum()) // 4
        rows.append({"prompts": torch.tensor(p), "responses": torch.tensor(r), "input_ids": input_ids,
                     "position_ids": position_ids, "multi_modal_inputs": multi_modal_inputs, "ref_inputs": ref_inputs})
    return rows, tokenizer


def make_batch(rows, pool_masks, with_emb):
    """The batch compute_log_prob receives (fields of TransferQueue's rows, jagged like verl's no-padding layout)."""
    from tensordict import NonTensorStack, TensorDict
    from verl.utils import tensordict_utils as tu

    response_mask = [torch.ones(len(row["responses"]), dtype=torch.int64) for row in rows]
    fields = {
        "input_ids": nested([row["input_ids"] for row in rows]),
        "position_ids": nested([row["position_ids"] for row in rows]),  # [B, L] or [B, 4, L] (ragged last)
        "prompts": nested([row["prompts"] for row in rows]),
        "responses": nested([row["responses"] for row in rows]),
        "response_mask": nested(response_mask),
        "loss_mask": nested(response_mask),
        "care_pool_mask": nested(pool_masks),
    }
    if "multi_modal_inputs" in rows[0]:
        fields["multi_modal_inputs"] = NonTensorStack(*[row["multi_modal_inputs"] for row in rows])
    td = TensorDict(fields, batch_size=len(rows))
    tu.assign_non_tensor(td, calculate_entropy=True, compute_loss=False, temperature=1.0)
    if with_emb:
        tu.assign_non_tensor(td, care_think_emb=True)
    return td


def reference(path, vl, rows, pool_masks):
    """Plain transformers (unpatched classes), fp32, one sample at a time: pooled embeddings and log-probs."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForImageTextToText if vl else AutoModelForCausalLM
    model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    inner = getattr(model, "model", model)
    assert type(inner).forward.__module__.startswith("transformers."), "reference must run before verl patches transformers"
    embs, logps = [], []
    with torch.no_grad():
        for row, mask in zip(rows, pool_masks, strict=True):
            ids = row["input_ids"].unsqueeze(0)
            res = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **row["ref_inputs"])
            hidden = res.hidden_states[-1][0, len(row["prompts"]):]
            embs.append(torch.nn.functional.normalize(hidden[mask.bool()].mean(0), dim=-1))
            logp = torch.log_softmax(res.logits[0].float(), -1)[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
            logps.append(logp)
    del model
    return torch.stack(embs), logps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["qwen2", "qwen25vl", "qwen3vl"], required=True)
    parser.add_argument("--layout", choices=["packed", "padded"], required=True)
    args = parser.parse_args()
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)

    from recipe.care.main_care import compose_config
    from recipe.care.spans import compute_response_spans
    from recipe.care.think_embedding import response_pool_mask
    from smoke.tiny_models import load_qwen25_tokenizer, tiny_qwen2_dir, tiny_qwen3_vl_dir, tiny_qwen25_vl_dir
    from recipe.care.think_embedding_tap import CareActorRolloutRefWorker
    from verl.utils import tensordict_utils as tu

    vl = args.model in ("qwen25vl", "qwen3vl")
    path = str({"qwen2": tiny_qwen2_dir, "qwen25vl": tiny_qwen25_vl_dir, "qwen3vl": tiny_qwen3_vl_dir}[args.model]())
    packed = args.layout == "packed"
    if vl:
        rows, tokenizer = vl_rows(path)
    else:
        tokenizer = load_qwen25_tokenizer()
        rows = text_rows(tokenizer)
        if not packed:  # fixed micro-batches of 2 must divide the batch
            rows = rows[:4]

    width = max(len(row["responses"]) for row in rows)
    responses = torch.zeros(len(rows), width, dtype=torch.long)
    resp_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        responses[i, : len(row["responses"])] = row["responses"]
        resp_mask[i, : len(row["responses"])] = 1
    spans = compute_response_spans(tokenizer, responses, resp_mask)
    pool = response_pool_mask(spans.think_mask, spans.has_think, resp_mask)
    pool_masks = [pool[i, : len(row["responses"])].long() for i, row in enumerate(rows)]

    ref_emb, ref_logp = reference(path, vl, rows, pool_masks)

    overrides = [
        f"actor_rollout_ref.model.path={path}",
        f"actor_rollout_ref.model.use_remove_padding={packed}",
        *cpu.CPU_CONFIG_OVERRIDES,
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "data.train_batch_size=1",
        "trainer.n_gpus_per_node=1",
    ]
    if packed:  # dynamic batch size: token-budgeted micro-batches, reordered and restored by verl
        budget = 96 if vl else 48  # the longest sequence must fit; several micro-batches either way
        overrides += [
            "actor_rollout_ref.actor.use_dynamic_bsz=true",
            f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}",
            f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
        ]
    else:
        overrides += ["actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2"]
    config = compose_config(overrides)
    worker = CareActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    tap = worker.think_embedding_tap

    calls = []
    handle = tap.engine.module.register_forward_pre_hook(lambda *a: calls.append(1))
    out_plain = worker.compute_log_prob(make_batch(rows, pool_masks, False))
    calls_plain = len(calls)
    calls.clear()
    out = worker.compute_log_prob(make_batch(rows, pool_masks, True))
    calls_emb = len(calls)
    dyn_emb, calls_dyn = None, 0
    if not packed:
        # The batch may switch the padded engine to token-budgeted micro-batches (verl only fills
        # use_dynamic_bsz/max_token_len_per_gpu when absent, engine_workers.py:406-415): verl then
        # reorders the rows into micro-batches and restores the order afterwards.
        calls.clear()
        batch = make_batch(rows, pool_masks, True)
        tu.assign_non_tensor(batch, use_dynamic_bsz=True, max_token_len_per_gpu=96 if vl else 48)
        dyn_emb = torch.stack(list(worker.compute_log_prob(batch)["think_emb"].unbind()))
        calls_dyn = len(calls)
    handle.remove()
    emb = torch.stack(list(out["think_emb"].unbind()))

    from transformers import AutoConfig

    lp_err = 0.0
    for i, logp in enumerate(ref_logp):
        got = out["log_probs"].unbind()[i][:-1]
        lp_err = max(lp_err, float((logp - got).abs().max()))
    plain_lp = torch.cat([x for x in out_plain["log_probs"].unbind()])
    emb_lp = torch.cat([x for x in out["log_probs"].unbind()])
    print("RESULT " + json.dumps({
        "hidden_size": AutoConfig.from_pretrained(path).get_text_config().hidden_size,
        "emb_shape": list(emb.shape),
        "max_abs_err": float((emb - ref_emb).abs().max()),
        "norms": emb.norm(dim=-1).tolist(),
        "logprob_max_abs_err": lp_err,
        "logprob_plain_vs_emb_err": float((plain_lp - emb_lp).abs().max()),
        "dynamic_bsz_max_abs_err": None if dyn_emb is None else float((dyn_emb - ref_emb).abs().max()),
        "forward_calls_dynamic_bsz": calls_dyn,
        "forward_calls_plain": calls_plain,
        "forward_calls_emb": calls_emb,
        "plain_has_emb": "think_emb" in out_plain.keys(),
        "n_samples": len(rows),
        "think_tag_tokens": len(tokenizer("<think>", add_special_tokens=False)["input_ids"]),
        "image_rows": [int("pixel_values" in row.get("multi_modal_inputs", {})) for row in rows],
        "position_ids_rows": [int(row["position_ids"].shape[0]) if row["position_ids"].dim() == 2 else 1 for row in rows],
        "whole_response_rows": [int(not bool(spans.has_think[i])) for i in range(len(rows))],
    }))


if __name__ == "__main__":
    main()
