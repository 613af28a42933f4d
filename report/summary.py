"""A few lines a person reads at a glance at the end of a run (the smoke's console summary)."""

from __future__ import annotations

from recipe.care.bench_metrics import MACRO_KEY
from report.figures import fmt, val_core_series
from report.load import Run

__all__ = ["run_summary"]

_KINDS = ("all_correct", "mixed", "all_wrong")


def _total(run: Run, key: str) -> float:
    return sum(run.series(key)[1])


def _group_counts(run: Run) -> dict[str, int] | None:
    """Groups per kind, anchored subgroups and rescues: from the group records, else from the step metrics."""
    if run.groups:
        counts = {kind: sum(r.get("kind") == kind for r in run.groups) for kind in _KINDS}
        counts["anchored"] = sum(r.get("kind") == "mixed" and (r.get("k_prime") or 0) > 0 and not r.get("rescue")
                                 for r in run.groups)
        counts["rescued"] = sum(bool(r.get("rescue")) for r in run.groups)
        return counts
    if not run.has("care/groups/count"):
        return None
    counts = {kind: 0.0 for kind in (*_KINDS, "anchored", "rescued")}
    for data in run.steps.values():
        n = data.get("care/groups/count", 0.0)
        for kind in _KINDS:
            counts[kind] += n * data.get(f"care/groups/{kind}_frac", 0.0)
        counts["anchored"] += n * data.get("care/groups/mixed_frac", 0.0)
        counts["rescued"] += n * data.get("care/groups/all_wrong_frac", 0.0) * data.get("care/rescue_rate", 0.0)
    return {k: int(round(v)) for k, v in counts.items()}


def _validation_line(run: Run) -> str | None:
    """The last validation: the six-benchmark macro average (when logged) and each validated source."""
    series = val_core_series(run)
    if not series:
        return None
    step = max(s for key in series.values() for s in run.series(key)[0])
    data = run.steps[step]
    parts = [f"{source} {fmt(data[key], 2)}" for source, key in series.items() if key in data]
    macro = f"benchmark macro {fmt(data[MACRO_KEY], 3)}; " if MACRO_KEY in data else ""
    return f"validation (val-core, step {step}): {macro}" + ", ".join(parts)


def run_summary(run: Run) -> list[str]:
    """steps, accuracy, group mix, anchored/rescue counts, RGR tried/repaired, last validation, sampler-vs-policy gap."""
    lines = []
    steps = sorted(run.steps)
    if not steps:
        return [f"{run.label}: no step logged"]
    acc_key = "care/acc" if run.has("care/acc") else "critic/score/mean"
    _, acc = run.series(acc_key)
    what = "train accuracy" if acc_key == "care/acc" else "train reward"
    lines.append(f"{run.label}: {len(steps)} steps ({steps[0]}-{steps[-1]})"
                 + (f", {what} {fmt(acc[0], 2)} -> {fmt(acc[-1], 2)}" if acc else ""))
    counts = _group_counts(run)
    if counts:
        total = sum(counts[k] for k in _KINDS)
        lines.append(f"groups: {total} = {counts['all_correct']} all-correct, {counts['mixed']} mixed, "
                     f"{counts['all_wrong']} all-wrong; CARE subgroups: {counts['anchored']} anchored, "
                     f"{counts['rescued']} rescued")
    if run.has("rgr/triggered"):
        tried, kept, passed = (int(_total(run, k)) for k in ("rgr/triggered", "rgr/replaced", "rgr/success"))
        rate = f" ({100 * passed / tried:.0f}%)" if tried else ""
        lines.append(f"RGR: {tried} repairs tried, {kept} kept in the batch, {passed} repaired (verified correct){rate}")
    line = _validation_line(run)
    if line:
        lines.append(line)
    _, gap = run.series("training/rollout_probs_diff_max")
    if gap:
        _, mean_gap = run.series("training/rollout_probs_diff_mean")
        _, syncs = run.series("timing_s/update_weights")
        lines.append(f"sampler vs policy: max |p_rollout - p_actor| = {fmt(max(gap), 2)}"
                     + (f", mean {fmt(sum(mean_gap) / len(mean_gap), 2)}" if mean_gap else "")
                     + " (training/rollout_probs_diff_*)"
                     + (f"; {len(syncs)} weight syncs, {fmt(sum(syncs) / len(syncs), 2)} s each" if syncs else ""))
    return lines
