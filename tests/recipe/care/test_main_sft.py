"""The cold-start SFT stage's config (recipe/care/config/care_sft.yaml); its launch: tests/test_run_care.py."""

from __future__ import annotations

import pytest

from recipe.care.main_sft import compose_sft_config, hf_checkpoint_dir


def test_recipe_values_reach_verls_own_config_classes():
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_sft_config(["optim.total_training_steps=10"])
    # verl's sft_trainer_engine tree underneath (its keys exist), the recipe's values on top
    assert config.data.messages_key == "messages" and config.data.max_length == 16384
    assert config.trainer.total_epochs == 2 and config.optim.lr == pytest.approx(5e-6)
    engine = omega_conf_to_dataclass(config.engine)
    optim = omega_conf_to_dataclass(config.optim)
    checkpoint = omega_conf_to_dataclass(config.checkpoint)
    assert engine.strategy == "fsdp2" and optim.lr_scheduler_type == "cosine"
    assert optim.lr_warmup_steps_ratio == pytest.approx(0.05)
    assert "hf_model" in checkpoint.save_contents  # the Hugging Face checkpoint stage rl starts from


def test_every_recipe_key_exists_in_verls_sft_config():
    """A typo in care_sft.yaml would silently add a key verl never reads; compare with verl's tree."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    ours = OmegaConf.to_container(compose_sft_config([]), resolve=False)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        verls = OmegaConf.to_container(compose(config_name="sft_trainer_engine"), resolve=False)

    def keys(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(keys(ours)) == set(keys(verls))


def test_hf_checkpoint_dir_picks_the_newest_step(tmp_path):
    for step in (2, 10):
        (tmp_path / f"global_step_{step}" / "huggingface").mkdir(parents=True)
    config = compose_sft_config([f"trainer.default_local_dir={tmp_path}"])
    assert hf_checkpoint_dir(config) == str(tmp_path / "global_step_10" / "huggingface")


def verl_noset_vars() -> list[str]:
    """The RAY_EXPERIMENTAL_NOSET_* names verl's ray_noset_visible_devices() checks (a list local to it)."""
    from verl.utils.ray_utils import ray_noset_visible_devices

    consts = ray_noset_visible_devices.__code__.co_consts  # a list literal of strings is stored as one tuple
    flat = [c for const in consts for c in (const if isinstance(const, tuple) else (const,))]
    names = [c for c in flat if isinstance(c, str) and c.startswith("RAY_EXPERIMENTAL_NOSET_")]
    assert "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES" in names
    return names


def ray_job_entrypoint_env() -> dict[str, str]:
    """What a `ray job submit` entrypoint's child inherits (Ray 2.60 job_supervisor.py), Ray at a dead port."""
    import os

    return {**os.environ, **{name: "1" for name in verl_noset_vars()}, "RAY_ADDRESS": "127.0.0.1:9",
            "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}


def test_detach_from_ray_job_clears_what_verl_and_ray_read():
    from verl.utils.ray_utils import ray_noset_visible_devices

    from recipe.care.launch_args import detach_from_ray_job

    env = ray_job_entrypoint_env()
    assert ray_noset_visible_devices(env)
    assert detach_from_ray_job(env) is env
    assert not ray_noset_visible_devices(env)
    assert "RAY_ADDRESS" not in env and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in env
    assert env["RAY_ENABLE_AUTO_CONNECT"] == "0"


SFT_UNDER_A_JOB = r"""
import json, os, sys
import recipe.care.main_sft as main_sft
assert "ray" not in sys.modules, "ray imported before main() could turn off its auto-connect"

def run_sft(config):
    import ray
    from ray._private import auto_init_hook
    from verl.utils.ray_utils import ray_noset_visible_devices
    # not calling ray.get_runtime_context() here: were auto-connect on, it would start or join a cluster
    print("SEEN " + json.dumps({"noset": ray_noset_visible_devices(), "auto_connect": auto_init_hook.enable_auto_connect,
                      "initialized": ray.is_initialized(), "address": os.environ.get("RAY_ADDRESS")}))

main_sft.require_verl_attr = lambda module, name: run_sft if name == "run_sft" else (lambda config: None)
main_sft.main([])
"""


def test_sft_process_under_a_ray_job_stays_out_of_ray():
    """main_sft.main() in a fresh interpreter with a job entrypoint's env: verl's NOSET check is false
    and Ray does not auto-connect, so verl's SFT worker never asks Ray for accelerator ids."""
    import json
    import subprocess
    import sys

    env = {**ray_job_entrypoint_env(), "RANK": "0", "VERL_USE_EXTERNAL_MODULES": ""}
    out = subprocess.run([sys.executable, "-c", SFT_UNDER_A_JOB], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(next(line[5:] for line in out.stdout.splitlines() if line.startswith("SEEN ")))
    assert seen == {"noset": False, "auto_connect": False, "initialized": False, "address": None}
