"""Each performance benchmark runs end to end in its --quick mode, so it cannot rot.

Only the output's shape and properties that hold whatever the machine's load are checked; the
figures themselves are ratios printed by the scripts (README), never timed assertions here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run_quick(script: str, timeout: int = 540) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    return [line for line in proc.stdout.splitlines() if line.strip()]


def ratio(line: str, label: str) -> float:
    found = re.fullmatch(rf"{re.escape(label)}: (\d+\.\d+)", line)
    assert found, f"last line {line!r} is not '{label}: X'"
    return float(found.group(1))


def test_driver_work_benchmark():
    lines = run_quick("bench_advantage.py")
    assert ratio(lines[-1], "care/grpo time ratio") > 0
    parts = " ".join(lines)
    for part in ("spans (records -> masks)", "pool mask field", "advantages (sequence)", "token weights (region)", "metrics"):
        assert part in parts


def test_rgr_rollout_simulation():
    lines = run_quick("bench_rgr_rollout.py")
    off = next(line for line in lines if line.startswith("rgr off:"))
    on = next(line for line in lines if line.startswith("rgr on :"))
    assert "64 rows" in off and "64 rows" in on  # 8 prompts x 8, none lost
    assert int(re.search(r"repairs (\d+)", on).group(1)) > 0 and "repairs 0 " in off
    assert float(re.search(r"timing_s/rgr (\d+\.\d+)", on).group(1)) > 0
    # the original rollouts are the same in both runs, RGR only adds work: never shorter
    assert ratio(lines[-1], "rgr rollout makespan ratio") >= 1.0


def test_think_embedding_tap_benchmark():
    lines = run_quick("bench_think_embedding.py")
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    assert result["logprob_diff"] == 0.0  # the tap leaves verl's log-probs untouched
    assert result["time_on"] > 0 and result["time_off"] > 0
    assert 0 < result["tap_s_per_pass"] < result["time_on"]  # the pooling ran, inside the pass
    assert ratio(lines[-1], "think-embedding tap time ratio") > 0
