"""recipe/care/preflight.py: every command its messages advise exists and accepts what the advice passes it."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.care import preflight as pf
from recipe.care.presets import DEFAULT_PRESET, preset_overrides

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent  # the virtualenv the tests run in (hf, pip, wandb live beside python)


def all_advice(tmp_path) -> list[str]:
    """One message from every check, each made to fail."""
    broken = {"flash_attn": "ImportError: undefined symbol"}
    messages = []
    for module, (dist, wanted) in pf.GPU_PACKAGES.items():
        for version in (None, "0.0.1", wanted):
            messages += pf.check_package(module, dist, wanted, version_of=lambda d, v=version: v,
                                         import_error=lambda m: broken.get(m, "ImportError: x"))
    for available in (0, 1, 2):
        messages += pf.check_gpus(8, available)
    messages += pf.check_data([str(tmp_path / "train-00000.parquet")], "training data")
    messages += pf.check_wandb(["wandb"], {}, netrc_path=tmp_path / "none")
    messages += pf.check_model_path(str(tmp_path / "nowhere"), {})
    messages += pf.check_model_path("Qwen/Qwen2.5-VL-7B-Instruct", {"HF_HUB_OFFLINE": "1"}, hub_cached=lambda r: False)
    (tmp_path / "ckpt").mkdir()
    messages += pf.check_model_path(str(tmp_path / "ckpt"), {})
    return messages


def _help(*cmd) -> str:
    proc = subprocess.run([*cmd, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    return proc.stdout


def _flags(tokens) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def check_command(quoted: str, run_care_help: str) -> None:
    tokens = shlex.split(quoted)
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # leading environment assignments
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program == "import":  # names the failing statement, not a command to run
        assert args[0] in pf.GPU_PACKAGES, quoted
    elif program in ("hf", "pip", "wandb"):  # a subcommand of a CLI installed beside python
        usage = _help(str(BIN / program), args[0])
        for flag in _flags(args):
            assert flag in usage, (quoted, flag)
    elif program == "python":
        script = REPO / args[0]
        assert script.is_file(), quoted
        usage = _help(sys.executable, str(script))
        for flag in _flags(args):
            assert flag in usage, (quoted, flag)
    elif program == "bash":
        assert args[0] == "run_care.sh", quoted
        for flag in _flags(args):
            assert flag in run_care_help, (quoted, flag)
    else:
        pytest.fail(f"advice names a command this test does not know how to check: {quoted}")


def test_every_advised_command_exists_and_takes_its_arguments(tmp_path):
    run_care_help = _help("bash", str(REPO / "run_care.sh"))
    quoted = [q for message in all_advice(tmp_path) for q in re.findall(r"`([^`]+)`", message)]
    assert len(quoted) >= 5, quoted  # packages, GPUs, data, wandb, model download
    for command in dict.fromkeys(quoted):
        check_command(command, run_care_help)


def test_model_download_advice_uses_the_hf_cli():
    (msg,) = pf.check_model_path("Qwen/Qwen2.5-VL-7B-Instruct", {"HF_HUB_OFFLINE": "1"}, hub_cached=lambda r: False)
    assert "`HF_HUB_OFFLINE=0 hf download Qwen/Qwen2.5-VL-7B-Instruct`" in msg  # offline mode would refuse it


@pytest.mark.parametrize("available", [0, 1, 2, 3, 5])
def test_gpu_count_advice_is_a_count_the_presets_accept(available):
    (msg,) = pf.check_gpus(8, available)
    advised = [int(n) for n in re.findall(r"N_GPUS_PER_NODE=(\d+)", msg)]
    for n in advised:
        preset_overrides(DEFAULT_PRESET, n, 1)  # raises PresetError for 0 GPUs
    assert (advised == []) == (available == 0)
    if available == 0:
        assert "--dry-run" in msg and "--smoke" in msg
