"""Entry point: ``python -m recipe.care.main_care [--algo care|grpo|dapo|gspo] [--model PRESET] [--stage rl|sft] [--dry-run] [OPTION ...] key=value ...``.

Composes ``recipe/care/config/care_trainer.yaml`` (verl's ``ppo_trainer`` tree plus CARE's
defaults) with the ALGO preset, the model preset, the launch options' overrides (data shards,
benchmark validation, run name, GPU counts: recipe/care/launch_args.py) and the user's overrides,
validates it the way verl's own ``main_ppo`` does plus CARE's own checks, and starts verl's v1 task
runner with the recipe registered inside the runner process (registries are per process,
docs/verl-integration.md item 10). ``--stage sft`` runs the cold-start SFT under torchrun instead.
``--dry-run`` prints the resolved config and exits without starting Ray. ``bash run_care.sh`` maps
its environment variables onto the options (``--help`` lists both).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from recipe.care import node_watchdog
from recipe.care.care_config import CareConfigError
from recipe.care.checkpoints import FILE_LOGGER_ENV, move_aside
from recipe.care.launch_args import (detach_from_ray_job, parse_launch_args, rl_overrides, sft_overrides,
                                     torchrun_command, usage)
from recipe.care.verl_compat import require_verl_attr

CONFIG_DIR = str(Path(__file__).resolve().parent / "config")
CONFIG_NAME = "care_trainer"

# Baselines for A/B runs: same data, reward, model, batch sizes and budget; only the algorithm
# keys change. GRPO: verl's grpo estimator on the same KL loss and clip range as CARE (and the
# same vanilla_clip_by_sign loss: verl's vanilla loss plus the clip split by sign). DAPO:
# clip-higher 0.2/0.28, token-mean, no KL, dynamic sampling on `acc` (overlong reward shaping is
# not applied: the reward is shared). GSPO: verl's gspo policy loss with its recipe's clip range
# and seq-mean-token-mean aggregation, no KL.
# RGR is off for baselines: its agent-loop manager is installed by the shared config.
# trainer care_baseline_sync: verl's sync trainer plus val-core/macro/acc (recipe/care/trainer.py).
CARE_TRAINER, BASELINE_TRAINER = "care_sync", "care_baseline_sync"
# The advantage estimator each trainer runs: the CARE trainer owns its advantage step (the `care`
# registration only makes the name valid), the baselines run verl's GRPO estimator.
TRAINER_ESTIMATOR = {CARE_TRAINER: "care", BASELINE_TRAINER: "grpo"}
_BASELINE = [f"trainer.v1.trainer_mode={BASELINE_TRAINER}", f"algorithm.adv_estimator={TRAINER_ESTIMATOR[BASELINE_TRAINER]}",
             "care.rgr.enable=false"]
ALGO_OVERRIDES: dict[str, list[str]] = {
    "care": [],
    "grpo": [*_BASELINE],
    "dapo": [
        *_BASELINE,
        "algorithm.filter_groups.enable=true",
        "algorithm.filter_groups.metric=acc",
        "actor_rollout_ref.actor.clip_ratio_low=0.2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.use_kl_loss=false",
    ],
    "gspo": [
        *_BASELINE,
        "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        "actor_rollout_ref.actor.clip_ratio_low=0.0003",
        "actor_rollout_ref.actor.clip_ratio_high=0.0004",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "actor_rollout_ref.actor.use_kl_loss=false",
    ],
}

# The trainer each ALGO runs, read off its overrides (the yaml's default is the CARE trainer).
ALGO_TRAINER = {algo: BASELINE_TRAINER if f"trainer.v1.trainer_mode={BASELINE_TRAINER}" in overrides else CARE_TRAINER
                for algo, overrides in ALGO_OVERRIDES.items()}


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (hydra's and verl's messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=CONFIG_NAME, overrides=overrides)


def compose_config(overrides: list[str] | tuple[str, ...] = (), algo: str = "care") -> DictConfig:
    """The composed (unresolved) config for ``algo`` with the user's hydra overrides applied last."""
    if algo not in ALGO_OVERRIDES:
        raise CareConfigError(f"unknown ALGO {algo!r}; choose one of {', '.join(ALGO_OVERRIDES)}")
    from hydra.errors import HydraException

    try:
        return _compose([*ALGO_OVERRIDES[algo], *overrides])
    except HydraException as exc:
        raise CareConfigError(override_error_message(list(overrides), algo) or one_line(exc)) from exc


def override_error_message(overrides: list[str], algo: str) -> str | None:
    """The override hydra refused, named: one it cannot parse, or one that changes a key the config lacks
    (with the keys its parent has).

    hydra's parse error does not say which override it is, and for an unknown key it only suggests
    ``+key=value``, which for a ``care.*`` typo swaps one error for another.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except HydraException as exc:
            return (f"cannot parse the override {override!r} ({one_line(exc)}); "
                    "lists are key=[a,b]; quote a value with spaces or special characters")
    tree = OmegaConf.to_container(_compose(ALGO_OVERRIDES[algo]), resolve=False)
    for override in parsed:
        if override.is_add() or override.is_force_add() or override.package is not None:
            continue
        node, parts = tree, override.key_or_group.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                key, parent = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
                # _target_ names a block's dataclass (care.*), not a key to set
                known = (", ".join(k for k in node if k != "_target_") if isinstance(node, dict)
                         else f"none ({parent} is not a block)")
                # care.* keys are all known to CareConfig: adding one is an error too
                hint = "" if parts[0] == "care" else f"; a key verl accepts but the yaml lacks takes a +: +{key}=..."
                return f"unknown key {key}; known: {known}{hint}"
            node = node[part]
    return None


def validate_care_config(config: DictConfig) -> None:
    """CARE's requirements on top of verl's own validation (only when the care_sync trainer runs).

    The care block is built the way the trainer builds it (:func:`recipe.care.config_loader.care_config_of`),
    so a bad key or value fails here, before anything starts.
    """
    if config.trainer.v1.trainer_mode != "care_sync":
        return
    from recipe.care.config_loader import care_config_of

    care = care_config_of(config)
    problems = []
    if not config.trainer.use_v1:
        problems.append("trainer.use_v1 must be true (care_sync is a v1 trainer)")
    n = int(config.actor_rollout_ref.rollout.n)
    if n < 1 + care.k:
        problems.append(f"actor_rollout_ref.rollout.n={n} must be >= 1 + care.k={1 + care.k} (an anchor and K negatives)")
    if care.m < care.k:
        problems.append(f"care.m={care.m} must be >= care.k={care.k}")
    if config.algorithm.get("filter_groups", {}).get("enable", False):
        problems.append("algorithm.filter_groups.enable must be false: all-wrong groups feed the rescue")
    if config.algorithm.get("use_kl_in_reward", False):
        problems.append("algorithm.use_kl_in_reward is not supported by CARE (use actor_rollout_ref.actor.use_kl_loss)")
    corr = config.algorithm.get("rollout_correction", None) or {}
    if corr.get("bypass_mode", False):
        problems.append(
            "algorithm.rollout_correction.bypass_mode must be false: CARE takes think embeddings from the "
            "old-log-prob forward pass, which bypass mode skips"
        )
    if corr.get("rollout_is", None) or corr.get("rollout_rs", None):
        problems.append("algorithm.rollout_correction.rollout_is / rollout_rs are not supported by the care_sync trainer")
    if config.critic.get("enable", None):
        problems.append("critic.enable must be false: CARE is critic-free")
    if problems:
        raise CareConfigError("invalid CARE config: " + "; ".join(problems))


def _algos_running(trainer_mode: str) -> str:
    return "ALGO=" + "|".join(algo for algo, mode in ALGO_TRAINER.items() if mode == trainer_mode)


def validate_algorithm(config: DictConfig) -> None:
    """The trainer and advantage estimator are the ones the ALGO runs; the estimator is one verl registered.

    verl looks the estimator up at the first advantage step, after the model has loaded on the GPUs.
    """
    import recipe.care.adv_estimator  # noqa: F401  registers `care`

    registry = require_verl_attr("verl.trainer.ppo.core_algos", "ADV_ESTIMATOR_REGISTRY")
    pairs = ", ".join(f"{_algos_running(mode)} runs {est}" for mode, est in TRAINER_ESTIMATOR.items())
    mode = config.trainer.v1.trainer_mode
    if mode not in TRAINER_ESTIMATOR:
        raise CareConfigError(f"trainer.v1.trainer_mode={mode!r} is not one of the recipe's trainers ("
                              + ", ".join(f"{m} for {_algos_running(m)}" for m in TRAINER_ESTIMATOR)
                              + "): drop the override and choose the algorithm with ALGO")
    estimator, needed = config.algorithm.adv_estimator, TRAINER_ESTIMATOR[mode]
    if estimator not in registry:
        raise CareConfigError(f"unknown algorithm.adv_estimator {estimator!r} (registered: {', '.join(sorted(registry))}); "
                              f"{_algos_running(mode)} runs {needed}: drop the override")
    if estimator != needed:
        raise CareConfigError(f"algorithm.adv_estimator={estimator!r} but {_algos_running(mode)} runs {needed} "
                              f"({pairs}): drop the override, or choose another ALGO")


def validate_reward(config: DictConfig) -> None:
    """The reward manager (and custom reward function) resolve the way verl's reward loop will resolve them,
    and compute CARE's reward, whose ``acc`` every ALGO reads (CARE's advantages, DAPO's group filter,
    val-core/macro/acc). Without a ``reward.custom_reward_function``, that means CARE's reward manager."""
    from recipe.care.reward_manager import REGISTRY_NAME, CareRewardManager  # registers `care`

    require_verl_attr("verl.experimental.reward_loop.reward_manager", "register")  # verl's own managers register
    registry = require_verl_attr("verl.experimental.reward_loop.reward_manager.registry", "REWARD_MANAGER")
    resolve_reward_manager_cls, get_custom_reward_fn = require_verl_attr(
        "verl.trainer.ppo.reward", "resolve_reward_manager_cls", "get_custom_reward_fn")
    manager = config.reward.reward_manager
    source, name = manager.get("source", "register"), manager.get("name")
    fix = (f"use reward.reward_manager.name={REGISTRY_NAME} (or add "
           "reward.custom_reward_function.path=recipe/care/reward_manager.py)")
    if source == "register" and name not in registry:
        raise CareConfigError(f"unknown reward.reward_manager.name {name!r} (registered: {', '.join(sorted(registry))}); {fix}")
    if source == "importlib":
        path = (manager.get("module") or {}).get("path")
        if not path or not os.path.isfile(str(path)):
            raise CareConfigError(f"reward.reward_manager.module.path={path!r} is not a file "
                                  f"(reward.reward_manager.source=importlib loads the class {name!r} from it)")
    elif source != "register":
        raise CareConfigError(f"reward.reward_manager.source={source!r}: must be register or importlib")
    try:
        manager_cls = resolve_reward_manager_cls(config)
    except Exception as exc:  # verl executes the named file: anything it raises is the config's problem
        raise CareConfigError(f"reward.reward_manager ({source} {name!r}): {one_line(exc)}") from exc
    custom = (config.reward.get("custom_reward_function") or {}).get("path")
    if custom:
        if not os.path.isfile(str(custom)):
            raise CareConfigError(f"reward.custom_reward_function.path={custom!r} is not a file")
        try:
            get_custom_reward_fn(config)
        except Exception as exc:
            raise CareConfigError(f"reward.custom_reward_function ({custom}): {one_line(exc)}") from exc
    elif manager_cls is not CareRewardManager:
        raise CareConfigError(f"reward.reward_manager.name={name!r} does not compute CARE's reward "
                              f"(the verifier's acc, which every ALGO reads): {fix}")


def to_verl_dataclasses(config: DictConfig) -> dict:
    """Convert the sections verl turns into dataclasses at start-up (raises on a bad key or value).

    The sections are those verl 0.9.1 itself converts. Left out: the model (HFModelConfig loads the
    tokenizer from the model path, which a dry run without the checkpoint cannot do) and
    ``reward`` (verl never converts it; its RewardManagerConfig fails to instantiate in 0.9.1).
    """
    omega_conf_to_dataclass = require_verl_attr("verl.utils.config", "omega_conf_to_dataclass")
    return {
        "algorithm": omega_conf_to_dataclass(config.algorithm),
        "actor": omega_conf_to_dataclass(config.actor_rollout_ref.actor),
        "rollout": omega_conf_to_dataclass(config.actor_rollout_ref.rollout),
        "checkpoint_engine": omega_conf_to_dataclass(config.actor_rollout_ref.rollout.checkpoint_engine),
    }


def validate_policy_loss(config: DictConfig) -> None:
    """The actor's ``policy_loss.loss_mode`` must be registered where the loss runs, the actor workers.

    verl looks the name up only at the first actor update, inside a Ray worker; checked here, an
    unknown name or a config that does not load ``recipe.care.policy_loss`` in the workers is a
    start-up error instead.
    """
    from recipe.care.policy_loss import CLIP_BY_SIGN_LOSS

    registry = require_verl_attr("verl.trainer.ppo.core_algos", "POLICY_LOSS_REGISTRY")
    mode = config.actor_rollout_ref.actor.get("policy_loss", {}).get("loss_mode", "vanilla")
    if mode not in registry:
        raise CareConfigError(f"unknown actor_rollout_ref.actor.policy_loss.loss_mode={mode!r}; "
                              f"registered: {', '.join(sorted(registry))}")
    env = config.get("ray_kwargs", {}).get("ray_init", {}).get("runtime_env", {}).get("env_vars", {}) or {}
    worker_modules = str(env.get("VERL_USE_EXTERNAL_MODULES", "")).split(",")
    if mode == CLIP_BY_SIGN_LOSS and "recipe.care.policy_loss" not in worker_modules:
        raise CareConfigError(
            f"policy_loss.loss_mode={CLIP_BY_SIGN_LOSS} is registered by recipe.care.policy_loss, which "
            "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES must list so the actor "
            "workers load it (or use loss_mode=vanilla: the same loss without the clip split)")


def validate(config: DictConfig) -> None:
    """The recipe's checks, then verl's own start-up validation (as verl.trainer.main_ppo.main does).

    The recipe's come first: verl's validate_config prints that all checks passed, which must not
    precede a recipe error.
    """
    validate_algorithm(config)
    validate_reward(config)
    validate_care_config(config)
    validate_policy_loss(config)
    need_critic, need_reference_policy = require_verl_attr("verl.trainer.ppo.utils", "need_critic", "need_reference_policy")
    validate_config = require_verl_attr("verl.utils.config", "validate_config")
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    to_verl_dataclasses(config)


def register_recipe() -> None:
    """Import the modules whose decorators register CARE with verl's registries (this process only)."""
    import recipe.care.adv_estimator  # noqa: F401  register_adv_est("care")
    import recipe.care.reward_manager  # noqa: F401  reward manager "care"
    import recipe.care.trainer  # noqa: F401  register_trainer("care_sync"), ("care_baseline_sync")


def _task_runner_class():
    import ray

    # verl 0.9.1 verl/trainer/main_ppo.py:115: TaskRunnerV1 is a Ray actor class; subclass its class.
    TaskRunnerV1 = require_verl_attr("verl.trainer.main_ppo", "TaskRunnerV1")

    class CareTaskRunner(TaskRunnerV1.__ray_actor_class__):
        def run(self, config):
            from recipe.care.registrations import WORKER_MODULES, require_recipe_registrations

            # before any model loads: the job's runtime_env must carry the recipe to every worker
            modules = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES")
            require_recipe_registrations("the task runner", str(modules).split(",") if modules else WORKER_MODULES)
            register_recipe()
            return super().run(config)

    return ray.remote(CareTaskRunner)


METRICS_FILE = "metrics.jsonl"


def set_file_logger_path(config: DictConfig, environ=None) -> str | None:
    """Where verl's ``file`` logger writes, made explicit in the workers' runtime_env.

    verl 0.9.1 (``verl/utils/tracking.py`` FileLogger) reads ``VERL_FILE_LOGGER_PATH`` in the task
    runner actor, else writes ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl`` relative to
    that actor's working directory. The recipe puts it in the run's folder,
    ``<trainer.default_local_dir>/metrics.jsonl`` (absolute), unless the config's runtime_env or the
    launching environment already names a path. Returns the path, or None without a file logger.
    """
    environ = os.environ if environ is None else environ
    loggers = config.trainer.logger
    if "file" not in ([loggers] if isinstance(loggers, str) else list(loggers)):
        return None
    env_vars = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    path = env_vars.get(FILE_LOGGER_ENV) or environ.get(FILE_LOGGER_ENV)
    if not path:
        path = os.path.join(str(config.trainer.default_local_dir), METRICS_FILE)
    path = os.path.abspath(os.path.expanduser(str(path)))
    with open_dict(config):
        OmegaConf.update(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{FILE_LOGGER_ENV}", path, force_add=True)
    return path


def keep_previous_metrics(path: str) -> str | None:
    """verl's FileLogger opens its file with mode "wb": a resumed run would erase the earlier steps.
    Move a non-empty earlier file aside (metrics.1.jsonl, metrics.2.jsonl, ...: one above the highest
    number there); returns where. The trainer cuts the aside files back to the resumed step
    (``SyncTrainerWithBenchmarkMacro.fit``)."""
    moved = move_aside(path)
    return str(moved) if moved else None


def prepare_launch(config: DictConfig) -> None:
    """The device verl detects, then every start-up check (raises on a bad config; starts nothing)."""
    auto_set_device = require_verl_attr("verl.utils.device", "auto_set_device")
    auto_set_device(config)
    validate(config)


def run(config: DictConfig) -> None:
    prepare_launch(config)
    launch(config)


def launch(config: DictConfig) -> None:
    """Start verl's task runner on a config :func:`prepare_launch` accepted."""
    run_ppo = require_verl_attr("verl.trainer.main_ppo", "run_ppo")
    metrics = set_file_logger_path(config)
    if metrics:
        os.makedirs(os.path.dirname(metrics), exist_ok=True)
        moved = keep_previous_metrics(metrics)
        print(f"care: step metrics (JSON lines) -> {metrics}" + (f" (earlier run's kept as {moved})" if moved else ""))
    if config.trainer.v1.trainer_mode in ("care_sync", "care_baseline_sync"):
        register_recipe()  # fail here, not inside a Ray actor, if a recipe module is broken
    run_ppo(config, task_runner_class=_task_runner_class())


DEBUG_FLAG, DEBUG_ENV = "--debug", "CARE_DEBUG"
HELP_FLAGS = ("-h", "--help")
USAGE = usage(ALGO_OVERRIDES)


def _launch_errors() -> tuple[type[BaseException], ...]:
    """What a bad command line or config raises before anything starts: reported as one line, exit 2.

    verl's validate_config asserts and raises ValueError/TypeError naming the key; hydra and
    omegaconf raise their own kinds; VerlVersionError is an ImportError.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (ValueError, TypeError, KeyError, AssertionError, ImportError, HydraException, OmegaConfBaseException)


def parse_args(argv: list[str]):
    """(options, the user's key=value overrides): see USAGE and recipe/care/launch_args.py."""
    return parse_launch_args(argv, ALGO_OVERRIDES)


def run_preflight(config: DictConfig, dry_run: bool) -> bool:
    """recipe/care/preflight.py before anything starts Ray; prints one line per problem to stderr."""
    from recipe.care.preflight import format_problems, gpu_checks_apply, preflight

    problems = preflight(config, gpu=gpu_checks_apply(dry_run))
    if problems:
        print(format_problems(problems), file=sys.stderr)
    return not problems


def _count(config: DictConfig, key: str) -> int:
    value = OmegaConf.select(config, key)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CareConfigError(f"{key}={value!r} must be a whole number (N_GPUS_PER_NODE / NNODES)") from None


def compose_with_preset(overrides: list[str], algo: str, model: str | None) -> DictConfig:
    """ALGO preset, then the model preset scaled to the GPU count the overrides ask for, then the overrides.

    ``model`` None: no model preset (the yaml's values).
    """
    from recipe.care.presets import get_preset, preset_overrides

    if model is not None:
        get_preset(model)  # an unknown name fails before the (slow) composition
    config = compose_config(overrides, algo=algo)
    if not model:
        return config
    preset, notes = preset_overrides(model, _count(config, "trainer.n_gpus_per_node"), _count(config, "trainer.nnodes"))
    for note in notes:
        print(f"care: --model {model}: {note}", file=sys.stderr)
    return compose_config([*preset, *overrides], algo=algo)


def debug_requested(argv: list[str], environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return DEBUG_FLAG in argv or environ.get(DEBUG_ENV, "") not in ("", "0")


def run_sft_stage(options, overrides: list[str]) -> int:
    """``--stage sft``: verl's SFT trainer under torchrun (this process becomes torchrun), or with
    ``--dry-run`` recipe.care.main_sft's dry run in this process (no torchrun, no GPU)."""
    if options.preflight_only:
        raise CareConfigError("--preflight-only checks the RL run (--stage rl); --stage sft --dry-run shows the SFT config")
    stage_overrides = [*sft_overrides(options), *overrides]
    if options.dry_run:
        from recipe.care.main_sft import main as sft_main

        return sft_main([*stage_overrides, "--dry-run"])
    command = torchrun_command(sys.executable, options, stage_overrides)
    sys.stdout.flush()
    # torchrun's ranks are not Ray processes, even when this runs as a `ray job submit` entrypoint
    os.execvpe(command[0], command, detach_from_ray_job(dict(os.environ)))
    return 0  # not reached: execvp replaces the process


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in HELP_FLAGS for arg in argv):
        print(USAGE)
        return 0
    debug = debug_requested(argv)
    try:
        options, overrides = parse_args(argv)
        if options.stage == "sft":
            return run_sft_stage(options, overrides)
        config = compose_with_preset([*rl_overrides(options), *overrides], options.algo, options.model)
        set_file_logger_path(config)  # shown in the dry run's config; the launch creates the folder
        if options.dry_run:
            validate(config)
        else:
            prepare_launch(config)
    except _launch_errors() as exc:
        if debug:
            raise
        print(f"care: {one_line(exc)}", file=sys.stderr)
        return 2
    dry_run, preflight_only = options.dry_run, options.preflight_only
    if not options.skip_preflight and not run_preflight(config, dry_run and not preflight_only):
        return 2
    if preflight_only:
        print("preflight: all checks passed")
        return 0
    if dry_run:
        print(OmegaConf.to_yaml(config, resolve=True))
        print(f"# ALGO={options.algo}: config accepted by verl's validate_config and dataclass conversion (dry run)")
        return 0
    node_watchdog.start()  # a lost Ray node ends the run with a clear error instead of a hang
    launch(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
