"""Cost of ``care.records``: CARE's advantage step with the per-group / per-repair records on vs off.

    python benchmarks/bench_records.py [--prompts 128 --n 8 --length 2048 --hidden 3584 --repeat 9]

"off" = what the trainer runs every step: ``compute_care_sequence_advantages`` +
``compute_region_weighted_token_advantages`` (benchmarks/bench_advantage.py's ``care_step``).
"on" = the same plus what ``CarePPOTrainer._write_care_records`` adds: ``build_group_records``,
``build_repair_records`` (an RGR outcome on every mixed group, its failure replaced by a reflected
row) and the append of both JSON lines files (to a temporary folder on local disk). The two are
timed alternately, so machine load hits both alike; the median of --repeat pairs is reported.
The last line is ``records on/off time ratio: X.XX`` (the issue's bound: <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_advantage import make_batch  # noqa: E402

from recipe.care.core_algos import (CareConfig, compute_care_sequence_advantages,  # noqa: E402
                                    compute_region_weighted_token_advantages)
from recipe.care.records import (GROUPS_FILE, REPAIRS_FILE, RecordsWriter, build_group_records,  # noqa: E402
                                 build_repair_records)

RGR_SETTINGS = {"selector": "lexical", "mode": "rederive",
                "cue": "\nYour previous reasoning had an error. Find the mistake, correct it, and re-derive. Keep it concise.\n"}


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


def write_records(b: dict, cfg: CareConfig, writer: RecordsWriter, step: int, seq_adv, info) -> None:
    """What CarePPOTrainer._write_care_records does."""
    writer.write(GROUPS_FILE, build_group_records(step, b["index"], seq_adv, b["acc"], b["reflected"], info, cfg))
    writer.write(REPAIRS_FILE, build_repair_records(step, b["index"], b["rgr"], seq_adv, b["acc"], b["reflected"],
                                                    b["think_len"], b["answer_len"], info["group_id"], cfg,
                                                    RGR_SETTINGS))


def advantage_step(b: dict, cfg: CareConfig, writer: RecordsWriter | None, step: int, parts: list | None = None):
    rewards = b["token_level_rewards"].sum(-1)
    seq_adv, info = compute_care_sequence_advantages(
        rewards=rewards, acc=b["acc"], index=b["index"], think_len=b["think_len"], answer_len=b["answer_len"],
        think_emb=b["think_emb"], logp_sum=b["logp_sum"], response_len=b["response_len"],
        reflected=b["reflected"], config=cfg)
    token_adv = compute_region_weighted_token_advantages(seq_adv, b["acc"], b["think_mask"], b["answer_mask"],
                                                         b["response_mask"], cfg)
    if writer is not None:
        start = time.perf_counter()
        write_records(b, cfg, writer, step, seq_adv, info)
        if parts is not None:
            parts.append(time.perf_counter() - start)
    return token_adv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=128, help="prompts per step (the paper: 128)")
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--length", type=int, default=2048, help="response tokens")
    parser.add_argument("--hidden", type=int, default=3584, help="think-embedding size (Qwen2.5-VL-7B: 3584)")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = make_batch(args.prompts, args.n, args.length, args.hidden)
    add_rgr(b, args.n)
    cfg = CareConfig()
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordsWriter(tmp)
        advantage_step(b, cfg, None, 0), advantage_step(b, cfg, writer, 0)  # warm-up
        off, on, records_only = [], [], []
        for step in range(1, args.repeat + 1):
            for times, w in ((off, None), (on, writer)) if step % 2 else ((on, writer), (off, None)):
                start = time.perf_counter()
                advantage_step(b, cfg, w, step, records_only)
                times.append(time.perf_counter() - start)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / (args.repeat + 1)
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"batch: {args.prompts} prompts x {args.n} rollouts x {args.length} tokens, H={args.hidden}, "
          f"torch threads={torch.get_num_threads()}, {args.repeat} alternating pairs")
    print(f"advantage step, records off: median {t_off * 1e3:.1f} ms")
    print(f"advantage step, records on:  median {t_on * 1e3:.1f} ms ({size / 1024:.0f} KiB of JSON lines per step)")
    print(f"records alone (build + append): median {statistics.median(records_only) * 1e3:.1f} ms "
          f"= {statistics.median(records_only) / t_off:.1%} of the step with records off")
    print(f"records on/off time ratio: {t_on / t_off:.2f}")


if __name__ == "__main__":
    main()
