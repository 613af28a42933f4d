"""Build the six evaluation benchmarks as verl parquet files, one per benchmark, in the training format.

    python data_prep/build_bench.py --out data/care_bench                   # hub ids (needs network)
    python data_prep/build_bench.py --mathvista ~/ds/MathVista --mmmu ~/ds/MMMU ... --out data/care_bench

Writes ``mathvista.parquet``, ``mathverse.parquet``, ``mathvision.parquet``, ``mmmu.parquet``,
``mmmu_pro_standard.parquet``, ``mmmu_pro_vision.parquet`` (``data_source`` = the file's name),
``report.json`` (read = kept + dropped per benchmark, checked) and ``dropped.jsonl``. Same
instruction (:mod:`data_prep.prompts`) and pixel budget as ``build_mix.py``; no deduplication and, by
default, no prompt-length filter: a benchmark's denominator is not ours to change. Column mapping:
:mod:`data_prep.bench`. Also runs as ``python -m data_prep.build_bench``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from functools import partial

if not __package__:  # run as a script: import the package from the repo root, not this folder
    _repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    sys.path.insert(0, _repo)

from data_prep.cli import HelpFormatter, add_run_flags, run_build  # noqa: E402
from data_prep.bench import DEFAULT_SOURCES, OPTIONAL_COLUMNS, RECORD_BUILDERS, REQUIRED_COLUMNS  # noqa: E402
from data_prep.pipeline import WorkerPool, _bar, _counted, verify_files, record_batches, usable_cpus  # noqa: E402
from data_prep.process import WorkerConfig, process_batch  # noqa: E402
from data_prep.report import Report  # noqa: E402
from data_prep.schema import BENCH_SCHEMA, BENCHMARKS, MATHVISION  # noqa: E402
from data_prep.sources import SourceError, check_columns, open_tabular  # noqa: E402
from data_prep.writer import REPORT_NAME, ShardWriter, staged_output  # noqa: E402

MATHVISION_SPLITS = ("test", "testmini")
OUTPUT_GLOBS = tuple(f"{b}.parquet" for b in BENCHMARKS) + ("report.json", "dropped.jsonl")


@dataclass
class BenchOptions:
    out: str
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))
    inputs: dict[str, str] = field(default_factory=lambda: {b: DEFAULT_SOURCES[b][0] for b in BENCHMARKS})
    mathvision_split: str = "test"
    max_pixels: int = 1003520  # as build_mix.py: the image budget the model was trained with
    max_prompt_tokens: int = 0
    tokenizer: str | None = None
    workers: int = field(default_factory=usable_cpus)
    batch_size: int = 16
    limit: int = 0
    overwrite: bool = False
    progress: bool = True


def split_of(name: str, opts: BenchOptions) -> str:
    return opts.mathvision_split if name == MATHVISION else DEFAULT_SOURCES[name][2]


def open_benchmarks(opts: BenchOptions) -> dict:
    """Every input opened and its columns checked before any work (a SourceError names the input)."""
    unknown = [b for b in opts.benchmarks if b not in BENCHMARKS]
    if unknown or not opts.benchmarks:
        raise SourceError(f"--benchmarks must name some of {BENCHMARKS}, got {opts.benchmarks}")
    if opts.mathvision_split not in MATHVISION_SPLITS:
        raise SourceError(f"--mathvision-split must be one of {MATHVISION_SPLITS}")
    tables = {}
    for name in opts.benchmarks:
        spec = opts.inputs.get(name) or DEFAULT_SOURCES[name][0]
        hub_id, config, _ = DEFAULT_SOURCES[name]
        label = f"--{name.replace('_', '-')}"
        opened = open_tabular(spec, [split_of(name, opts)], label, config=config if spec == hub_id else None)
        check_columns(opened, REQUIRED_COLUMNS[name], label)
        tables[name] = opened
    return tables


def build_bench(opts: BenchOptions) -> Report:
    tables = open_benchmarks(opts)
    with staged_output(opts.out, opts.overwrite, OUTPUT_GLOBS) as stage:
        return _build_into(stage, opts, tables)


def _build_into(stage: str, opts: BenchOptions, tables: dict) -> Report:
    cfg = WorkerConfig(max_pixels=opts.max_pixels, max_prompt_tokens=opts.max_prompt_tokens,
                       keep_text_only=True, tokenizer=opts.tokenizer)
    writers = {}
    with open(os.path.join(stage, "dropped.jsonl"), "w", encoding="utf-8") as dropped_log:
        report = Report(opts.benchmarks, dropped_log)
        report.settings = {k: v for k, v in asdict(opts).items() if k != "progress"}
        pool = WorkerPool(opts.workers)
        try:
            for name in opts.benchmarks:
                writers[name] = ShardWriter(stage, name, file_name=f"{name}.parquet", schema=BENCH_SCHEMA)
                wanted = REQUIRED_COLUMNS[name] + OPTIONAL_COLUMNS[name]
                for table in tables[name]:
                    batches = _counted(record_batches(name, table, opts.batch_size, RECORD_BUILDERS[name],
                                                      opts.limit, wanted=wanted), report, name)
                    with _bar(table, f"{name}/{table.split}", opts.limit, opts.progress) as bar:
                        for results in pool.map(partial(process_batch, cfg=cfg), batches):
                            for res in results:
                                if res.reason:
                                    report.drop(name, res.id, res.reason, res.detail)
                                else:
                                    writers[name].write(res.row)
                                    report.keep(name, res.resized)
                            bar.update(len(results))
        finally:
            pool.close()
    files = {name: writer.close() for name, writer in writers.items()}
    written = verify_files([f for fs in files.values() for f in fs], schema=BENCH_SCHEMA)
    report.outputs = {"files": {n: os.path.basename(fs[0][0]) for n, fs in files.items()},
                      "rows": {n: w.rows_written for n, w in writers.items()},
                      "by_source": {n: {"rows": w.rows_written} for n, w in writers.items()}}
    report.check(written_rows=written)
    report.write_json(os.path.join(stage, REPORT_NAME))
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    src = p.add_argument_group("inputs (a datasets save_to_disk folder, a parquet file or folder, or a hub id)")
    for name in BENCHMARKS:
        hub_id, config, split = DEFAULT_SOURCES[name]
        src.add_argument(f"--{name.replace('_', '-')}", dest=name, default=hub_id, metavar="PATH_OR_ID",
                         help=f"split {split}" + (f", hub config {config!r}" if config else ""))
    src.add_argument("--mathvision-split", choices=MATHVISION_SPLITS, default="test",
                     help="MATH-Vision: the full test set (3,040, the paper's) or testmini (304)")
    src.add_argument("--benchmarks", default=",".join(BENCHMARKS), help="comma-separated benchmarks to build")
    flt = p.add_argument_group("prompt")
    flt.add_argument("--max-pixels", type=int, default=BenchOptions.max_pixels,
                     help="images above this many pixels are downscaled (as build_mix.py; use the training value)")
    flt.add_argument("--max-prompt-tokens", type=int, default=0,
                     help="drop rows whose prompt exceeds this many tokens (0 = keep all: the benchmark's n)")
    flt.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer folder for --max-prompt-tokens")
    run = p.add_argument_group("execution")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    run.add_argument("--workers", type=int, default=usable_cpus(), help="processes decoding and resizing images")
    run.add_argument("--batch-size", type=int, default=16, help="rows per worker task")
    run.add_argument("--limit", type=int, default=0, help="first N rows of each benchmark (smoke runs)")
    add_run_flags(run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opts = BenchOptions(
        out=args.out, benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()],
        inputs={b: getattr(args, b) for b in BENCHMARKS}, mathvision_split=args.mathvision_split,
        max_pixels=args.max_pixels, max_prompt_tokens=args.max_prompt_tokens, tokenizer=args.tokenizer,
        workers=args.workers, batch_size=args.batch_size, limit=args.limit, overwrite=args.overwrite,
        progress=args.progress)
    return run_build("build_bench", build_bench, opts, args.out, summary=lambda report, out: (
        f"wrote {sum(report.outputs['rows'].values())} rows to {out} (details: report.json, dropped.jsonl)"),
        debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
