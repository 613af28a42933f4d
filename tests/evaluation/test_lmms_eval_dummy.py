"""The eval stage through the real lmms-eval 0.7.3 (its ``dummy`` backend) on the benchmark look-alikes.

Runs only where lmms-eval's virtualenv exists (``bash evaluation/lmms_eval_venv.sh`` creates it;
``LMMS_EVAL_PYTHON`` points elsewhere): installing it takes minutes and ~7 GB, so the plain test run
skips it. The Hugging Face backend on a tiny model is exercised by the smoke run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.tasks import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = os.environ.get("LMMS_EVAL_PYTHON") or str(REPO / ".cache" / "lmms-eval-venv" / "bin" / "python")
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(VENV_PYTHON), reason="no lmms-eval virtualenv")]


def run_stage(tmp_path, data_dir) -> subprocess.CompletedProcess:
    from recipe.care.tiny_models import tiny_qwen2_dir

    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(["bash", str(REPO / "run_care.sh"), "--stage", "eval", str(tiny_qwen2_dir()),
                           "--out", str(tmp_path / "eval"), "--backend", "dummy", "--data-dir", str(data_dir),
                           "--limit", "2", "--max-new-tokens", "8", "--python", VENV_PYTHON],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=540)


def test_six_benchmarks_through_lmms_eval(tmp_path):
    from data_prep.bench_fixtures import save_benchmarks

    save_benchmarks(str(tmp_path / "data"))
    proc = run_stage(tmp_path, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.load(open(tmp_path / "eval" / "results.json"))
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    assert all(b["n"] == 2 and 0.0 <= b["acc"] <= 1.0 for b in summary["benchmarks"].values())
    assert set(summary["sample_logs"]) == set(BENCHMARKS) and summary["prompt"] == "care"
    assert "| +CARE (paper) |" in (tmp_path / "eval" / "results.md").read_text()


def test_an_empty_benchmark_fails_the_stage_although_lmms_eval_exits_0(tmp_path):
    import datasets

    from data_prep.bench_fixtures import save_benchmarks

    paths = save_benchmarks(str(tmp_path / "data"))
    empty = datasets.load_from_disk(paths["mmmu"])["validation"].select([])
    datasets.DatasetDict({"validation": empty}).save_to_disk(str(tmp_path / "data" / "mmmu_empty"))
    os.rename(tmp_path / "data" / "mmmu", tmp_path / "data" / "mmmu_full")
    os.rename(tmp_path / "data" / "mmmu_empty", tmp_path / "data" / "mmmu")
    proc = run_stage(tmp_path, tmp_path / "data")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "mmmu" in proc.stderr and "FAILED" in proc.stderr
    assert not (tmp_path / "eval" / "results.json").exists()
