"""A checkpoint argument -> a Hugging Face model folder lmms-eval can load.

Accepted: a Hugging Face folder (``config.json`` + weights), used as is; verl's checkpoint root
(``latest_checkpointed_iteration.txt``: its latest step), a ``global_step_N`` folder, or its
``actor/`` folder. An FSDP actor checkpoint (``model_world_size_W_rank_R.pt`` shards) is merged with
verl's own model merger (``python -m verl.model_merger merge --backend fsdp``, verl 0.9.1), in a
subprocess of the training interpreter, into ``<out>/hf_model``; an ``actor/huggingface`` folder that
already holds the weights (``checkpoint.save_contents`` with ``hf_model``) is used directly.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys


class CheckpointError(ValueError):
    pass


def has_hf_weights(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and bool(
        glob.glob(os.path.join(path, "*.safetensors")) or glob.glob(os.path.join(path, "pytorch_model*.bin")))


def actor_dir(path: str) -> str | None:
    """The FSDP actor folder a checkpoint path designates, or None when it is not a verl checkpoint."""
    latest = os.path.join(path, "latest_checkpointed_iteration.txt")
    if os.path.isfile(latest):
        with open(latest) as fh:
            path = os.path.join(path, f"global_step_{fh.read().strip()}")
    if os.path.isdir(os.path.join(path, "actor")):
        path = os.path.join(path, "actor")
    return path if glob.glob(os.path.join(path, "model_world_size_*_rank_*.pt")) else None


def merge_fsdp(actor: str, target: str, python: str = sys.executable, timeout: float = 3600) -> str:
    cmd = [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", actor,
           "--target_dir", target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not has_hf_weights(target):
        raise CheckpointError(f"verl's model merger failed on {actor} (rc={proc.returncode}):\n"
                              f"{(proc.stderr or proc.stdout)[-3000:]}")
    return target


def resolve_model(path: str, out_dir: str, python: str = sys.executable) -> str:
    """The Hugging Face folder to evaluate (merging an FSDP checkpoint into ``out_dir/hf_model``)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if has_hf_weights(path):
        return path
    actor = actor_dir(path)
    if actor is None:
        raise CheckpointError(f"{path} is neither a Hugging Face model folder (config.json + weights) nor a "
                              f"verl FSDP checkpoint (global_step_N/actor/model_world_size_*_rank_*.pt)")
    saved_hf = os.path.join(actor, "huggingface")
    if has_hf_weights(saved_hf):
        return saved_hf
    return merge_fsdp(actor, os.path.join(os.path.abspath(out_dir), "hf_model"), python=python)
