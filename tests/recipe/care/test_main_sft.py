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
