"""Build CARE's cold-start SFT set: Vision-R1-cold in CARE's format, as parquet for verl's SFT trainer.

    python data_prep/build_sft.py --out data/care_sft                            # hub id: JSON files only
    python data_prep/build_sft.py --vision-r1-cold ~/ds/vision_r1_cold --out data/care_sft   # local copy
    python data_prep/build_sft.py ... --exclude ~/ds/chartqa --exclude ~/ds/benchmarks/mathvista

Also runs as ``python -m data_prep.build_sft``. See ``--help`` and the README.
"""

from __future__ import annotations

import argparse
import os
import sys

if not __package__:  # run as a script: import the package from the repo root, not this folder
    _repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    sys.path.insert(0, _repo)

from data_prep.cli import (HelpFormatter, add_image_and_dedup_args, add_output_and_execution_args, csv,  # noqa: E402
                           run_build)
from data_prep.schema import SFT_SUBSETS  # noqa: E402
from data_prep.sft_pipeline import DEFAULT_ID, SftOptions, build_sft  # noqa: E402
from data_prep.sources import VISION_R1_FILES, VISION_R1_IMAGE_DIRS  # noqa: E402

_DEFAULTS = SftOptions(out="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build_sft.py",
        description=__doc__.split("\n\n")[0] + " Writes train-NNNNN.parquet shards (columns messages, images, "
        "extra_info), val.parquet, report.json (counts per subset and drop reason; read = kept + dropped is "
        "checked) and dropped.jsonl (one line per dropped row) into --out.",
        formatter_class=HelpFormatter,
    )
    src = p.add_argument_group("input")
    src.add_argument("--vision-r1-cold", default=DEFAULT_ID, metavar="PATH_OR_ID",
                     help="a folder with " + " and ".join(VISION_R1_FILES.values()) + " (and the image folders "
                     + ", ".join(VISION_R1_IMAGE_DIRS.values()) + "), or the hub id (downloads the JSON files only)")
    src.add_argument("--image-root", default=None, metavar="DIR",
                     help="folder the image paths in the files are relative to (default: the --vision-r1-cold "
                          "folder); the images come from LLaVA-CoT-100k and Mulberry-SFT, not from the hub repo")
    src.add_argument("--subsets", type=csv, default=_DEFAULTS.subsets, metavar="NAMES",
                     help=f"comma-separated files to use, from {', '.join(SFT_SUBSETS)}")
    ex = p.add_argument_group("benchmark overlap")
    ex.add_argument("--exclude", action="append", default=[], metavar="PATH_OR_ID",
                    help="an evaluation set (ChartQA- or Geometry3K-shaped, or any table with `question` and "
                         "`images` columns); rows whose question and image(s) match one of its rows are "
                         "dropped. Repeatable")
    ex.add_argument("--exclude-bench", action="append", default=[], metavar="DIR",
                    help="a data_prep/build_bench.py output folder (the six evaluation benchmarks): rows whose "
                         "question and image(s) match a benchmark row are dropped (test_overlap). Repeatable")
    ex.add_argument("--exclude-splits", type=csv, default=_DEFAULTS.exclude_splits, metavar="SPLITS",
                    help="splits of the --exclude inputs to index")
    flt = p.add_argument_group("filters")
    flt.add_argument("--text-only", choices=("keep", "drop"), default="keep", help="rows without an image")
    flt.add_argument("--max-length", type=int, default=_DEFAULTS.max_length,
                     help="drop rows whose prompt + response (Qwen2.5-VL visual tokens included) would exceed "
                          "this many tokens (verl's data.max_length for SFT); 0 = no limit")
    add_image_and_dedup_args(flt, _DEFAULTS)
    add_output_and_execution_args(p, _DEFAULTS)
    return p


def options_from_args(args: argparse.Namespace) -> SftOptions:
    values = vars(args).copy()
    values.pop("debug")
    values["keep_text_only"] = values.pop("text_only") == "keep"
    return SftOptions(**values)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_build("build_sft", build_sft, options_from_args(args), args.out, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
