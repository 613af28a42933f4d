"""Think/answer spans from token ids, with the real Qwen2.5 vocabulary (several tokens per tag)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care.spans import TokenTexts, compute_response_spans, find_tag_spans
from tests.recipe.care.span_helpers import encode_batch, token_offsets

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def shared_tokenizer():
    from smoke.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


@pytest.fixture
def tokenizer(shared_tokenizer):
    return shared_tokenizer


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
        "<think>ok</think><answer> \n </answer>",
    ]
    ids, mask = encode_batch(tokenizer, texts)
    spans = compute_response_spans(tokenizer, ids, mask)
    resp_len = mask.sum(1)
    assert spans.has_think.tolist() == [False, True, True, True, False, True, True]
    assert spans.has_answer.tolist() == [False, False, True, True, True, False, True]
    # Section 1: a missing span counts as the whole response.
    assert spans.think_len[0] == resp_len[0] and spans.answer_len[0] == resp_len[0]
    assert spans.think_len[4] == resp_len[4]
    assert spans.answer_len[1] == resp_len[1]
    # An unclosed think runs up to the first <answer> after it, and that answer is still the answer.
    assert span_text(tokenizer, ids[2], spans.think_mask[2]).strip() == "unclosed"
    assert span_text(tokenizer, ids[2], spans.answer_mask[2]) == "3"
    # An unclosed answer is not graded by the verifier, so it is no answer span either.
    assert not spans.answer_mask[5].any() and spans.answer_len[5] == resp_len[5]
    # Empty spans (blank between the tags) hold no token and count as missing (the default rule).
    assert not spans.think_mask[3].any() and spans.think_len[3] == resp_len[3]
    assert not spans.answer_mask[6].any() and spans.answer_len[6] == resp_len[6]
    assert not (spans.think_mask & ~mask.bool()).any() and not (spans.answer_mask & ~mask.bool()).any()


def test_empty_span_rule_switch(tokenizer):
    """care.empty_span: `missing` gives an empty span the response length, `zero` gives it 0;
    non-empty and absent spans are the same under both rules."""
    texts = [
        "<think></think><answer>7</answer>",
        "< think >  \n</ think ><answer></answer>",
        "<think>two steps</think><answer>7</answer>",
        "no tags",
    ]
    ids, mask = encode_batch(tokenizer, texts)
    missing = compute_response_spans(tokenizer, ids, mask, empty_span="missing")
    zero = compute_response_spans(tokenizer, ids, mask, empty_span="zero")
    resp_len = mask.sum(1)
    assert missing.think_len[:2].tolist() == resp_len[:2].tolist()
    assert zero.think_len[:2].tolist() == [0, 0]
    assert missing.answer_len[1] == resp_len[1] and zero.answer_len[1] == 0
    assert missing.answer_len[0] == zero.answer_len[0] == 1
    for row in (2, 3):
        assert missing.think_len[row] == zero.think_len[row] and missing.answer_len[row] == zero.answer_len[row]
    assert zero.think_len[2] == int(zero.think_mask[2].sum()) > 0 and zero.think_len[3] == resp_len[3]
    for field in ("think_mask", "answer_mask", "has_think", "has_answer"):
        assert torch.equal(getattr(missing, field), getattr(zero, field))
    assert compute_response_spans(tokenizer, ids, mask).think_len.tolist() == missing.think_len.tolist()  # default
    with pytest.raises(ValueError, match="empty_span"):
        compute_response_spans(tokenizer, ids, mask, empty_span="skip")


def test_empty_think_is_not_the_preferred_anchor(tokenizer):
    """The reason for the rule: with `zero`, a correct answer without reasoning always wins the anchor."""
    from recipe.care.care_config import CareConfig
    from recipe.care.core_algos import compute_care_sequence_advantages

    texts = ["<think></think><answer>7</answer>", "<think>3 + 4 = 7</think><answer>7</answer>",
             "<think>3 + 4 = 8</think><answer>8</answer>", "<think>3 * 4 = 12</think><answer>12</answer>"]
    ids, mask = encode_batch(tokenizer, texts)
    anchors = {}
    for rule in ("missing", "zero"):
        spans = compute_response_spans(tokenizer, ids, mask, empty_span=rule)
        _, info = compute_care_sequence_advantages(
            rewards=torch.tensor([1.0, 1.0, 0.0, 0.0]), acc=torch.tensor([1, 1, 0, 0]), index=["g"] * 4,
            think_len=spans.think_len, answer_len=spans.answer_len, think_emb=torch.eye(4, 8),
            logp_sum=torch.zeros(4), response_len=mask.sum(1), reflected=torch.zeros(4, dtype=torch.bool),
            config=CareConfig(k=2, m=2, empty_span=rule))
        anchors[rule] = info["role"].tolist().index(1)
    assert anchors == {"missing": 1, "zero": 0}


def test_answer_inside_a_closed_think_is_the_answer_not_reasoning(tokenizer):
    text = "<think>try <answer>6</answer> no, recheck</think>"
    ids, mask = encode_batch(tokenizer, [text])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert span_text(tokenizer, ids[0], spans.answer_mask[0]) == "6"
    think = span_text(tokenizer, ids[0], spans.think_mask[0])
    assert "try" in think and "recheck" in think and "6" not in think and "answer" not in think
    assert not (spans.think_mask & spans.answer_mask).any()


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


RESPONSES = [
    "<think></think><answer>7</answer>",
    "<think> \n</think><answer>7</answer>",
    "<think>3 + 4 = 7</think><answer>7</answer>",
    "<think>3 + 4 = 7, check: 7 - 4 = 3</think>\n<answer>\\boxed{7}</answer><|im_end|>",
    "<think>abc<answer>7</answer>",
    "<think>long reasoning that never closes",
    "<think>a</think><answer>7",
    "<answer>7</answer>",
    "<answer>7</answer><think>after</think>",
    "<think><answer>7</answer></think>",
    "<think>try <answer>6</answer> no</think><answer>7</answer>",
    "<think>x</think><answer></answer>",
    "7",
    "< think >spaced</ think >< answer >7</ answer >",
]


@st.composite
def span_batches(draw):
    groups = draw(st.lists(st.lists(st.tuples(st.sampled_from(RESPONSES), st.integers(0, 1)), min_size=2, max_size=6),
                           min_size=1, max_size=3))
    rule = draw(st.sampled_from(["missing", "zero"]))
    k = draw(st.integers(1, 4))
    return groups, rule, k


@settings(max_examples=40, deadline=None)
@given(span_batches())
def test_lengths_and_advantages_match_the_plain_reading(shared_tokenizer, case):
    """Section 1 read plainly (tests/recipe/care/reference_care.py) gives the same T_think/T_ans on real
    tokenisations, and the plain advantage reading agrees with the vectorised one on those lengths."""
    import numpy as np

    from recipe.care.care_config import CareConfig
    from recipe.care.core_algos import ROLE_NAMES, compute_care_sequence_advantages
    from tests.recipe.care.reference_care import reference_care, reference_span_lengths

    groups, rule, k = case
    rows = [(text, acc, f"g{g}") for g, group in enumerate(groups) for text, acc in group]
    texts = [r[0] for r in rows]
    ids, mask = encode_batch(shared_tokenizer, texts)
    spans = compute_response_spans(shared_tokenizer, ids, mask, empty_span=rule)
    expected = []
    for row in range(len(rows)):
        n = int(mask[row].sum())
        text, offsets = token_offsets(shared_tokenizer, ids[row, :n].tolist())
        expected.append(reference_span_lengths(text, offsets, n, rule))
    assert spans.think_len.tolist() == [t for t, _ in expected]
    assert spans.answer_len.tolist() == [a for _, a in expected]

    batch = len(rows)
    acc = torch.tensor([r[1] for r in rows])
    emb = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
    cfg = CareConfig(k=k, m=max(k, 4), empty_span=rule)
    inputs = dict(rewards=acc.float(), acc=acc, index=np.asarray([r[2] for r in rows], dtype=object),
                  think_len=spans.think_len, answer_len=spans.answer_len, think_emb=emb,
                  logp_sum=-torch.arange(batch, dtype=torch.float32), response_len=mask.sum(1),
                  reflected=torch.zeros(batch, dtype=torch.bool))
    adv, info = compute_care_sequence_advantages(**inputs, config=cfg)
    ref_adv, ref_roles, _ = reference_care(
        acc.float().tolist(), acc.tolist(), [r[2] for r in rows], [t for t, _ in expected], [a for _, a in expected],
        emb.numpy(), inputs["logp_sum"].tolist(), mask.sum(1).tolist(), [False] * batch, cfg)
    assert [ROLE_NAMES[r] for r in info["role"].tolist()] == ref_roles
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-4, atol=1e-5)
