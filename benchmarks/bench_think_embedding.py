"""What the think-embedding tap costs inside verl's old-log-prob pass: same inputs, tap on vs off.

    flock /tmp/care-heavy.lock python benchmarks/bench_think_embedding.py [--samples 8 --prompt 64 --response 256 --repeat 2]
    python benchmarks/bench_think_embedding.py --quick     # tiny model, seconds (what the test runs)

Runs :class:`recipe.care.think_embedding_tap.CareActorRolloutRefWorker` (verl 0.9.1's ``ActorRolloutRefWorker``
with the tap) through verl's real FSDP2 engine on CPU (gloo, world size 1, fp32, remove-padding,
token-budgeted micro-batches), on a randomly initialised Qwen2 of Qwen2.5-0.5B's depth and width
(24 layers, hidden 896, 14 heads / 2 KV heads, the real 151,936-token vocabulary; ~0.3-0.5 B
parameters, see the printed count). Each pass is ``worker.compute_log_prob`` on the same batch of
reasoning responses, with and without the ``care_think_emb`` flag (the tap pools the final-norm
states over each pool mask); passes alternate (off, on, off, on, ...) and the median is kept.

Memory: in separate passes (one per variant, not timed), glibc's in-use heap (``mallinfo2``:
torch's CPU tensors live there) is sampled every 5 ms; the peak above the level before the pass is compared, and the
difference is set against one sample's response states (response tokens x hidden x 4 bytes),
the tap's own working set. The tap's own pooling time inside the timed passes is also printed,
as a share of the pass (robust to the machine's load, unlike the end-to-end ratio). The last line is ``think-embedding tap time ratio: X``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import verl_cpu as cpu  # noqa: E402

cpu.install()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes allocated through malloc right now (small-block arenas + mmapped large blocks)."""
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def timed(fn) -> float:
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def peak_growth(fn) -> int:
    """Peak heap growth in bytes above the level before the call (sampled; mallinfo2 takes the arena
    locks, so these passes are not the timed ones)."""
    base = heap_in_use()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], heap_in_use())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = fn()
    stop.set()
    sampler.join()
    del out
    return max(peak[0], heap_in_use()) - base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nested(xs):
    return torch.nested.as_nested_tensor(xs, layout=torch.jagged)


def make_rows(tokenizer, samples: int, prompt_len: int, response_len: int, seed: int = 0):
    """(prompt ids, response ids) of reasoning responses with a think and an answer span, varied lengths."""
    gen = torch.Generator().manual_seed(seed)
    sentence = tokenizer.encode(" The base is 12 and the height is 5, so the area is 30 square units.",
                                add_special_tokens=False)
    open_ids = tokenizer.encode("<think>\n", add_special_tokens=False)
    tail = tokenizer.encode("</think>\n<answer>30</answer>", add_special_tokens=False) + [tokenizer.eos_token_id]
    rows = []
    for _ in range(samples):
        p = int(prompt_len * (0.75 + 0.5 * torch.rand(1, generator=gen)))
        r = int(response_len * (0.5 + torch.rand(1, generator=gen)))
        prompt = torch.randint(1000, 100000, (p,), generator=gen).tolist()
        body = (sentence * (r // len(sentence) + 1))[: max(1, r - len(open_ids) - len(tail))]
        rows.append((prompt, open_ids + body + tail))
    return rows


def make_batch(rows, pool_masks, with_emb: bool):
    """The batch compute_log_prob receives (TransferQueue's fields, jagged as in verl's no-padding layout)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    inputs = [torch.tensor(p + r) for p, r in rows]
    response_mask = [torch.ones(len(r), dtype=torch.int64) for _, r in rows]
    td = TensorDict({
        "input_ids": nested(inputs),
        "position_ids": nested([torch.arange(len(x)) for x in inputs]),
        "prompts": nested([torch.tensor(p) for p, _ in rows]),
        "responses": nested([torch.tensor(r) for _, r in rows]),
        "response_mask": nested(response_mask),
        "loss_mask": nested(response_mask),
        "care_pool_mask": nested(pool_masks),
    }, batch_size=len(rows))
    tu.assign_non_tensor(td, calculate_entropy=False, compute_loss=False, temperature=1.0)
    if with_emb:
        tu.assign_non_tensor(td, care_think_emb=True)
    return td


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64, help="mean prompt tokens")
    parser.add_argument("--response", type=int, default=256, help="mean response tokens")
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--token-budget", type=int, default=2048, help="log_prob_max_token_len_per_gpu")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per variant")
    parser.add_argument("--quick", action="store_true", help="tiny model and batch, 1 pass each")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.prompt, args.response, args.hidden, args.layers = 4, 16, 32, 64, 2
        args.heads, args.kv_heads, args.token_budget, args.repeat = 4, 2, 128, 1

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)

    from recipe.care.main_care import compose_config
    from recipe.care.spans import compute_response_spans
    from recipe.care.think_embedding import response_pool_mask
    from smoke.tiny_models import load_qwen25_tokenizer, tiny_qwen2_dir
    from recipe.care.think_embedding_tap import CareActorRolloutRefWorker

    tokenizer = load_qwen25_tokenizer()
    path = str(tiny_qwen2_dir(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                              num_kv_heads=args.kv_heads))
    rows = make_rows(tokenizer, args.samples, args.prompt, args.response)
    width = max(len(r) for _, r in rows)
    responses = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (_, r) in enumerate(rows):
        responses[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    spans = compute_response_spans(tokenizer, responses, mask)
    pool = response_pool_mask(spans.think_mask, spans.has_think, mask)
    pool_masks = [pool[i, :len(r)].long() for i, (_, r) in enumerate(rows)]

    config = compose_config([
        f"actor_rollout_ref.model.path={path}",
        "actor_rollout_ref.model.use_remove_padding=true",
        *cpu.CPU_CONFIG_OVERRIDES,
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "data.train_batch_size=1",
        "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.actor.use_dynamic_bsz=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={args.token_budget}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={args.token_budget}",
    ])
    worker = CareActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    params = sum(p.numel() for p in worker.think_embedding_tap.engine.module.parameters())
    tokens = sum(len(p) + len(r) for p, r in rows)
    resp_tokens = [len(r) for _, r in rows]
    print(f"model: Qwen2 {args.layers} layers, hidden {args.hidden}, {params / 1e6:.0f}M parameters (fp32, FSDP2 on "
          f"gloo); batch: {args.samples} samples, {tokens} tokens (responses {min(resp_tokens)}-{max(resp_tokens)}), "
          f"token budget {args.token_budget}; torch threads {torch.get_num_threads()}; load {os.getloadavg()[0]:.2f}")

    # The tap's own work inside the pass (pooling in the final-norm hook), timed where it runs: a
    # load-independent share of the pass, beside the end-to-end medians that the load makes noisy.
    tap = worker.think_embedding_tap
    tap_pool, tap_seconds = tap.pool, [0.0]

    def timed_pool(hidden, micro_batch):
        start = time.perf_counter()
        pooled = tap_pool(hidden, micro_batch)
        tap_seconds[0] += time.perf_counter() - start
        return pooled

    tap.pool = timed_pool

    def run(with_emb: bool):
        return worker.compute_log_prob(make_batch(rows, pool_masks, with_emb))

    plain_out, tap_out = run(False), run(True)  # warm-up, and the outputs compared below
    assert "think_emb" not in plain_out.keys() and tap_out["think_emb"].shape[0] == len(rows)
    lp_diff = max(float((a - b).abs().max()) for a, b in zip(plain_out["log_probs"].unbind(),
                                                            tap_out["log_probs"].unbind(), strict=True))
    del plain_out, tap_out
    tap_seconds[0] = 0.0
    times = {False: [], True: []}
    peaks = {False: [], True: []}
    for _ in range(args.repeat):
        for with_emb in (False, True):
            times[with_emb].append(timed(lambda: run(with_emb)))
    tap_per_pass = tap_seconds[0] / args.repeat
    for with_emb in (False, True):
        peaks[with_emb].append(peak_growth(lambda: run(with_emb)))
    t_off, t_on = statistics.median(times[False]), statistics.median(times[True])
    m_off, m_on = statistics.median(peaks[False]), statistics.median(peaks[True])
    one_sample = max(resp_tokens) * args.hidden * 4
    print(f"{'old-log-prob pass':<22}{'median s':>10}{'peak heap growth MiB':>22}")
    print(f"{'without tap':<22}{t_off:>10.2f}{m_off / 2**20:>22.1f}")
    print(f"{'with tap':<22}{t_on:>10.2f}{m_on / 2**20:>22.1f}")
    print(f"log-probs with vs without the tap: max |diff| {lp_diff:.2e}")
    print(f"tap's own work (pooling in the hook): {tap_per_pass * 1e3:.1f} ms per pass = "
          f"{tap_per_pass / t_on:.2%} of the pass with the tap")
    print(f"think-embedding tap peak memory ratio: {m_on / max(m_off, 1):.4f}")
    print(f"tap peak memory growth: {(m_on - m_off) / 2**20:+.2f} MiB; one sample's response states "
          f"(longest response x hidden x fp32): {one_sample / 2**20:.2f} MiB")
    print("RESULT " + json.dumps({"time_off": t_off, "time_on": t_on, "peak_off": m_off, "peak_on": m_on,
                                  "one_sample_bytes": one_sample, "logprob_diff": lp_diff, "params": params,
                                  "tap_s_per_pass": tap_per_pass}))
    print(f"think-embedding tap time ratio: {t_on / t_off:.3f}")


if __name__ == "__main__":
    main()
