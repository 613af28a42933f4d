"""What CARE adds to the trainer's driver per step, against verl's GRPO advantage step, in one run.

    python benchmarks/bench_advantage.py [--prompts 512 --n 8 --length 2048 --hidden 3584 --repeat 3]
    python benchmarks/bench_advantage.py --quick      # tiny shape, seconds (what the test runs)

The batch is what the driver holds after the rollout: realistic reasoning responses tokenised with
the real Qwen2.5(-VL) vocabulary (``<think>...</think>\\n<answer>...</answer><|im_end|>``, lengths
long-tailed up to ``--length``, some truncated without an answer), rows shuffled as verl's balance
step leaves them, read as TransferQueue returns them (nested TensorDicts of per-row fields,
``extra_fields`` dicts with the reward info, RGR records and the span record the CARE agent-loop
worker computed with the rollout).

CARE (the trainer's own functions, recipe/care/trainer.py):
  old-log-prob step: ``pool_mask_field`` (the nested pool-mask field it writes to TransferQueue,
  built from the rows' span records on the jagged values);
  advantage step: ``compute_care_advantage_fields`` (padding the fields, spans, reward info,
  sequence advantages, region token weights, section-8 metrics, nested outputs).
GRPO: what verl 0.9.1's ``_compute_advantage`` does on the driver for ``adv_estimator=grpo``
(trainer_base.py:1743): pad the fields, ``compute_grpo_outcome_advantage``, nest the outputs.
TransferQueue transport itself is not timed (no Ray here); the bytes of the extra fields CARE moves
are printed. The spans' decoding runs in the agent-loop workers (one rollout at a time, beside the
generation); its per-rollout cost is printed for reference and is not driver work.

Prints each part's median time over ``--repeat`` runs; the last line is ``care/grpo time ratio: X``
(the whole CARE driver work over verl's GRPO step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from recipe.care.care_config import CareConfig  # noqa: E402
from recipe.care.core_algos import compute_care_sequence_advantages, compute_region_weighted_token_advantages  # noqa: E402
from recipe.care.metrics import care_advantage_metrics, data_source_metrics  # noqa: E402
from recipe.care.rgr import rgr_step_metrics  # noqa: E402
from recipe.care.span_records import SPANS_KEY, records_of, span_records, spans_from_records  # noqa: E402
from recipe.care.think_embedding import response_pool_mask  # noqa: E402

# Reasoning sentences of the kind Qwen2.5-VL writes on ChartQA / Geometry3K / ViRL39K.
SENTENCES = [
    "Looking at the chart, the bar for {y} reaches about {a} on the vertical axis.",
    "The angle at vertex {p} is {a} degrees, so the remaining angle is {b} degrees.",
    "By the Pythagorean theorem, the hypotenuse is the square root of {a}^2 + {b}^2.",
    "Let me compute the difference: {a} - {b} = {c}.",
    "Wait, I should double-check the value read from the legend for {y}.",
    "Since the triangle is isosceles, the base angles are equal, each {c} degrees.",
    "The area of the circle is \\pi r^2 = \\pi \\cdot {a}^2 \\approx {c}.",
    "So the ratio of {y} to {z} is {a}:{b}, which simplifies to {c}.",
    "Adding the segments gives {a} + {b} = {c} units in total.",
    "Hmm, the line in {z} drops sharply between {y} and the next year.",
    "Therefore the perimeter is 2 \\times ({a} + {b}) = {c}.",
    "The tangent is perpendicular to the radius, so \\angle {p}OA = 90^\\circ.",
]
WORDS = ["2019", "2020", "Germany", "exports", "revenue", "Q3", "sales", "group A", "the median"]
POINTS = ["A", "B", "C", "D", "E", "P", "Q"]


def reasoning_pieces(tokenizer, rng: np.random.Generator, count: int = 400) -> list[list[int]]:
    """Token ids of ``count`` filled-in sentences (tokenised once; responses concatenate them)."""
    texts = []
    for _ in range(count):
        a, b = int(rng.integers(2, 99)), int(rng.integers(2, 99))
        texts.append(" " + rng.choice(SENTENCES).format(a=a, b=b, c=a + b, y=rng.choice(WORDS), z=rng.choice(WORDS),
                                                        p=rng.choice(POINTS)))
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def make_rows(tokenizer, prompts: int, n: int, length: int, hidden: int, seed: int = 0) -> tuple[list[dict], list[bool]]:
    """Row dicts as verl's agent loop writes them to TransferQueue (plus old_log_probs/think_emb from the actor)."""
    rng = np.random.default_rng(seed)
    pieces = reasoning_pieces(tokenizer, rng)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    think_open, close_open, answer_close = enc("<think>\n"), enc("</think>\n<answer>"), enc("</answer>")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Long-tailed response lengths: log-normal, median ~0.3 * length, clipped at length (truncation).
    target = np.minimum(rng.lognormal(np.log(0.3 * length), 0.6, prompts * n).astype(int) + 16, length)
    p_correct = rng.random(prompts)
    rows = []
    for i in range(prompts * n):
        group = i // n
        acc = int(rng.random() < p_correct[group])
        answer = enc(str(int(rng.integers(1, 100))))
        ids = list(think_open)
        while len(ids) < target[i] - len(close_open) - len(answer) - len(answer_close) - 1:
            ids += pieces[int(rng.integers(len(pieces)))]
        ids = (ids + close_open + answer + answer_close + [eos])[:length]  # truncated: unclosed think
        if len(ids) == length:
            acc = 0
        m = len(ids)
        fmt = float(ids[-1] == eos)
        rm = torch.zeros(m)
        rm[-1] = 0.9 * acc + 0.1 * fmt
        rgr = {"group": f"uid-{group}", "eligible": 1, "triggered": 1, "replaced": 1, "success": 1, "reason": "",
               "extra_tokens": 300, "rollout_tokens": 8 * 800}
        rows.append({
            "uid": f"uid-{group}",
            "data_source": ["chartqa", "geometry3k", "virl39k"][group % 3],
            "responses": torch.tensor(ids, dtype=torch.int64),
            "response_mask": torch.ones(m, dtype=torch.int64),
            "rm_scores": rm,
            "old_log_probs": -torch.rand(m),
            "think_emb": torch.nn.functional.normalize(torch.randn(hidden), dim=0),
            "extra_fields": {"reward_extra_info": {"acc": acc, "format": fmt, "score": float(rm[-1])},
                             "reflected": False, "rgr": rgr},
        })
    order = rng.permutation(len(rows))  # verl's balance step reorders rows: groups are not contiguous
    return [rows[j] for j in order], [False] * len(rows)


def add_span_records(tokenizer, rows: list[dict]) -> float:
    """What the CARE agent-loop worker does per rollout; returns seconds per rollout."""
    start = time.perf_counter()
    for row in rows:
        row["extra_fields"][SPANS_KEY] = span_records(tokenizer, row["responses"].unsqueeze(0),
                                                      row["response_mask"].unsqueeze(0))[0]
    return (time.perf_counter() - start) / len(rows)


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--length", type=int, default=2048, help="max response tokens")
    parser.add_argument("--hidden", type=int, default=3584, help="think-embedding size (Qwen2.5-VL-7B: 3584)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="8 prompts x 8 x 256 tokens, H=64, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.length, args.hidden, args.repeat = 8, 256, 64, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict
    from verl.workers.utils.padding import response_to_nested

    from smoke.tiny_models import load_qwen25_tokenizer
    from recipe.care.trainer import ADVANTAGE_FIELDS, _column, _padded, compute_care_advantage_fields, \
        pool_mask_field, read_reward_info

    tokenizer = load_qwen25_tokenizer()
    rows, is_padding = make_rows(tokenizer, args.prompts, args.n, args.length, args.hidden)
    worker_span_s = add_span_records(tokenizer, rows)
    care_data = list_of_dict_to_tensordict([{k: r[k] for k in ADVANTAGE_FIELDS} for r in rows])
    grpo_data = care_data.select("uid", "response_mask", "rm_scores", "old_log_probs")  # shares storage
    olp_data = care_data.select("response_mask", "extra_fields")
    responses = torch.nn.utils.rnn.pad_sequence([r["responses"] for r in rows], batch_first=True)
    is_padding = np.asarray(is_padding)
    cfg = CareConfig()
    lengths = torch.tensor([len(r["responses"]) for r in rows])
    extra_bytes = sum(r["think_emb"].numel() * 4 + r["responses"].numel() * 8 for r in rows)  # emb read, pool mask written
    del rows
    print(f"batch: {args.prompts} prompts x {args.n} rollouts, responses up to {args.length} tokens "
          f"(mean {lengths.float().mean():.0f}, truncated {(lengths == args.length).float().mean():.1%}), "
          f"H={args.hidden}, torch threads={torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")

    def grpo_step():
        # verl 0.9.1 trainer_base.py:1743-1800 for adv_estimator=grpo, minus the TransferQueue transport
        response_mask = grpo_data["response_mask"]
        padded = grpo_data.to_padded_tensor()
        index = np.array(grpo_data.get("uid").tolist(), dtype=object)  # as verl does
        adv, ret = compute_grpo_outcome_advantage(padded["rm_scores"], padded["response_mask"], index)
        return response_to_nested(adv, response_mask), response_to_nested(ret, response_mask)

    def care_old_log_prob_step():  # CarePPOTrainer._compute_old_log_prob, minus transport
        return pool_mask_field(olp_data, tokenizer, None)

    def care_advantage_step():  # CarePPOTrainer._compute_advantage, minus transport
        return compute_care_advantage_fields(care_data, is_padding, tokenizer, cfg)

    # Parts, on the padded tensors the advantage step builds (for the breakdown only).
    mask = _padded(care_data["response_mask"])
    extra = _column(care_data, "extra_fields")
    acc, fmt, reflected = read_reward_info(extra)
    rewards = _padded(care_data["rm_scores"]).float().sum(-1)
    logp = (_padded(care_data["old_log_probs"]).float() * mask).sum(-1)
    emb = torch.stack(list(care_data["think_emb"].unbind())) if care_data["think_emb"].is_nested \
        else care_data["think_emb"]
    uid = np.asarray(_column(care_data, "uid"), dtype=object)
    spans = spans_from_records(records_of(extra), mask)
    seq_adv, info = compute_care_sequence_advantages(
        rewards=rewards, acc=acc, index=uid, think_len=spans.think_len, answer_len=spans.answer_len,
        think_emb=emb.float(), logp_sum=logp, response_len=mask.sum(-1), reflected=reflected, config=cfg)
    token_adv = compute_region_weighted_token_advantages(seq_adv, acc, spans.think_mask, spans.answer_mask, mask, cfg)
    sources = _column(care_data, "data_source")
    parts = {
        "spans (records -> masks)": lambda: spans_from_records(records_of(extra), mask),
        "pool mask field (records, jagged)": care_old_log_prob_step,
        "advantages (sequence)": lambda: compute_care_sequence_advantages(
            rewards=rewards, acc=acc, index=uid, think_len=spans.think_len, answer_len=spans.answer_len,
            think_emb=emb.float(), logp_sum=logp, response_len=mask.sum(-1), reflected=reflected, config=cfg),
        "token weights (region)": lambda: compute_region_weighted_token_advantages(
            seq_adv, acc, spans.think_mask, spans.answer_mask, mask, cfg),
        "metrics (reward info + section 8)": lambda: (
            read_reward_info(extra), care_advantage_metrics(seq_adv, token_adv, acc, info, k=cfg.k),
            data_source_metrics(sources, acc, fmt), rgr_step_metrics([e.get("rgr") for e in extra])),
        "decoding spans on the driver (old)": lambda: __import__("recipe.care.spans", fromlist=["x"])
            .compute_response_spans(tokenizer, responses, mask),
    }
    print(f"{'part':<40}{'median s':>10}")
    for name, fn in parts.items():
        print(f"{name:<40}{median_time(fn, args.repeat):>10.3f}")
    grpo_t = median_time(grpo_step, args.repeat)
    care_t = median_time(lambda: (care_old_log_prob_step(), care_advantage_step()), args.repeat)
    print(f"span records in the agent-loop workers: {worker_span_s * 1e3:.3f} ms per rollout "
          f"(not on the driver; spread over the workers, beside generation)")
    print(f"extra TransferQueue bytes per step (think_emb read, pool mask written): {extra_bytes / 2**20:.0f} MiB")
    print(f"{'verl grpo advantage step':<40}{grpo_t:>10.3f}")
    print(f"{'care driver work (old-log-prob + adv)':<40}{care_t:>10.3f}")
    print(f"care/grpo time ratio: {care_t / grpo_t:.2f}")


if __name__ == "__main__":
    main()
