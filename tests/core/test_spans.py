"""Think/answer spans from token ids, with the real Qwen2.5 vocabulary (several tokens per tag)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care.spans import TokenTexts, compute_response_spans, find_tag_spans

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def shared_tokenizer():
    from recipe.care.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


@pytest.fixture
def tokenizer(shared_tokenizer):
    return shared_tokenizer


def encode_batch(tokenizer, texts, pad_right=3):
    """Right-padded response ids and mask, as verl lays out responses."""
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded)) + pad_right
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def span_text(tokenizer, ids, mask_row):
    return tokenizer.decode(ids[mask_row.bool()].tolist())


def assert_span_covers(got: str, text: str, content: str):
    """Span tokens hold all of the content, lie within the tagged region and include no whole tag.

    A token that straddles a tag and carries content (``.</`` in ``12.</think>``) belongs to the span,
    so the decoded span may show tag fragments, never a whole tag.
    """
    assert content.strip() in got
    assert got.strip() in text
    assert not re.search(r"<\s*/?\s*(think|answer)\s*>", got, re.IGNORECASE)


def test_tags_are_several_tokens_in_qwen25(tokenizer):
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1


@pytest.mark.parametrize("text,think,answer", [
    ("<think>\nThe area is 12.</think>\n<answer>12</answer><|im_end|>", "The area is 12.", "12"),
    ("< think >x y</ think ><answer>\n 42 \n</answer>", "x y", "42"),
    ("<THINK>upper</THINK> <Answer>B</Answer>", "upper", "B"),
    ("<think>a</think><answer>\\boxed{\\frac{1}{2}}</answer>", "a", "\\boxed{\\frac{1}{2}}"),
    ("<think>法 3 个</think><answer>是</answer>", "法 3 个", "是"),
])
def test_spans_cover_exactly_the_tag_contents(tokenizer, text, think, answer):
    ids, mask = encode_batch(tokenizer, [text])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert_span_covers(span_text(tokenizer, ids[0], spans.think_mask[0]), text, think)
    assert_span_covers(span_text(tokenizer, ids[0], spans.answer_mask[0]), text, answer)
    assert spans.has_think.item() and spans.has_answer.item()
    assert spans.think_len.item() == int(spans.think_mask.sum()) > 0
    assert not (spans.think_mask & spans.answer_mask).any()


def test_missing_unclosed_and_empty_spans(tokenizer):
    texts = [
        "no tags at all",
        "<think>still thinking when the budget ran out",
        "<think>unclosed <answer>3</answer>",
        "<think></think><answer>7</answer>",
        "<answer>only an answer</answer>",
        "<think>ok</think><answer>truncated answ",
    ]
    ids, mask = encode_batch(tokenizer, texts)
    spans = compute_response_spans(tokenizer, ids, mask)
    resp_len = mask.sum(1)
    assert spans.has_think.tolist() == [False, True, True, True, False, True]
    assert spans.has_answer.tolist() == [False, False, False, True, True, True]
    # Section 1: a missing span counts as the whole response.
    assert spans.think_len[0] == resp_len[0] and spans.answer_len[0] == resp_len[0]
    assert spans.think_len[4] == resp_len[4]
    assert spans.answer_len[1] == resp_len[1] and spans.answer_len[2] == resp_len[2]
    # An unclosed think runs to the end of the response, answer tags included.
    assert "answer" in span_text(tokenizer, ids[2], spans.think_mask[2])
    # A present but empty think span has length 0, not the response length.
    assert spans.think_len[3].item() == 0
    assert span_text(tokenizer, ids[5], spans.answer_mask[5]).strip() == "truncated answ"
    assert not (spans.think_mask & ~mask.bool()).any() and not (spans.answer_mask & ~mask.bool()).any()


def test_single_token_tags(tokenizer):
    """Qwen3-style vocabularies have <think> as one added token; the same rules apply."""
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.add_tokens(["<think>", "</think>"], special_tokens=False)
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) == 1
    ids, mask = encode_batch(tokenizer, ["<think>reason here</think><answer>9</answer>"])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert span_text(tokenizer, ids[0], spans.think_mask[0]).strip() == "reason here"
    assert span_text(tokenizer, ids[0], spans.answer_mask[0]) == "9"


def test_masked_tokens_inside_response_keep_their_place(tokenizer):
    """RGR cue tokens carry response_mask 0 but are part of the text: spans must not shift."""
    text = "<think>first try\nYour previous reasoning had an error.\nsecond try</think><answer>5</answer>"
    ids, mask = encode_batch(tokenizer, [text])
    cue = tokenizer("\nYour previous reasoning had an error.\n", add_special_tokens=False)["input_ids"]
    start = len(tokenizer("<think>first try", add_special_tokens=False)["input_ids"])
    mask[0, start : start + len(cue)] = 0
    spans = compute_response_spans(tokenizer, ids, mask)
    assert span_text(tokenizer, ids[0], spans.answer_mask[0]) == "5"
    assert not (spans.think_mask[0, start : start + len(cue)]).any()


def test_token_text_cache_is_shared_per_tokenizer(tokenizer):
    assert TokenTexts.for_tokenizer(tokenizer) is TokenTexts.for_tokenizer(tokenizer)


def pieces(*alphabet, min_size=0, max_size=20):
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map("".join)


@settings(max_examples=80, deadline=None)
@given(pieces("a", "b", " ", "1", ">", "/", "\n", "think", "answer", "é", "。", max_size=25),
       pieces("x", "y", " ", "2", ".", "=", "\n", "é", "\\frac{1}{2}", min_size=1))
def test_property_spans_match_character_spans(shared_tokenizer, think, answer):
    """For any content, the span tokens decode to the tag contents found in the text (up to blanks)."""
    text = f"<think>{think}</think>\n<answer>{answer}</answer>"
    ids, mask = encode_batch(shared_tokenizer, [text])
    spans = compute_response_spans(shared_tokenizer, ids, mask)
    (t0, t1), (a0, a1) = find_tag_spans(text)
    assert_span_covers(span_text(shared_tokenizer, ids[0], spans.answer_mask[0]), text, text[a0:a1])
    assert_span_covers(span_text(shared_tokenizer, ids[0], spans.think_mask[0]), text, text[t0:t1])
