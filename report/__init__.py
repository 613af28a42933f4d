"""Run report: ``python -m report RUN [RUN ...] --out DIR``.

load.py reads runs (verl file-logger metrics, care.records); signature.py fits the mechanism
signature; figures.py draws one panel per function; build.py writes the PNGs and index.md;
summary.py is the smoke's console summary. No torch or verl import: it runs anywhere matplotlib does.
"""

from report.build import ReportResult, build_report
from report.load import ReportInputError, Run, load_run

__all__ = ["ReportInputError", "ReportResult", "Run", "build_report", "load_run"]
