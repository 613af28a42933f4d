"""Cost of ``care.records``: CARE's advantage step with the per-group / per-repair records on vs off.

    python benchmarks/bench_records.py [--prompts 128 --n 8 --length 2048 --hidden 3584 --repeat 9] [--trainer] [--inline]
    python benchmarks/bench_records.py --quick --trainer    # tiny shape, seconds (what the test runs)

"off" = the core of the trainer's advantage step: ``compute_care_sequence_advantages`` +
``compute_region_weighted_token_advantages`` on a synthetic padded batch (``make_batch``).
"on" = the same plus what ``CarePPOTrainer._write_care_records`` adds: handing the step's tensors to
``RecordsWriter.submit``, whose thread runs ``build_group_records``, ``build_repair_records`` (an RGR
outcome on every mixed group, its failure replaced by a reflected row) and the append of both JSON
lines files (to a temporary folder on local disk); ``--inline`` does that on the step's own thread.
The two are timed alternately, so machine load hits both alike; the median of --repeat pairs is reported.
``--trainer`` also times the trainer's whole advantage step, ``compute_care_advantage_fields`` (spans
from token ids, advantages, metrics, the fields written back), on a batch shaped as TransferQueue
returns it. The last line is ``records on/off time ratio: X.XX`` (records may cost at most 10%: <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from recipe.care.care_config import CareConfig  # noqa: E402
from recipe.care.core_algos import compute_care_sequence_advantages, compute_region_weighted_token_advantages  # noqa: E402
from recipe.care.group_records import (GROUPS_FILE, REPAIRS_FILE, RecordsWriter, build_group_records,  # noqa: E402
                                       build_repair_records)

RGR_SETTINGS = {"selector": "lexical", "mode": "rederive",
                "cue": "\nYour previous reasoning had an error. Find the mistake, correct it, and re-derive. Keep it concise.\n"}


def make_batch(prompts: int, n: int, length: int, hidden: int, seed: int = 0) -> dict:
    """Padded tensors as the advantage step holds them: all-correct, mixed and all-wrong groups, rows of
    one group scattered as verl's balance step leaves them, think span ~80% of each response."""
    gen = torch.Generator().manual_seed(seed)
    batch = prompts * n
    p_correct = torch.rand(prompts, generator=gen).repeat_interleave(n)
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
    rows = dict(token_level_rewards=token_level_rewards, response_mask=response_mask, acc=acc,
                think_mask=think_mask, answer_mask=answer_mask, think_len=think_mask.sum(1),
                answer_len=answer_mask.sum(1), response_len=resp_len,
                think_emb=torch.randn(batch, hidden, generator=gen), logp_sum=-torch.rand(batch, generator=gen) * resp_len)
    # One reordering for every per-row field, so a row keeps its group, accuracy and reward together.
    order = torch.from_numpy(np.random.default_rng(seed).permutation(batch))
    index = np.array([f"uid-{i // n}" for i in range(batch)], dtype=object)[order.numpy()]
    return {"index": index, **{key: value[order] for key, value in rows.items()}}


def add_rgr(b: dict, n: int) -> None:
    """Mixed groups get an RGR outcome record on every row and their first failure flagged as reflected."""
    acc, index = b["acc"], b["index"]
    rows_of: dict = {}
    for row, uid in enumerate(index.tolist()):
        rows_of.setdefault(uid, []).append(row)
    reflected = torch.zeros(len(index), dtype=torch.bool)
    rgr = [None] * len(index)
    for uid, rows in rows_of.items():
        accs = [int(acc[r]) for r in rows]
        if 0 < sum(accs) < len(rows):
            source = accs.index(0)
            reflected[rows[source]] = True
            record = {"group": uid, "eligible": 1, "triggered": 1, "replaced": 1, "success": int(source % 2),
                      "reason": "", "extra_tokens": 100, "rollout_tokens": 8000, "source": source}
            for r in rows:
                rgr[r] = record
    b["reflected"], b["rgr"] = reflected, rgr


def build_records(b: dict, cfg: CareConfig, step: int, seq_adv, info, spent: list | None = None) -> dict:
    """What CarePPOTrainer._write_care_records hands to the writer's thread."""
    start = time.perf_counter()
    out = {GROUPS_FILE: build_group_records(step, b["index"], seq_adv, b["acc"], b["reflected"], info, cfg),
           REPAIRS_FILE: build_repair_records(step, b["index"], b["rgr"], seq_adv, b["acc"], b["reflected"],
                                              b["think_len"], b["answer_len"], info["group_id"], cfg, RGR_SETTINGS)}
    if spent is not None:
        spent.append(time.perf_counter() - start)
    return out


def advantage_step(b: dict, cfg: CareConfig, writer: RecordsWriter | None, step: int, spent: list | None = None):
    rewards = b["token_level_rewards"].sum(-1)
    seq_adv, info = compute_care_sequence_advantages(
        rewards=rewards, acc=b["acc"], index=b["index"], think_len=b["think_len"], answer_len=b["answer_len"],
        think_emb=b["think_emb"], logp_sum=b["logp_sum"], response_len=b["response_len"],
        reflected=b["reflected"], config=cfg)
    token_adv = compute_region_weighted_token_advantages(seq_adv, b["acc"], b["think_mask"], b["answer_mask"],
                                                         b["response_mask"], cfg)
    if writer is not None:
        writer.submit(lambda: build_records(b, cfg, step, seq_adv, info, spent))
    return token_adv


def trainer_batch(prompts: int, n: int, length: int, hidden: int, tokenizer, seed: int = 0):
    """A batch as the care_sync trainer reads it from TransferQueue (verl's list_of_dict_to_tensordict)."""
    import random

    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    word = tokenizer.encode(" step", add_special_tokens=False)
    rows = []
    for p in range(prompts):
        p_correct = rng.random()
        accs = [int(rng.random() < p_correct) for _ in range(n)]
        mixed = 0 < sum(accs) < n
        for i, acc in enumerate(accs):
            think = word * rng.randint(length // 16, length // 2)
            ids = (tokenizer.encode("<think>", add_special_tokens=False) + think
                   + tokenizer.encode(f"</think><answer>{acc}</answer>", add_special_tokens=False)
                   + [tokenizer.eos_token_id])[:length]
            m = len(ids)
            rm = torch.zeros(m)
            rm[-1] = 0.9 * acc + 0.1
            rgr = {"group": f"u{p}", "eligible": int(mixed), "triggered": int(mixed), "replaced": int(mixed),
                   "success": 0, "reason": "", "extra_tokens": 10, "rollout_tokens": 100, "source": 0}
            rows.append({
                "uid": f"u{p}", "responses": torch.tensor(ids), "response_mask": torch.ones(m, dtype=torch.int64),
                "rm_scores": rm, "old_log_probs": -torch.rand(m, generator=gen),
                "think_emb": torch.randn(hidden, generator=gen), "data_source": "chartqa",
                "extra_fields": {"reward_extra_info": {"acc": acc, "format": 1.0}, "rgr": rgr,
                                 "reflected": mixed and i == accs.index(0)},
            })
    return list_of_dict_to_tensordict(rows)


def bench_trainer_step(args, cfg: CareConfig) -> None:
    """The trainer's whole advantage step (spans, advantages, metrics, the fields written back) on/off."""
    import numpy as np

    from smoke.tiny_models import load_qwen25_tokenizer
    from recipe.care.trainer import CarePPOTrainer, compute_care_advantage_fields

    tokenizer = load_qwen25_tokenizer()
    data = trainer_batch(args.prompts, args.n, args.length, args.hidden, tokenizer)
    padding = np.zeros(args.prompts * args.n, dtype=bool)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = object.__new__(CarePPOTrainer)  # as the trainer tests: no Ray, only what the step uses
        trainer.care_config, trainer.care_rgr_settings = cfg, RGR_SETTINGS
        trainer.care_records = RecordsWriter(tmp, background=not args.inline)
        off, on = [], []
        for step in range(args.repeat + 1):
            for times, write_records in ((off, None), (on, trainer._write_care_records)) if step % 2 \
                    else ((on, trainer._write_care_records), (off, None)):
                trainer.global_steps = step
                start = time.perf_counter()
                compute_care_advantage_fields(data, padding, tokenizer, cfg, write_records=write_records)
                if step:  # step 0 warms up
                    times.append(time.perf_counter() - start)
            trainer.care_records.flush()
        trainer.care_records.close()
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"trainer advantage step (compute_care_advantage_fields), records off: median {t_off * 1e3:.1f} ms")
    print(f"trainer advantage step (compute_care_advantage_fields), records on:  median {t_on * 1e3:.1f} ms")
    print(f"trainer step records on/off time ratio: {t_on / t_off:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=128, help="prompts per step (the paper: 128)")
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--length", type=int, default=2048, help="response tokens")
    parser.add_argument("--hidden", type=int, default=3584, help="think-embedding size (Qwen2.5-VL-7B: 3584)")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--inline", action="store_true", help="build and write on the step's thread (no background)")
    parser.add_argument("--trainer", action="store_true",
                        help="also time the trainer's whole advantage step (needs verl and the Qwen2.5 tokenizer)")
    parser.add_argument("--quick", action="store_true", help="8 prompts x 8 x 256 tokens, H=64, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.length, args.hidden, args.repeat = 8, 256, 64, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    b = make_batch(args.prompts, args.n, args.length, args.hidden)
    add_rgr(b, args.n)
    cfg = CareConfig()
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordsWriter(tmp, background=not args.inline)
        advantage_step(b, cfg, None, 0), advantage_step(b, cfg, writer, 0)  # warm-up
        writer.flush()
        off, on, records_only = [], [], []
        for step in range(1, args.repeat + 1):
            for times, w in ((off, None), (on, writer)) if step % 2 else ((on, writer), (off, None)):
                start = time.perf_counter()
                advantage_step(b, cfg, w, step, records_only)
                times.append(time.perf_counter() - start)
            writer.flush()  # in the trainer minutes pass between steps; here the next pair waits for the writer
        writer.close()
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / (args.repeat + 1)
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"batch: {args.prompts} prompts x {args.n} rollouts x {args.length} tokens, H={args.hidden}, "
          f"torch threads={torch.get_num_threads()}, {args.repeat} alternating pairs")
    print(f"advantage step, records off: median {t_off * 1e3:.1f} ms")
    print(f"advantage step, records on:  median {t_on * 1e3:.1f} ms ({size / 1024:.0f} KiB of JSON lines per step)")
    print(f"records built {'inline' if args.inline else 'on the writer thread'}: median "
          f"{statistics.median(records_only) * 1e3:.1f} ms (= {statistics.median(records_only) / t_off:.1%} of the step)")
    if args.trainer:
        bench_trainer_step(args, cfg)
    print(f"records on/off time ratio: {t_on / t_off:.2f}")


if __name__ == "__main__":
    main()
