"""The merger round trip: an FSDP actor checkpoint saved by verl's engine on CPU/gloo, merged by
evaluation.checkpoint (verl's model merger), holds exactly the weights the trainer held."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.checkpoint import CheckpointError, actor_dir, resolve_model

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture(scope="module")
def fsdp_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(REPO / "tests/evaluation/merge_probe.py"), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0 and "RESULT " in proc.stdout, proc.stderr[-4000:]
    return out


def test_merged_weights_equal_the_trainers(fsdp_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from smoke.tiny_models import tiny_qwen2_dir

    hf = resolve_model(str(fsdp_checkpoint), str(tmp_path))  # the checkpoint root: latest step
    assert hf == str(tmp_path / "hf_model")
    merged = {}
    for path in glob.glob(os.path.join(hf, "*.safetensors")):
        merged.update(load_file(path))
    trainer = torch.load(fsdp_checkpoint / "trainer_state.pt")
    initial = {}
    for path in glob.glob(os.path.join(str(tiny_qwen2_dir()), "*.safetensors")):
        initial.update(load_file(path))
    tied = json.load(open(os.path.join(hf, "config.json"))).get("tie_word_embeddings", False)
    assert set(merged) <= set(trainer) and set(trainer) - set(merged) <= ({"lm_head.weight"} if tied else set())
    for key, value in merged.items():
        # the merger writes the config's dtype: the trainer's fp32 weights rounded to it, exactly
        assert torch.equal(value, trainer[key].to(value.dtype)), key
        assert not torch.equal(value, initial[key].to(value.dtype)), f"{key} still holds the initial weights"
    # loads as a model, as lmms-eval's Hugging Face backend will
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf)
    assert torch.equal(model.state_dict()["model.norm.weight"], merged["model.norm.weight"].to(model.dtype))


def test_step_and_actor_folders_resolve_to_the_same_actor(fsdp_checkpoint):
    actor = str(fsdp_checkpoint / "global_step_1" / "actor")
    assert actor_dir(str(fsdp_checkpoint)) == actor_dir(str(fsdp_checkpoint / "global_step_1")) == actor_dir(actor)


def test_hf_folder_is_used_as_is_and_garbage_is_refused(tmp_path):
    from smoke.tiny_models import tiny_qwen2_dir

    assert resolve_model(str(tiny_qwen2_dir()), str(tmp_path)) == str(tiny_qwen2_dir())
    with pytest.raises(CheckpointError, match="neither"):
        resolve_model(str(tmp_path), str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), str(tmp_path))
