"""The report's figures: one function per panel, runs overlaid on shared axes.

Each panel function takes the runs and returns a matplotlib ``Figure`` or, when none of the runs
logged what it needs, a string saying what is missing (the report lists it as skipped). Figures
are built with ``matplotlib.figure.Figure`` (no pyplot, no global state, no display: headless by
construction). Colour = run; step on x everywhere; titles and axis labels carry the units.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from matplotlib.figure import Figure

from recipe.care.bench_metrics import MACRO_KEY
from report.load import Run
from report.signature import SignatureFit, anchor_theory, fit_from_buckets, fit_from_groups, negative_theory

__all__ = ["Panel", "PANELS", "signature_fit", "val_core_series", "fmt"]

STEP = "training step"
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
_KINDS = ("all_correct", "mixed", "all_wrong")


@dataclass(frozen=True)
class Panel:
    name: str  # PNG file stem
    title: str  # section title in index.md
    build: Callable[[list[Run]], "Figure | str"]
    caption: str


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _figure(ncols: int = 1, nrows: int = 1, width: float = 5.2, height: float = 3.6):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _line(ax, run_index: int, run: Run, key: str, label: str | None = None, **kw) -> bool:
    xs, ys = run.series(key)
    if not xs:
        return False
    ax.plot(xs, ys, marker="o", markersize=3, color=_color(run_index), label=label or run.label, **kw)
    return True


def _step_axes(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(STEP)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _missing(keys: list[str]) -> str:
    return "no run logged " + " / ".join(f"`{k}`" for k in keys)


def _curves(runs: list[Run], specs: list[tuple[str, str, str]], title: str | None = None,
            fraction: bool = False) -> "Figure | str":
    """One subplot per (key, subplot title, y label); every run drawn on each (y in [0, 1] for ``fraction``)."""
    present = [spec for spec in specs if any(run.has(spec[0]) for run in runs)]
    if not present:
        return _missing([spec[0] for spec in specs])
    fig, axes = _figure(ncols=len(present))
    for ax, (key, sub_title, ylabel) in zip(axes, present):
        for i, run in enumerate(runs):
            _line(ax, i, run, key)
        _step_axes(ax, sub_title, ylabel)
        if fraction:
            ax.set_ylim(-0.05, 1.05)
        _legend(ax)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------ CARE's mechanism


def signature_fit(run: Run) -> SignatureFit | None:
    """Over groups when the run has group records, else over the per-step K' buckets."""
    return fit_from_groups(run.groups) if run.groups else fit_from_buckets(run.steps)


def panel_signature(runs: list[Run]) -> "Figure | str":
    fits = [(i, run, signature_fit(run)) for i, run in enumerate(runs)]
    fits = [f for f in fits if f[2] is not None]
    if not fits:
        return ("no anchored group: no run has care.records group records with a mixed group, nor "
                "`care/signature/kp*/anchor_raw_mean` metrics")
    fig, (ax_a, ax_n) = _figure(ncols=2)
    k_max = max(max(f.anchor.kp) for _, _, f in fits)
    grid = [k / 20 for k in range(20, 20 * k_max + 1)]
    ax_a.plot(grid, [math.sqrt(k) for k in grid], "k--", lw=1, label="theory √K′")
    ax_n.plot(grid, [-1 / math.sqrt(k) for k in grid], "k--", lw=1, label="theory −1/√K′")
    for i, run, fit in fits:
        for ax, side, name in ((ax_a, fit.anchor, "anchor"), (ax_n, fit.negative, "negatives")):
            if not side.values:
                continue
            offset = 0.08 * (i - (len(fits) - 1) / 2)
            ax.scatter([k + offset for k in side.kp], side.values, s=12, alpha=0.35, color=_color(i))
            kps = list(side.mean_by_kp)
            ax.plot(kps, [side.mean_by_kp[k][0] for k in kps], marker="D", color=_color(i),
                    label=f"{run.label}: r={fmt(side.r)}, R²={fmt(side.r2)} ({len(side.values)} "
                          f"{'groups' if fit.source == 'groups' else 'step buckets'})")
    for ax, title in ((ax_a, "anchor A_raw(y+) per group"), (ax_n, "negatives' mean A_raw(y−) per group")):
        ax.set_title(title)
        ax.set_xlabel("K′ (negatives in the subgroup)")
        ax.set_ylabel("raw advantage (z-score, before scaling)")
        ax.set_xticks(range(1, k_max + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Mechanism signature: A_raw(y+) = √K′, A_raw(y−) = −1/√K′ (dots: groups, diamonds: mean per K′)")
    return fig


def panel_failure_share(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [("care/failure_signal_share", "share of learning signal from failures",
                           "Σ|a_t| of failures / Σ|a_t| (fraction)")], fraction=True)


def panel_variance_ratio(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [("care/variance_ratio", "variance ratio R (negatives / positives)",
                           "E[A²] negatives / E[A²] positives")])


def panel_clip_by_sign(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [("actor/pg_clipfrac/pos_adv", "clipped tokens with A > 0", "fraction of response tokens"),
                          ("actor/pg_clipfrac/neg_adv", "clipped tokens with A < 0", "fraction of response tokens"),
                          ("actor/pg_clipfrac", "clip fraction (all tokens)", "fraction of response tokens")],
                   "PPO clip fraction by advantage sign")


def panel_group_mix(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [(f"care/groups/{kind}_frac", kind.replace("_", "-") + " groups", "fraction of groups")
                          for kind in _KINDS], "Group mix per step", fraction=True)


def _k_prime_counts(run: Run) -> dict[int, float]:
    if run.groups:
        counts: dict[int, float] = defaultdict(float)
        for rec in run.groups:
            counts[int(rec.get("k_prime") or 0)] += 1
        return dict(counts)
    counts = defaultdict(float)
    for key in run.keys_with_prefix("care/k_prime/"):
        tail = key.rsplit("/", 1)[1]
        if tail.isdigit():
            counts[int(tail)] += sum(run.series(key)[1])
    return dict(counts)


def panel_k_prime(runs: list[Run]) -> "Figure | str":
    data = [(i, run, _k_prime_counts(run)) for i, run in enumerate(runs)]
    data = [d for d in data if d[2]]
    if not data:
        return _missing(["care/k_prime/<K'>"])
    fig, (ax,) = _figure(width=6)
    kps = sorted({k for _, _, c in data for k in c})
    width = 0.8 / len(data)
    for j, (i, run, counts) in enumerate(data):
        ax.bar([k + (j - (len(data) - 1) / 2) * width for k in kps], [counts.get(k, 0) for k in kps], width=width,
               color=_color(i), label=run.label)
    ax.set_xticks(kps)
    ax.set_title("K′ histogram over the run (0 = no subgroup: all correct, or all wrong without rescue)")
    ax.set_xlabel("K′")
    ax.set_ylabel("groups")
    ax.grid(alpha=0.3, axis="y")
    _legend(ax)
    return fig


def panel_rescue_rate(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [("care/rescue_rate", "all-negative rescue rate", "rescued / all-wrong groups")], fraction=True)


# ------------------------------------------------------------------------------ RGR


def _reason_totals(run: Run) -> dict[str, float]:
    totals = {}
    for key in run.keys_with_prefix("rgr/failed/") + run.keys_with_prefix("rgr/skipped/"):
        total = sum(run.series(key)[1])
        if total:
            totals[key.split("/", 1)[1]] = total
    return totals


def panel_rgr(runs: list[Run]) -> "Figure | str":
    keys = ["rgr/triggered", "rgr/success_rate", "rgr/extra_token_share"]
    if not any(run.has(key) for run in runs for key in keys):
        return _missing(keys) + " (RGR off, or a baseline)"
    fig, axes = _figure(ncols=4, width=4.3)
    for ax, (key, title, ylabel) in zip(axes, (("rgr/success_rate", "repair success rate", "passed / tried"),
                                               ("rgr/triggered", "repairs tried", "groups per step"),
                                               ("rgr/extra_token_share", "extra tokens", "repair tokens / rollout tokens"))):
        for i, run in enumerate(runs):
            _line(ax, i, run, key)
        _step_axes(ax, title, ylabel)
        if key == "rgr/success_rate":
            ax.set_ylim(-0.05, 1.05)
        _legend(ax)
    ax = axes[3]
    reasons = sorted({r for run in runs for r in _reason_totals(run)})
    if reasons:
        height = 0.8 / len(runs)
        for j, run in enumerate(runs):
            totals = _reason_totals(run)
            ax.barh([y + j * height for y in range(len(reasons))], [totals.get(r, 0) for r in reasons],
                    height=height, color=_color(j), label=run.label)
        ax.set_yticks([y + (len(runs) - 1) * height / 2 for y in range(len(reasons))], reasons, fontsize=7)
        _legend(ax)
    else:
        ax.text(0.5, 0.5, "no failed or skipped repair", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_title("repairs not kept, by reason")
    ax.set_xlabel("groups over the run")
    fig.suptitle("Reflection-guided resampling (RGR)")
    return fig


# ------------------------------------------------------------------------------ accuracy, validation


def _sources(runs: list[Run], prefix: str) -> list[str]:
    return sorted({k[len(prefix):] for run in runs for k in run.keys_with_prefix(prefix)})


def panel_accuracy(runs: list[Run]) -> "Figure | str":
    sources = _sources(runs, "care/acc/")
    rows = [("care/acc", "care/format", "all")] if any(run.has("care/acc") for run in runs) else []
    rows += [(f"care/acc/{s}", f"care/format/{s}", s) for s in sources]
    if not rows:
        return _missing(["care/acc", "care/acc/<data_source>"]) + " (written by CARE's advantage step)"
    fig, axes = _figure(ncols=len(rows), nrows=2, width=4.2)
    for col, (acc_key, fmt_key, source) in enumerate(rows):
        for row, (key, what) in enumerate(((acc_key, "accuracy"), (fmt_key, "format rate"))):
            ax = axes[row * len(rows) + col]
            for i, run in enumerate(runs):
                _line(ax, i, run, key)
            _step_axes(ax, f"train {what}: {source}", "fraction of rollouts")
            ax.set_ylim(-0.05, 1.05)
            _legend(ax)
    fig.suptitle("Training accuracy (verifier) and format rate per data source")
    return fig


_VAL = re.compile(r"^val-core/(?P<source>[^/]+)/(?P<var>[^/]+)/(?P<metric>.+)$")


def val_core_series(run: Run) -> dict[str, str]:
    """benchmark -> the ``val-core/<benchmark>/<var>/<metric>`` key to plot: ``acc`` before ``reward``
    / ``score``, then ``mean@N`` with the smallest N (single-pass decoding, as the paper reports)."""
    pick: dict[str, tuple] = {}
    for key in run.keys_with_prefix("val-core/"):
        m = _VAL.match(key)
        if not m:
            continue
        var_rank = {"acc": 0, "reward": 1, "score": 2}.get(m["var"], 3)
        metric = m["metric"]
        n = int(metric[5:]) if metric.startswith("mean@") and metric[5:].isdigit() else 10 ** 6
        rank = (var_rank, n, metric)
        if m["source"] not in pick or rank < pick[m["source"]][0]:
            pick[m["source"]] = (rank, key)
    return {source: key for source, (_, key) in sorted(pick.items())}


def macro_average(run: Run) -> tuple[list[int], list[float]]:
    """The paper's macro average: the trainer's ``val-core/macro/acc`` (the six benchmarks only) when
    logged, else the mean over every validated source at the steps where each one was evaluated."""
    if run.has(MACRO_KEY):
        return run.series(MACRO_KEY)
    keys = list(val_core_series(run).values())
    if not keys:
        return [], []
    xs, ys = [], []
    for step in sorted(run.steps):
        values = [run.steps[step].get(k) for k in keys]
        if all(v is not None and math.isfinite(v) for v in values):
            xs.append(step)
            ys.append(sum(values) / len(values))
    return xs, ys


def panel_validation(runs: list[Run]) -> "Figure | str":
    per_run = [val_core_series(run) for run in runs]
    benchmarks = sorted({b for series in per_run for b in series})
    if not benchmarks:
        return _missing(["val-core/<benchmark>/..."]) + " (trainer.test_freq > 0 or val_before_train)"
    # the macro average first (the paper's headline), then one panel per source, four to a row
    ncols = min(4, len(benchmarks) + 1)
    nrows = -(-(len(benchmarks) + 1) // ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=4.2)
    ax = axes[0]
    for i, run in enumerate(runs):
        xs, ys = macro_average(run)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color=_color(i), label=run.label)
    _step_axes(ax, "macro average (val-core/macro/acc)" if any(r.has(MACRO_KEY) for r in runs)
               else "macro average over validated sources", "score")
    _legend(ax)
    for ax, bench in zip(axes[1:], benchmarks):
        for i, (run, series) in enumerate(zip(runs, per_run)):
            if bench in series:
                _line(ax, i, run, series[bench], label=f"{run.label} ({series[bench].split('/', 2)[2]})")
        _step_axes(ax, f"val {bench}", "score")
        _legend(ax)
    for ax in axes[len(benchmarks) + 1:]:
        ax.set_visible(False)
    fig.suptitle("Validation (val-core) per benchmark")
    return fig


# ------------------------------------------------------------------------------ cost


_TIMING_TOTAL = "timing_s/step"


def panel_step_time(runs: list[Run]) -> "Figure | str":
    if not any(run.keys_with_prefix("timing_s/") for run in runs):
        return _missing(["timing_s/*"])
    fig, (ax_t, ax_p) = _figure(ncols=2, width=6)
    for i, run in enumerate(runs):
        _line(ax_t, i, run, _TIMING_TOTAL)
    _step_axes(ax_t, "step time", "seconds")
    _legend(ax_t)
    parts = sorted({k for run in runs for k in run.keys_with_prefix("timing_s/") if k != _TIMING_TOTAL})
    means = [[(lambda v: sum(v) / len(v) if v else 0.0)(run.series(k)[1]) for k in parts] for run in runs]
    order = sorted(range(len(parts)), key=lambda j: -max(m[j] for m in means))[:14]  # the 14 largest parts
    height = 0.8 / len(runs)
    for i, run in enumerate(runs):
        ax_p.barh([y + i * height for y in range(len(order))], [means[i][j] for j in order], height=height,
                  color=_color(i), label=run.label)
    ax_p.set_yticks([y + (len(runs) - 1) * height / 2 for y in range(len(order))],
                    [parts[j].removeprefix("timing_s/") for j in order], fontsize=7)
    ax_p.invert_yaxis()
    ax_p.set_title("parts of the step (timing_s/*, mean over steps)")
    ax_p.set_xlabel("seconds per step")
    ax_p.grid(alpha=0.3, axis="x")
    _legend(ax_p)
    return fig


def panel_response_length(runs: list[Run]) -> "Figure | str":
    return _curves(runs, [("response_length/mean", "mean response length", "tokens"),
                          ("response_length/clip_ratio", "responses cut at the length limit", "fraction")])


PANELS: list[Panel] = [
    Panel("signature", "Mechanism signature", panel_signature,
          "Raw advantages of anchored groups against K′; the fit is over groups when `care.records` is on "
          "(r: Pearson correlation with the theory; R²: the theory as the prediction)."),
    Panel("failure_signal_share", "Share of learning signal from failures", panel_failure_share,
          "Σ over failed rollouts of Σ_t |a_t|, divided by the same over all rollouts."),
    Panel("variance_ratio", "Variance ratio", panel_variance_ratio,
          "Second moment of negatives' advantages over positives' in the anchored subgroups (lower: negatives scaled down)."),
    Panel("clip_by_sign", "Clip fraction by advantage sign", panel_clip_by_sign,
          "Tokens clipped by the PPO ratio, split by the sign of their advantage (`vanilla_clip_by_sign` loss)."),
    Panel("group_mix", "Group mix", panel_group_mix, "Groups whose rollouts are all correct, mixed, all wrong."),
    Panel("k_prime_hist", "K′ histogram", panel_k_prime, "Groups per K′ over the whole run."),
    Panel("rescue_rate", "Rescue rate", panel_rescue_rate, "Share of all-wrong groups that got a rescue subgroup."),
    Panel("rgr", "Reflection-guided resampling", panel_rgr,
          "Success rate (repaired and verified correct / tried), repairs per step, decode cost, reasons a repair was not kept."),
    Panel("accuracy", "Training accuracy and format rate", panel_accuracy, "Per data source, from the verifier."),
    Panel("validation", "Validation", panel_validation, "`val-core/<benchmark>` and their macro average."),
    Panel("step_time", "Step time", panel_step_time, "Wall-clock seconds per step and its parts (`timing_s/*`)."),
    Panel("response_length", "Response length", panel_response_length, "Mean response tokens and the share cut at the limit."),
]
