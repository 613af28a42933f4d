"""CareActorRolloutRefWorker through verl's real FSDP2 engine on CPU/gloo vs plain transformers."""

import pytest
import torch


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_qwen2_think_embeddings_match_transformers(run_probe, layout):
    r = run_probe("--model", "qwen2", "--layout", layout)
    assert r["emb_shape"] == [r["n_samples"], r["hidden_size"]]
    # same forward pass as the log-probs: those match transformers too
    assert r["logprob_max_abs_err"] < 1e-4
    assert r["max_abs_err"] < 1e-5
    assert all(abs(n - 1.0) < 1e-5 for n in r["norms"])
    assert any(r["whole_response_rows"]), "a row without a think span must be pooled over its whole response"
    # no extra model pass: the same number of model forwards with and without embeddings,
    # and several micro-batches (dynamic batch reordering / fixed micro-batching exercised)
    assert r["forward_calls_emb"] == r["forward_calls_plain"] >= 2
    assert not r["plain_has_emb"]


@pytest.mark.slow
def test_qwen25vl_think_embeddings_match_transformers_padded(run_probe):
    """Tiny random Qwen2.5-VL, real processor and real (drawn) images, rows built by verl's own agent-loop code.

    Padded layout (``use_remove_padding=False``), fixed micro-batches of 2 — [image, image],
    [two images, text-only], [text-only, text-only] — and then the same batch in token-budgeted
    (reordered and restored) micro-batches. The image-free micro-batch needs the recipe's pinned
    fix for a verl 0.9.1 bug: verl/models/transformers/qwen2_vl.py:393-394 calls ``.mean()`` on
    the vision tower's transformers-5 ``BaseModelOutputWithPooling`` (AttributeError on any
    device; see ``recipe.care.verl_fixes.install_qwen2_vl_text_only_fix``).
    """
    r = run_probe("--model", "qwen25vl", "--layout", "padded")
    assert r["image_rows"] == [1, 1, 1, 0, 0, 0]
    assert r["position_ids_rows"] == [4] * r["n_samples"], "M-RoPE position ids are [4, L] (text + t/h/w)"
    assert r["emb_shape"] == [r["n_samples"], r["hidden_size"]]
    assert r["logprob_max_abs_err"] < 1e-4
    assert r["max_abs_err"] < 1e-5
    assert r["dynamic_bsz_max_abs_err"] < 1e-5
    assert all(abs(n - 1.0) < 1e-5 for n in r["norms"])
    assert any(r["whole_response_rows"])
    # no extra model pass, and the embeddings do not change the log-probs of that pass
    assert r["forward_calls_emb"] == r["forward_calls_plain"] == 3
    assert r["forward_calls_dynamic_bsz"] >= 2
    assert r["logprob_plain_vs_emb_err"] == 0.0
    assert not r["plain_has_emb"]


@pytest.mark.slow
def test_qwen3vl_think_embeddings_match_transformers_padded(run_probe):
    """The same through a tiny random Qwen3-VL (real Qwen3-VL tokenizer and template: ``<think>`` is
    one token; interleaved M-RoPE, DeepStack, QK-norm) and verl 0.9.1's qwen3_vl code path."""
    r = run_probe("--model", "qwen3vl", "--layout", "padded")
    assert r["think_tag_tokens"] == 1
    assert r["image_rows"] == [1, 1, 1, 0, 0, 0]
    assert r["position_ids_rows"] == [4] * r["n_samples"]
    assert r["emb_shape"] == [r["n_samples"], r["hidden_size"]]
    assert r["logprob_max_abs_err"] < 1e-4
    assert r["max_abs_err"] < 1e-5 and r["dynamic_bsz_max_abs_err"] < 1e-5
    assert all(abs(n - 1.0) < 1e-5 for n in r["norms"])
    assert any(r["whole_response_rows"]) and not all(r["whole_response_rows"])
    assert r["forward_calls_emb"] == r["forward_calls_plain"] == 3
    assert r["logprob_plain_vs_emb_err"] == 0.0 and not r["plain_has_emb"]


def _flash_attn_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return is_flash_attn_2_available()


@pytest.mark.slow
@pytest.mark.skipif(
    not _flash_attn_available(),
    reason=(
        "verl 0.9.1 runs Qwen2.5-VL with use_remove_padding=True only through flash-attention: "
        "monkey_patch.py:407-410 replaces Qwen2_5_VLAttention.forward with qwen2_vl_attn_forward "
        "(qwen2_vl.py:268), which calls flash_attn_varlen_func / transformers' _flash_attention_forward "
        "unconditionally; without flash-attn (CUDA-only build) the names it uses are never defined "
        "(qwen2_vl.py:45-57) and the first layer raises NameError at qwen2_vl.py:331"
    ),
)
def test_qwen25vl_think_embeddings_match_transformers_packed(run_probe):
    r = run_probe("--model", "qwen25vl", "--layout", "packed")
    assert r["emb_shape"] == [r["n_samples"], r["hidden_size"]]
    assert r["logprob_max_abs_err"] < 1e-2  # flash-attention in bf16 inputs vs fp32 sdpa reference
    assert r["max_abs_err"] < 1e-2
    assert r["forward_calls_emb"] == r["forward_calls_plain"] >= 2


def test_verl_qwen2_vl_text_only_bug_and_pinned_fix(monkeypatch):
    """verl 0.9.1 + transformers 5: an image-free Qwen2.5-VL micro-batch crashes in verl's input embedding.

    verl/models/transformers/qwen2_vl.py:388-394 (``_get_input_embeds``, text-only branch) runs the
    vision tower on a dummy image and adds ``0.0 * image_embeds.mean()``, but transformers 5
    returns a ``BaseModelOutputWithPooling`` from ``model.visual`` (the image branch at :354
    unpacks it with ``unpack_visual_output``; this branch does not). This blocks GPU runs too:
    the code path does not depend on the device or on use_remove_padding. When this test starts
    failing on the first assertion, verl fixed it and the recipe's workaround can go.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    import verl.models.transformers.qwen2_vl as verl_qwen2_vl
    from smoke.tiny_models import tiny_qwen25_vl_dir
    from recipe.care.verl_fixes import _text_only_safe, install_qwen2_vl_text_only_fix

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_qwen25_vl_dir()), dtype=torch.float32).model
    ids = torch.tensor([[151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645]])
    original = getattr(verl_qwen2_vl._get_input_embeds, "__wrapped__", verl_qwen2_vl._get_input_embeds)
    with pytest.raises(AttributeError, match="'BaseModelOutputWithPooling' object has no attribute 'mean'"):
        original(model, ids)
    embeds, _ = _text_only_safe(original)(model, ids)
    torch.testing.assert_close(embeds, model.get_input_embeddings()(ids), rtol=0, atol=0)
    # verl's dummy vision pass stays in the graph: every vision parameter gets a (zero) gradient,
    # so FSDP ranks with and without images run the same collectives
    embeds.sum().backward()
    grads = [p.grad for p in model.visual.parameters()]
    assert all(g is not None for g in grads) and all(torch.count_nonzero(g) == 0 for g in grads)

    # installed once (idempotent), on verl's module, only for the pinned verl; restored by monkeypatch
    monkeypatch.setattr(verl_qwen2_vl, "_get_input_embeds", original)
    assert install_qwen2_vl_text_only_fix() and install_qwen2_vl_text_only_fix()
    assert verl_qwen2_vl._get_input_embeds.__wrapped__ is original


@pytest.mark.parametrize("algo", ["care", "grpo", "dapo", "gspo"])
def test_every_algo_loads_the_verl_fixes_in_every_verl_process(algo):
    """Baselines use verl's stock worker, so the fix must come from the process-wide module list."""
    import subprocess
    import sys

    from recipe.care.main_care import compose_config

    config = compose_config([], algo=algo)
    modules = config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES
    assert "recipe.care.verl_fixes" in modules.split(",")
    if algo != "care":
        return  # one fresh interpreter is enough to show the env var applies the fix
    code = "import verl, verl.models.transformers.qwen2_vl as m; print(getattr(m._get_input_embeds, 'care_text_only_fix', False))"
    env = {**__import__("os").environ, "VERL_USE_EXTERNAL_MODULES": modules}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
