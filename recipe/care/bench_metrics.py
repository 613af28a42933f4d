"""``val-core/macro/acc``: the paper's headline number, the unweighted mean over the six benchmarks.

verl 0.9.1 (``verl/trainer/ppo/v1/trainer_base.py``, ``_val_metrics_update``) logs each validation
``data_source`` as ``val-core/<data_source>/acc/mean@N`` (N = ``val_kwargs.n``; only the largest N is
``val-core``). The macro average is added only when all six benchmarks were evaluated, so a run
validating on a subset (or on the training mix's val split alone) never logs a misleading number.
No verl import.
"""

from __future__ import annotations

import re

from verifiers.benchmarks import BENCHMARK_NAMES

MACRO_KEY = "val-core/macro/acc"


def _core_acc(metrics: dict, source: str) -> float | None:
    pattern = re.compile(rf"val-core/{re.escape(source)}/acc/mean@(\d+)")
    found = [(int(m.group(1)), key) for key in metrics if (m := pattern.fullmatch(key))]
    if not found:
        return None
    return float(metrics[max(found)[1]])


def macro_benchmark_metrics(metrics: dict, benchmarks=BENCHMARK_NAMES) -> dict:
    """``{MACRO_KEY: mean}`` when every benchmark has its ``val-core/<b>/acc/mean@N``, else ``{}``."""
    values = [_core_acc(metrics, b) for b in benchmarks]
    if not values or any(v is None for v in values):
        return {}
    return {MACRO_KEY: sum(values) / len(values)}
