"""run_care.sh / recipe.care.main_care: every launch error is one line on stderr, exit 2, before Ray.

The settings the README calls validated are checked against verl's own registries (advantage
estimators, reward managers) before verl's validate_config and before Ray; a traceback appears
only with --debug or CARE_DEBUG=1.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.care.main_care import CareConfigError, compose_config, validate

REPO = Path(__file__).resolve().parents[1]
VERL_SUCCESS = "All configuration checks passed"


def run_care(*args, env_extra=None, timeout=120):
    """``bash run_care.sh ARGS`` from the repository with this interpreter and this tree first on the path."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable, "PYTHONPATH": str(REPO),
           **(env_extra or {})}
    return subprocess.run(["bash", str(REPO / "run_care.sh"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert VERL_SUCCESS not in proc.stdout + proc.stderr  # stopped before verl's validate_config
    assert "local Ray instance" not in proc.stderr  # what ray.init prints when it starts one
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---- the dry run, as a user types it --------------------------------------------------------------
@pytest.mark.parametrize(
    "args, env, needles",
    [
        # an advantage estimator verl has not registered (care and the baselines)
        (["algorithm.adv_estimator=foo"], {}, ["algorithm.adv_estimator", "'foo'", "grpo", "care"]),
        (["algorithm.adv_estimator=foo"], {"ALGO": "grpo"}, ["algorithm.adv_estimator", "'foo'", "ALGO=grpo"]),
        # a registered estimator that is not the one the ALGO runs
        (["algorithm.adv_estimator=grpo"], {}, ["algorithm.adv_estimator", "ALGO=care", "care"]),
        # a reward manager that does not compute CARE's shared reward
        (["reward.reward_manager.name=naive"], {}, ["reward.reward_manager.name", "care"]),
        (["reward.reward_manager.name=nope"], {"ALGO": "dapo"}, ["reward.reward_manager.name", "'nope'", "naive"]),
        # a care.* typo: the known keys, not hydra's traceback
        (["care.kk=3"], {}, ["care.kk", "k, m, neg_scale"]),
        (["+care.kk=3"], {}, ["care.kk", "neg_scale"]),
        # a CARE range error: reported before verl's validate_config prints success
        (["care.m=2"], {}, ["care.m"]),
        (["--model", "x"], {}, ["--model", "'x'", "qwen2.5-vl-7b"]),
        ([], {"ALGO": "GRPO"}, ["ALGO", "'GRPO'", "grpo"]),
        (["trainer.v1.trainer_mode=sync"], {}, ["trainer.v1.trainer_mode", "care_sync"]),
    ],
    ids=["estimator", "estimator-grpo", "estimator-mismatch", "reward-naive", "reward-unknown", "care-key",
         "care-key-plus", "care-range", "model", "algo-case", "trainer-mode"],
)
def test_dry_run_bad_input_is_one_line_exit_2(args, env, needles):
    assert_one_line_error(run_care("--dry-run", "--skip-preflight", *args, env_extra=env), *needles)


def test_debug_shows_the_traceback():
    for extra_args, env in (([], {"CARE_DEBUG": "1"}), (["--debug"], {})):
        proc = run_care("--dry-run", "--skip-preflight", *extra_args, "algorithm.adv_estimator=foo", env_extra=env)
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "algorithm.adv_estimator" in proc.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage(flag):
    proc = run_care(flag)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for option in ("--model", "--dry-run", "--preflight-only", "--skip-preflight", "--smoke", "--stage", "ALGO=",
                   "CARE_DEBUG", "N_GPUS_PER_NODE"):
        assert option in proc.stdout, option


def test_option_without_its_value_is_one_line():
    proc = run_care("--dry-run", "--skip-preflight", "--model")
    assert_one_line_error(proc, "--model", "qwen2.5-vl-7b")


def test_main_care_help_and_unknown_option():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "recipe.care.main_care", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--algo" in proc.stdout and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "recipe.care.main_care", "--dry-run", "--skip-preflight", "--nope"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "--nope", "--algo")


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
