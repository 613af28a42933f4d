"""The final-evaluation table: the reference rows and our rows, from what ``results.json`` files hold.

The eval stage (``evaluation/results.py``) writes into ``results.json``, besides our accuracies,
the benchmarks' display titles (``"titles"``) and the paper's published rows (``"reference"``), so
this table needs nothing but the files: ``results.md`` of one checkpoint and the report's
comparison of several runs are both this function. Stdlib only.
"""

from __future__ import annotations

__all__ = ["comparison_table"]


def _columns(summaries: dict[str, dict]) -> list[str]:
    """Benchmarks every summary evaluated, in the first summary's order (its titles', else its results')."""
    first = next(iter(summaries.values()))
    order = list(first.get("titles") or first["benchmarks"])
    return [b for b in order if all(b in s["benchmarks"] for s in summaries.values())]


def _reference(summaries: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """Reference rows (name -> {"benchmarks": {bench: %}, "macro": %}), first file first; their sources."""
    rows, sources = {}, []
    for summary in summaries.values():
        reference = summary.get("reference") or {}
        for name, row in (reference.get("rows") or {}).items():
            rows.setdefault(name, row)
        if reference.get("source") and reference["source"] not in sources:
            sources.append(reference["source"])
    return rows, sources


def comparison_table(summaries: dict[str, dict]) -> str:
    """Markdown: the reference rows, then one bold row per summary (label -> ``results.json``), in %.

    A reference row shows its macro only when the table has all of its benchmarks (a macro over
    other columns would not be comparable).
    """
    if not summaries:
        raise ValueError("comparison_table needs at least one results.json summary")
    benches = _columns(summaries)
    titles = {b: t for s in reversed(list(summaries.values())) for b, t in (s.get("titles") or {}).items()}
    lines = ["| model | " + " | ".join(titles.get(b, b) for b in benches) + " | macro |",
             "|" + " --- |" * (len(benches) + 2)]
    rows, sources = _reference(summaries)
    for name, row in rows.items():
        cells = [f"{row['benchmarks'][b]:.1f}" if b in row["benchmarks"] else "–" for b in benches]
        macro = f"{row['macro']:.2f}" if set(row["benchmarks"]) <= set(benches) else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {macro} |")
    for label, summary in summaries.items():
        ours = [f"**{100 * summary['benchmarks'][b]['acc']:.1f}**" for b in benches]
        lines.append(f"| {label} | " + " | ".join(ours) + f" | **{100 * summary['macro']:.2f}** |")
    ns = "; ".join(f"{label}: " + ", ".join(f"{titles.get(b, b)} n={summary['benchmarks'][b]['n']}" for b in benches)
                   for label, summary in summaries.items())
    note = f" Reference rows: {'; '.join(sources)}." if sources else ""
    return "\n".join(lines) + f"\n\nSamples evaluated: {ns}.{note}\n"
