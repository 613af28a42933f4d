"""val-core/macro/acc: the pure function, and through verl 0.9.1's own _val_metrics_update."""

import numpy as np
import pytest

from recipe.care.bench_metrics import MACRO_KEY, macro_benchmark_metrics
from verifiers.benchmarks import BENCHMARK_NAMES

pytestmark = pytest.mark.timeout(120)


def _core(accs: dict, n: int = 1) -> dict:
    return {f"val-core/{b}/acc/mean@{n}": a for b, a in accs.items()}


def test_unweighted_mean_of_the_six():
    accs = dict(zip(BENCHMARK_NAMES, [0.7, 0.5, 0.3, 0.6, 0.4, 0.2]))
    metrics = {**_core(accs), "val-core/virl39k/acc/mean@1": 1.0, "val-aux/mmmu/format/mean@1": 0.0}
    assert macro_benchmark_metrics(metrics) == {MACRO_KEY: pytest.approx(sum(accs.values()) / 6)}


@pytest.mark.parametrize("missing", BENCHMARK_NAMES)
def test_absent_unless_all_six_were_evaluated(missing):
    accs = {b: 0.5 for b in BENCHMARK_NAMES if b != missing}
    assert macro_benchmark_metrics(_core(accs)) == {}
    # an aux metric of the missing benchmark does not count as evaluated
    assert macro_benchmark_metrics({**_core(accs), f"val-aux/{missing}/acc/std@1": 0.1}) == {}


def test_several_samples_use_the_core_mean():
    accs = {b: 0.25 for b in BENCHMARK_NAMES}
    assert macro_benchmark_metrics(_core(accs, n=4)) == {MACRO_KEY: pytest.approx(0.25)}


def test_through_verls_validation_metrics():
    """The keys verl 0.9.1 really produces (process_validation_metrics + val-core naming)."""
    from recipe.care.trainer import CarePPOTrainer

    trainer = object.__new__(CarePPOTrainer)  # _val_metrics_update reads only its arguments
    sources, uids, accs = [], [], []
    expected = {}
    for k, b in enumerate(BENCHMARK_NAMES + ("virl39k",)):
        rows = [1.0] * (k + 1) + [0.0] * 3
        sources += [b] * len(rows)
        uids += [f"{b}-{i}" for i in range(len(rows))]
        accs += rows
        expected[b] = np.mean(rows)
    infos = {"acc": accs, "reward": accs}
    metrics = trainer._val_metrics_update(sources, uids, infos, [])
    assert metrics[MACRO_KEY] == pytest.approx(np.mean([expected[b] for b in BENCHMARK_NAMES]))
    assert metrics["val-core/mmmu/acc/mean@1"] == pytest.approx(expected["mmmu"])
    partial = [i for i, s in enumerate(sources) if s != "mathvision"]
    metrics = trainer._val_metrics_update([sources[i] for i in partial], [uids[i] for i in partial],
                                          {k: [v[i] for i in partial] for k, v in infos.items()}, [])
    assert MACRO_KEY not in metrics and "val-core/mmmu/acc/mean@1" in metrics
