"""The cold-start build: Vision-R1-cold -> CARE-format chat rows for verl's MultiTurnSFTDataset.

The same machinery as the RL mix (:mod:`data_prep.pipeline`): inputs opened and checked before any
work, rows streamed through the process pool, test-set overlap and duplicates dropped with the
same index, shards written as rows arrive, and a report that reconciles read = kept + dropped.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import partial

from data_prep.cold_start import cold_start_record, process_sft_batch
from data_prep.dedup import DedupIndex
from data_prep.pipeline import (OUTPUT_GLOBS, Inputs, WorkerPool, _admit, _bar, _counted, bench_excludes, check_counts,
                                check_names, finish, index_excludes, record_batches, usable_cpus)
from data_prep.process import WorkerConfig
from data_prep.rows import EXCLUDE_COLUMNS
from data_prep.report import Report
from data_prep.schema import SFT_SCHEMA, SFT_SUBSETS
from data_prep.sources import SourceError, check_columns, exclude_kind, open_tabular, open_vision_r1_cold
from data_prep.writer import HoldOut, ShardWriter, staged_output

DEFAULT_ID = "Osilly/Vision-R1-cold"


@dataclass
class SftOptions:
    out: str
    vision_r1_cold: str = DEFAULT_ID
    subsets: list[str] = field(default_factory=lambda: list(SFT_SUBSETS))
    image_root: str | None = None
    exclude: list[str] = field(default_factory=list)
    exclude_bench: list[str] = field(default_factory=list)  # data_prep/build_bench.py output folders
    exclude_splits: list[str] = field(default_factory=lambda: ["test"])
    keep_text_only: bool = True
    max_pixels: int = 1003520  # the RL mix's budget (build_mix.py), so SFT and RL see the same resolution
    max_length: int = 16384  # Vision-R1's cutoff_len for Qwen2.5-VL-7B cold start; verl's data.max_length
    tokenizer: str | None = None
    hash_distance: int = 12
    shard_size: int = 4096
    val_size: int = 0  # Vision-R1 trains with val_size 0
    seed: int = 42
    workers: int = field(default_factory=lambda: usable_cpus())
    batch_size: int = 32
    limit: int = 0
    overwrite: bool = False
    progress: bool = True


def _validate(opts: SftOptions) -> None:
    check_names("--subsets", opts.subsets, SFT_SUBSETS)
    check_counts(opts, ("max_pixels", "max_length", "hash_distance", "shard_size", "val_size", "limit"))


def build_sft(opts: SftOptions) -> Report:
    """Run the whole cold-start build; raises SourceError (bad input/options) or ReconciliationError."""
    _validate(opts)
    cold = open_vision_r1_cold(opts.vision_r1_cold, opts.subsets, opts.image_root)
    excludes = []
    for spec in opts.exclude:
        for table in open_tabular(spec, opts.exclude_splits, f"--exclude {spec}"):
            excludes.append((exclude_kind(table), table))
    excludes += bench_excludes(opts.exclude_bench)
    for kind, table in excludes:
        check_columns([table], EXCLUDE_COLUMNS[kind], table.label)
    with staged_output(opts.out, opts.overwrite, OUTPUT_GLOBS) as stage:
        return _build_into(stage, opts, cold, excludes)


def _build_into(stage: str, opts: SftOptions, cold, excludes: list) -> Report:
    cfg = WorkerConfig(max_pixels=opts.max_pixels, max_prompt_tokens=0, keep_text_only=opts.keep_text_only,
                       tokenizer=opts.tokenizer, max_sequence_tokens=opts.max_length)
    train = ShardWriter(stage, "train", opts.shard_size, schema=SFT_SCHEMA)
    holdout = HoldOut(opts.val_size, opts.seed, train)
    dedup = DedupIndex(opts.hash_distance)

    with open(os.path.join(stage, "dropped.jsonl"), "w", encoding="utf-8") as dropped_log:
        report = Report(opts.subsets, dropped_log)
        report.settings = {k: v for k, v in asdict(opts).items() if k != "progress"}
        pool = WorkerPool(opts.workers)
        try:
            test_index = index_excludes(Inputs({}, excludes), pool, cfg, report, opts)
            for subset in opts.subsets:
                table = cold.tables[subset]
                build = partial(cold_start_record, subset, cold.image_root)
                batches = _counted(record_batches(subset, table, opts.batch_size, build, opts.limit), report, subset)
                with _bar(table, f"{subset}", opts.limit, opts.progress) as bar:
                    for results in pool.map(partial(process_sft_batch, cfg=cfg), batches):
                        for res in results:
                            _admit(res, subset, report, test_index, dedup, holdout)
                        bar.update(len(results))
        finally:
            pool.close()

    return finish(stage, report, train, holdout, {subset: cold.tables[subset].label for subset in opts.subsets})
