"""One CARE (or baseline) training run on CPU: the smoke's sizes, verl overrides and environment.

``python -m recipe.care.main_care --algo ALGO *job_overrides(...)`` with :func:`job_env` runs verl's
real trainer on the CPU platform (``verl_cpu``: gloo, FSDP on CPU, sdpa) with verl's vLLM rollout on
vLLM's CPU build, at the tiny model's scale. The smoke driver and tests/recipe/care/test_copy_into_fork.py
build their runs from these functions.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Smoke sizes (batch 2-4 prompts, n = 5-6 >= 1 + K, short responses, 2-3 steps).
RGR_MANAGER = "recipe.care.agent_loop.CareAgentLoopManager"
BATCH, ROLLOUT_N, CARE_K, CARE_M = 4, 6, 2, 3
# Cold-start SFT of the random tiny model through verl's SFT trainer, so that some sampled answers are
# right (a random model never answers correctly and every group would be all-wrong).
# Steps measured with benchmarks/smoke_sft_accuracy.py (6 answers per training prompt at
# temperature 1): see SFT_STEPS's comment there and in the README.
SFT_STEPS = 100
SFT_BATCH = 2
SFT_LR = 3e-3
MAX_PROMPT, MAX_RESPONSE = 320, 48
SFT_MAX_LENGTH = MAX_PROMPT + MAX_RESPONSE


def rgr_available() -> bool:
    try:
        import recipe.care.agent_loop  # noqa: F401
        import recipe.care.rgr  # noqa: F401
    except Exception:
        return False
    return (REPO / "recipe" / "care" / "config" / "rgr.yaml").exists()


def rgr_overrides() -> list[str]:
    """RGR on: CARE's agent-loop manager and ``care.rgr.enable``. ``++`` adds or overrides, so they hold
    whether or not care_trainer.yaml already includes rgr.yaml."""
    return [f"++actor_rollout_ref.rollout.agent.agent_loop_manager_class={RGR_MANAGER}", "++care.rgr.enable=true"]


def external_modules() -> str:
    """The CPU plugin plus the modules the CARE config loads in every verl process (one source of truth)."""
    from recipe.care.main_care import compose_config

    recipe_modules = str(compose_config([]).ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES)
    return ",".join(["verl_cpu", *recipe_modules.split(",")])


# A smoke on several nodes: a TransferQueue storage unit on a lost node makes the trainer's next request
# wait send/recv timeout x attempts + probe (transfer_queue's defaults 200 s x 3 + 10 s, read at import
# in each worker); these bring that to under a minute. The environment's own values win.
MULTINODE_TQ_ENV = {"TQ_SIMPLE_STORAGE_SEND_RECV_TIMEOUT": "20", "TQ_SIMPLE_STORAGE_MAX_ATTEMPTS": "2",
                    "TQ_SIMPLE_STORAGE_PROBE_TIMEOUT": "5"}


def existing_ray_cluster() -> str | None:
    """The address verl's ``ray.init()`` will connect to, or None when it will start its own cluster.

    Ray 2.60 ``ray.init(address=None)`` resolves the address with
    ``services.canonicalize_bootstrap_address``: ``RAY_ADDRESS`` (set in a ``ray job submit``
    entrypoint), else the cluster of the last ``ray start`` on this machine (``/tmp/ray/ray_current_cluster``).
    Connecting to one, it refuses ``num_cpus`` and ``object_store_memory``.
    """
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(None, None)


def micro_batch_size(rows: int, world_size: int, largest: int = 8) -> int:
    """The largest micro-batch up to ``largest`` that divides each rank's share of a step's ``rows``: verl
    (without dynamic batch sizes) asserts that a rank's rows split into whole micro-batches."""
    per_rank = rows // world_size
    return max(m for m in range(1, largest + 1) if per_rank % m == 0)


def cluster_overrides(nnodes: int, existing_cluster: bool, environ=None, devices_per_node: int = 1) -> list[str]:
    """The overrides that depend on where the run goes: ``nnodes`` nodes of ``devices_per_node`` CPU "devices" each
    (verl_cpu counts logical CPUs as devices), one TransferQueue storage unit per node (placed
    round-robin over the alive nodes, so every node holds data) and, with more than one node, short
    TransferQueue timeouts; a cluster of its own (``existing_cluster`` False) gets the smoke's logical
    CPUs and object store, which Ray refuses when it connects to a running cluster."""
    environ = os.environ if environ is None else environ
    overrides = [
        f"trainer.n_gpus_per_node={devices_per_node}",
        f"trainer.nnodes={nnodes}",
        # one storage process per node (verl's default starts 8 on a 2-core machine)
        f"transfer_queue.backend.SimpleStorage.num_data_storage_units={nnodes}",
    ]
    if nnodes > 1:
        overrides += [f"+ray_kwargs.ray_init.runtime_env.env_vars.{key}='{environ.get(key, value)}'"
                      for key, value in MULTINODE_TQ_ENV.items()]
    if not existing_cluster:
        overrides += ["+ray_kwargs.ray_init.num_cpus=32", "+ray_kwargs.ray_init.object_store_memory=536870912"]
    return overrides


def job_overrides(algo: str, model: Path, train_files: list[str], val_file: str, ckpt_dir: Path, steps: int,
                  save_step: int, bench_files: list[str] = (), batch: int = BATCH, rollout_n: int = ROLLOUT_N,
                  nnodes: int = 1, existing_cluster: bool = False, devices_per_node: int = 1) -> list[str]:
    """One smoke run's verl overrides. ``bench_files``: the six benchmark parquets, validated (with the
    mix's val split) after the run's last step, as ``BENCH_DIR`` does in run_care.sh; none: no validation.
    ``batch`` prompts per step (one mini-batch), ``rollout_n`` responses each (CARE needs at least 1 + care.k).
    ``nnodes``, ``existing_cluster``, ``devices_per_node``: :func:`cluster_overrides`."""
    from verl_cpu import CPU_CONFIG_OVERRIDES
    from verl_cpu.vllm_cpu import VLLM_CPU_OVERRIDES

    micro = micro_batch_size(batch * rollout_n, nnodes * devices_per_node)

    external = external_modules()
    overrides = [
        *CPU_CONFIG_OVERRIDES,
        *VLLM_CPU_OVERRIDES,
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files=[{','.join(train_files)}]",
        f"data.val_files=[{','.join([val_file, *bench_files])}]",
        f"data.train_batch_size={batch}",
        f"data.max_prompt_length={MAX_PROMPT}",
        f"data.max_response_length={MAX_RESPONSE}",
        "data.dataloader_num_workers=0",
        "data.shuffle=true",
        f"actor_rollout_ref.rollout.n={rollout_n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",  # one process on a 2-core machine (verl's default starts 8)
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        # FSDP2 on gloo in fp32 (FSDP1's sync_module_states wants the module on an accelerator)
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
        "actor_rollout_ref.ref.use_torch_compile=false",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=false",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.actor.fsdp_config.param_offload=false",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=false",
        "actor_rollout_ref.ref.fsdp_config.param_offload=false",
        "actor_rollout_ref.model.use_remove_padding=false",  # Qwen2.5-VL mrope + packing fails on CPU (docs/verl-integration.md, "CPU runs")
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={save_step}",
        # with benchmarks: validate after the last step (verl always validates on it when test_freq > 0)
        f"trainer.test_freq={steps if bench_files else -1}",
        "trainer.val_before_train=false",
        "trainer.logger=[console,file]",
        "trainer.project_name=care-verl-smoke",
        f"trainer.experiment_name={algo}_smoke",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.resume_mode=auto",
        *cluster_overrides(nnodes, existing_cluster, devices_per_node=devices_per_node),
        "+ray_kwargs.ray_init.include_dashboard=false",
        f"ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES='{external}'",
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM=cpu",
        "+ray_kwargs.ray_init.runtime_env.env_vars.TOKENIZERS_PARALLELISM='false'",
        "+ray_kwargs.ray_init.runtime_env.env_vars.OMP_NUM_THREADS='1'",
    ]
    if bench_files:  # run_care.sh's BENCH_DIR settings: one greedy pass per benchmark question
        overrides += ["actor_rollout_ref.rollout.val_kwargs.n=1", "actor_rollout_ref.rollout.val_kwargs.do_sample=False",
                      "actor_rollout_ref.rollout.val_kwargs.temperature=0"]
    if algo == "care":
        # records on: the report's mechanism-signature fit is over groups (recipe/care/group_records.py)
        overrides += [f"care.k={CARE_K}", f"care.m={CARE_M}", "care.records.enable=true"]
    return overrides


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_MODULES": external_modules(),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
    })
    return env
