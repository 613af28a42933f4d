"""Drive CareActorRolloutRefWorker through verl's real FSDP engine on CPU/gloo; print JSON results.

Run as a subprocess by test_worker_embeddings.py (own process: verl reads the platform at import
time and a process group is per process):
    python tests/trainer/engine_probe.py --model qwen2|qwen25vl --layout packed|padded
"""

import argparse
import json
import os
import socket
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from recipe.care import cpu  # noqa: E402

cpu.install()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_samples(tokenizer, model_kind):
    """(prompt_ids, response_ids, pool positions) per sample; one without a think span, one with an unclosed one."""
    texts = [
        ("Question: 2+2?", "<think>two plus two is four</think><answer>4</answer>"),
        ("What is the capital of France? Answer briefly.", "Paris is the capital.<answer>Paris</answer>"),
        ("Count: a b c", "<think>a, b, c: three letters so the count is 3</think>\n<answer>3</answer>"),
        ("Hi", "<think>unclosed reasoning that runs on"),
        ("Tell me a number between one and ten please, any number", "<think>pick</think><answer>7</answer>"),
    ]
    out = []
    for prompt, response in texts:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p, r))
    return out


def make_batch(samples, pool_masks, with_emb, vl):
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    nested = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
    input_ids = [torch.tensor(p + r) for p, r in samples]
    if vl:  # text-only rows of a VLM: (4, L) = text positions + 3 M-RoPE rows, as verl's agent loop builds them
        position_ids = [torch.arange(len(x)).expand(4, -1).clone() for x in input_ids]
    else:
        position_ids = [torch.arange(len(x)) for x in input_ids]
    response_mask = [torch.ones(len(r), dtype=torch.int64) for _, r in samples]
    td = TensorDict(
        {
            "input_ids": nested(input_ids),
            "position_ids": nested(position_ids),
            "prompts": nested([torch.tensor(p) for p, _ in samples]),
            "responses": nested([torch.tensor(r) for _, r in samples]),
            "response_mask": nested(response_mask),
            "loss_mask": nested(response_mask),
            "care_pool_mask": nested(pool_masks),
        },
        batch_size=len(samples),
    )
    tu.assign_non_tensor(td, calculate_entropy=True, compute_loss=False, temperature=1.0)
    if with_emb:
        tu.assign_non_tensor(td, care_think_emb=True)
    return td


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["qwen2", "qwen25vl"], required=True)
    parser.add_argument("--layout", choices=["packed", "padded"], required=True)
    args = parser.parse_args()
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)

    from recipe.care.main_care import compose_config
    from recipe.care.spans import compute_response_spans
    from recipe.care.think_embedding import response_pool_mask
    from recipe.care.tiny_models import load_qwen25_tokenizer, tiny_qwen2_dir, tiny_qwen25_vl_dir
    from recipe.care.worker import CareActorRolloutRefWorker

    vl = args.model == "qwen25vl"
    path = str(tiny_qwen25_vl_dir() if vl else tiny_qwen2_dir())
    packed = args.layout == "packed"
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
        overrides += [
            "actor_rollout_ref.actor.use_dynamic_bsz=true",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=48",
            "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=48",
        ]
    else:
        overrides += ["actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2"]
    config = compose_config(overrides)
    worker = CareActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    tap = worker.think_embedding_tap

    tokenizer = load_qwen25_tokenizer()
    samples = build_samples(tokenizer, args.model)
    if not packed:  # fixed micro-batches of 2 must divide the batch
        samples = samples[:4]
    width = max(len(r) for _, r in samples)
    responses = torch.zeros(len(samples), width, dtype=torch.long)
    resp_mask = torch.zeros(len(samples), width, dtype=torch.long)
    for i, (_, r) in enumerate(samples):
        responses[i, : len(r)] = torch.tensor(r)
        resp_mask[i, : len(r)] = 1
    spans = compute_response_spans(tokenizer, responses, resp_mask)
    pool = response_pool_mask(spans.think_mask, spans.has_think, resp_mask)
    pool_masks = [pool[i, : len(r)].long() for i, (_, r) in enumerate(samples)]

    calls = []
    top = tap.engine.module
    handle = top.register_forward_pre_hook(lambda *a: calls.append(1))
    out_plain = worker.compute_log_prob(make_batch(samples, pool_masks, False, vl))
    calls_plain = len(calls)
    calls.clear()
    out = worker.compute_log_prob(make_batch(samples, pool_masks, True, vl))
    calls_emb = len(calls)
    handle.remove()
    emb = torch.stack(list(out["think_emb"].unbind()))

    # Reference: plain transformers, one sample at a time, fp32.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    hf_config = AutoConfig.from_pretrained(path)
    cls = AutoModelForImageTextToText if vl else AutoModelForCausalLM
    model = cls.from_pretrained(path, attn_implementation="sdpa", torch_dtype=torch.float32).eval()
    ref, lp_err = [], 0.0
    with torch.no_grad():
        for i, (p, r) in enumerate(samples):
            ids = torch.tensor([p + r])
            res = model(input_ids=ids, output_hidden_states=True)
            hidden = res.hidden_states[-1][0, len(p):]
            m = pool_masks[i].bool()
            ref.append(torch.nn.functional.normalize(hidden[m].mean(0), dim=-1))
            logp = torch.log_softmax(res.logits[0].float(), -1)[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
            got = out["log_probs"].unbind()[i][:-1]
            lp_err = max(lp_err, float((logp - got).abs().max()))
    ref = torch.stack(ref)
    print("RESULT " + json.dumps({
        "hidden_size": hf_config.get_text_config().hidden_size,
        "emb_shape": list(emb.shape),
        "max_abs_err": float((emb - ref).abs().max()),
        "norms": emb.norm(dim=-1).tolist(),
        "logprob_max_abs_err": lp_err,
        "forward_calls_plain": calls_plain,
        "forward_calls_emb": calls_emb,
        "plain_has_emb": "think_emb" in out_plain.keys(),
        "n_samples": len(samples),
        "whole_response_rows": [int(not bool(spans.has_think[i])) for i in range(len(samples))],
    }))


if __name__ == "__main__":
    main()
