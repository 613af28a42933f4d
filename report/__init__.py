"""Run report: ``python -m report RUN [RUN ...] --out DIR``.

load.py reads runs (verl file-logger metrics, care.records); signature.py fits the mechanism
signature; figures.py draws one panel per function; build.py writes the PNGs and index.md;
summary.py is the smoke's console summary. No torch or verl import: it runs anywhere matplotlib does.
"""

import importlib

# Resolved on first use, so that ``report.eval_table`` (which the eval stage imports for results.md)
# does not pull in matplotlib through build.py.
_EXPORTS = {"ReportResult": "report.build", "build_report": "report.build",
            "ReportInputError": "report.load", "Run": "report.load", "load_run": "report.load"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'report' has no attribute {name!r}")


__all__ = ["ReportInputError", "ReportResult", "Run", "build_report", "load_run"]
