"""What build_mix.py and build_sft.py share on the command line: common flags and the run/exit codes."""

from __future__ import annotations

import argparse
import sys

from data_prep.report import ReconciliationError
from data_prep.sources import SourceError


def csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_image_and_dedup_args(group, defaults) -> None:
    group.add_argument("--max-pixels", type=int, default=defaults.max_pixels,
                       help="images with more pixels are downscaled (aspect kept) to fit; smaller ones keep "
                            "their original bytes; 0 = never resize")
    group.add_argument("--tokenizer", default=None, metavar="PATH",
                       help="a local tokenizer folder to count text tokens exactly; without it text tokens "
                            "are estimated at 3 UTF-8 bytes per token (conservative)")
    group.add_argument("--hash-distance", type=int, default=defaults.hash_distance,
                       help="max Hamming distance between 256-bit perceptual hashes for two images to count "
                            "as the same picture (with the same normalised question)")


def add_output_and_execution_args(p: argparse.ArgumentParser, defaults) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="output folder")
    out.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    out.add_argument("--shard-size", type=int, default=defaults.shard_size, help="rows per training shard")
    out.add_argument("--val-size", type=int, default=defaults.val_size,
                     help="rows held out (uniformly at random, after dedup) into val.parquet")
    out.add_argument("--seed", type=int, default=defaults.seed, help="seed of the hold-out draw")
    run = p.add_argument_group("execution")
    run.add_argument("--workers", type=int, default=defaults.workers,
                     help="processes decoding, resizing and hashing images (1 = in-process)")
    run.add_argument("--batch-size", type=int, default=defaults.batch_size, help="rows per worker task")
    run.add_argument("--limit", type=int, default=0, help="read only the first N rows of each split (smoke runs)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def _split_summary(report, out_dir: str) -> str:
    outputs = report.outputs
    return (f"wrote {outputs['train_rows']} training rows in {len(outputs['train_files'])} shard(s) and "
            f"{outputs['val_rows']} validation rows to {out_dir} (details: report.json, dropped.jsonl)")


def run_build(prog: str, build, options, out_dir: str, summary=_split_summary) -> int:
    """Run a build; exit code 2 on bad input, 3 when the report does not reconcile; print the summary.

    ``summary(report, out_dir)``: the closing line (default: train/val rows of a training build)."""
    try:
        report = build(options)
    except SourceError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ReconciliationError as exc:
        print(f"{prog}: INTERNAL ERROR, output not trustworthy: {exc}", file=sys.stderr)
        return 3
    print(report.table())
    print("\n" + summary(report, out_dir))
    return 0
