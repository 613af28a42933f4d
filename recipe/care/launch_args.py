"""The launcher's options and the hydra overrides they stand for (``python -m recipe.care.main_care``).

One table, :data:`OPTIONS`, names every option, its default and the environment variable
``bash run_care.sh`` maps onto it. From the options come the overrides placed between the model
preset and the user's own ``key=value`` (so the user's win): the data shards, the benchmark
validation files, the run's name, the GPU counts; and for ``--stage sft`` the torchrun command.

Kept apart from ``main_care`` because none of it needs hydra or verl: plain functions of the
options and the file system, quick to import and to test.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Iterable, MutableMapping

from recipe.care.presets import DEFAULT_PRESET, PRESETS, get_preset

# `--model none`: the yaml's own values, no preset (the CPU smoke's tiny model sets its own).
NO_PRESET = "none"
STAGES = ("rl", "sft")
SHARD_GLOB = "train-*.parquet"  # data_prep/build_mix.py and build_sft.py write train-00000.parquet, ...
VAL_FILE = "val.parquet"
# One greedy pass per validation question, so a benchmark's accuracy is not a sampling average.
GREEDY_VAL_OVERRIDES = (
    "actor_rollout_ref.rollout.val_kwargs.n=1",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=False",
    "actor_rollout_ref.rollout.val_kwargs.temperature=0",
)
MAIN_SFT = "recipe.care.main_sft"
# What a `ray job submit` entrypoint passes to its children that makes a torchrun rank act as a Ray
# process (Ray 2.60 job_supervisor.py builds the entrypoint env from its actor's env plus RAY_ADDRESS
# and the job config). The NOSET prefix covers every RAY_EXPERIMENTAL_NOSET_*_VISIBLE_DEVICES that
# verl 0.9.1 verl/utils/ray_utils.py ray_noset_visible_devices() checks (a list local to that function).
RAY_NOSET_PREFIX = "RAY_EXPERIMENTAL_NOSET_"
RAY_JOB_ENV_VARS = ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")


class LaunchError(ValueError):
    """A bad option or missing input: main_care reports it as one line, exit 2."""


@dataclass(frozen=True)
class Option:
    flag: str
    env: str | None  # the run_care.sh environment variable mapped onto it
    metavar: str
    default: Any
    help: str
    type: Callable[[str], Any] = str


OPTIONS = (
    Option("--algo", "ALGO", "NAME", "care", "the algorithm: {algos}; baselines share CARE's data, reward and budget"),
    Option("--model", None, "PRESET", DEFAULT_PRESET,
           f"recipe/care/presets.py: {' | '.join(PRESETS)}, or {NO_PRESET} (the yaml's values)"),
    Option("--stage", None, "STAGE", "rl", "rl: RL with verl's PPO trainer; sft: cold-start SFT with verl's SFT trainer"
           " (torchrun, one process per GPU)"),
    Option("--data-dir", "DATA_DIR", "DIR", "data/care_mix",
           f"data_prep/build_mix.py's output: every {SHARD_GLOB} (sorted) and {VAL_FILE}"),
    Option("--bench-dir", "BENCH_DIR", "DIR", None,
           "data_prep/build_bench.py's six parquets: also validate on them, one greedy pass (val-core/macro/acc)"),
    Option("--sft-data-dir", "SFT_DATA_DIR", "DIR", "data/care_sft", f"--stage sft: data_prep/build_sft.py's {SHARD_GLOB}"),
    Option("--model-path", "MODEL_PATH", "PATH", None, "the model (hub id or folder); default: the preset's"),
    Option("--n-gpus-per-node", "N_GPUS_PER_NODE", "N", 8, "GPUs per node (the preset scales to it)", int),
    Option("--nnodes", "NNODES", "N", 1, "nodes", int),
    Option("--node-rank", "NODE_RANK", "R", None, "--stage sft on several nodes: this node's rank", int),
    Option("--master-addr", "MASTER_ADDR", "HOST", None, "--stage sft on several nodes: node 0's address"),
    Option("--master-port", "MASTER_PORT", "PORT", 29500, "--stage sft on several nodes: node 0's port", int),
    Option("--project-name", "PROJECT_NAME", "NAME", "care-verl", "trainer.project_name"),
    Option("--experiment-name", "EXPERIMENT_NAME", "NAME", None,
           "trainer.experiment_name of the RL run; default <algo>_<preset> ('.' and '-' as '_')"),
    Option("--sft-experiment-name", "SFT_EXPERIMENT_NAME", "NAME", None,
           "trainer.experiment_name of the SFT run; default sft_<preset>"),
    Option("--total-epochs", "TOTAL_EPOCHS", "N", 1, "trainer.total_epochs of the RL run", int),
    Option("--logger", "LOGGER", "LIST", '["console","file"]', "trainer.logger; add \"wandb\" to log there"),
    Option("--train-batch-size", "TRAIN_BATCH_SIZE", "N", None, "prompts per RL step; default: the preset's", int),
    Option("--rollout-n", "ROLLOUT_N", "N", None, "rollouts per prompt; default: the preset's", int),
)
# Switches (no value); --debug also reads CARE_DEBUG=1 (main_care.debug_requested).
FLAGS = (
    ("--dry-run", "validate and print the composed config; starts no Ray or torchrun (preflight: all but the GPU checks)"),
    ("--preflight-only", "run the start-up checks, GPU ones included, and stop (--stage rl)"),
    ("--skip-preflight", "launch without the start-up checks"),
    ("--debug", "a bad input shows its Python traceback (also CARE_DEBUG=1); otherwise one line, exit 2"),
)


def describe(opt: Option, algos: Iterable[str]) -> str:
    """``opt``'s help line: what it sets, its default and its run_care.sh environment variable."""
    default = "" if opt.default is None else f" [{opt.default}]"
    env = f" (run_care.sh: {opt.env})" if opt.env else ""
    return f"{opt.help.format(algos=' | '.join(algos))}{default}{env}"


def usage(algos: Iterable[str]) -> str:
    """The ``--help`` text: every option, its default and its run_care.sh environment variable."""
    algos = list(algos)
    lines = [f"usage: python -m recipe.care.main_care [--algo {'|'.join(algos)}] [--model PRESET] [--stage rl|sft] [--dry-run]",
             "                                     [--preflight-only | --skip-preflight] [--debug] [OPTION ...] [key=value ...]",
             ""]
    entries = [(f"{opt.flag} {opt.metavar}", describe(opt, algos)) for opt in OPTIONS] + list(FLAGS)
    entries.append(("key=value", "any verl/CARE hydra override, applied last (+key=value adds a key verl accepts "
                                 "but the yaml lacks); with --stage sft, a key of recipe/care/config/care_sft.yaml"))
    for name, text in entries:
        lines.append(textwrap.fill(text, width=110, initial_indent=f"  {name:<27} ", subsequent_indent=" " * 30))
    lines += ["",
              "bash run_care.sh maps its environment variables onto these options: bash run_care.sh --help"]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    algos: tuple[str, ...] = ()

    def error(self, message: str):
        """One line naming the option and what it takes (argparse would print its usage and exit)."""
        named = re.match(r"argument (--[\w-]+)", message)
        opt = next((o for o in OPTIONS if named and o.flag == named.group(1)), None)
        hint = f"; {opt.flag} {opt.metavar}: {describe(opt, self.algos)}" if opt else ""
        raise LaunchError(f"{message}{hint} (python -m recipe.care.main_care --help)")


def _parser(algos: Iterable[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m recipe.care.main_care", add_help=False, allow_abbrev=False)
    parser.algos = tuple(algos)
    for opt in OPTIONS:
        parser.add_argument(opt.flag, type=opt.type, default=opt.default, metavar=opt.metavar)
    for flag, _ in FLAGS:
        parser.add_argument(flag, action="store_true")
    return parser


def parse_launch_args(argv: list[str], algos: Iterable[str]) -> tuple[argparse.Namespace, list[str]]:
    """(options, the user's hydra overrides in their order). Options may come anywhere; a repeated one:
    the last wins. ``algos``: the ``--algo`` names (for the messages). Raises :class:`LaunchError` on an
    unknown option or a bad value."""
    options, rest = _parser(algos).parse_known_args(argv)
    for arg in rest:
        if arg.startswith("-"):
            flags = ", ".join([o.flag for o in OPTIONS] + [flag for flag, _ in FLAGS])
            raise LaunchError(f"unknown option {arg}; options: {flags}, --help; everything else is key=value")
    if options.stage not in STAGES:
        raise LaunchError(f"--stage must be sft or rl (the default), got {options.stage!r}; "
                          "the evaluation is bash run_care.sh --stage eval CHECKPOINT (first on the command line)")
    if options.model == NO_PRESET:
        options.model = None
    elif not options.model.strip():
        raise LaunchError(f"--model needs a preset name: {' | '.join(PRESETS)} or {NO_PRESET}")
    else:
        get_preset(options.model)  # an unknown name fails here, naming the presets
    return options, rest


def find_shards(folder: str) -> list[str]:
    """``folder``'s training shards, sorted (the order verl reads them in); empty when there are none."""
    return sorted(glob.glob(os.path.join(glob.escape(folder), SHARD_GLOB)))


def hydra_list(items: Iterable[str]) -> str:
    return f"[{','.join(items)}]"


def run_name(prefix: str, model: str | None) -> str:
    """``<prefix>_<preset>`` with the preset's '.' and '-' as '_' (``care_qwen2_5_vl_7b``); ``prefix`` alone
    without a preset."""
    return f"{prefix}_{model.replace('.', '_').replace('-', '_')}" if model else prefix


def val_files(data_dir: str, bench_dir: str | None, require_bench: bool) -> tuple[str, list[str]]:
    """(data.val_files, overrides for the validation rollouts).

    With ``bench_dir``: the mix's val split and data_prep/build_bench.py's six benchmark parquets,
    each validated with one greedy pass (verl logs val-core/<benchmark>/acc/mean@1, the trainer
    val-core/macro/acc). ``require_bench``: a missing benchmark parquet is a :class:`LaunchError`.
    """
    from verifiers.benchmarks import BENCHMARK_NAMES

    mix_val = os.path.join(data_dir, VAL_FILE)
    if not bench_dir:
        return mix_val, []
    bench = [os.path.join(bench_dir, f"{name}.parquet") for name in BENCHMARK_NAMES]
    for path in bench:
        if require_bench and not os.path.isfile(path):
            raise LaunchError(f"BENCH_DIR (--bench-dir) {bench_dir} has no {os.path.basename(path)}; build it: "
                              f"python data_prep/build_bench.py --out {bench_dir}")
    return hydra_list([mix_val, *bench]), list(GREEDY_VAL_OVERRIDES)


def rl_overrides(options: argparse.Namespace) -> list[str]:
    """The RL run's overrides from the options, placed after the model preset and before the user's.

    No shards in ``--data-dir``: the first shard's name, which the preflight reports as missing
    with the command that builds it. Unset ``--model-path`` / ``--train-batch-size`` /
    ``--rollout-n`` leave the preset's values.
    """
    shards = find_shards(options.data_dir) or [os.path.join(options.data_dir, "train-00000.parquet")]
    val, val_overrides = val_files(options.data_dir, options.bench_dir, require_bench=not options.dry_run)
    overrides = [
        f"data.train_files={hydra_list(shards)}",
        f"data.val_files={val}",
        f"trainer.n_gpus_per_node={options.n_gpus_per_node}",
        f"trainer.nnodes={options.nnodes}",
        f"trainer.project_name={options.project_name}",
        f"trainer.experiment_name={options.experiment_name or run_name(options.algo, options.model)}",
        f"trainer.total_epochs={options.total_epochs}",
        f"trainer.logger={options.logger}",
    ]
    if options.model_path:
        overrides.append(f"actor_rollout_ref.model.path={options.model_path}")
    if options.train_batch_size is not None:
        overrides.append(f"data.train_batch_size={options.train_batch_size}")
    if options.rollout_n is not None:
        overrides.append(f"actor_rollout_ref.rollout.n={options.rollout_n}")
    return [*overrides, *val_overrides]


def sft_overrides(options: argparse.Namespace) -> list[str]:
    """The SFT run's overrides (recipe/care/config/care_sft.yaml keys), placed before the user's.

    The model is ``--model-path``, else the preset's (none without either: the yaml's). No shards
    in ``--sft-data-dir`` is a :class:`LaunchError`, except in a dry run (the first shard's name).
    """
    shards = find_shards(options.sft_data_dir)
    if not shards:
        if not options.dry_run:
            raise LaunchError(f"no cold-start shards in {options.sft_data_dir} (expected {SHARD_GLOB}); build them: "
                              f"python data_prep/build_sft.py --out {options.sft_data_dir} (or set SFT_DATA_DIR)")
        shards = [os.path.join(options.sft_data_dir, "train-00000.parquet")]
    model_path = options.model_path or (get_preset(options.model).model_path if options.model else None)
    overrides = [f"model.path={model_path}"] if model_path else []
    return [
        *overrides,
        f"data.train_files={hydra_list(shards)}",
        f"trainer.n_gpus_per_node={options.n_gpus_per_node}",
        f"trainer.nnodes={options.nnodes}",
        f"trainer.project_name={options.project_name}",
        f"trainer.experiment_name={options.sft_experiment_name or run_name('sft', options.model)}",
        f"trainer.logger={options.logger}",
    ]


def detach_from_ray_job(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Make ``env`` (in place; also returned) the environment of a torchrun SFT process, not a Ray one.

    Inside a ``ray job submit`` entrypoint the env carries ``RAY_EXPERIMENTAL_NOSET_*`` (set on the job
    supervisor actor), ``RAY_ADDRESS`` and the job config. With a NOSET var set, verl's
    ``Worker._setup_env_cuda_visible_devices`` asks ``ray.get_runtime_context()`` for this process's
    accelerator ids; that call auto-connects to the cluster as a driver, which holds no accelerators
    (``KeyError: 'CPU'`` on the CPU platform, ``IndexError`` on GPU). Dropping them, and
    ``RAY_ENABLE_AUTO_CONNECT=0`` (read when ``ray`` is imported), keeps the SFT ranks out of Ray:
    any later Ray call fails instead of joining the cluster.
    """
    for key in [k for k in env if k.startswith(RAY_NOSET_PREFIX) or k in RAY_JOB_ENV_VARS]:
        del env[key]
    env["RAY_ENABLE_AUTO_CONNECT"] = "0"
    return env


def torchrun_command(python: str, options: argparse.Namespace, overrides: list[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m recipe.care.main_sft OVERRIDES``: one process per GPU.

    One node: ``--standalone``. Several: run it on every node with ``--node-rank`` (NODE_RANK) set;
    ``--master-addr`` (MASTER_ADDR) is node 0's address.
    """
    if options.nnodes > 1:
        missing = [f"{flag} ({env})" for flag, env, value in (("--node-rank", "NODE_RANK", options.node_rank),
                                                              ("--master-addr", "MASTER_ADDR", options.master_addr))
                   if value is None or value == ""]
        if missing:
            raise LaunchError(f"--stage sft on {options.nnodes} nodes needs {' and '.join(missing)} on each node "
                              "(the node's rank; node 0's address)")
        launcher = [f"--nnodes={options.nnodes}", f"--node_rank={options.node_rank}",
                    f"--master_addr={options.master_addr}", f"--master_port={options.master_port}"]
    else:
        launcher = ["--standalone", "--nnodes=1"]
    return [python, "-m", "torch.distributed.run", *launcher, f"--nproc_per_node={options.n_gpus_per_node}",
            "-m", MAIN_SFT, *overrides]
