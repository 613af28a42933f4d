"""How many cold-start SFT steps the smoke run's tiny model needs (smoke/driver.py SFT_STEPS).

For each SFT length: run the smoke's cold-start stage (build_sft.py on the Vision-R1-cold
look-alike, then verl's SFT trainer through ``torchrun -m recipe.care.main_sft``, the same
``build_model`` the smoke run calls), then sample ``n`` answers per RL training prompt at
temperature 1 with plain transformers, score them with the real verifiers, and print the accuracy
and the share of groups that are mixed / all-wrong / all-correct (CARE's anchored path needs mixed
groups, the rescue all-wrong ones). Too little SFT leaves steps without any mixed group; too much
leaves no all-wrong group and no rescue to see.

    python benchmarks/smoke_sft_accuracy.py --steps 50 100 200   # ~1-2 min per length on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def group_accuracy(model_dir: Path, train_files: list[str], n: int, seed: int) -> list[list[int]]:
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from smoke.cpu_run import MAX_RESPONSE
    from smoke.driver import chat_prompt
    from verifiers import verify

    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    torch.manual_seed(seed)
    groups = []
    rows = [row for path in train_files for row in pq.read_table(path).to_pylist()]
    for row in rows:
        prompt, images = chat_prompt(row, processor)
        enc = processor(text=[prompt], images=images, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=MAX_RESPONSE, num_return_sequences=n)
        texts = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        groups.append([verify(row["data_source"], t, row["reward_model"]["ground_truth"])["acc"] for t in texts])
    return groups


def main() -> int:
    from report.load import read_metrics
    from smoke.cpu_run import ROLLOUT_N, SFT_STEPS
    from smoke.driver import build_model
    from smoke.tiny_data import build_data
    from smoke.tiny_models import tiny_qwen25_vl_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[SFT_STEPS // 2, SFT_STEPS,
                                                                     2 * SFT_STEPS])
    parser.add_argument("--n", type=int, default=ROLLOUT_N, help="answers sampled per prompt")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="reuse a smoke workdir (data and SFT checkpoints)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="care-sft-"))
    files = build_data(workdir, tiny_qwen25_vl_dir(), sys.executable)
    train = files[:-1]
    lines = [f"{'SFT steps':>13} {'accuracy':>9} {'mixed':>6} {'all-wrong':>9} {'all-correct':>11} {'SFT loss':>15}"]
    for steps in args.steps:
        model_dir = build_model(workdir, sys.executable, train, steps)
        groups = group_accuracy(model_dir, train, args.n, args.seed)
        flat = [a for g in groups for a in g]
        share = lambda pred: sum(map(pred, groups)) / len(groups)  # noqa: E731
        losses = [r["data"]["train/loss"] for r in read_metrics(workdir / "metrics" / "sft.jsonl")]
        loss = f"{losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "(cached)"
        lines.append(f"{steps:>13} {sum(flat) / len(flat):>9.2f} {share(lambda g: 0 < sum(g) < len(g)):>6.2f} "
                     f"{share(lambda g: sum(g) == 0):>9.2f} {share(lambda g: sum(g) == len(g)):>11.2f} {loss:>15}")
        print(lines[-1], flush=True)
    print("\n".join(lines))  # once more, after the trainers' logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
