"""lmms-eval's output folder -> ``results.json`` and ``results.md``, or a loud failure.

lmms-eval (like lm-evaluation-harness, which it forks) writes ``<output_path>/<model>/<time>_results.json``
with ``results[<task>]["<metric>,<filter>"]`` and ``n-samples[<task>]["effective"]``, and with
``--log_samples`` one ``<time>_samples_<task>.jsonl`` per task. It exits 0 when a task raised
(exceptions are logged and swallowed), so success is judged here: every task must be present,
have its metric as a finite number, and have evaluated at least one sample.
"""

from __future__ import annotations

import glob
import json
import math
import os

from evaluation.tasks import BENCHMARKS, LMMS_TASKS, METRIC, PAPER_MACRO, PAPER_ROWS, TITLES
from report.eval_table import comparison_table


class EvalResultError(RuntimeError):
    """lmms-eval did not produce a usable result for some benchmark."""


def find_results_file(output_dir: str) -> str:
    """The newest ``*_results.json`` under ``output_dir`` (lmms-eval nests it in a per-model folder)."""
    found = glob.glob(os.path.join(output_dir, "**", "*results*.json"), recursive=True)
    if not found:
        raise EvalResultError(f"lmms-eval wrote no *_results.json under {output_dir}: the run failed "
                              f"(lmms-eval exits 0 on failure; see its log)")
    return max(found, key=os.path.getmtime)


def _n_samples(raw: dict, task: str) -> int | None:
    entry = (raw.get("n-samples") or {}).get(task)
    if isinstance(entry, dict):
        entry = entry.get("effective", entry.get("original"))
    try:
        return int(entry)
    except (TypeError, ValueError):
        return None


def collect(raw: dict, tasks: dict[str, str] = LMMS_TASKS, metric: str = METRIC) -> dict:
    """``{"benchmarks": {b: {"acc", "n", "task"}}, "macro"}`` from lmms-eval's results dict.

    Raises :class:`EvalResultError` naming every benchmark whose task is missing, lacks the metric,
    has a non-finite value or evaluated no sample.
    """
    results = raw.get("results") or {}
    benchmarks, problems = {}, []
    for bench, task in tasks.items():
        entry = results.get(task)
        if not isinstance(entry, dict):
            problems.append(f"{bench}: task {task} missing from lmms-eval's results")
            continue
        key = next((k for k in (f"{metric},none", metric) if k in entry), None)
        if key is None:
            key = next((k for k in entry if k.split(",")[0] == metric), None)
        value = entry.get(key) if key else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            problems.append(f"{bench}: task {task} has no finite {metric!r} (got {value!r})")
            continue
        n = _n_samples(raw, task)
        if not n:
            problems.append(f"{bench}: task {task} evaluated no sample (n-samples {n!r})")
            continue
        benchmarks[bench] = {"acc": float(value), "n": n, "task": task}
    if problems:
        raise EvalResultError("lmms-eval results incomplete: " + "; ".join(problems))
    macro = sum(b["acc"] for b in benchmarks.values()) / len(benchmarks)
    return {"benchmarks": benchmarks, "macro": macro}


def check_sample_logs(output_dir: str, tasks: dict[str, str] = LMMS_TASKS) -> dict[str, str]:
    """The per-sample log of every task (``--log_samples``); raises if one is missing or empty."""
    logs, missing = {}, []
    for bench, task in tasks.items():
        found = [p for p in glob.glob(os.path.join(output_dir, "**", f"*samples_{task}*.json*"), recursive=True)
                 if os.path.getsize(p) > 0]
        if found:
            logs[bench] = os.path.relpath(max(found, key=os.path.getmtime), output_dir)
        else:
            missing.append(task)
    if missing:
        raise EvalResultError(f"no per-sample log for {', '.join(missing)} under {output_dir}")
    return logs


def paper_reference() -> dict:
    """What makes ``results.json`` readable on its own: the benchmarks' display titles and the paper's
    published rows (accuracy in %, macro as the paper states it, else the mean of the six)."""
    rows = {name: {"benchmarks": dict(zip(BENCHMARKS, row)), "macro": PAPER_MACRO.get(name, sum(row) / len(row))}
            for name, row in PAPER_ROWS.items()}
    return {"titles": {b: TITLES[b] for b in BENCHMARKS},
            "reference": {"source": "CARE paper (arXiv 2512.19554), single-pass accuracy in %; macro as the paper "
                                    "states it, else the mean of the six", "rows": rows}}


def markdown_table(summary: dict, label: str = "this checkpoint") -> str:
    """Our row (accuracy in %) under the reference rows ``summary`` carries (:func:`paper_reference`)."""
    return comparison_table({label: summary})


def write_results(raw: dict, out_dir: str, *, label: str = "this checkpoint", extra: dict | None = None,
                  tasks: dict[str, str] = LMMS_TASKS) -> dict:
    """Collect, then write ``results.json`` and ``results.md`` into ``out_dir``; returns the summary."""
    summary = collect(raw, tasks)
    summary.update(paper_reference())
    summary.update(extra or {})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# Evaluation: {label}\n\n" + markdown_table(summary, label))
    return summary
