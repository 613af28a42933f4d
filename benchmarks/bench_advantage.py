"""Time CARE's advantage step against verl's GRPO estimator on the same synthetic batch.

    python benchmarks/bench_advantage.py [--prompts 512 --n 8 --length 2048 --hidden 3584 --repeat 5]

Both sides start from what the trainer holds: token-level rewards [B, L] and a response mask.
CARE = sequence reward sum + compute_care_sequence_advantages + compute_region_weighted_token_advantages
(its inputs: acc, spans, think embeddings [B, H], old log-prob sums, group ids).
GRPO = verl.trainer.ppo.core_algos.compute_grpo_outcome_advantage (and its vectorised variant,
printed for reference). Reports the median of --repeat runs and the peak RSS growth during each
call (sampled every millisecond). The last line is ``care/grpo time ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np
import psutil
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from recipe.care.core_algos import (CareConfig, compute_care_sequence_advantages,  # noqa: E402
                                    compute_region_weighted_token_advantages)


def make_batch(prompts: int, n: int, length: int, hidden: int, seed: int = 0) -> dict:
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


def care_step(b: dict, cfg: CareConfig) -> torch.Tensor:
    rewards = b["token_level_rewards"].sum(-1)
    seq_adv, _ = compute_care_sequence_advantages(
        rewards=rewards, acc=b["acc"], index=b["index"], think_len=b["think_len"], answer_len=b["answer_len"],
        think_emb=b["think_emb"], logp_sum=b["logp_sum"], response_len=b["response_len"], reflected=None,
        config=cfg)
    return compute_region_weighted_token_advantages(seq_adv, b["acc"], b["think_mask"], b["answer_mask"],
                                                    b["response_mask"], cfg)


def measure(fn, repeat: int) -> tuple[float, float]:
    """(median seconds, peak RSS growth MiB) over ``repeat`` calls after one warm-up."""
    fn()
    proc = psutil.Process()
    times, peaks = [], []
    for _ in range(repeat):
        base = proc.memory_info().rss
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        stop.set()
        sampler.join()
        peaks.append((max(peak[0], proc.memory_info().rss) - base) / 2**20)
        del out
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--length", type=int, default=2048, help="response tokens")
    parser.add_argument("--hidden", type=int, default=3584, help="think-embedding size (Qwen2.5-VL-7B: 3584)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, compute_grpo_vectorized_outcome_advantage

    b = make_batch(args.prompts, args.n, args.length, args.hidden)
    cfg = CareConfig()
    print(f"batch: {args.prompts} prompts x {args.n} rollouts x {args.length} tokens, H={args.hidden}, "
          f"torch threads={torch.get_num_threads()}")
    grpo_t, grpo_m = measure(lambda: compute_grpo_outcome_advantage(
        b["token_level_rewards"], b["response_mask"], b["index"])[0], args.repeat)
    grpo_vec_t, grpo_vec_m = measure(lambda: compute_grpo_vectorized_outcome_advantage(
        b["token_level_rewards"], b["response_mask"], b["index"])[0], args.repeat)
    care_t, care_m = measure(lambda: care_step(b, cfg), args.repeat)
    print(f"{'estimator':<34}{'median s':>10}{'peak RSS growth MiB':>22}")
    print(f"{'verl grpo (compute_grpo_outcome)':<34}{grpo_t:>10.3f}{grpo_m:>22.0f}")
    print(f"{'verl grpo_vectorized':<34}{grpo_vec_t:>10.3f}{grpo_vec_m:>22.0f}")
    print(f"{'care (sequence + token)':<34}{care_t:>10.3f}{care_m:>22.0f}")
    print(f"care/grpo_vectorized time ratio: {care_t / grpo_vec_t:.2f}")
    print(f"care/grpo time ratio: {care_t / grpo_t:.2f}")


if __name__ == "__main__":
    main()
