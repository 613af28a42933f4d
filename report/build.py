"""Assemble the report: every panel's PNG, the tables and ``index.md``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from report.eval_table import comparison_table
from report.figures import PANELS, fmt, macro_average, signature_fit, val_core_series
from report.load import Run

__all__ = ["ReportResult", "build_report", "final_and_best", "TABLE_METRICS"]

# (label, key, direction): direction +1 = higher is better, -1 = lower, 0 = no "best" (a diagnostic).
TABLE_METRICS: list[tuple[str, str, int]] = [
    ("train accuracy (verifier)", "care/acc", +1),
    ("train reward (critic/score/mean)", "critic/score/mean", +1),
    ("failure signal share", "care/failure_signal_share", 0),
    ("variance ratio", "care/variance_ratio", 0),
    ("clip fraction, A > 0", "actor/pg_clipfrac/pos_adv", 0),
    ("clip fraction, A < 0", "actor/pg_clipfrac/neg_adv", 0),
    ("RGR success rate", "rgr/success_rate", +1),
    ("rescue rate", "care/rescue_rate", 0),
    ("response length (tokens)", "response_length/mean", 0),
    ("step time (s)", "timing_s/step", -1),
]
MACRO = "val-core macro average"


@dataclass
class ReportResult:
    out: Path
    index: Path
    figures: dict[str, Path] = field(default_factory=dict)  # panel name -> PNG
    skipped: dict[str, str] = field(default_factory=dict)  # panel name -> reason


def final_and_best(xs: list[int], ys: list[float], direction: int) -> tuple[float | None, float | None, int | None]:
    """(final value, best value, step of the best); best is None for a diagnostic (direction 0)."""
    if not ys:
        return None, None, None
    if direction == 0:
        return ys[-1], None, None
    best = max(range(len(ys)), key=lambda i: direction * ys[i])
    return ys[-1], ys[best], xs[best]


def _table_rows(runs: list[Run]) -> list[tuple[str, list[str]]]:
    rows = []
    benchmarks = sorted({b for run in runs for b in val_core_series(run)})
    series = [(MACRO, lambda run: macro_average(run), +1)]
    series += [(f"val {b}", (lambda b: lambda run: run.series(val_core_series(run)[b]) if b in val_core_series(run)
                             else ([], []))(b), +1) for b in benchmarks]
    series += [(label, (lambda key: lambda run: run.series(key))(key), d) for label, key, d in TABLE_METRICS]
    for label, get, direction in series:
        cells, any_value = [], False
        for run in runs:
            final, best, at = final_and_best(*get(run), direction)
            any_value |= final is not None
            cell = fmt(final, 4)
            if best is not None:
                cell += f" (best {fmt(best, 4)} @ {at})"
            cells.append(cell if final is not None else "–")
        if any_value:
            rows.append((label, cells))
    return rows


def _signature_table(runs: list[Run]) -> list[str]:
    lines = ["| run | fit over | points | anchor r | anchor R² | negatives r | negatives R² | mean A_raw(y+)/√K′ |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    any_fit = False
    for run in runs:
        fit = signature_fit(run)
        if fit is None:
            continue
        any_fit = True
        ratio = [v / math.sqrt(k) for k, v in zip(fit.anchor.kp, fit.anchor.values)]
        lines.append(f"| {run.label} | {'groups (care.records)' if fit.source == 'groups' else 'per-step K′ buckets'} "
                     f"| {fit.n} | {fmt(fit.anchor.r)} | {fmt(fit.anchor.r2)} | {fmt(fit.negative.r)} "
                     f"| {fmt(fit.negative.r2)} | {fmt(sum(ratio) / len(ratio))} |")
    return lines if any_fit else []


def build_report(runs: list[Run], out: Path, command: str | None = None, dpi: int = 110) -> ReportResult:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out=out, index=out / "index.md")
    sections = []
    for panel in PANELS:
        built = panel.build(runs)
        if isinstance(built, str):
            result.skipped[panel.name] = built
            continue
        path = out / f"{panel.name}.png"
        built.savefig(path, dpi=dpi)
        result.figures[panel.name] = path
        sections += [f"### {panel.title}", "", panel.caption, "", f"![{panel.title}]({path.name})", ""]

    lines = ["# Run report", ""]
    if command:
        lines += [f"Made with `{command}`.", ""]
    lines += ["## Runs", "", "| run | steps | group records | repair records | read from |", "| --- | --- | --- | --- | --- |"]
    for run in runs:
        steps = sorted(run.steps)
        span = f"{steps[0]}–{steps[-1]} ({len(steps)})" if steps else "none"
        lines.append(f"| {run.label} | {span} | {len(run.groups)} | {len(run.repairs)} | "
                     + "<br>".join(f"`{s}`" for s in run.sources) + " |")
    notes = [f"- {run.label}: {note}" for run in runs for note in run.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    rows = _table_rows(runs)
    if rows:
        lines += ["", "## Final and best values", "", "best = the highest (lowest for time) value and its step; "
                  "diagnostics have no best.", "", "| metric | " + " | ".join(run.label for run in runs) + " |",
                  "| --- |" + " --- |" * len(runs)]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    sig = _signature_table(runs)
    if sig:
        lines += ["", "## Mechanism-signature fit", "",
                  "Theory (binary rewards, one positive): A_raw(y+) = √K′, A_raw(y−) = −1/√K′. r: Pearson "
                  "correlation of each group's value with the theory; R²: 1 − SS_res/SS_tot with the theory as the "
                  "prediction (format rewards lower it). n/a: every point has the same K′.", "", *sig]
    evaluated = {run.label: run.evaluation for run in runs if run.evaluation}
    if evaluated:
        lines += ["", "## Final evaluation (lmms-eval, `run_care.sh --stage eval`)", "",
                  comparison_table(evaluated).rstrip()]
    lines += ["", "## Figures", "", *sections]
    if result.skipped:
        lines += ["## Skipped panels", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in result.skipped.items()]
        lines.append("")
    result.index.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return result
