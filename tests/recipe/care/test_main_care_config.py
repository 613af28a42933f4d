"""care_trainer.yaml composed on verl's real hydra tree and converted to verl's dataclasses."""

import os

import pytest
from omegaconf import OmegaConf

from recipe.care.main_care import (
    ALGO_OVERRIDES,
    CareConfigError,
    compose_config,
    to_verl_dataclasses,
    validate,
)

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


def test_unknown_care_override_lists_settable_keys_only():
    """The yaml's _target_ names each care block's dataclass; it is not offered as a key to set."""
    for override, known in (("care.kk=3", "k, m, neg_scale"), ("care.rescue.gama=1", "enable, gamma, normalize, logp")):
        with pytest.raises(CareConfigError, match=f"unknown key {override.split('=')[0]}; known: .*{known}") as err:
            compose_config([override])
        assert "_target_" not in str(err.value)
