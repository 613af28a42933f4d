"""Build CARE's training mix: ChartQA + Geometry3K + ViRL39K, deduplicated, as verl parquet shards.

    python data_prep/build_mix.py --out data/care_mix                      # hub ids (needs network)
    python data_prep/build_mix.py --chartqa ~/ds/chartqa --geometry3k ~/ds/geo3k \
        --virl39k ~/ds/ViRL39K --out data/care_mix                         # local copies

Also runs as ``python -m data_prep.build_mix``. See ``--help`` and the README.
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
from data_prep.pipeline import DEFAULT_IDS, BuildOptions, build  # noqa: E402
from data_prep.rows import CHARTQA_SUBSETS  # noqa: E402
from data_prep.schema import CHARTQA, DATA_SOURCES, GEOMETRY3K, VIRL39K  # noqa: E402

_DEFAULTS = BuildOptions(out="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build_mix.py",
        description=__doc__.split("\n\n")[0] + " Writes train-NNNNN.parquet shards, val.parquet, report.json "
        "(counts per source and drop reason; read = kept + dropped is checked) and dropped.jsonl "
        "(one line per dropped row) into --out.",
        formatter_class=HelpFormatter,
    )
    src = p.add_argument_group("inputs (a local path or a Hugging Face hub id)")
    src.add_argument("--chartqa", default=DEFAULT_IDS[CHARTQA], metavar="PATH_OR_ID",
                     help="ChartQA: a datasets save_to_disk folder, a parquet file or folder, or a hub id")
    src.add_argument("--chartqa-subset", choices=sorted(CHARTQA_SUBSETS), default=_DEFAULTS.chartqa_subset,
                     help="ChartQA rows to use: human-written questions (human_or_machine=0, 7,398 in "
                          "train), machine-augmented ones, or all")
    src.add_argument("--chartqa-splits", type=csv, default=_DEFAULTS.chartqa_splits, metavar="SPLITS",
                     help="comma-separated ChartQA splits to train on")
    src.add_argument("--geometry3k", default=DEFAULT_IDS[GEOMETRY3K], metavar="PATH_OR_ID",
                     help="Geometry3K: a datasets save_to_disk folder, a parquet file or folder, or a hub id")
    src.add_argument("--geometry3k-splits", type=csv, default=_DEFAULTS.geometry3k_splits, metavar="SPLITS",
                     help="comma-separated Geometry3K splits to train on")
    src.add_argument("--virl39k", default=DEFAULT_IDS[VIRL39K], metavar="PATH_OR_ID",
                     help="ViRL39K: a folder with 39Krelease.parquet and images/ or images.zip (or the "
                          "parquet file itself), or the hub id (downloads those two files)")
    src.add_argument("--sources", type=csv, default=list(DATA_SOURCES), metavar="NAMES",
                     help="comma-separated sources to include, in dedup priority order: a duplicate is "
                          "kept from the first source listed")
    ex = p.add_argument_group("test-set exclusion")
    ex.add_argument("--exclude", action="append", default=[], metavar="PATH_OR_ID",
                    help="a ChartQA or Geometry3K test set (detected from its columns); training rows whose "
                         "question and image match one of its rows are dropped. Repeatable")
    ex.add_argument("--exclude-bench", action="append", default=[], metavar="DIR",
                    help="a data_prep/build_bench.py output folder: training rows whose question (options "
                         "included) and images match a benchmark row are dropped (test_overlap). Repeatable")
    ex.add_argument("--exclude-splits", type=csv, default=_DEFAULTS.exclude_splits, metavar="SPLITS",
                    help="splits of --exclude inputs (and of the inputs themselves, see below) to exclude")
    ex.add_argument("--no-auto-exclude", dest="auto_exclude", action="store_false",
                    help="do not also exclude the --exclude-splits of the --chartqa and --geometry3k inputs "
                         "(by default their test splits are excluded whenever the input has them)")
    flt = p.add_argument_group("filters")
    flt.add_argument("--text-only", choices=("keep", "drop"), default="keep",
                     help="what to do with rows without an image (ViRL39K's DeepScaleR rows)")
    flt.add_argument("--max-prompt-tokens", type=int, default=_DEFAULTS.max_prompt_tokens,
                     help="drop rows whose prompt (instruction + question + Qwen2.5-VL visual tokens) "
                          "would exceed this many tokens (verl's max_prompt_length); 0 = no limit")
    add_image_and_dedup_args(flt, _DEFAULTS)
    add_output_and_execution_args(p, _DEFAULTS)
    return p


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    values = vars(args).copy()
    values.pop("debug")
    values["keep_text_only"] = values.pop("text_only") == "keep"
    return BuildOptions(**values)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_build("build_mix", build, options_from_args(args), args.out, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
