"""Read runs for the report: verl file-logger metrics and CARE's records, with clear errors.

A RUN argument is ``[label=]path[,path...]``; each path is

- a JSON lines file written by verl's file logger (``trainer.logger=[...,file]``, one
  ``{"step": int, "data": {metric: value}}`` per line), or
- a folder: every such file in it (two levels down at most) plus any ``care_records/`` folder
  (``groups.jsonl``, ``repairs.jsonl`` from ``care.records``), or
- a ``care_records`` folder itself, or
- the eval stage's ``results.json`` (``run_care.sh --stage eval``: lmms-eval on the six
  benchmarks), shown as the final table beside the paper's rows; a folder's own
  ``eval/results.json`` (the stage's default output) is picked up too.

Several paths make one run: a resumed run writes a second metrics file (the smoke's
``care-run1.jsonl`` + ``care-run2.jsonl``); steps are merged, a later file winning a step both have.
The label defaults to the file's stem or the folder's name.

Only the last line of a file may be cut off (a run that is still writing): it is skipped and the
run carries a note; anything else unreadable is a :class:`ReportInputError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ReportInputError", "Run", "parse_run_spec", "load_run", "read_jsonl", "read_metrics", "RECORDS_DIR"]

RECORDS_DIR = "care_records"
GROUPS_FILE, REPAIRS_FILE = "groups.jsonl", "repairs.jsonl"  # recipe/care/group_records.py (not imported: no torch here)
_MAX_DEPTH = 2


class ReportInputError(ValueError):
    """A RUN that cannot be read (missing, empty, not verl's file-logger format, corrupt line)."""


@dataclass
class Run:
    """One run: per-step metrics (numbers only), group and repair records, notes for index.md."""

    label: str
    sources: list[str] = field(default_factory=list)
    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    groups: list[dict] = field(default_factory=list)
    repairs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evaluation: dict | None = None  # the eval stage's results.json: {"benchmarks": {...}, "macro": float, "titles", "reference"}

    @property
    def keys(self) -> set[str]:
        return {k for data in self.steps.values() for k in data}

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) where ``key`` was logged as a finite number, in step order."""
        xs, ys = [], []
        for step in sorted(self.steps):
            value = self.steps[step].get(key)
            if value is not None and math.isfinite(value):
                xs.append(step)
                ys.append(value)
        return xs, ys

    def has(self, key: str) -> bool:
        return any(key in data for data in self.steps.values())

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return sorted(k for k in self.keys if k.startswith(prefix))


def read_jsonl(path: Path, what: str) -> tuple[list[dict], str | None]:
    """Parsed lines of a JSON lines file and a note when its last line was cut off (skipped).

    Raises ReportInputError for an unreadable or empty file or a corrupt line before the last.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot read this {what} ({exc})") from exc
    lines = text.split("\n")
    rows, note = [], None
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for pos, (lineno, line) in enumerate(numbered):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            # Only the file's final line can be one a live run is still writing (no newline yet).
            if pos == len(numbered) - 1 and not text.endswith("\n"):
                note = f"{path.name}: last line ({lineno}) is incomplete, skipped (is the run still writing?)"
                break
            raise ReportInputError(f"{path}: line {lineno} is not valid JSON ({exc.msg}); is this a {what}?") from exc
    if not rows:
        raise ReportInputError(f"{path}: no complete line; an empty {what}" + (" (its only line is cut off)" if note else ""))
    return rows, note


def _is_metrics_row(row) -> bool:
    return isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("data"), dict)


def read_metrics(path: Path) -> list[dict]:
    """verl's FileLogger records as they are on disk, ``{"step": int, "data": {metric: value}}`` per line;
    [] before the file exists. No checks: a line being written raises ``ValueError`` (the smoke's
    step line reads a live file and retries); :func:`load_run` is the checked reader."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_metrics(path: Path, run: Run) -> None:
    rows, note = read_jsonl(path, "verl file-logger metrics file")
    bad = next((i for i, row in enumerate(rows, 1) if not _is_metrics_row(row)), None)
    if bad is not None:
        raise ReportInputError(
            f"{path}: record {bad} is not a verl file-logger line ({{\"step\": int, \"data\": {{...}}}}); "
            f"expected the JSON lines file of trainer.logger=[...,file] (VERL_FILE_LOGGER_PATH)")
    for row in rows:
        numbers = {k: float(v) for k, v in row["data"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        run.steps.setdefault(row["step"], {}).update(numbers)  # a later file (the resumed run) wins
    run.sources.append(str(path))
    if note:
        run.notes.append(note)


def _read_records(folder: Path, run: Run) -> None:
    for name, target in ((GROUPS_FILE, run.groups), (REPAIRS_FILE, run.repairs)):
        path = folder / name
        if not path.exists():
            continue
        rows, note = read_jsonl(path, f"care.records {name}")
        if not all(isinstance(r, dict) and "step" in r and "group" in r for r in rows):
            raise ReportInputError(f"{path}: not care.records lines (each needs \"step\" and \"group\")")
        target.extend(rows)
        run.sources.append(str(path))
        if note:
            run.notes.append(note)


def _looks_like_metrics(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
        return _is_metrics_row(json.loads(first))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


EVAL_RESULTS = "results.json"  # evaluation/results.py write_results


def _is_eval_summary(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("benchmarks"), dict) and bool(data["benchmarks"]) \
        and isinstance(data.get("macro"), (int, float)) \
        and all(isinstance(v, dict) and {"acc", "n"} <= set(v) for v in data["benchmarks"].values())


def _read_eval(path: Path, run: Run, strict: bool = True) -> None:
    """The eval stage's summary; a foreign JSON file is an error when named, skipped when found in a folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if strict:
            raise ReportInputError(f"{path}: not readable JSON ({exc})") from exc
        return
    if not _is_eval_summary(data):
        if strict:
            raise ReportInputError(f"{path}: not the eval stage's results.json "
                                   f"({{\"benchmarks\": {{name: {{\"acc\", \"n\"}}}}, \"macro\": ...}})")
        return
    run.evaluation = data
    run.sources.append(str(path))


def _metrics_order(path: Path) -> tuple[str, str, float]:
    """Files of one run in the order they were written: ``metrics.1.jsonl``, ``metrics.2.jsonl``, ...,
    ``metrics.10.jsonl`` (moved aside by earlier runs, numbered in order), then ``metrics.jsonl``
    (the newest), so that a later file wins; names sort numerically, not as text."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    base, _, number = stem.rpartition(".")
    if base and number.isdigit():
        return str(path.parent), base, int(number)
    return str(path.parent), stem, math.inf


def _scan_folder(folder: Path, run: Run) -> None:
    metrics, records, evals = [], [], []
    for depth in range(_MAX_DEPTH + 1):
        for path in sorted(folder.glob("/".join(["*"] * (depth + 1)))):
            if path.is_file() and path.name == EVAL_RESULTS:
                evals.append(path)
            if path.is_dir() and path.name == RECORDS_DIR:
                records.append(path)
            elif path.is_file() and path.suffix == ".jsonl" and path.parent.name != RECORDS_DIR \
                    and _looks_like_metrics(path):
                metrics.append(path)
    if folder.name == RECORDS_DIR:
        records.append(folder)
    if not metrics and not records:
        raise ReportInputError(f"{folder}: no verl file-logger metrics (*.jsonl) and no {RECORDS_DIR}/ folder in it")
    for path in sorted(metrics, key=_metrics_order):
        _read_metrics(path, run)
    for path in records:
        _read_records(path, run)
    for path in sorted(evals, key=lambda p: p.stat().st_mtime):  # the newest evaluation wins
        _read_eval(path, run, strict=False)


def parse_run_spec(spec: str) -> tuple[str | None, list[Path]]:
    """``label=path[,path...]`` or ``path[,path...]`` -> (label or None, paths)."""
    label = None
    if "=" in spec and not Path(spec).exists():
        label, spec = spec.split("=", 1)
        label = label.strip() or None
    paths = [Path(p) for p in spec.split(",") if p.strip()]
    if not paths:
        raise ReportInputError(f"run {spec!r} names no file or folder")
    return label, paths


def load_run(spec: str) -> Run:
    label, paths = parse_run_spec(spec)
    first = paths[0]
    run = Run(label=label or (first.stem if first.suffix == ".jsonl" else first.resolve().name))
    for path in paths:
        if not path.exists():
            raise ReportInputError(f"{path}: no such file or folder (run {run.label!r})")
        if path.is_dir():
            _scan_folder(path, run)
        elif path.suffix == ".json":
            _read_eval(path, run)
        else:
            _read_metrics(path, run)
    run.groups, run.repairs = _last_block_per_step(run.groups), _last_block_per_step(run.repairs)
    return run


def _last_block_per_step(records: list[dict]) -> list[dict]:
    """A step written twice (a crash after it, a resume from an earlier checkpoint) keeps the records
    of the last writer (``"run"``, one per trainer process) that wrote it."""
    last_writer = {rec["step"]: rec.get("run") for rec in records}
    return [rec for rec in records if rec.get("run") == last_writer[rec["step"]]]
