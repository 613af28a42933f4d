"""The build: open and check every input, index the test splits, stream each source through the
process pool, deduplicate in priority order, write shards and the hold-out, reconcile the report.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Iterable, Iterator

import pyarrow.parquet as pq
from tqdm import tqdm

from data_prep.dedup import DedupIndex
from data_prep.process import WorkerConfig, process_batch
from data_prep.rows import (BENCH_PARQUET, CHARTQA_SUBSETS, EXCLUDE_COLUMNS, OPTIONAL_COLUMNS, RECORD_BUILDERS,
                               REQUIRED_COLUMNS, Record, exclude_record)
from data_prep.report import ReconciliationError, Report
from data_prep.schema import (CHARTQA, DATA_SOURCES, DUPLICATE_ACROSS, DUPLICATE_WITHIN, GEOMETRY3K, MISSING_FIELD,
                              OUTPUT_SCHEMA, TEST_OVERLAP, UNREADABLE_FILE, VIRL39K)
from data_prep.sources import (BadRow, ParquetSplit, SourceError, SplitTable, Unreadable, check_columns, exclude_kind,
                               open_tabular, open_virl)
from data_prep.writer import REPORT_NAME, HoldOut, MAX_VAL_FRACTION, ShardWriter, staged_output

DEFAULT_IDS = {CHARTQA: "HuggingFaceM4/ChartQA", GEOMETRY3K: "hiyouga/geometry3k", VIRL39K: "TIGER-Lab/ViRL39K"}
OUTPUT_GLOBS = ("train-*.parquet", "val.parquet", "report.json", "dropped.jsonl")


def usable_cpus() -> int:
    """CPUs this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class BuildOptions:
    out: str
    sources: list[str] = field(default_factory=lambda: list(DATA_SOURCES))  # also the dedup priority
    chartqa: str = DEFAULT_IDS[CHARTQA]
    chartqa_subset: str = "human"
    chartqa_splits: list[str] = field(default_factory=lambda: ["train"])
    geometry3k: str = DEFAULT_IDS[GEOMETRY3K]
    geometry3k_splits: list[str] = field(default_factory=lambda: ["train"])
    virl39k: str = DEFAULT_IDS[VIRL39K]
    exclude: list[str] = field(default_factory=list)
    exclude_bench: list[str] = field(default_factory=list)  # build_bench.py output folders
    exclude_splits: list[str] = field(default_factory=lambda: ["test"])
    auto_exclude: bool = True
    keep_text_only: bool = True
    max_pixels: int = 1003520  # 1280 Qwen2.5-VL visual tokens (EasyR1's default)
    max_prompt_tokens: int = 2048
    tokenizer: str | None = None
    hash_distance: int = 12
    shard_size: int = 4096
    val_size: int = 500
    seed: int = 42
    workers: int = field(default_factory=lambda: usable_cpus())
    batch_size: int = 32
    limit: int = 0
    overwrite: bool = False
    progress: bool = True


@dataclass
class Inputs:
    training: dict[str, list[SplitTable]]
    excludes: list[tuple[str, SplitTable]]
    store: object = None


def _validate(opts: BuildOptions) -> None:
    check_names("--sources", opts.sources, DATA_SOURCES)
    if opts.chartqa_subset not in CHARTQA_SUBSETS:
        raise SourceError(f"--chartqa-subset must be one of {sorted(CHARTQA_SUBSETS)}")
    check_counts(opts, ("max_pixels", "max_prompt_tokens", "hash_distance", "shard_size", "val_size", "limit"))


def check_names(flag: str, names: list[str], allowed) -> None:
    """A non-empty list of distinct names, each one of ``allowed``."""
    if any(n not in allowed for n in names) or not names or len(set(names)) != len(names):
        raise SourceError(f"{flag} must list distinct names from {tuple(allowed)}, got {names}")


def check_counts(opts, non_negative: tuple[str, ...]) -> None:
    """Numeric options: the given ones >= 0, ``batch_size`` >= 1."""
    for name in non_negative:
        if getattr(opts, name) < 0:
            raise SourceError(f"--{name.replace('_', '-')} must be >= 0")
    if opts.batch_size < 1:
        raise SourceError("--batch-size must be >= 1")


def open_inputs(opts: BuildOptions) -> Inputs:
    """Every input opened and its columns checked: all errors surface here, before any work."""
    training, excludes, store = {}, [], None
    for source in opts.sources:
        if source == VIRL39K:
            virl = open_virl(opts.virl39k)
            training[source], store = [virl.table], virl.store
            continue
        spec, splits = (opts.chartqa, opts.chartqa_splits) if source == CHARTQA else (opts.geometry3k,
                                                                                       opts.geometry3k_splits)
        label = f"--{source}"
        tables = open_tabular(spec, splits, label)
        required = REQUIRED_COLUMNS[source] + (("human_or_machine",) if source == CHARTQA
                                               and opts.chartqa_subset != "all" else ())
        check_columns(tables, required, label)
        training[source] = tables
        if opts.auto_exclude:
            for table in open_tabular(spec, opts.exclude_splits, label, optional_splits=True):
                if table.split not in splits:
                    excludes.append((source, table))
    for spec in opts.exclude:
        for table in open_tabular(spec, opts.exclude_splits, f"--exclude {spec}"):
            excludes.append((exclude_kind(table), table))
    excludes += bench_excludes(opts.exclude_bench)
    for kind, table in excludes:
        check_columns([table], EXCLUDE_COLUMNS[kind], table.label)
    return Inputs(training, excludes, store)


def _fallback_id(source: str, split: str, index: int) -> str:
    return f"row{index}" if source == VIRL39K else f"{split}/{index}"


def record_batches(source: str, table: SplitTable, batch_size: int, build, limit: int = 0,
                   wanted: tuple[str, ...] | None = None) -> Iterator[list[Record]]:
    """Raw rows -> Records; an unreadable chunk becomes one dropped Record per row it held.

    ``wanted``: the columns to read (default: the training source's required + optional ones)."""
    if wanted is None:
        wanted = (REQUIRED_COLUMNS.get(source) or EXCLUDE_COLUMNS.get(source, ())) + OPTIONAL_COLUMNS.get(source, ())
    columns = [c for c in dict.fromkeys(wanted) if c in table.columns]
    index = 0
    for chunk in table.batches(batch_size, columns):
        if isinstance(chunk, Unreadable):
            records = [Record(source, _fallback_id(source, table.split, index + k), table.split,
                              drop=(UNREADABLE_FILE, chunk.detail)) for k in range(chunk.num_rows)]
        else:
            records = []
            for k, row in enumerate(chunk):
                if isinstance(row, BadRow):
                    records.append(Record(source, _fallback_id(source, table.split, index + k), table.split,
                                          drop=(row.reason, row.detail)))
                    continue
                try:
                    records.append(build(row, table.split, index + k))
                except Exception as exc:  # a cell of an unexpected type: this row is bad, not the run
                    records.append(Record(source, _fallback_id(source, table.split, index + k), table.split,
                                          drop=(MISSING_FIELD, f"malformed row: {type(exc).__name__}: {exc}")))
        if limit and index + len(records) >= limit:
            yield records[:limit - index]
            return
        index += len(records)
        yield records


class WorkerPool:
    """Order-preserving map over a process pool with a bounded number of batches in flight.

    ``Pool.imap`` would pull the whole input into its task queue (all images in memory); this keeps
    at most ``3 * workers`` batches alive. ``workers <= 1`` runs in-process (debugging, tiny inputs).
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = None
        if workers > 1:
            # spawn: forking a process that already runs pyarrow/datasets threads can deadlock.
            self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn, items: Iterable) -> Iterator:
        if self.executor is None:
            for item in items:
                yield fn(item)
            return
        pending = deque()
        for item in items:
            pending.append(self.executor.submit(fn, item))
            if len(pending) >= 3 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def _bar(table: SplitTable, desc: str, limit: int, enabled: bool) -> tqdm:
    total = min(table.num_rows, limit) if limit else table.num_rows
    return tqdm(total=total, desc=desc, unit="row", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def bench_excludes(bench_dirs: list[str]) -> list[tuple[str, ParquetSplit]]:
    """``--exclude-bench DIR``: every data_prep/build_bench.py parquet in each folder, as exclusion tables."""
    excludes = []
    for spec in bench_dirs:
        files = sorted(glob.glob(os.path.join(os.path.expanduser(spec), "*.parquet")))
        if not files:
            raise SourceError(f"--exclude-bench {spec}: no benchmark parquet files (run data_prep/build_bench.py)")
        for path in files:
            excludes.append((BENCH_PARQUET, ParquetSplit([path], f"--exclude-bench {path}",
                                                     os.path.basename(path)[:-len(".parquet")])))
    return excludes


def index_excludes(inputs: Inputs, pool: WorkerPool, cfg: WorkerConfig, report: Report,
                   opts: BuildOptions) -> DedupIndex:
    """Question keys and image hashes of every test-split row, for the overlap check.

    ``opts`` needs only ``hash_distance``, ``batch_size`` and ``progress`` (build_sft passes its own).
    """
    index = DedupIndex(opts.hash_distance)
    cfg = replace(cfg, index_only=True, store=None)
    for kind, table in inputs.excludes:
        stats = {"input": table.label, "split": table.split, "kind": kind, "read": 0, "indexed": 0, "unusable": []}
        build = partial(exclude_record, kind)
        with _bar(table, f"index {kind}/{table.split} (exclude)", 0, opts.progress) as bar:
            batches = record_batches(kind, table, opts.batch_size, build,
                                     wanted=EXCLUDE_COLUMNS[kind] if kind == BENCH_PARQUET else None)
            for results in pool.map(partial(process_batch, cfg=cfg), batches):
                for res in results:
                    stats["read"] += 1
                    if res.reason:
                        stats["unusable"].append({"id": res.id, "reason": res.reason, "detail": res.detail})
                    else:
                        index.add(res.question_key, res.hashes, kind, res.id)
                        stats["indexed"] += 1
                bar.update(len(results))
        report.excluded.append(stats)
    return index


def build(opts: BuildOptions) -> Report:
    """Run the whole build; raises SourceError (bad input/options, an unusable --out, nothing to train
    on) or ReconciliationError (a bug). The build appears in ``opts.out`` complete or not at all."""
    _validate(opts)
    inputs = open_inputs(opts)
    with staged_output(opts.out, opts.overwrite, OUTPUT_GLOBS) as stage:
        return _build_into(stage, opts, inputs)


def _build_into(stage: str, opts: BuildOptions, inputs: Inputs) -> Report:
    cfg = WorkerConfig(max_pixels=opts.max_pixels, max_prompt_tokens=opts.max_prompt_tokens,
                       keep_text_only=opts.keep_text_only, tokenizer=opts.tokenizer, store=inputs.store)
    train = ShardWriter(stage, "train", opts.shard_size)
    holdout = HoldOut(opts.val_size, opts.seed, train)
    dedup = DedupIndex(opts.hash_distance)
    builders = {CHARTQA: partial(RECORD_BUILDERS[CHARTQA], subset=opts.chartqa_subset),
                GEOMETRY3K: RECORD_BUILDERS[GEOMETRY3K], VIRL39K: RECORD_BUILDERS[VIRL39K]}

    with open(os.path.join(stage, "dropped.jsonl"), "w", encoding="utf-8") as dropped_log:
        report = Report(opts.sources, dropped_log)
        report.settings = {k: v for k, v in asdict(opts).items() if k != "progress"}
        pool = WorkerPool(opts.workers)
        try:
            test_index = index_excludes(inputs, pool, cfg, report, opts)
            for source in opts.sources:
                for table in inputs.training[source]:
                    batches = _counted(record_batches(source, table, opts.batch_size, builders[source], opts.limit),
                                       report, source)
                    with _bar(table, f"{source}/{table.split}", opts.limit, opts.progress) as bar:
                        for results in pool.map(partial(process_batch, cfg=cfg), batches):
                            for res in results:
                                _admit(res, source, report, test_index, dedup, holdout)
                            bar.update(len(results))
        finally:
            pool.close()

    labels = {source: f"--{source} {getattr(opts, source)}" for source in opts.sources}
    return finish(stage, report, train, holdout, labels)


def source_warnings(report: Report, labels: dict[str, str]) -> list[str]:
    """One line per source that contributed no row, naming it and why (what was read, what dropped it)."""
    lines = []
    for source, counts in report.sources.items():
        if counts.kept == 0:
            lines.append(f"{labels.get(source, source)} yielded 0 rows ({_read_and_drops(counts)})")
    return lines


def _read_and_drops(counts) -> str:
    reasons = sorted(((n, r) for r, n in counts.dropped.items() if n), reverse=True)
    dropped = ", ".join(f"{n} {r}" for n, r in reasons[:3]) + (", ..." if len(reasons) > 3 else "")
    return f"{counts.read} read" + (f", dropped: {dropped}" if dropped else "")


def finish(out: str, report: Report, train: ShardWriter, holdout: HoldOut, labels: dict[str, str]) -> Report:
    """Cap and write the hold-out, close and re-read every file, reconcile the report, write report.json.

    ``labels``: source -> how the user named it (``--chartqa PATH``), for the warnings and errors.
    Raises SourceError when no training row is left: an empty training set is not a build.
    """
    sources = list(report.sources)
    report.warnings += source_warnings(report, labels)
    requested = holdout.size
    capped = holdout.cap(MAX_VAL_FRACTION)
    if capped is not None:
        report.warnings.append(f"--val-size {requested} would leave too few training rows of the {holdout.seen} "
                               f"kept; holding out {capped} ({MAX_VAL_FRACTION:.0%} at most) instead")
    if train.rows_written == 0:
        raise SourceError("no training rows: " + "; ".join(
            f"{labels.get(s, s)}: {_read_and_drops(report.sources[s])}" for s in sources)
            + ". Check those inputs (and --limit), or relax the filters that dropped the rows")
    val = ShardWriter(out, "val", file_name="val.parquet", schema=train.schema)
    holdout.write(val)
    train_files, val_files = train.close(), val.close()
    written = verify_files(train_files + val_files, schema=train.schema)
    by_source = {s: {"train": train.count_by_source.get(s, 0), "val": val.count_by_source.get(s, 0)}
                 for s in sources}
    report.outputs = {"train_files": [os.path.basename(p) for p, _ in train_files],
                      "val_files": [os.path.basename(p) for p, _ in val_files],
                      "train_rows": train.rows_written, "val_rows": val.rows_written, "by_source": by_source}
    report.check(written_rows=written)
    report.write_json(os.path.join(out, REPORT_NAME))
    return report


def _counted(batches: Iterator[list[Record]], report: Report, source: str) -> Iterator[list[Record]]:
    """Rows are counted as read when they leave the reader, so a row lost later breaks the reconciliation."""
    for records in batches:
        report.read(source, len(records))
        yield records


def _admit(res, source: str, report: Report, test_index: DedupIndex, dedup: DedupIndex, holdout: HoldOut) -> None:
    """Main-process decisions, in order: bad row, test overlap, duplicate (first by priority wins), keep."""
    if res.reason:
        report.drop(source, res.id, res.reason, res.detail)
        return
    hit = test_index.find(res.question_key, res.hashes)
    if hit is not None:
        report.drop(source, res.id, TEST_OVERLAP, f"matches {hit.source} {hit.id}")
        return
    prior = dedup.find(res.question_key, res.hashes)
    if prior is not None:
        reason = DUPLICATE_WITHIN if prior.source == source else DUPLICATE_ACROSS
        report.drop(source, res.id, reason, f"duplicate of {prior.source} {prior.id}")
        return
    dedup.add(res.question_key, res.hashes, source, res.id)
    holdout.offer(res.row)
    report.keep(source, res.resized)


def verify_files(files: list[tuple[str, int]], schema=OUTPUT_SCHEMA) -> int:
    """Re-read every file's footer: one schema everywhere, and the row count the writer claims."""
    total = 0
    for path, rows in files:
        meta = pq.read_metadata(path)
        if not meta.schema.to_arrow_schema().equals(schema, check_metadata=False):
            raise ReconciliationError(f"{path} does not have the declared output schema")
        if meta.num_rows != rows:
            raise ReconciliationError(f"{path} holds {meta.num_rows} rows, the writer wrote {rows}")
        total += meta.num_rows
    return total
