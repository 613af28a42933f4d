"""benchmarks/gpu_check.py in its reduced CPU mode, so the prepared GPU check cannot rot."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("bf16_vs_fp32_embeddings", "packed_vs_padded", "fsdp2_tap_once", "fsdp2_tap_once_offload", "pooling_cost",
          "care_advantage_vs_grpo")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_check_cpu_quick_passes_every_check():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--device", "cpu", "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=280)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by_name = {m.group(2): m.group(1) for m in (re.match(r"^(PASS|FAIL|SKIP) (\w+): ", line) for line in lines) if m}
    assert by_name == {name: "PASS" for name in CHECKS}, lines
    assert re.fullmatch(rf"gpu_check: {len(CHECKS)}/{len(CHECKS)} checks passed \(\d+s\)", lines[-1])


def test_gpu_check_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stdout and proc.stdout.strip().endswith("0/1 checks passed")
