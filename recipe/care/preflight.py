"""Checks run before Ray starts, so a GPU run stops in seconds with one clear line per problem.

Without them these surface minutes later, deep inside a Ray actor (docs/verl-integration.md, "What a
GPU run meets that a CPU run does not"): a broken flash-attn breaks ``import verl`` in every actor; ``wandb.init`` raises
without credentials after the model has loaded; a missing shard or a mistyped model path fails in
the task runner; an interrupted or empty data build (no report.json, 0 training rows) fails in the
dataloader. Every check is a pure function returning a list of messages (empty = fine), so
each message is tested on its own; :func:`preflight` applies them to a composed config.
``run_care.sh`` (through ``recipe.care.main_care``) runs all of them; ``--dry-run`` runs all but
the GPU checks (packages that only a GPU node needs, GPU count).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import netrc
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

# What verl 0.9.1's vllm/fsdp extras go with (setup.py "gpu" extra, README "Install on a GPU node").
GPU_PACKAGES = {"flash_attn": ("flash-attn", "2.8.3"), "vllm": ("vllm", "0.24.0")}
INSTALL_HINT = {
    "flash_attn": "see README 'Install on a GPU node' (prebuilt wheel for torch 2.11, or "
                  "`pip install flash-attn==2.8.3 --no-build-isolation` after torch)",
    "vllm": "`pip install vllm==0.24.0` (README 'Install on a GPU node')",
}
# A Hugging Face hub id: owner/name, no path syntax.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WANDB_HOST = "api.wandb.ai"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # an ABI mismatch raises ImportError or OSError; anything else counts too
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def check_package(module: str, dist: str, wanted: str, version_of: Callable[[str], str | None] = _version,
                  import_error: Callable[[str], str | None] = _import_error) -> list[str]:
    """``dist`` installed at version ``wanted`` and importable as ``module``."""
    hint = INSTALL_HINT.get(module, f"`pip install {dist}=={wanted}`")
    got = version_of(dist)
    if got is None:
        return [f"{dist} is not installed (need {dist}=={wanted}): {hint}"]
    if got.split("+")[0] != wanted:
        return [f"{dist} {got} is installed, need {dist}=={wanted}: {hint}"]
    err = import_error(module)
    if err:
        return [f"{dist} {got} is installed but `import {module}` fails ({err}); it was built against another "
                f"torch/CUDA: {hint}"]
    return []


def check_gpus(needed: int, available: int) -> list[str]:
    if available == 0:  # no GPU count to suggest: training needs one (verl has no CPU training path)
        return [f"trainer.n_gpus_per_node={needed} but this node has no GPU visible to torch: check CUDA_VISIBLE_DEVICES "
                f"and the driver (nvidia-smi); without a GPU, `bash run_care.sh --dry-run` checks the config and "
                f"`bash run_care.sh --smoke` runs the recipe on CPU at toy scale"]
    if available < needed:
        return [f"trainer.n_gpus_per_node={needed} but this node has {available} GPU(s): set N_GPUS_PER_NODE={available} "
                f"(the --model preset rescales to it) or check CUDA_VISIBLE_DEVICES"]
    return []


def check_data(files: Iterable[str], what: str = "data") -> list[str]:
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        return [f"{what} file(s) missing: {shown}; build them with `python data_prep/build_mix.py --out DIR` "
                f"and set DATA_DIR=DIR"]
    return []


# data_prep's builders write report.json last (into a staging folder moved into place on success), so a
# folder with the shards but without a report is an interrupted or failed build.
BUILD_REPORT = "report.json"


def check_build(files: Iterable[str], what: str = "training data") -> list[str]:
    """Each folder holding ``files`` is a complete data_prep build: a report.json that lists those
    files and counts more than 0 training rows. Run after :func:`check_data` (files that exist)."""
    files = list(files)
    problems = []
    for folder in sorted({str(Path(f).parent) for f in files}):
        rebuild = f"rebuild it: `python data_prep/build_mix.py --out {folder} --overwrite ...`"
        report_path = Path(folder) / BUILD_REPORT
        if not report_path.is_file():
            problems.append(f"{what} folder {folder} has no {BUILD_REPORT}, so it is not a complete build "
                            f"(interrupted or failed): {rebuild}")
            continue
        try:
            outputs = json.loads(report_path.read_text(encoding="utf-8"))["outputs"]
            listed, rows = list(outputs["train_files"]), int(outputs["train_rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{what} folder {folder}: {BUILD_REPORT} is not a build report "
                            f"({type(exc).__name__}: {exc}): {rebuild}")
            continue
        if rows <= 0:
            problems.append(f"{what} folder {folder} holds 0 training rows ({BUILD_REPORT}): {rebuild} with more "
                            f"input rows (a larger --limit) or a smaller --val-size")
            continue
        foreign = [Path(f).name for f in files if str(Path(f).parent) == folder and Path(f).name not in listed]
        if foreign:
            problems.append(f"{what} file(s) {', '.join(foreign[:3])} in {folder} are not part of the build its "
                            f"{BUILD_REPORT} describes ({', '.join(listed[:3])}): {rebuild}")
    return problems


def wandb_has_credentials(environ: Mapping[str, str], netrc_path: str | os.PathLike | None = None) -> bool:
    """An API key in the environment or ``~/.netrc`` (what ``wandb login`` writes), or a mode that needs none."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    path = Path(netrc_path) if netrc_path else Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def check_wandb(loggers: Iterable[str], environ: Mapping[str, str], netrc_path=None) -> list[str]:
    if "wandb" in list(loggers) and not wandb_has_credentials(environ, netrc_path):
        return ["trainer.logger has wandb but there are no wandb credentials (wandb.init would raise inside a Ray "
                "actor after the model loads): run `wandb login` or export WANDB_API_KEY (or WANDB_MODE=offline), "
                "or drop wandb: LOGGER='[\"console\",\"file\"]'"]
    return []


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def check_model_path(path: str, environ: Mapping[str, str],
                     hub_cached: Callable[[str], bool] = _hub_cached) -> list[str]:
    """A local checkpoint folder (with config.json) or a hub id (cached when the hub is offline)."""
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if not (local / "config.json").is_file():
            return [f"model path {path} is a folder without config.json (not a Hugging Face checkpoint)"]
        return []
    looks_like_path = path.startswith(("/", ".", "~")) or path.count("/") != 1
    if looks_like_path or not _HUB_ID.match(path):
        return [f"model path {path!r} is neither a local folder nor a hub id (owner/name): set MODEL_PATH or "
                f"--model qwen2.5-vl-3b|qwen2.5-vl-7b|qwen3-vl-8b"]
    if environ.get("HF_HUB_OFFLINE", "") not in ("", "0") and not hub_cached(path):
        return [f"model {path} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                f"`HF_HUB_OFFLINE=0 hf download {path}` first (needs the network), or point MODEL_PATH at a local copy"]
    return []


def _list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def preflight(config, gpu: bool, environ: Mapping[str, str] | None = None,
              gpu_count: Callable[[], int] | None = None, package_check: Callable[..., list[str]] = check_package,
              netrc_path=None, hub_cached: Callable[[str], bool] = _hub_cached) -> list[str]:
    """All checks on a composed verl config; ``gpu=False`` (dry run, CPU platform) skips the GPU ones."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    if gpu:
        needed = {"flash_attn"}  # verl's Qwen2-VL module imports it at load time on GPU
        if config.actor_rollout_ref.rollout.name == "vllm":
            needed.add("vllm")
        for module in sorted(needed):
            dist, wanted = GPU_PACKAGES[module]
            problems += package_check(module, dist, wanted)
        if int(config.trainer.nnodes) == 1:  # multi-node: the head node need not hold the GPUs
            if gpu_count is None:
                import torch

                gpu_count = torch.cuda.device_count
            problems += check_gpus(int(config.trainer.n_gpus_per_node), int(gpu_count()))
    train_files = _list(config.data.train_files)
    missing_train = check_data(train_files, "training data")
    problems += missing_train or check_build(train_files, "training data")
    if config.trainer.get("test_freq", -1) not in (None, -1, 0) or config.trainer.get("val_before_train", False):
        problems += check_data(_list(config.data.val_files), "validation data")
    problems += check_wandb(_list(config.trainer.logger), environ, netrc_path)
    problems += check_model_path(str(config.actor_rollout_ref.model.path), environ, hub_cached)
    return problems


def gpu_checks_apply(dry_run: bool, environ: Mapping[str, str] | None = None) -> bool:
    """GPU checks run for a real launch on a GPU platform (not a dry run, not the CPU smoke's platform)."""
    environ = os.environ if environ is None else environ
    return not dry_run and environ.get("VERL_PLATFORM", "") != "cpu"


def format_problems(problems: list[str]) -> str:
    return "\n".join(f"preflight: {p}" for p in problems) + f"\npreflight: {len(problems)} problem(s); nothing started"
