"""run_care.sh / recipe.care.main_care: every launch error is one line on stderr, exit 2, before Ray.

The settings the README calls validated are checked against verl's own registries (advantage
estimators, reward managers) before verl's validate_config and before Ray; a traceback appears
only with --debug or CARE_DEBUG=1. Most checks call ``main_care.main(argv)`` in this process; a few
run ``bash run_care.sh`` itself to show that it maps its environment and arguments onto main_care.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recipe.care import main_care
from recipe.care.main_care import CareConfigError, compose_config, validate
from recipe.care.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
VERL_SUCCESS = "All configuration checks passed"
BENCH_FILES = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")


def run_care(*args, env_extra=None, timeout=120):
    """``bash run_care.sh ARGS`` from the repository with this interpreter and this tree first on the path."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable, "PYTHONPATH": str(REPO),
           **(env_extra or {})}
    return subprocess.run(["bash", str(REPO / "run_care.sh"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(returncode, stdout, stderr, *needles):
    assert returncode == 2, (returncode, stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    assert VERL_SUCCESS not in stdout + stderr  # stopped before verl's validate_config
    assert "local Ray instance" not in stderr  # what ray.init prints when it starts one
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def launch(capsys, monkeypatch):
    """``main_care.main(argv)`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.delenv("CARE_DEBUG", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the preflight would want the presets' models cached

    def run(*argv):
        code = main_care.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def mix_dir(folder: Path, shards=("train-00000",)) -> Path:
    """A data_prep/build_mix.py output as the dry run's preflight checks it: the files and report.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*shards, "val"):
        (folder / f"{name}.parquet").write_bytes(b"x")
    files = [f"{name}.parquet" for name in shards]
    (folder / "report.json").write_text(f'{{"outputs": {{"train_files": {files!r}, "train_rows": 1}}}}'.replace("'", '"'))
    return folder


def config_of(stdout: str) -> dict:
    """The dry run's printed config (verl prints its own lines before the yaml; a comment after it)."""
    lines = stdout.split("\n# ALGO=")[0].splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\w+:", line))
    return yaml.safe_load("\n".join(lines[start:]))


# ---- bad input: one line, exit 2 (in process) ------------------------------------------------------
@pytest.mark.parametrize(
    "args, needles",
    [
        # an advantage estimator verl has not registered (care and the baselines)
        (["algorithm.adv_estimator=foo"], ["algorithm.adv_estimator", "'foo'", "grpo", "care"]),
        (["--algo", "grpo", "algorithm.adv_estimator=foo"], ["algorithm.adv_estimator", "'foo'", "ALGO=grpo"]),
        # a registered estimator that is not the one the ALGO runs
        (["algorithm.adv_estimator=grpo"], ["algorithm.adv_estimator", "ALGO=care", "care"]),
        # a reward manager that does not compute CARE's shared reward
        (["reward.reward_manager.name=naive"], ["reward.reward_manager.name", "care"]),
        (["--algo=dapo", "reward.reward_manager.name=nope"], ["reward.reward_manager.name", "'nope'", "naive"]),
        # a care.* typo: the known keys, not hydra's traceback
        (["care.kk=3"], ["care.kk", "k, m, neg_scale"]),
        (["+care.kk=3"], ["care.kk", "neg_scale"]),
        # a CARE range error: reported before verl's validate_config prints success
        (["care.m=2"], ["care.m"]),
        (["--model", "x"], ["--model", "'x'", "qwen2.5-vl-7b"]),
        (["--model"], ["--model", "qwen2.5-vl-7b"]),
        (["--algo", "GRPO"], ["ALGO", "'GRPO'", "grpo"]),
        (["trainer.v1.trainer_mode=sync"], ["trainer.v1.trainer_mode", "care_sync"]),
        (["--nope"], ["--nope", "--algo"]),
        (["--stage", "eval"], ["--stage", "'eval'"]),
        (["trainer.n_gpus_per_node=two"], ["trainer.n_gpus_per_node", "'two'", "whole number"]),
    ],
    ids=["estimator", "estimator-grpo", "estimator-mismatch", "reward-naive", "reward-unknown", "care-key",
         "care-key-plus", "care-range", "model", "model-without-value", "algo-case", "trainer-mode", "unknown-option",
         "stage", "gpu-count"],
)
def test_dry_run_bad_input_is_one_line_exit_2(launch, args, needles):
    assert_one_line_error(*launch("--dry-run", "--skip-preflight", *args), *needles)


def test_debug_shows_the_traceback(launch, monkeypatch):
    with pytest.raises(CareConfigError, match="algorithm.adv_estimator"):
        launch("--dry-run", "--skip-preflight", "--debug", "algorithm.adv_estimator=foo")
    monkeypatch.setenv("CARE_DEBUG", "1")
    with pytest.raises(CareConfigError, match="algorithm.adv_estimator"):
        launch("--dry-run", "--skip-preflight", "algorithm.adv_estimator=foo")


def test_main_care_help(launch):
    code, out, err = launch("--help")
    assert code == 0 and err == ""
    for option in ("--algo", "--model", "--stage", "--data-dir", "--bench-dir", "--dry-run", "--preflight-only",
                   "--skip-preflight", "--debug", "DATA_DIR", "key=value"):
        assert option in out, option


# ---- what the options stand for (in process) -------------------------------------------------------
@pytest.mark.parametrize("algo", ["care", "grpo"])
def test_dry_run_prints_the_accepted_config(launch, tmp_path, algo):
    mix = mix_dir(tmp_path / "mix", shards=("train-00001", "train-00000"))
    code, out, err = launch("--algo", algo, "--data-dir", str(mix), "--dry-run", "trainer.total_training_steps=3")
    assert code == 0, err[-3000:]
    assert f"ALGO={algo}: config accepted" in out
    cfg = config_of(out)
    assert cfg["trainer"]["total_training_steps"] == 3
    assert (cfg["trainer"]["v1"]["trainer_mode"] == "care_sync") == (algo == "care")
    assert cfg["data"]["train_files"] == [str(mix / "train-00000.parquet"), str(mix / "train-00001.parquet")]
    assert cfg["data"]["val_files"] == str(mix / "val.parquet")  # no --bench-dir: the mix's val split alone
    assert cfg["trainer"]["experiment_name"] == f"{algo}_qwen2_5_vl_7b"  # the default preset
    assert cfg["actor_rollout_ref"]["model"]["path"] == PRESETS["qwen2.5-vl-7b"].model_path


def test_options_and_overrides_win_in_order(launch, tmp_path):
    """The options' values win over the preset; the user's key=value win over both."""
    mix = mix_dir(tmp_path / "mix")
    code, out, err = launch("--data-dir", str(mix), "--model", "qwen3-vl-8b", "--rollout-n", "6",
                            "--train-batch-size", "64", "--n-gpus-per-node", "4", "--experiment-name", "x",
                            "--dry-run", "--skip-preflight", "actor_rollout_ref.rollout.n=5", "trainer.experiment_name=y")
    assert code == 0, err[-3000:]
    cfg = config_of(out)
    assert cfg["data"]["train_batch_size"] == 64 and cfg["actor_rollout_ref"]["rollout"]["n"] == 5
    assert cfg["trainer"]["experiment_name"] == "y" and cfg["trainer"]["n_gpus_per_node"] == 4
    assert cfg["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] == 128  # the preset's, where not overridden
    code, out, err = launch("--data-dir", str(mix), "--model", "none", "--dry-run", "--skip-preflight")
    assert code == 0, err[-3000:]
    base = compose_config([])  # no preset: the yaml's values
    cfg = config_of(out)
    assert cfg["actor_rollout_ref"]["model"]["path"] == base.actor_rollout_ref.model.path
    assert cfg["trainer"]["experiment_name"] == "care"


def test_bench_dir_validates_on_the_six_benchmarks_greedy(launch, tmp_path):
    mix, bench = mix_dir(tmp_path / "mix"), tmp_path / "benchdir"
    bench.mkdir()
    for name in BENCH_FILES:
        (bench / f"{name}.parquet").write_bytes(b"")
    code, out, err = launch("--data-dir", str(mix), "--bench-dir", str(bench), "--dry-run")
    assert code == 0, err[-3000:]
    cfg = config_of(out)
    assert cfg["data"]["val_files"] == [str(mix / "val.parquet"), *(str(bench / f"{b}.parquet") for b in BENCH_FILES)]
    greedy = cfg["actor_rollout_ref"]["rollout"]["val_kwargs"]
    assert (greedy["n"], greedy["do_sample"], greedy["temperature"]) == (1, False, 0)
    # a real run (not --dry-run) refuses a benchmark folder without the six files, before composing anything
    empty = tmp_path / "no_benchmarks"
    empty.mkdir()
    assert_one_line_error(*launch("--data-dir", str(mix), "--bench-dir", str(empty)), "mathvista.parquet",
                          "build_bench.py")


def test_stage_sft_execs_torchrun(launch, tmp_path, monkeypatch):
    """--stage sft: this process becomes torchrun running recipe.care.main_sft with the SFT overrides."""
    for name in ("train-00001.parquet", "train-00000.parquet"):
        (tmp_path / name).write_bytes(b"")
    execs = []

    def fake_exec(file, args, env=None):
        execs.append((file, args, env))
        raise SystemExit(0)  # an exec does not return

    # every exec* that could replace this test process records instead (the launcher passes a cleaned env)
    for name in ("execv", "execve", "execvp", "execvpe"):
        monkeypatch.setattr(os, name, fake_exec)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # as inside a `ray job submit` entrypoint
    with pytest.raises(SystemExit):
        launch("--stage", "sft", "--sft-data-dir", str(tmp_path), "--model", "qwen2.5-vl-3b", "--n-gpus-per-node", "2",
               "optim.lr=1e-5")
    (file, args, env), = execs
    assert env is not None and "RAY_ADDRESS" not in env and env.get("RAY_ENABLE_AUTO_CONNECT") == "0"
    shards = f"[{tmp_path}/train-00000.parquet,{tmp_path}/train-00001.parquet]"
    assert file == sys.executable and args == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "recipe.care.main_sft", f"model.path={PRESETS['qwen2.5-vl-3b'].model_path}", f"data.train_files={shards}",
        "trainer.n_gpus_per_node=2", "trainer.nnodes=1", "trainer.project_name=care-verl",
        "trainer.experiment_name=sft_qwen2_5_vl_3b", 'trainer.logger=["console","file"]', "optim.lr=1e-5"]
    execs.clear()
    with pytest.raises(SystemExit):
        launch("--stage", "sft", "--sft-data-dir", str(tmp_path), "--nnodes", "2", "--node-rank", "1",
               "--master-addr", "node0")
    (_, args, _), = execs
    assert args[3:8] == ["--nnodes=2", "--node_rank=1", "--master_addr=node0", "--master_port=29500", "--nproc_per_node=8"]
    assert "trainer.nnodes=2" in args
    # several nodes without the rank or node 0's address; no shards: one line each, nothing started
    execs.clear()
    assert_one_line_error(*launch("--stage", "sft", "--sft-data-dir", str(tmp_path), "--nnodes", "2"),
                          "NODE_RANK", "MASTER_ADDR")
    assert_one_line_error(*launch("--stage", "sft", "--sft-data-dir", str(tmp_path / "none")), "build_sft.py")
    assert_one_line_error(*launch("--stage", "sft", "--preflight-only"), "--preflight-only")
    assert execs == []


def test_stage_sft_dry_run_in_process(launch, tmp_path):
    code, out, err = launch("--stage", "sft", "--sft-data-dir", str(tmp_path), "--model-path", "/models/qwen-vl",
                            "--dry-run", "optim.lr=1e-5")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["model"]["path"] == "/models/qwen-vl" and cfg["optim"]["lr"] == 1e-5
    assert cfg["data"]["train_files"] == [f"{tmp_path}/train-00000.parquet"]  # the dry run's placeholder
    assert cfg["trainer"]["experiment_name"] == "sft_qwen2_5_vl_7b"
    assert_one_line_error(*launch("--stage", "sft", "--dry-run", "optim.nope=1"), "optim.nope")


# ---- run_care.sh itself: its environment and arguments reach main_care ----------------------------
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_care_help_prints_the_usage(flag):
    proc = run_care(flag)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for option in ("--model", "--dry-run", "--preflight-only", "--skip-preflight", "--smoke", "--stage", "ALGO=",
                   "CARE_DEBUG", "N_GPUS_PER_NODE", "python -m recipe.care.main_care"):
        assert option in proc.stdout, option


def test_run_care_maps_the_environment(tmp_path):
    """Every set variable reaches its key; an empty one leaves the preset's value; the command line wins."""
    mix, bench, model = mix_dir(tmp_path / "mix"), tmp_path / "bench", tmp_path / "model"
    bench.mkdir()
    for name in BENCH_FILES:
        (bench / f"{name}.parquet").write_bytes(b"")
    model.mkdir()
    (model / "config.json").write_text("{}")  # a local checkpoint folder for MODEL_PATH
    env = {"ALGO": "grpo", "DATA_DIR": str(mix), "BENCH_DIR": str(bench), "MODEL_PATH": str(model),
           "N_GPUS_PER_NODE": "4", "NNODES": "1", "EXPERIMENT_NAME": "e", "PROJECT_NAME": "p", "TOTAL_EPOCHS": "2",
           "LOGGER": '["console"]', "ROLLOUT_N": "6", "TRAIN_BATCH_SIZE": "", "SFT_DATA_DIR": str(tmp_path / "sft")}
    proc = run_care("--dry-run", "--model", "qwen3-vl-8b", "trainer.total_epochs=3", env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ALGO=grpo: config accepted" in proc.stdout
    cfg = config_of(proc.stdout)
    trainer, arr = cfg["trainer"], cfg["actor_rollout_ref"]
    assert (trainer["experiment_name"], trainer["project_name"], trainer["logger"]) == ("e", "p", ["console"])
    assert (trainer["n_gpus_per_node"], trainer["nnodes"], trainer["total_epochs"]) == (4, 1, 3)
    assert arr["model"]["path"] == str(model) and arr["rollout"]["n"] == 6
    assert cfg["data"]["train_batch_size"] == 512  # TRAIN_BATCH_SIZE empty: the preset's
    assert cfg["data"]["train_files"] == [str(mix / "train-00000.parquet")] and len(cfg["data"]["val_files"]) == 7
    assert arr["rollout"]["val_kwargs"]["do_sample"] is False


def test_run_care_stage_sft_dry_run(tmp_path):
    env = {"MODEL_PATH": "/models/qwen-vl", "SFT_DATA_DIR": str(tmp_path), "SFT_EXPERIMENT_NAME": "cold",
           "EXPERIMENT_NAME": "rl-only"}
    dry = run_care("--stage", "sft", "--dry-run", "optim.lr=1e-5", env_extra=env)
    assert dry.returncode == 0, dry.stderr
    cfg = yaml.safe_load(dry.stdout)
    assert cfg["model"]["path"] == "/models/qwen-vl" and cfg["optim"]["lr"] == 1e-5
    assert cfg["data"]["train_files"] == [f"{tmp_path}/train-00000.parquet"]
    assert cfg["trainer"]["experiment_name"] == "cold"


def test_run_care_errors_one_line_or_traceback_with_debug(tmp_path):
    """A launch error (no SFT shards, before any config is composed) through run_care.sh: one line, exit 2;
    with --debug (CARE_DEBUG=1 for main_care), the traceback."""
    env = {"SFT_DATA_DIR": str(tmp_path), "NNODES": "2"}
    proc = run_care("--stage=sft", env_extra=env)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, f"no cold-start shards in {tmp_path}", "build_sft.py")
    proc = run_care("--stage", "sft", "--debug", env_extra=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "LaunchError: no cold-start shards" in proc.stderr


def test_run_care_stage_eval_is_the_evaluation():
    proc = run_care("--stage", "eval")  # no checkpoint: evaluation/run_eval.py's own usage error
    assert proc.returncode == 2 and "run_care.sh --stage eval" in proc.stderr


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


# ---- the same rules in process (no subprocess) ---------------------------------------------------
@pytest.mark.parametrize(
    "algo, overrides, message",
    [
        ("care", ["algorithm.adv_estimator=foo"], r"unknown algorithm.adv_estimator 'foo'.*registered: .*grpo"),
        ("gspo", ["algorithm.adv_estimator=care"], r"algorithm.adv_estimator='care'.*ALGO=grpo\|dapo\|gspo.*grpo"),
        ("care", ["reward.reward_manager.name=naive"], r"reward.reward_manager.name='naive'.*=care"),
        ("grpo", ["reward.reward_manager.name=naive"], r"reward.reward_manager.name='naive'.*=care"),
        ("care", ["reward.reward_manager.source=nowhere"], r"reward.reward_manager.source"),
        ("care", ["reward.custom_reward_function.path=/no/such/file.py"], r"custom_reward_function.path"),
    ],
)
def test_registries_are_checked_in_validate(algo, overrides, message):
    cfg = compose_config(["actor_rollout_ref.model.path=/nonexistent", *overrides], algo=algo)
    with pytest.raises(CareConfigError, match=message):
        validate(cfg)


def test_documented_reward_alternatives_validate():
    """README: CareRewardManager by file path, or another manager with CARE's compute_score."""
    path = str(REPO / "recipe/care/reward_manager.py")
    for overrides in (
        ["reward.reward_manager.source=importlib", "reward.reward_manager.name=CareRewardManager",
         f"reward.reward_manager.module.path={path}"],
        ["reward.reward_manager.name=naive", f"reward.custom_reward_function.path={path}",
         "reward.custom_reward_function.name=compute_score"],
    ):
        validate(compose_config(["actor_rollout_ref.model.path=/nonexistent", *overrides]))


def test_unknown_key_lists_its_parent_keys():
    with pytest.raises(CareConfigError, match=r"unknown key trainer.nope; .*total_epochs.*\+trainer.nope="):
        compose_config(["trainer.nope=1"])
    with pytest.raises(CareConfigError, match=r"unknown key care.rescue.gama; .*gamma") as err:
        compose_config(["care.rescue.gama=0.2"])
    assert "+care" not in str(err.value)  # adding a care key is an error too: no such hint


def test_unparsable_override_is_named():
    with pytest.raises(CareConfigError, match=r"cannot parse the override 'data.train_files=\['"):
        compose_config(["trainer.total_epochs=2", "data.train_files=["])
