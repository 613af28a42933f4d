"""Counts per source, the read = kept + dropped reconciliation, ``report.json`` and the printed table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from data_prep.schema import BAD_INPUT_REASONS, DROP_REASONS


class ReconciliationError(RuntimeError):
    """Rows were lost or double counted: the output cannot be trusted."""


@dataclass
class SourceCounts:
    read: int = 0
    kept: int = 0
    resized_images: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})
    # Bad-input rows, by reason: [{"id", "detail"}, ...] (every id, so each bad row can be found in the source).
    bad_rows: dict[str, list[dict]] = field(default_factory=dict)


class Report:
    def __init__(self, sources, dropped_log=None):
        self.sources = {name: SourceCounts() for name in sources}
        self.excluded: list[dict] = []  # one entry per test split indexed
        self.dropped_log = dropped_log  # open text file: one JSON line per dropped row
        self.outputs: dict = {}
        self.settings: dict = {}
        self.warnings: list[str] = []  # printed by the CLI, kept in report.json

    def read(self, source: str, rows: int = 1) -> None:
        self.sources[source].read += rows

    def keep(self, source: str, resized: int = 0) -> None:
        counts = self.sources[source]
        counts.kept += 1
        counts.resized_images += resized

    def drop(self, source: str, row_id: str, reason: str, detail: str = "") -> None:
        counts = self.sources[source]
        counts.dropped[reason] += 1
        if reason in BAD_INPUT_REASONS:
            counts.bad_rows.setdefault(reason, []).append({"id": row_id, "detail": detail})
        if self.dropped_log is not None:
            self.dropped_log.write(json.dumps({"source": source, "id": row_id, "reason": reason,
                                               "detail": detail}) + "\n")

    def check(self, written_rows: int | None = None) -> None:
        """read = kept + dropped for every source, and kept = rows in the output files."""
        problems = []
        for name, counts in self.sources.items():
            dropped = sum(counts.dropped.values())
            if counts.read != counts.kept + dropped:
                problems.append(f"{name}: read {counts.read} != kept {counts.kept} + dropped {dropped}")
        kept = sum(c.kept for c in self.sources.values())
        if written_rows is not None and written_rows != kept:
            problems.append(f"output files hold {written_rows} rows but {kept} were kept")
        if problems:
            raise ReconciliationError("report does not reconcile: " + "; ".join(problems))

    def to_dict(self) -> dict:
        sources = {}
        for name, c in self.sources.items():
            sources[name] = {
                "read": c.read,
                "kept": c.kept,
                "dropped_total": sum(c.dropped.values()),
                "dropped": dict(c.dropped),
                "resized_images": c.resized_images,
                "bad_rows": c.bad_rows,
                **{k: v for k, v in self.outputs.get("by_source", {}).get(name, {}).items()},
            }
        totals = {
            "read": sum(c.read for c in self.sources.values()),
            "kept": sum(c.kept for c in self.sources.values()),
            "dropped": sum(sum(c.dropped.values()) for c in self.sources.values()),
        }
        return {"sources": sources, "totals": totals, "excluded_test_splits": self.excluded,
                "outputs": {k: v for k, v in self.outputs.items() if k != "by_source"},
                "warnings": self.warnings, "settings": self.settings}

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)

    def table(self) -> str:
        reasons = [r for r in DROP_REASONS if any(c.dropped[r] for c in self.sources.values())]
        by_source = self.outputs.get("by_source", {})
        split_names = list(next(iter(by_source.values()), None) or ("train", "val"))  # benchmarks: "rows"
        header = ["source", "read", "kept"] + split_names + reasons
        rows = []
        for name, c in self.sources.items():
            split = by_source.get(name, {})
            rows.append([name, c.read, c.kept] + [split.get(s, 0) for s in split_names]
                        + [c.dropped[r] for r in reasons])
        total = ["total"] + [sum(row[i] for row in rows) for i in range(1, len(header))]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, total)]

        def fmt(row):
            cells = [str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))]
            return "  ".join(cells)

        lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows] + [fmt(total)]
        return "\n".join(lines)
