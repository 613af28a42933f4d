"""Cold-start SFT entry point: verl's own SFT trainer with the recipe's config.

    torchrun --standalone --nproc_per_node=8 -m recipe.care.main_sft key=value ...
    bash run_care.sh --stage sft key=value ...            # the same, with MODEL_PATH / SFT_DATA_DIR

Composes ``recipe/care/config/care_sft.yaml`` (verl's ``sft_trainer_engine`` plus the recipe's
values) and calls ``verl.trainer.sft_trainer.run_sft`` unchanged (written against verl 0.9.1). The
Hugging Face checkpoint lands in ``<trainer.default_local_dir>/global_step_N/huggingface``; pass
that folder to ``bash run_care.sh`` as ``MODEL_PATH``. ``--dry-run`` prints the resolved config.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipe.care.launch_args import detach_from_ray_job
from recipe.care.verl_compat import require_verl_attr

CONFIG_DIR = str(Path(__file__).resolve().parent / "config")
CONFIG_NAME = "care_sft"


def compose_sft_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def hf_checkpoint_dir(config: DictConfig) -> str | None:
    """The newest ``global_step_N/huggingface`` under the run's checkpoint folder, if any."""
    root = Path(str(config.trainer.default_local_dir))
    steps = sorted(root.glob("global_step_*/huggingface"), key=lambda p: int(p.parent.name.split("_")[-1]))
    return str(steps[-1]) if steps else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dry_run = "--dry-run" in argv
    if not dry_run:
        if "RANK" not in os.environ:
            raise SystemExit("recipe.care.main_sft: start it with torchrun (bash run_care.sh --stage sft does)")
        # A torchrun started from a `ray job submit` entrypoint inherits Ray's job env, and verl's SFT
        # worker then asks Ray for accelerator ids it has none of (KeyError: 'CPU' / IndexError): see
        # detach_from_ray_job. First thing, since composing the config already imports ray, which reads
        # RAY_ENABLE_AUTO_CONNECT at import.
        detach_from_ray_job(os.environ)
    config = compose_sft_config([a for a in argv if a != "--dry-run"])
    if dry_run:
        print(OmegaConf.to_yaml(config, resolve=True))
        return 0
    # verl's hydra entry (sft_trainer.main) does exactly these two calls.
    auto_set_device = require_verl_attr("verl.utils.device", "auto_set_device")
    run_sft = require_verl_attr("verl.trainer.sft_trainer", "run_sft")
    auto_set_device(config)
    run_sft(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[care-sft] Hugging Face checkpoint: {hf_checkpoint_dir(config)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
