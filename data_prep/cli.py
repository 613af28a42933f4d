"""What the builders (build_mix.py, build_sft.py, build_bench.py) share on the command line: common
flags, the help format, and the run with its exit codes (0 built, 2 bad input or unusable --out,
3 a report that does not reconcile)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from contextlib import contextmanager

from data_prep.report import ReconciliationError
from data_prep.sources import SourceError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except for on/off flags: ``--no-progress (default: True)`` reads as if the
    bars were hidden by default, when the default is the stored destination's (progress shown)."""

    def _get_help_string(self, action):
        if action.nargs == 0:  # store_true / store_false / store_const
            return action.help
        return super()._get_help_string(action)


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
    add_run_flags(run)


def add_run_flags(group) -> None:
    """--no-progress and --debug, for every builder."""
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="hide the progress bars (ours and the datasets library's)")
    group.add_argument("--debug", action="store_true",
                       help="on an error, show the Python traceback too (also CARE_DEBUG=1)")


def quiet_libraries() -> None:
    """The datasets / huggingface_hub progress bars (loading a save, downloads) off, as --no-progress asks."""
    import datasets
    import huggingface_hub

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


@contextmanager
def datasets_bars_off():
    """datasets' progress bars off inside the block (``save_to_disk`` prints one per split), then as before."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def _split_summary(report, out_dir: str) -> str:
    outputs = report.outputs
    return (f"wrote {outputs['train_rows']} training rows in {len(outputs['train_files'])} shard(s) and "
            f"{outputs['val_rows']} validation rows to {out_dir} (details: report.json, dropped.jsonl)")


def debug_wanted(debug: bool = False, environ=os.environ) -> bool:
    return debug or environ.get("CARE_DEBUG", "") not in ("", "0")


def run_build(prog: str, build, options, out_dir: str, summary=_split_summary, debug: bool = False) -> int:
    """Run a build; print the table, the warnings and the summary, and return the exit code.

    Exit 2 on bad input or an unusable --out, 3 when the report does not reconcile, 1 on anything
    else; each is one line on stderr (the traceback too with ``debug`` or CARE_DEBUG=1).
    ``summary(report, out_dir)``: the closing line (default: train/val rows of a training build)."""
    debug = debug_wanted(debug)
    if not getattr(options, "progress", True):
        quiet_libraries()
    try:
        report = build(options)
    except SourceError as exc:
        return _fail(prog, f"error: {exc}", 2, debug)
    except ReconciliationError as exc:
        return _fail(prog, f"INTERNAL ERROR, output not trustworthy: {exc}", 3, debug)
    except Exception as exc:  # a bug or an environment problem: still one line, the traceback on request
        return _fail(prog, f"error: {type(exc).__name__}: {exc} (--out {out_dir} was left as it was; rerun with "
                           f"--debug for the traceback)", 1, debug)
    print(report.table())
    for warning in report.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    print("\n" + summary(report, out_dir))
    return 0


def _fail(prog: str, message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)
    return code
