"""The eval stage through the real lmms-eval 0.7.3 (its ``dummy`` backend) on the benchmark look-alikes.

Needs lmms-eval's virtualenv (``bash evaluation/lmms_eval_venv.sh``; ``LMMS_EVAL_PYTHON`` points
elsewhere). CI builds it (``.ci/run``, in the background): there these tests wait for that build
and never skip. Elsewhere they skip without it, since creating it takes minutes and ~7 GB. The six
benchmarks end to end through the Hugging Face backend on the smoke's trained tiny models (both
families) are checked by tests/smoke/test_smoke_e2e.py; here the stage's refusal of an empty task.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture(scope="module")
def lmms_python() -> str:
    from evaluation.run_eval import lmms_eval_venv_ready

    if os.environ.get("LMMS_EVAL_PYTHON"):
        return os.environ["LMMS_EVAL_PYTHON"]
    if not lmms_eval_venv_ready() and os.environ.get("CI", "").lower() not in ("1", "true"):
        pytest.skip("no lmms-eval virtualenv (bash evaluation/lmms_eval_venv.sh creates it; CI always does)")
    # waits for a build in progress (CI's background one), or builds it
    proc = subprocess.run(["bash", str(REPO / "evaluation" / "lmms_eval_venv.sh")], cwd=REPO, capture_output=True,
                          text=True, timeout=840)
    assert proc.returncode == 0, f"lmms-eval virtualenv: {proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1]


def run_stage(tmp_path, data_dir, python) -> subprocess.CompletedProcess:
    from smoke.tiny_models import tiny_qwen2_dir

    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(["bash", str(REPO / "run_care.sh"), "--stage", "eval", str(tiny_qwen2_dir()),
                           "--out", str(tmp_path / "eval"), "--backend", "dummy", "--data-dir", str(data_dir),
                           "--limit", "2", "--max-new-tokens", "8", "--python", python],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=540)


def test_an_empty_benchmark_fails_the_stage_although_lmms_eval_exits_0(tmp_path, lmms_python):
    import datasets

    from data_prep.bench_fixtures import save_benchmarks

    paths = save_benchmarks(str(tmp_path / "data"))
    empty = datasets.load_from_disk(paths["mmmu"])["validation"].select([])
    datasets.DatasetDict({"validation": empty}).save_to_disk(str(tmp_path / "data" / "mmmu_empty"))
    os.rename(tmp_path / "data" / "mmmu", tmp_path / "data" / "mmmu_full")
    os.rename(tmp_path / "data" / "mmmu_empty", tmp_path / "data" / "mmmu")
    proc = run_stage(tmp_path, tmp_path / "data", lmms_python)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "mmmu" in proc.stderr and "FAILED" in proc.stderr
    assert not (tmp_path / "eval" / "results.json").exists()
