"""``python -m report RUN [RUN ...] --out DIR``: a report with plots of one or more runs.

RUN is ``[label=]path[,path...]``: a verl file-logger JSON lines file, a run folder (its metrics
files and ``care_records/``), or several of them for one resumed run. Several RUNs are overlaid
(A/B: CARE vs GRPO/DAPO/GSPO, ablations). Writes ``DIR/index.md`` and one PNG per panel.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from report.build import build_report
from report.load import ReportInputError, load_run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="[label=]path[,path...] (metrics .jsonl or run folder)")
    p.add_argument("--out", required=True, help="output folder (index.md + PNGs)")
    p.add_argument("--dpi", type=int, default=110)
    args = p.parse_args(argv)
    try:
        runs = [load_run(spec) for spec in args.runs]
    except ReportInputError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    labels = [run.label for run in runs]
    if len(set(labels)) != len(labels):
        print(f"report: two runs share a label ({labels}); name them with label=path", file=sys.stderr)
        return 2
    command = "python -m report " + " ".join(shlex.quote(a) for a in argv)
    result = build_report(runs, args.out, command=command, dpi=args.dpi)
    print(f"report: {len(result.figures)} figures, {len(result.skipped)} panel(s) skipped -> {result.index}")
    for run in runs:
        for note in run.notes:
            print(f"report: note: {run.label}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
