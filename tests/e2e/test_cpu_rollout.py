"""The CPU rollout server (recipe/care/cpu/rollout.py) in-process: vLLM's token-in/token-out contract,
sleep/wake, and that after a weight update it samples from the new weights.

The server class is driven directly (no Ray): its methods are the ones verl's LLMServerClient and
CheckpointEngineManager call on the Ray actor.
"""

import asyncio

import pytest
import torch

pytest.importorskip("verl")

from recipe.care.cpu.rollout import (  # noqa: E402
    ROLLOUT_NAME,
    CpuGenerationServer,
    CpuRolloutReplica,
    CpuServerAdapter,
    RolloutAsleepError,
    register,
)
from recipe.care.main_care import compose_config  # noqa: E402
from recipe.care.tiny_models import tiny_qwen2_dir, tiny_qwen3_vl_dir, tiny_qwen25_vl_dir  # noqa: E402

VL_MODELS = pytest.mark.parametrize("vl_dir", [tiny_qwen25_vl_dir, tiny_qwen3_vl_dir], ids=["qwen2.5-vl", "qwen3-vl"])


def rollout_config(response_length=12):
    config = compose_config([f"data.max_response_length={response_length}", "data.max_prompt_length=256",
                             f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}"], algo="grpo")
    return config.actor_rollout_ref.rollout


def run(coro):
    return asyncio.run(coro)


def greedy(max_tokens=None):
    params = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def converted_state(model):
    """What verl's FSDP engine sends: the state dict under verl's convert_weight_keys names."""
    from verl.utils.model import convert_weight_keys

    return {k: v.detach().clone() for k, v in convert_weight_keys(model.state_dict(), model).items()}


@pytest.fixture(scope="module")
def text_server():
    return CpuGenerationServer(rollout_config(), {"path": str(tiny_qwen2_dir())})


def test_registered_in_both_verl_registries():
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    register()
    assert get_rollout_replica_class(ROLLOUT_NAME) is CpuRolloutReplica
    assert get_rollout_class(ROLLOUT_NAME, "async") is CpuServerAdapter


def test_token_output_matches_a_teacher_forced_forward(text_server):
    prompt = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
    out = run(text_server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="a"))
    assert 1 <= len(out.token_ids) <= 12  # response_length is the default budget
    assert out.stop_reason == "completed" and len(out.log_probs) == len(out.token_ids)
    # The log-probs are those of the full sequence under the model (what verl's actor recomputes).
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = text_server.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
    # Greedy is deterministic; an explicit max_tokens is honoured.
    again = run(text_server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="b"))
    assert again.token_ids == out.token_ids
    short = run(text_server.generate(prompt_ids=prompt, sampling_params=greedy(max_tokens=3), request_id="c"))
    assert len(short.token_ids) <= 3


def test_sleep_drops_weights_and_update_brings_the_new_policy():
    from transformers import AutoModelForCausalLM

    server = CpuGenerationServer(rollout_config(response_length=16), {"path": str(tiny_qwen2_dir(seed=0))})
    other = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir(seed=1)), dtype=torch.float32).eval()
    prompt = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
    before = run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="x"))

    run(server.sleep())  # what the sync trainer does after sampling
    assert run(server.state())["weights_loaded"] is False
    with pytest.raises(RolloutAsleepError):
        run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="y"))

    # The sync trainer's weight sync: resume weights, push, resume kv cache.
    run(server.wake_up(tags=["weights"]))
    run(server.update_weights(converted_state(other), global_steps=7))
    run(server.wake_up(tags=["kv_cache"]))
    after = run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="z"))
    assert after.extra_fields["global_steps"] == 7

    # Sampling now follows the pushed weights exactly: same greedy tokens as the other model.
    with torch.no_grad():
        ref = other.generate(input_ids=torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                             eos_token_id=server.stop_ids, pad_token_id=server.stop_ids[0])
    expected = ref[0, len(prompt):].tolist()
    cut = next((i + 1 for i, t in enumerate(expected) if t in server.stop_ids), len(expected))
    assert after.token_ids == expected[:cut]
    assert after.token_ids != before.token_ids or after.log_probs != pytest.approx(before.log_probs)


def test_update_weights_refuses_unknown_or_missing_tensors(text_server):
    state = converted_state(text_server.model)
    with pytest.raises(KeyError, match="no parameter"):
        run(text_server.update_weights({"not.a.weight": torch.zeros(1)}))
    bad = dict(state)
    name = next(iter(bad))
    bad[name] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        run(text_server.update_weights(bad))
    server = CpuGenerationServer(rollout_config(), {"path": str(tiny_qwen2_dir())})
    run(server.sleep())
    partial = {k: v for i, (k, v) in enumerate(state.items()) if i % 2}
    with pytest.raises(KeyError, match="without weights"):
        run(server.update_weights(partial))


@VL_MODELS
def test_images_reach_the_vision_tower(vl_dir):
    from PIL import Image

    path = vl_dir()
    server = CpuGenerationServer(rollout_config(response_length=8), {"path": str(path)})
    image = Image.new("RGB", (56, 84), (200, 30, 30))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    text = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = server.processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    out = run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="v", image_data=[image]))
    assert 1 <= len(out.token_ids) <= 8 and len(out.log_probs) == len(out.token_ids)
    # A different image changes what the model sees (log-probs differ).
    other = Image.new("RGB", (56, 84), (10, 220, 10))
    out2 = run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="w", image_data=[other]))
    assert out2.log_probs[0] != pytest.approx(out.log_probs[0], abs=1e-6)
    # Image tokens that do not match the images are a clear error, not a silent mis-alignment.
    with pytest.raises(ValueError, match="image tokens"):
        run(server.generate(prompt_ids=prompt, sampling_params=greedy(), request_id="u", image_data=[image, image]))


@VL_MODELS
def test_image_prompt_log_probs_match_the_actors_teacher_forced_forward(vl_dir):
    """With images, the sampler must use the same M-RoPE positions as verl's actor.

    transformers 5.9's Qwen2.5-VL derives its multimodal rotary positions from ``mm_token_type_ids``;
    without them it silently places image tokens like text. verl's actor computes the positions from
    the image grid (what a forward with ``mm_token_type_ids`` reproduces), so a sampler that omits
    them is off-policy: on the warmed-up smoke model the two disagreed by 0.2 in log-prob.
    """
    from PIL import Image

    server = CpuGenerationServer(rollout_config(response_length=10), {"path": str(vl_dir())})
    image = Image.new("RGB", (84, 56), (30, 30, 200))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the bars."}]}]
    text = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = server.processor(text=[text], images=[image], return_tensors="pt")
    prompt = inputs["input_ids"][0].tolist()
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    out = run(server.generate(prompt_ids=prompt, sampling_params=params, request_id="mm", image_data=[image]))
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = server.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                              image_grid_thw=inputs["image_grid_thw"],
                              mm_token_type_ids=torch.tensor(server.processor.create_mm_token_type_ids(ids.tolist())),
                              ).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(out.log_probs), expected, atol=1e-4, rtol=0)
