import pytest
import torch
import torch.nn.functional as F

from recipe.care.think_embedding import (
    pool_think_embeddings,
    response_pool_mask,
    response_states_packed,
    response_states_padded,
)


def test_pool_mask_falls_back_to_response_and_skips_inserted_tokens():
    think = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]).bool()
    has_think = torch.tensor([True, False, True])
    resp = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])  # row 2: its only think token is inserted
    pool = response_pool_mask(think, has_think, resp)
    assert pool[0].tolist() == [False, True, True, False, False]
    assert pool[1].tolist() == [True, True, True, False, False]
    assert pool[2].tolist() == [True, False, True, True, True]


def test_packed_and_padded_layouts_agree_with_direct_mean():
    torch.manual_seed(0)
    seq_lens, resp_lens = torch.tensor([5, 3, 7]), torch.tensor([2, 3, 4])
    hidden_rows = [torch.randn(s, 8, dtype=torch.bfloat16) for s in seq_lens.tolist()]
    masks = [torch.tensor([1, 1]), torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0, 1])]
    packed = torch.cat([*hidden_rows, torch.zeros(3, 8, dtype=torch.bfloat16)])  # trailing static pad
    padded = torch.zeros(3, 7, 8, dtype=torch.bfloat16)
    for i, h in enumerate(hidden_rows):
        padded[i, : h.shape[0]] = h
    a = pool_think_embeddings(response_states_packed(packed.unsqueeze(0), seq_lens, resp_lens), masks)
    b = pool_think_embeddings(response_states_padded(padded, seq_lens, resp_lens), masks)
    direct = torch.stack(
        [F.normalize(h[-r:].float()[m.bool()].mean(0), dim=-1) for h, r, m in zip(hidden_rows, resp_lens.tolist(), masks)]
    )
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, direct)
    torch.testing.assert_close(b, direct)


def test_empty_mask_gives_zero_vector_not_nan():
    emb = pool_think_embeddings([torch.randn(3, 4)], [torch.zeros(3)])
    assert torch.equal(emb, torch.zeros(1, 4))


def test_layout_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds its sequence length"):
        response_states_packed(torch.zeros(10, 4), torch.tensor([3]), torch.tensor([4]))
    with pytest.raises(ValueError, match="expected"):
        response_states_packed(torch.zeros(2, 4), torch.tensor([3]), torch.tensor([1]))


def test_sequence_parallel_is_refused_with_the_setting_to_change():
    from types import SimpleNamespace

    from recipe.care.think_embedding_tap import ThinkEmbeddingUnsupported, refuse_sequence_parallel

    refuse_sequence_parallel(SimpleNamespace(ulysses_sequence_parallel_size=1))
    refuse_sequence_parallel(SimpleNamespace())  # engines without the attribute run SP = 1
    with pytest.raises(ThinkEmbeddingUnsupported, match=r"ulysses_sequence_parallel_size=1"):
        refuse_sequence_parallel(SimpleNamespace(ulysses_sequence_parallel_size=2))


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_pooling_stays_fp32_inside_bf16_autocast(state_dtype):
    """verl runs prepare_model_outputs (where pooling happens) under torch.autocast; on GPU that is bf16."""
    torch.manual_seed(0)
    states = [torch.randn(r, 512).to(state_dtype) for r in (300, 17, 128)]
    masks = [torch.rand(s.shape[0]) < 0.7 for s in states]
    reference = pool_think_embeddings(states, masks)  # no autocast: fp32 throughout
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        a = torch.randn(4, 4)
        assert (a @ a).dtype == torch.bfloat16  # autocast is really active for matmuls here
        pooled = pool_think_embeddings(states, masks)
        # what pooling gave before autocast was switched off: the same matmul, in bf16
        naive = F.normalize(torch.stack([(m.float().unsqueeze(0) @ s.float()).squeeze(0) / m.sum()
                                         for s, m in zip(states, masks)]).float(), dim=-1)
    assert pooled.dtype == torch.float32
    assert torch.allclose(pooled, reference, atol=1e-6, rtol=0)
    assert (naive - reference).abs().max() > 1e-4  # the error this guards against is real on CPU too
