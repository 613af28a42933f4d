"""Launch presets for the paper's backbones (recipe/care/presets.py, main_care / run_care.sh --model)."""

import re

import pytest
import yaml
from omegaconf import OmegaConf

from recipe.care.main_care import compose_with_preset, main, parse_args, to_verl_dataclasses, validate
from recipe.care.presets import PRESETS, PresetError, preset_overrides


def _values(overrides):
    return dict(o.split("=", 1) for o in overrides)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_authors_step_shape_on_8_gpus(name):
    overrides, notes = preset_overrides(name, 8, 1)
    v = _values(overrides)
    assert notes == []
    assert (v["data.train_batch_size"], v["actor_rollout_ref.actor.ppo_mini_batch_size"]) == ("512", "128")
    assert (v["data.max_prompt_length"], v["data.max_response_length"], v["actor_rollout_ref.rollout.n"]) == ("2048", "2048", "8")
    assert v["actor_rollout_ref.actor.use_dynamic_bsz"] == "true"
    assert v["actor_rollout_ref.model.path"] == PRESETS[name].model_path
    assert int(v["actor_rollout_ref.rollout.tensor_model_parallel_size"]) == PRESETS[name].tensor_parallel
    # a sequence is at most 4096 tokens: the token budgets must hold at least one
    assert int(v["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"]) >= 4096
    assert v["actor_rollout_ref.actor.fsdp_config.param_offload"] == "false"


@pytest.mark.parametrize("gpus, nodes", [(1, 1), (2, 1), (4, 1), (6, 1), (8, 2), (3, 1)])
def test_scaled_to_other_gpu_counts(gpus, nodes):
    for name, p in PRESETS.items():
        v = _values(preset_overrides(name, gpus, nodes)[0])
        world = gpus * nodes
        tp = int(v["actor_rollout_ref.rollout.tensor_model_parallel_size"])
        assert tp <= gpus and gpus % tp == 0 and tp <= p.tensor_parallel
        prompts, batch = int(v["data.train_batch_size"]), int(v["actor_rollout_ref.actor.ppo_mini_batch_size"])
        assert (prompts * 8) % world == 0 and (batch * 8) % world == 0
        assert prompts <= 512 and batch <= 128 and prompts % batch == 0 or world % 8 != 0
        if 512 * 8 % world == 0:
            assert (prompts, batch) == (512, 128)  # the algorithm does not change with the GPU count
        offload = v["actor_rollout_ref.actor.fsdp_config.param_offload"] == "true"
        assert offload == (p.params_b * 16 / world > 30)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(PresetError, match="qwen2.5-vl-7b"):
        preset_overrides("llama-70b")


def test_overrides_win_over_the_preset():
    cfg = compose_with_preset(["actor_rollout_ref.rollout.gpu_memory_utilization=0.45", "data.train_batch_size=64",
                               "actor_rollout_ref.model.path=/models/mine"], "care", "qwen2.5-vl-3b")
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.45
    assert cfg.data.train_batch_size == 64 and cfg.actor_rollout_ref.model.path == "/models/mine"
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 128  # the preset's, where not overridden
    # the preset follows the GPU count the command line asks for
    two = compose_with_preset(["trainer.n_gpus_per_node=1"], "care", "qwen2.5-vl-7b")
    assert two.actor_rollout_ref.rollout.tensor_model_parallel_size == 1 and two.trainer.n_gpus_per_node == 1
    options, overrides = parse_args(["--model", "qwen3-vl-8b", "a=1"])
    assert (options.model, overrides) == ("qwen3-vl-8b", ["a=1"])
    assert parse_args(["--model=qwen3-vl-8b"])[0].model == "qwen3-vl-8b"


@pytest.mark.parametrize("algo", ["care", "grpo"])
def test_every_preset_validates_with_verl(algo):
    for name in PRESETS:
        cfg = compose_with_preset([], algo, name)
        validate(cfg)
        assert to_verl_dataclasses(cfg)["actor"].engine.strategy == "fsdp2"


def _dry_run(tmp_path, args, capsys, monkeypatch):
    """``main_care --dry-run ARGS`` in this process on a tiny mix: the printed config."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the preflight would want the presets' models cached
    for name in ("train-00000.parquet", "val.parquet"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "report.json").write_text('{"outputs": {"train_files": ["train-00000.parquet"], "train_rows": 1}}')
    code = main(["--dry-run", "--data-dir", str(tmp_path), *args])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "config accepted" in out
    lines = out.split("\n# ALGO=")[0].splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\w+:", line))  # verl prints before the yaml
    return yaml.safe_load("\n".join(lines[start:]))


@pytest.mark.slow
@pytest.mark.parametrize("name", [*sorted(PRESETS), None])
def test_dry_run_per_preset(tmp_path, capsys, monkeypatch, name):
    cfg = _dry_run(tmp_path, ["--model", name] if name else [], capsys, monkeypatch)
    preset = PRESETS[name or "qwen2.5-vl-7b"]
    arr = cfg["actor_rollout_ref"]
    assert arr["model"]["path"] == preset.model_path
    assert arr["actor"]["strategy"] == "fsdp2" and arr["ref"]["strategy"] == "fsdp2"
    assert arr["rollout"]["tensor_model_parallel_size"] == preset.tensor_parallel
    assert cfg["data"]["train_batch_size"] == 512 and arr["actor"]["ppo_mini_batch_size"] == 128
    assert "wandb" not in cfg["trainer"]["logger"] and "file" in cfg["trainer"]["logger"]
    assert cfg["trainer"]["experiment_name"] == "care_" + preset.name.replace(".", "_").replace("-", "_")
    metrics = cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["VERL_FILE_LOGGER_PATH"]
    assert metrics.endswith(f"/{cfg['trainer']['experiment_name']}/metrics.jsonl")


@pytest.mark.slow
def test_options_win_and_wandb_only_when_asked(tmp_path, capsys, monkeypatch):
    (tmp_path / "config.json").write_text("{}")  # a local checkpoint folder for --model-path
    monkeypatch.setenv("WANDB_API_KEY", "x")
    cfg = _dry_run(tmp_path, ["--model", "qwen3-vl-8b", "--model-path", str(tmp_path), "--n-gpus-per-node", "4",
                              "--rollout-n", "6", "--logger", '["console","wandb"]'], capsys, monkeypatch)
    assert cfg["actor_rollout_ref"]["model"]["path"] == str(tmp_path)
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 6 and cfg["trainer"]["n_gpus_per_node"] == 4
    assert cfg["trainer"]["logger"] == ["console", "wandb"]
    assert OmegaConf.create(cfg).actor_rollout_ref.rollout.tensor_model_parallel_size == 2
