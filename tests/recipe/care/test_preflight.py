"""recipe/care/preflight.py: one clear line per problem, before Ray starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.care import preflight as pf
from recipe.care.main_care import compose_config

REPO = Path(__file__).resolve().parents[3]


# ---- packages -----------------------------------------------------------------------------------
def test_missing_package_names_the_pin_and_the_install_way():
    msgs = pf.check_package("flash_attn", "flash-attn", "2.8.3", version_of=lambda d: None, import_error=lambda m: None)
    assert len(msgs) == 1 and "flash-attn is not installed" in msgs[0] and "flash-attn==2.8.3" in msgs[0]
    assert "--no-build-isolation" in msgs[0]


def test_wrong_version_is_reported_with_both_versions():
    msgs = pf.check_package("vllm", "vllm", "0.24.0", version_of=lambda d: "0.11.0", import_error=lambda m: None)
    assert len(msgs) == 1 and "vllm 0.11.0 is installed, need vllm==0.24.0" in msgs[0]


def test_local_version_suffix_is_the_same_version():
    assert pf.check_package("flash_attn", "flash-attn", "2.8.3", version_of=lambda d: "2.8.3+cu130torch2.11",
                            import_error=lambda m: None) == []


def test_installed_but_broken_import_is_reported():
    msgs = pf.check_package("flash_attn", "flash-attn", "2.8.3", version_of=lambda d: "2.8.3",
                            import_error=lambda m: "ImportError: undefined symbol: _ZN3c10")
    assert len(msgs) == 1 and "`import flash_attn` fails" in msgs[0] and "undefined symbol" in msgs[0]


def test_real_import_error_of_an_absent_module():
    assert "ModuleNotFoundError" in pf._import_error("care_verl_no_such_module")
    assert pf._import_error("json") is None


# ---- GPUs, data, wandb, model path ------------------------------------------------------------
def test_fewer_gpus_than_requested():
    (msg,) = pf.check_gpus(8, 2)
    assert "n_gpus_per_node=8" in msg and "2 GPU(s)" in msg and "N_GPUS_PER_NODE=2" in msg
    assert pf.check_gpus(8, 8) == [] and pf.check_gpus(4, 8) == []


def test_missing_data_names_the_files_and_the_build_command(tmp_path):
    present = tmp_path / "train-00000.parquet"
    present.write_bytes(b"x")
    (msg,) = pf.check_data([str(present), str(tmp_path / "train-00001.parquet")], "training data")
    assert "train-00001.parquet" in msg and "train-00000" not in msg and "build_mix.py" in msg
    assert pf.check_data([str(present)]) == []


def test_wandb_without_credentials(tmp_path):
    empty_netrc = tmp_path / "netrc"
    empty_netrc.write_text("machine example.com login a password b\n")
    (msg,) = pf.check_wandb(["console", "wandb"], {}, empty_netrc)
    assert "wandb" in msg and "wandb login" in msg and "WANDB_API_KEY" in msg
    assert pf.check_wandb(["console", "wandb"], {"WANDB_API_KEY": "k"}, empty_netrc) == []
    assert pf.check_wandb(["console", "wandb"], {"WANDB_MODE": "offline"}, empty_netrc) == []
    assert pf.check_wandb(["console", "file"], {}, empty_netrc) == []
    logged_in = tmp_path / "netrc2"
    logged_in.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    logged_in.chmod(0o600)
    assert pf.check_wandb(["wandb"], {}, logged_in) == []


def test_model_path_local_folder_or_hub_id(tmp_path):
    assert pf.check_model_path("Qwen/Qwen2.5-VL-7B-Instruct", {}) == []
    (msg,) = pf.check_model_path(str(tmp_path / "no-such-model"), {})
    assert "neither a local folder nor a hub id" in msg
    (msg,) = pf.check_model_path("qwen2.5-vl-7b", {})
    assert "neither a local folder nor a hub id" in msg
    (msg,) = pf.check_model_path(str(tmp_path), {})
    assert "without config.json" in msg
    (tmp_path / "config.json").write_text("{}")
    assert pf.check_model_path(str(tmp_path), {}) == []
    (msg,) = pf.check_model_path("Qwen/Qwen2.5-VL-7B-Instruct", {"HF_HUB_OFFLINE": "1"}, hub_cached=lambda r: False)
    assert "HF_HUB_OFFLINE" in msg
    assert pf.check_model_path("Qwen/Qwen2.5-VL-7B-Instruct", {"HF_HUB_OFFLINE": "1"}, hub_cached=lambda r: True) == []


def _build_folder(folder, train_rows=5, report=True, train_files=("train-00000.parquet",)):
    """A folder shaped like a data_prep build (the preflight reads report.json, not the parquet)."""
    folder.mkdir(exist_ok=True)
    for name in (*train_files, "val.parquet"):
        (folder / name).write_bytes(b"x")
    if report:
        (folder / "report.json").write_text(json.dumps({"outputs": {
            "train_files": list(train_files), "val_files": ["val.parquet"], "train_rows": train_rows, "val_rows": 1}}))
    return [str(folder / name) for name in train_files]


def test_a_folder_without_a_build_report_is_refused(tmp_path):
    files = _build_folder(tmp_path, report=False)
    (msg,) = pf.check_build(files)
    assert str(tmp_path) in msg and "no report.json" in msg and "build_mix.py" in msg and "--overwrite" in msg
    assert pf.check_build(_build_folder(tmp_path)) == []


def test_a_build_with_no_training_rows_is_refused(tmp_path):
    (msg,) = pf.check_build(_build_folder(tmp_path, train_rows=0))
    assert "0 training rows" in msg and str(tmp_path) in msg and "--val-size" in msg


def test_a_broken_report_or_a_file_from_elsewhere_is_refused(tmp_path):
    files = _build_folder(tmp_path)
    (tmp_path / "train-00001.parquet").write_bytes(b"x")  # left over from an earlier build
    (msg,) = pf.check_build([*files, str(tmp_path / "train-00001.parquet")])
    assert "train-00001.parquet" in msg and "not part of the build" in msg
    (tmp_path / "report.json").write_text('{"outputs": ')
    (msg,) = pf.check_build(files)
    assert "report.json is not a build report" in msg


def test_a_real_build_passes_and_its_shards_are_what_the_report_lists(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "data_prep"))
    try:
        import mix_fixtures
    finally:
        sys.path.remove(str(REPO / "tests" / "data_prep"))
    from data_prep.build_mix import main

    paths = mix_fixtures.build_all(str(tmp_path / "in"))["paths"]
    out = tmp_path / "out"
    assert main(mix_fixtures.build_args(paths, str(out), "--workers", "1", "--sources", "geometry3k")) == 0
    assert pf.check_build(sorted(str(p) for p in out.glob("train-*.parquet"))) == []


# ---- on a composed config ---------------------------------------------------------------------
def _data(tmp_path):
    (train,) = _build_folder(tmp_path)
    return [f"data.train_files=[{train}]", f"data.val_files={tmp_path / 'val.parquet'}"]


def test_preflight_on_config_runs_gpu_checks_only_when_asked(tmp_path):
    cfg = compose_config(_data(tmp_path))
    seen = []

    def packages(module, dist, wanted):
        seen.append(module)
        return [f"{dist} missing"]

    gpu = pf.preflight(cfg, gpu=True, environ={}, gpu_count=lambda: 0, package_check=packages)
    assert sorted(seen) == ["flash_attn", "vllm"]
    assert gpu == ["flash-attn missing", "vllm missing", *pf.check_gpus(8, 0)]
    seen.clear()
    assert pf.preflight(cfg, gpu=False, environ={}, package_check=packages) == [] and seen == []


def test_preflight_one_line_per_problem(tmp_path):
    cfg = compose_config([f"data.train_files=[{tmp_path}/train-00000.parquet]", f"data.val_files={tmp_path}/val.parquet",
                          "trainer.logger=[console,wandb]", "actor_rollout_ref.model.path=./nowhere"])
    problems = pf.preflight(cfg, gpu=False, environ={}, netrc_path=tmp_path / "none")
    assert len(problems) == 4, problems
    assert [p.split()[0] for p in problems] == ["training", "validation", "trainer.logger", "model"]
    assert all("\n" not in p for p in problems)
    assert pf.gpu_checks_apply(dry_run=False, environ={}) and not pf.gpu_checks_apply(dry_run=True, environ={})
    assert not pf.gpu_checks_apply(dry_run=False, environ={"VERL_PLATFORM": "cpu"})


def _run_care(args, env_extra, timeout=120):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable, **env_extra}
    return subprocess.run(["bash", str(REPO / "run_care.sh"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_care_sh_dry_run_stops_on_missing_data_before_ray(tmp_path):
    proc = _run_care(["--dry-run"], {"DATA_DIR": str(tmp_path / "empty")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("preflight:")]
    assert any("training data file(s) missing" in line and "build_mix.py" in line for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr and "config accepted" not in proc.stdout


def test_run_care_sh_dry_run_refuses_a_build_without_training_rows(tmp_path):
    _build_folder(tmp_path, train_rows=0)
    proc = _run_care(["--dry-run"], {"DATA_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert any(line.startswith("preflight:") and "0 training rows" in line for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr and "config accepted" not in proc.stdout


def test_run_care_sh_preflight_only_runs_gpu_checks(tmp_path):
    _data(tmp_path)
    proc = _run_care(["--preflight-only", "trainer.n_gpus_per_node=64"], {"DATA_DIR": str(tmp_path), **{
        k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_"))}})
    assert proc.returncode == 2
    assert "n_gpus_per_node=64" in proc.stderr  # this machine has fewer than 64 GPUs
