"""CareActorRolloutRefWorker through verl's real FSDP2 engine on CPU/gloo vs plain transformers."""

import pytest


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
