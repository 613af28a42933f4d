"""A prepared GPU check of what CPU runs cannot show: torch + transformers only.

    python benchmarks/gpu_check.py                      # one GPU (H200: meant to finish in < 8 min)
    python benchmarks/gpu_check.py --device cpu --quick # reduced sizes; runs in the test suite

No vLLM, Ray or flash-attn (sdpa attention); the recipe's pure modules (think_embedding,
core_algos) are imported from this checkout; verl is used only for its GRPO estimator in the last
check, which is skipped if verl cannot be imported. Random weights, random images: nothing is
downloaded. Each check prints one line, ``PASS``/``FAIL``/``SKIP name: figures``; the last line is
``gpu_check: P/N checks passed`` (skipped checks are not counted in N). Exit code 0 iff P == N.

Checks:
1. bf16_vs_fp32_embeddings: a Qwen2.5-VL with 7B dimensions (hidden 3584, 28 heads, 4 KV heads,
   vision 1280) and few layers, with images. Think embeddings pooled from the final norm's
   output of an fp32 forward vs a bf16 forward (verl's autocast); and the pooling itself under
   autocast vs in fp32 on the same bf16 states (must agree to 1e-6: pooling runs in fp32).
2. packed_vs_padded: the same samples pooled from one right-padded batch and from per-sample
   forwards concatenated as verl's packed layout: equal embeddings.
3. fsdp2_tap_once[_offload]: the model under FSDP2 on one rank (with and without CPU offload,
   gradient checkpointing on), one forward + backward: the final-norm hook fires exactly once
   per forward, and its output equals ``hidden_states[-1]``.
4. pooling_cost: pooling time and peak extra memory at B=16, L=4096, H=3584 (bf16 states).
5. care_advantage_vs_grpo: CARE's advantage step on the device equals the same step on CPU;
   time ratio against verl's GRPO estimator on the same batch.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from recipe.care.think_embedding import (pool_think_embeddings, response_states_packed,  # noqa: E402
                                         response_states_padded)

# Qwen2.5-VL token ids (tokenizer_config.json of the released checkpoints).
VISION_START, VISION_END, IMAGE_PAD = 151652, 151653, 151655


@dataclass
class Sizes:
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    layers: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vocab: int
    image_px: int
    prompt_tokens: int
    response_tokens: int
    batch: int
    pool_b: int
    pool_l: int
    pool_h: int
    prompts: int
    adv_length: int


FULL = Sizes(hidden=3584, heads=28, kv_heads=4, intermediate=18944, layers=2, vision_hidden=1280, vision_depth=2,
             vision_heads=16, vocab=152064, image_px=448, prompt_tokens=48, response_tokens=256, batch=4,
             pool_b=16, pool_l=4096, pool_h=3584, prompts=512, adv_length=2048)
QUICK = Sizes(hidden=64, heads=4, kv_heads=2, intermediate=128, layers=2, vision_hidden=32, vision_depth=1,
              vision_heads=2, vocab=151936, image_px=56, prompt_tokens=8, response_tokens=24, batch=3,
              pool_b=4, pool_l=256, pool_h=64, prompts=16, adv_length=64)


class Report:
    def __init__(self):
        self.passed = self.run = 0

    def line(self, status: str, name: str, detail: str) -> None:
        if status != "SKIP":
            self.run += 1
            self.passed += status == "PASS"
        print(f"{status} {name}: {detail}", flush=True)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.line("PASS" if ok else "FAIL", name, detail)


# ---------------------------------------------------------------------------------------------
# model and inputs
# ---------------------------------------------------------------------------------------------
def build_model(s: Sizes, device: torch.device, dtype: torch.dtype = torch.float32):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    head_dim = s.hidden // s.heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4] if s is QUICK else [16, 24, 24]  # 7B: head_dim 128
    text = dict(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
                tie_word_embeddings=False)
    vision = dict(depth=s.vision_depth, hidden_size=s.vision_hidden, intermediate_size=s.vision_hidden * 2,
                  num_heads=s.vision_heads, out_hidden_size=s.hidden, fullatt_block_indexes=[s.vision_depth - 1],
                  window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_PAD,
                              vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                              tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(device=device, dtype=dtype)
    model.eval()
    return model


def make_samples(s: Sizes, seed: int = 0) -> list[dict]:
    """``batch`` samples: [text, image slot, text] prompt + response tokens; per-sample lengths differ."""
    from transformers import Qwen2VLImageProcessor

    rng = np.random.default_rng(seed)
    processor = Qwen2VLImageProcessor(min_pixels=s.image_px ** 2 // 2, max_pixels=s.image_px ** 2)
    samples = []
    for i in range(s.batch):
        image = (rng.random((s.image_px, s.image_px, 3)) * 255).astype(np.uint8)
        vision = processor(images=[image], return_tensors="pt")
        n_image_tokens = int(vision["image_grid_thw"].prod()) // 4
        prompt = [*rng.integers(100, 150000, s.prompt_tokens // 2), VISION_START, *[IMAGE_PAD] * n_image_tokens,
                  VISION_END, *rng.integers(100, 150000, s.prompt_tokens // 2)]
        resp_len = s.response_tokens - 3 * i
        response = rng.integers(100, 150000, resp_len)
        think = torch.zeros(resp_len, dtype=torch.bool)
        think[1: int(resp_len * 0.7)] = True
        samples.append(dict(input_ids=torch.tensor([*prompt, *response]), resp_len=resp_len, think=think,
                            pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"]))
    return samples


@contextmanager
def norm_capture(model):
    """Forward hook on the decoder's final norm (what recipe/care/think_embedding_tap.py's tap hooks)."""
    captured = []
    handle = model.get_decoder().norm.register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def forward_one(model, sample: dict, device, autocast_dtype=None) -> torch.Tensor:
    """Final-norm states [S, H] of one sample (batch of one, no padding)."""
    ids = sample["input_ids"].to(device).unsqueeze(0)
    ctx = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else _null()
    with torch.no_grad(), ctx, norm_capture(model) as cap:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=sample["pixel_values"].to(device),
              image_grid_thw=sample["image_grid_thw"].to(device))
    return cap[-1][0]


@contextmanager
def _null():
    yield


def pooled_from_states(states: list[torch.Tensor], samples: list[dict]) -> torch.Tensor:
    seq = torch.tensor([st.shape[0] for st in states])
    resp = torch.tensor([sm["resp_len"] for sm in samples])
    views = response_states_packed(torch.cat(states), seq, resp)
    return pool_think_embeddings(views, [sm["think"] for sm in samples])


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def check_bf16_vs_fp32(report: Report, model, samples, device) -> None:
    fp32 = [forward_one(model, sm, device) for sm in samples]
    bf16 = [forward_one(model, sm, device, torch.bfloat16) for sm in samples]
    ref = pooled_from_states(fp32, samples)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        under_autocast = pooled_from_states(bf16, samples)
    pooled_fp32_of_bf16 = pooled_from_states(bf16, samples)
    pool_err = (under_autocast - pooled_fp32_of_bf16).abs().max().item()
    cos = F.cosine_similarity(under_autocast, ref, dim=-1)
    # the error pooling in bf16 would add (what running the pooling matmul under autocast gave)
    naive = F.normalize(torch.stack([(sm["think"].to(device=device, dtype=torch.bfloat16).unsqueeze(0)
                                      @ st[-sm["resp_len"]:].to(torch.bfloat16)).float().squeeze(0)
                                     for st, sm in zip(bf16, samples)]), dim=-1)
    naive_err = (naive - pooled_fp32_of_bf16).abs().max().item()
    report.check("bf16_vs_fp32_embeddings",
                 pool_err <= 1e-6 and cos.min().item() > 0.99 and under_autocast.dtype == torch.float32,
                 f"pooling under bf16 autocast vs fp32 max|d|={pool_err:.1e} (bf16 pooling would give {naive_err:.1e}); "
                 f"bf16 forward vs fp32 forward: min cosine {cos.min().item():.6f}, "
                 f"max|d|={(under_autocast - ref).abs().max().item():.1e} (H={ref.shape[1]}, B={ref.shape[0]}, images)")


def check_packed_vs_padded(report: Report, model, samples, device) -> None:
    per_sample = [forward_one(model, sm, device) for sm in samples]
    packed = pooled_from_states(per_sample, samples)
    seq = [sm["input_ids"].shape[0] for sm in samples]
    width = max(seq)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for i, sm in enumerate(samples):
        ids[i, : seq[i]] = sm["input_ids"]
        mask[i, : seq[i]] = 1
    with torch.no_grad(), norm_capture(model) as cap:
        model(input_ids=ids.to(device), attention_mask=mask.to(device),
              pixel_values=torch.cat([sm["pixel_values"] for sm in samples]).to(device),
              image_grid_thw=torch.cat([sm["image_grid_thw"] for sm in samples]).to(device))
    views = response_states_padded(cap[-1], torch.tensor(seq), torch.tensor([sm["resp_len"] for sm in samples]))
    padded = pool_think_embeddings(views, [sm["think"] for sm in samples])
    cos = F.cosine_similarity(packed, padded, dim=-1).min().item()
    report.check("packed_vs_padded", cos > 0.9999,
                 f"min cosine {cos:.7f}, max|d|={(packed - padded).abs().max().item():.1e} over {len(samples)} samples "
                 f"of {min(seq)}..{max(seq)} tokens")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_fsdp2_tap(report: Report, s: Sizes, samples, device, offload: bool) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    name = "fsdp2_tap_once" + ("_offload" if offload else "")
    model = build_model(s, torch.device("cpu") if offload else device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if device.type == "cuda" else MixedPrecisionPolicy()}
    if offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for layer in model.get_decoder().layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    sm = samples[0]
    ids = sm["input_ids"].to(device).unsqueeze(0)
    with norm_capture(model) as cap:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=sm["pixel_values"].to(device),
                    image_grid_thw=sm["image_grid_thw"].to(device), output_hidden_states=True)
        after_forward = len(cap)
        out.logits.float().mean().backward()
        after_backward = len(cap)
    same = torch.equal(cap[0], out.hidden_states[-1]) if cap else False
    grads = sum(p.grad is not None for p in model.parameters())
    report.check(name, after_forward == 1 and after_backward == 1 and same and grads > 0,
                 f"hook calls: {after_forward} in forward, {after_backward} after backward (gradient checkpointing on); "
                 f"hook output == hidden_states[-1]: {same}; {grads} parameters got gradients")
    del model, out, cap


def check_pooling_cost(report: Report, s: Sizes, device) -> None:
    gen = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(s.pool_b, s.pool_l, s.pool_h, generator=gen).to(device=device, dtype=torch.bfloat16)
    seq = torch.randint(s.pool_l // 2, s.pool_l + 1, (s.pool_b,), generator=gen)
    resp = seq // 2
    masks = [torch.rand(int(r), generator=gen) < 0.8 for r in resp]
    run = lambda: pool_think_embeddings(response_states_padded(hidden, seq, resp), masks)  # noqa: E731
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    repeat = 5
    for _ in range(repeat):
        out = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / repeat * 1000
    one_sample_fp32 = int(resp.max()) * s.pool_h * 4
    if device.type == "cuda":
        extra = torch.cuda.max_memory_allocated() - base
        ok = extra <= 2 * one_sample_fp32 + out.numel() * 4 * 4
        mem = f"peak extra memory {extra / 2**20:.1f} MiB (one sample's fp32 response states: {one_sample_fp32 / 2**20:.1f} MiB; " \
              f"the states themselves: {hidden.numel() * 2 / 2**20:.0f} MiB)"
    else:
        ok, mem = True, "peak memory not measured on cpu"
    report.check("pooling_cost", ok and bool(torch.isfinite(out).all()),
                 f"B={s.pool_b} L={s.pool_l} H={s.pool_h} bf16: {ms:.2f} ms per call; {mem}")


# A synthetic CARE batch (binary-ish rewards, spans, embeddings) and the advantage step on it: tensors
# only, so the check runs on the GPU node's bare torch (benchmarks/bench_advantage.py times the trainer's
# whole driver step on real token ids instead).
def synthetic_batch(prompts: int, n: int, length: int, hidden: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = prompts * n
    p_correct = torch.rand(prompts, generator=gen).repeat_interleave(n)  # all-correct, mixed and all-wrong groups
    acc = (torch.rand(batch, generator=gen) < p_correct).long()
    fmt = (torch.rand(batch, generator=gen) < 0.9).float()
    resp_len = torch.randint(length // 8, length + 1, (batch,), generator=gen)
    positions = torch.arange(length)
    response_mask = (positions < resp_len.unsqueeze(1)).float()
    think_end = (resp_len.float() * 0.8).long()
    think_mask = (positions >= 3) & (positions < think_end.unsqueeze(1))
    answer_mask = (positions >= think_end.unsqueeze(1) + 4) & (positions < resp_len.unsqueeze(1) - 4)
    token_level_rewards = torch.zeros(batch, length)
    token_level_rewards[torch.arange(batch), resp_len - 1] = 0.9 * acc.float() + 0.1 * fmt
    index = np.array([f"uid-{i // n}" for i in range(batch)], dtype=object)
    rng = np.random.default_rng(seed)
    index = index[rng.permutation(batch)]  # verl's balance step reorders rows: groups are not contiguous
    return dict(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        acc=acc,
        think_mask=think_mask,
        answer_mask=answer_mask,
        think_len=think_mask.sum(1),
        answer_len=answer_mask.sum(1),
        response_len=resp_len,
        think_emb=torch.randn(batch, hidden, generator=gen),
        logp_sum=-torch.rand(batch, generator=gen) * resp_len,
    )


def care_step(b: dict, cfg) -> torch.Tensor:
    from recipe.care.core_algos import compute_care_sequence_advantages, compute_region_weighted_token_advantages

    rewards = b["token_level_rewards"].sum(-1)
    seq_adv, _ = compute_care_sequence_advantages(
        rewards=rewards, acc=b["acc"], index=b["index"], think_len=b["think_len"], answer_len=b["answer_len"],
        think_emb=b["think_emb"], logp_sum=b["logp_sum"], response_len=b["response_len"], reflected=None,
        config=cfg)
    return compute_region_weighted_token_advantages(seq_adv, b["acc"], b["think_mask"], b["answer_mask"],
                                                    b["response_mask"], cfg)


def check_care_advantage(report: Report, s: Sizes, device) -> None:
    from recipe.care.care_config import CareConfig

    try:
        from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    except Exception as exc:  # noqa: BLE001
        report.line("SKIP", "care_advantage_vs_grpo", f"verl's GRPO estimator does not import here ({type(exc).__name__})")
        return
    cfg = CareConfig()
    b_cpu = synthetic_batch(s.prompts, 8, s.adv_length, s.pool_h)
    b_dev = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b_cpu.items()}
    ref = care_step(b_cpu, cfg)

    def timed(fn):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    dev, care_s = timed(lambda: care_step(b_dev, cfg))
    _, grpo_s = timed(lambda: compute_grpo_outcome_advantage(b_dev["token_level_rewards"], b_dev["response_mask"],
                                                             b_dev["index"]))
    err = (dev.cpu() - ref).abs().max().item()
    report.check("care_advantage_vs_grpo", err <= 1e-5 and dev.device.type == device.type,
                 f"{s.prompts}x8 rollouts x {s.adv_length} tokens: {device.type} vs cpu max|d|={err:.1e}; "
                 f"care {care_s * 1000:.1f} ms, verl grpo {grpo_s * 1000:.1f} ms, ratio {care_s / grpo_s:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's mode)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (use --device cpu --quick for the CPU mode)")
        print("gpu_check: 0/1 checks passed")
        return 1
    device = torch.device(args.device)
    s = QUICK if args.quick else FULL
    report = Report()
    t0 = time.time()
    print(f"gpu_check: torch {torch.__version__}, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"{'quick' if args.quick else 'full'} sizes", flush=True)

    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(0)

    def guarded(name, fn, *a):
        try:
            fn(*a)
        except Exception as exc:  # noqa: BLE001 - one line per check, the traceback on stderr
            traceback.print_exc()
            report.check(name, False, f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    samples = make_samples(s)
    model = build_model(s, device)
    guarded("bf16_vs_fp32_embeddings", check_bf16_vs_fp32, report, model, samples, device)
    guarded("packed_vs_padded", check_packed_vs_padded, report, model, samples, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    guarded("fsdp2_tap_once", check_fsdp2_tap, report, s, samples, device, False)
    guarded("fsdp2_tap_once_offload", check_fsdp2_tap, report, s, samples, device, True)
    guarded("pooling_cost", check_pooling_cost, report, s, device)
    guarded("care_advantage_vs_grpo", check_care_advantage, report, s, device)
    dist.destroy_process_group()
    print(f"gpu_check: {report.passed}/{report.run} checks passed ({time.time() - t0:.0f}s)")
    return 0 if report.passed == report.run else 1


if __name__ == "__main__":
    sys.exit(main())
