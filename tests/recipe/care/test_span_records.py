"""Span records computed per rollout (agent-loop worker) rebuild exactly compute_response_spans' result."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care.span_records import SPANS_KEY, records_of, span_records, spans_from_records
from recipe.care.spans import compute_response_spans

pytestmark = pytest.mark.timeout(120)

TEXTS = [
    "<think>\nThe area is 12.</think>\n<answer>12</answer><|im_end|>",
    "no tags at all",
    "<think>still thinking when the budget ran out",
    "<think>unclosed <answer>3</answer>",
    "<think></think><answer>7</answer>",
    "<answer>only an answer</answer>",
    "<think>ok</think><answer>truncated answ",
    "< think >x y</ think ><answer>\n 42 \n</answer>",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    from smoke.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


def padded(tokenizer, texts, pad_right=5):
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(1, max(map(len, encoded))) + pad_right
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        mask[i, : len(e)] = 1
    return ids, mask


def per_row_records(tokenizer, ids, mask):
    """What the agent-loop worker does: one unpadded rollout at a time."""
    out = []
    for row in range(ids.shape[0]):
        n = int(mask[row].sum()) if mask[row].any() else 0
        n = int(mask[row].nonzero().max()) + 1 if n else 0
        out += span_records(tokenizer, ids[row:row + 1, :n], mask[row:row + 1, :n])
    return out


def assert_same(got, want):
    for name in ("think_mask", "answer_mask", "think_len", "answer_len", "has_think", "has_answer"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_records_rebuild_the_spans_of_a_padded_batch(tokenizer):
    ids, mask = padded(tokenizer, TEXTS)
    want = compute_response_spans(tokenizer, ids, mask)
    assert_same(spans_from_records(per_row_records(tokenizer, ids, mask), mask), want)
    assert want.think_mask.any() and want.answer_mask.any()  # the comparison is not between empty masks


def test_masked_cue_tokens_inside_the_think_span_stay_out(tokenizer):
    """RGR's repaired layout: cue tokens with response_mask 0 inside the think range."""
    text = "<think>first try\nYour previous reasoning had an error.\nsecond try</think><answer>5</answer>"
    ids, mask = padded(tokenizer, [text, "<think>a</think><answer>b</answer>"])
    cue = tokenizer("\nYour previous reasoning had an error.\n", add_special_tokens=False)["input_ids"]
    start = len(tokenizer("<think>first try", add_special_tokens=False)["input_ids"])
    mask[0, start:start + len(cue)] = 0
    want = compute_response_spans(tokenizer, ids, mask)
    got = spans_from_records(per_row_records(tokenizer, ids, mask), mask)
    assert_same(got, want)
    assert not got.think_mask[0, start:start + len(cue)].any() and got.think_mask[0, start + len(cue):].any()


def test_padding_rows_with_a_copied_record_pool_nothing(tokenizer):
    ids, mask = padded(tokenizer, [TEXTS[0]])
    record = span_records(tokenizer, ids, mask)[0]
    spans = spans_from_records([record, record], torch.stack([mask[0], torch.zeros_like(mask[0])]))
    assert spans.think_mask[0].any() and not spans.think_mask[1].any() and not spans.answer_mask[1].any()


def test_records_of_needs_every_row():
    rec = [0, 1, 2, 3, 1, 1, 1, 1]
    assert records_of([{SPANS_KEY: rec}, {SPANS_KEY: rec}]) == [rec, rec]
    assert records_of([{SPANS_KEY: rec}, {"reward_extra_info": {}}]) is None
    assert records_of([{SPANS_KEY: rec}, None]) is None


def test_record_count_must_match_rows(tokenizer):
    ids, mask = padded(tokenizer, TEXTS[:2])
    with pytest.raises(ValueError, match="span records"):
        spans_from_records(per_row_records(tokenizer, ids, mask)[:1], mask)


def pieces(*alphabet, max_size=20):
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(pieces("a", " ", "1", "<think>", "</think>", "<answer>", "</answer>", "\n", "é", "<", ">", "/"),
                min_size=1, max_size=4))
def test_property_records_match_compute_response_spans(tokenizer, texts):
    ids, mask = padded(tokenizer, texts)
    assert_same(spans_from_records(per_row_records(tokenizer, ids, mask), mask),
                compute_response_spans(tokenizer, ids, mask))


def test_pool_mask_from_records_equals_response_pool_mask_jagged_and_padded(tokenizer):
    from recipe.care.span_records import pool_mask_from_records
    from recipe.care.think_embedding import response_pool_mask

    texts = TEXTS[:-1] + ["<think></think><answer>7</answer>", "plain answer only"]
    ids, mask = padded(tokenizer, texts)
    mask[0, 2] = 0  # an inserted (masked) token inside the think span is never pooled
    spans = compute_response_spans(tokenizer, ids, mask)
    want = response_pool_mask(spans.think_mask, spans.has_think, mask).long()
    records = per_row_records(tokenizer, ids, mask)
    assert torch.equal(pool_mask_from_records(records, mask), want)
    lengths = [int(mask[i].nonzero().max()) + 1 for i in range(len(texts))]
    jagged = torch.nested.as_nested_tensor([mask[i, :n] for i, n in enumerate(lengths)], layout=torch.jagged)
    got = pool_mask_from_records(records, jagged)
    assert got.is_nested
    for i, n in enumerate(lengths):
        assert torch.equal(got.unbind()[i], want[i, :n])
    assert want[0].sum() > 0 and not torch.equal(want[0], mask[0])  # think only, not the whole response


@pytest.mark.parametrize("rule", ["missing", "zero"])
def test_records_carry_the_empty_span_rule_lengths(tokenizer, rule):
    ids, mask = padded(tokenizer, ["<think></think><answer>7</answer>", "<think>a b</think><answer></answer>"])
    want = compute_response_spans(tokenizer, ids, mask, empty_span=rule)
    records = [span_records(tokenizer, ids[i:i + 1], mask[i:i + 1], empty_span=rule)[0] for i in range(2)]
    got = spans_from_records(records, mask)
    assert torch.equal(got.think_len, want.think_len) and torch.equal(got.answer_len, want.answer_len)
    assert (int(got.think_len[0]) == 0) == (rule == "zero")
