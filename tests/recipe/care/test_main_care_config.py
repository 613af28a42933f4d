"""care_trainer.yaml composed on verl's real hydra tree and converted to verl's dataclasses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.care.main_care import (
    ALGO_OVERRIDES,
    CareConfigError,
    compose_config,
    to_verl_dataclasses,
    validate,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("algo", sorted(ALGO_OVERRIDES))
def test_every_algo_composes_and_converts(algo):
    cfg = compose_config(["actor_rollout_ref.model.path=/nonexistent"], algo=algo)
    validate(cfg)  # verl's validate_config + CARE's checks + dataclass conversion
    dc = to_verl_dataclasses(cfg)
    assert type(dc["algorithm"]).__name__ == "AlgoConfig"
    assert type(dc["actor"]).__name__.endswith("ActorConfig")
    assert cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.trainer.use_v1
    if algo == "care":
        assert cfg.trainer.v1.trainer_mode == "care_sync" and dc["algorithm"].adv_estimator == "care"
        assert not cfg.algorithm.filter_groups.enable
        actor = cfg.actor_rollout_ref.actor
        assert (actor.kl_loss_coef, actor.kl_loss_type, actor.clip_ratio_low, actor.clip_ratio_high) == (0.01, "low_var_kl", 0.2, 0.3)
    else:
        assert cfg.trainer.v1.trainer_mode == "care_baseline_sync" and dc["algorithm"].adv_estimator == "grpo"
    if algo == "dapo":
        assert cfg.algorithm.filter_groups.enable and cfg.algorithm.filter_groups.metric == "acc"
    if algo == "gspo":
        assert dc["actor"].policy_loss.loss_mode == "gspo"
    # same data, reward and budget across the A/B
    base = compose_config(["actor_rollout_ref.model.path=/nonexistent"], algo="care")
    for key in ("data", "reward", "trainer.total_epochs", "actor_rollout_ref.rollout.n", "actor_rollout_ref.actor.optim.lr"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(base, key), key


def test_care_block_builds_care_config_with_paper_defaults():
    from recipe.care.care_config import CareConfig
    from recipe.care.config_loader import care_config_of

    cfg = compose_config([])
    assert care_config_of(cfg) == CareConfig()
    tweaked = care_config_of(compose_config(["care.k=2", "care.rescue.enable=false", "care.rescue.logp=mean"]))
    assert (tweaked.k, tweaked.rescue.enable, tweaked.rescue.logp) == (2, False, "mean")
    assert care_config_of(cfg).empty_span == "missing"
    assert care_config_of(compose_config(["care.empty_span=zero"])).empty_span == "zero"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["actor_rollout_ref.rollout.n=4"], "must be >= 1 \\+ care.k"),
        (["algorithm.filter_groups.enable=true"], "filter_groups.enable must be false"),
        (["care.m=2"], "care.m|M"),
        (["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode must be false"),
        (["+care.kk=3"], "unknown key care.kk"),
        (["care.empty_span=skip"], "care.empty_span must be one of"),
        (["care.rgr.template=authors"], "care.rgr.template"),
        (["care.rgr.max_critique_tokens=0"], "care.rgr.max_critique_tokens"),
    ],
)
def test_bad_care_config_is_a_clear_error(overrides, message):
    cfg = compose_config(["actor_rollout_ref.model.path=/nonexistent", *overrides])
    with pytest.raises(CareConfigError, match=message):
        validate(cfg)


def test_unknown_algo_is_a_clear_error():
    with pytest.raises(CareConfigError, match="unknown ALGO"):
        compose_config([], algo="ppo2")


@pytest.mark.parametrize("algo", ["care", "grpo"])
def test_run_care_sh_dry_run_prints_accepted_config(algo, tmp_path):
    for name in ("train-00000.parquet", "val.parquet"):  # the dry run's preflight checks the files exist
        (tmp_path / name).write_bytes(b"x")
    # ... and that they are a complete build (report.json, data_prep's completion marker)
    (tmp_path / "report.json").write_text('{"outputs": {"train_files": ["train-00000.parquet"], "train_rows": 1}}')
    proc = subprocess.run(
        ["bash", str(REPO / "run_care.sh"), "--dry-run", "trainer.total_training_steps=3"],
        cwd=REPO, env={"ALGO": algo, "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable,
                       "DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ALGO={algo}: config accepted" in proc.stdout
    assert "total_training_steps: 3" in proc.stdout
    assert ("trainer_mode: care_sync" in proc.stdout) == (algo == "care")


@pytest.mark.parametrize("algo", sorted(ALGO_OVERRIDES))
def test_defaults_fsdp2_and_no_wandb(algo):
    cfg = compose_config(["actor_rollout_ref.model.path=/nonexistent"], algo=algo)
    dc = to_verl_dataclasses(cfg)
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2" and dc["actor"].strategy == "fsdp2"
    assert cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    assert list(cfg.trainer.logger) == ["console", "file"]


def test_file_logger_goes_to_the_run_folder(tmp_path):
    from recipe.care.main_care import keep_previous_metrics, set_file_logger_path

    cfg = compose_config([f"trainer.default_local_dir={tmp_path}/run"])
    path = set_file_logger_path(cfg, environ={})
    assert path == f"{tmp_path}/run/metrics.jsonl"
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == path
    # relative run folders become absolute (the task runner actor's working directory is not ours)
    rel = compose_config(["trainer.default_local_dir=ckpt/x"])
    assert set_file_logger_path(rel, environ={}) == os.path.abspath("ckpt/x/metrics.jsonl")
    # an explicit path (environment or config) wins; no file logger -> nothing set
    assert set_file_logger_path(compose_config([]), environ={"VERL_FILE_LOGGER_PATH": f"{tmp_path}/m.jsonl"}) == f"{tmp_path}/m.jsonl"
    none = compose_config(["trainer.logger=[console]"])
    assert set_file_logger_path(none, environ={}) is None
    assert "VERL_FILE_LOGGER_PATH" not in none.ray_kwargs.ray_init.runtime_env.env_vars
    # a resumed run does not erase the earlier run's lines (verl opens the file with "wb")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/metrics.jsonl").write_text('{"step": 1, "data": {}}\n')
    moved = keep_previous_metrics(path)
    assert moved == f"{tmp_path}/run/metrics.1.jsonl" and (tmp_path / "run/metrics.1.jsonl").read_text().startswith('{"step": 1')
    assert keep_previous_metrics(path) is None


BENCH_FILES = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")


def test_run_care_sh_bench_dir_adds_the_six_benchmarks_to_validation(tmp_path):
    mix, bench = tmp_path / "mix", tmp_path / "benchdir"
    for folder, names in ((mix, ("train-00000", "val")), (bench, BENCH_FILES)):
        folder.mkdir()
        for name in names:  # the preflight only checks that the files exist (and the mix's report.json)
            (folder / f"{name}.parquet").write_bytes(b"")
    (mix / "report.json").write_text('{"outputs": {"train_files": ["train-00000.parquet"], "train_rows": 1}}')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable, "DATA_DIR": str(mix)}
    proc = subprocess.run(["bash", str(REPO / "run_care.sh"), "--dry-run"], cwd=REPO,
                          env={**env, "BENCH_DIR": str(bench)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("mix/val.parquet", *(f"benchdir/{b}.parquet" for b in BENCH_FILES)):
        assert name in proc.stdout, name
    assert "do_sample: false" in proc.stdout
    # a real run (not --dry-run) refuses a BENCH_DIR without the six files, before starting anything
    empty = tmp_path / "no_benchmarks"
    empty.mkdir()
    proc = subprocess.run(["bash", str(REPO / "run_care.sh")], cwd=REPO,
                          env={**env, "BENCH_DIR": str(empty)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "mathvista.parquet" in proc.stderr


@pytest.mark.parametrize("python3_has_verl,venv", [(False, ".venv-ci"), (False, ".venv"), (True, ".venv-ci")])
def test_run_care_sh_picks_the_ci_virtualenv_when_python3_lacks_verl(tmp_path, python3_has_verl, venv):
    """`import recipe.care` succeeds from the repo root whatever is installed, so run_care.sh asks for
    verl too before trusting python3; without it, it uses the virtualenv scripts/install_cpu_stack.sh
    (.venv) or `.ci/run` (.venv-ci) built."""
    import shutil

    shutil.copy(REPO / "run_care.sh", tmp_path)
    for pkg in ("recipe", "recipe/care"):  # importable from the folder, as in a checkout
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    ci_python = tmp_path / venv / "bin" / "python"
    ci_python.parent.mkdir(parents=True)
    ci_python.write_text('#!/bin/sh\necho "ci-venv python $*"\n')
    ci_python.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # -S: no site-packages, so no verl (the stdlib still imports); else the test's own interpreter
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} {"" if python3_has_verl else "-S"} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"} | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(tmp_path / "run_care.sh"), "--smoke", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if python3_has_verl:  # python3 itself ran the smoke's entry point (its --help)
        assert "usage: python -m smoke" in proc.stdout and f"using {venv}" not in proc.stderr
    else:
        assert "ci-venv python -m smoke --algo care" in proc.stdout
        assert f"using {venv}/bin/python (python3 has no care-verl installed)" in proc.stderr


def test_unknown_care_override_lists_settable_keys_only():
    """The yaml's _target_ names each care block's dataclass; it is not offered as a key to set."""
    for override, known in (("care.kk=3", "k, m, neg_scale"), ("care.rescue.gama=1", "enable, gamma, normalize, logp")):
        with pytest.raises(CareConfigError, match=f"unknown key {override.split('=')[0]}; known: .*{known}") as err:
            compose_config([override])
        assert "_target_" not in str(err.value)
