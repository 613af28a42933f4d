"""Start-up check that the recipe's registrations reached this Ray worker.

verl's registries (advantage estimators, policy losses, reward managers) are per process: the
recipe reaches every verl process through ``VERL_USE_EXTERNAL_MODULES`` in the Ray runtime_env
(``import verl`` imports the listed modules). A job whose runtime_env lost it (a custom
``ray job submit --runtime-env`` without it, a cluster whose nodes lack the repo) would otherwise
fail much later, deep in verl ("unknown policy loss", a missing reward manager) or, for the
Qwen2.5-VL fix in ``verl_fixes``, silently run without it. The check runs only inside Ray actors
(plain unit tests construct the workers without Ray) and raises with the fix in the message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

# What care_trainer.yaml's ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES
# lists (tests/recipe/care/test_registrations.py keeps the two and runtime_env.yaml in step).
WORKER_MODULES = ("recipe.care.reward_manager", "recipe.care.adv_estimator", "recipe.care.policy_loss",
                  "recipe.care.verl_fixes")
ENV = "VERL_USE_EXTERNAL_MODULES"
# The line a worker prints when the check passes (a multi-node check greps the job's log for it).
PASSED = "care-verl: recipe registrations present in"


class RecipeNotRegistered(RuntimeError):
    pass


def missing_registrations(environ: Mapping[str, str], loaded: Iterable[str],
                          required: Iterable[str] = WORKER_MODULES) -> list[str]:
    """Required modules that the environment does not list or that this process has not imported."""
    listed = {m.strip() for m in environ.get(ENV, "").split(",") if m.strip()}
    loaded = set(loaded)
    return [m for m in required if m not in listed or m not in loaded]


def registration_error(where: str, missing: list[str], environ: Mapping[str, str],
                       required: Iterable[str] = WORKER_MODULES) -> str:
    return (
        f"care-verl: {where} started without the recipe's registrations ({', '.join(missing)} not loaded; "
        f"{ENV}={environ.get(ENV, '')!r} in this process). Fix: launch with `bash run_care.sh` (it sets {ENV} "
        f"in the runtime_env given to ray.init), or with `ray job submit --runtime-env runtime_env.yaml ...` "
        f"(repo root), or add env_vars: {{{ENV}: {','.join(required)}}} to your own runtime_env; and make "
        f"`recipe.care` importable on every node (`pip install -e .` there, or working_dir in the runtime_env)."
    )


def in_ray_actor() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    try:
        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:
        return False


def require_recipe_registrations(where: str, required: Iterable[str] = WORKER_MODULES, force: bool = False) -> None:
    """Raise :class:`RecipeNotRegistered` in a Ray actor whose process lacks the recipe's modules."""
    if not (force or in_ray_actor()):
        return
    import verl  # noqa: F401  imports the modules VERL_USE_EXTERNAL_MODULES lists, if not done yet

    required = list(required)
    missing = missing_registrations(os.environ, sys.modules, required)
    if missing:
        raise RecipeNotRegistered(registration_error(where, missing, os.environ, required))
    print(f"{PASSED} {where} (node {_node_id()}, pid {os.getpid()})", flush=True)


def _node_id() -> str:
    """This Ray node's id; "none" outside Ray (asking Ray then would start a cluster)."""
    if "ray" not in sys.modules:
        return "none"
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "none"
