import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def run_probe():
    """Run tests/trainer/engine_probe.py in its own process under a hard time limit; return its JSON."""

    def run(*args, timeout=240):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(
            [PYTHON, str(REPO / "tests/trainer/engine_probe.py"), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"probe failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    return run


@pytest.fixture(scope="session")
def tokenizer():
    from recipe.care.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()
