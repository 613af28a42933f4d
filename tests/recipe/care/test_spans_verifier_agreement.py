"""The answer span that region weights credit is the text the verifier graded (docs/algorithm.md section 1).

The verifier (``verifiers.verify``) grades the text of :func:`verifiers.format.answer_span`; the
advantage step credits the tokens of ``ResponseSpans.answer_mask``. For every response, well-formed
or not, tokenised with the real Qwen2.5 vocabulary (tags are several tokens there), both must be the
same text:

* character level: the answer range of :func:`recipe.care.spans.find_tag_spans` is the verifier's span;
* token level: the answer tokens are exactly those holding that text (a token straddling a tag
  belongs to the span only when it carries non-blank span text), so the decoded answer tokens are
  the graded text plus, at most, fragments of the two tags around it;
* no answer span for the verifier (unclosed, absent, mis-nested) means no answer tokens;
* the reward manager's own decode (special tokens skipped) grades the same span;
* the verifier's prediction, when read from the answer span, lies inside the credited tokens.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care.spans import compute_response_spans, find_tag_spans
from tests.recipe.care.span_helpers import encode_batch, token_offsets
from verifiers import verify
from verifiers.format import answer_span, extract_answer

pytestmark = pytest.mark.timeout(180)

MALFORMED = {
    "well_formed": "<think>\nThe area is 12.</think>\n<answer>12</answer><|im_end|>",
    "well_formed_boxed": "<think>x</think><answer>The answer is \\boxed{\\frac{1}{2}}.</answer>",
    "several_boxes_in_answer": "<think>x</think><answer>\\boxed{1} and \\boxed{2}</answer>",
    "box_outside_answer": "<think>maybe \\boxed{3}</think><answer>4</answer>",
    "unclosed_think_then_answer": "<think>abc<answer>5</answer>",
    "unclosed_think_only": "<think>still thinking when the budget ran out",
    "unclosed_think_two_answers": "<think>abc<answer>4<answer>5</answer>",
    "unclosed_answer": "<think>a</think><answer>5",
    "unclosed_answer_boxed": "<think>a</think><answer>so \\boxed{5}",
    "truncated_close_tag": "<think>x</think><answer>5</ans",
    "spaced_tags": "< think >x y</ think >< answer > 7 </ answer >",
    "upper_case_tags": "<THINK>upper</THINK> <Answer>B</Answer>",
    "tag_with_many_spaces": "<think>x</think><          answer>5</answer>",
    "several_answers": "<think>x</think><answer>3</answer><answer>4</answer>",
    "answer_think_answer": "<answer>1</answer><think>x</think><answer>2</answer>",
    "answer_before_think": "<answer>5</answer><think>because</think>",
    "answer_inside_think": "<think>try <answer>6</answer> no, recheck</think>",
    "answer_in_think_and_after": "<think>maybe <answer>3</answer></think><answer>4</answer>",
    "answer_word_in_think": "<think>the <answer> tag comes next</think><answer>9</answer>",
    "no_tags": "the answer is 5",
    "no_tags_boxed": "so the result is \\boxed{5}",
    "empty_think": "<think></think><answer>7</answer>",
    "empty_answer": "<think>x</think><answer></answer>",
    "blank_answer": "<think>x</think><answer> \n </answer>",
    "text_after_answer": "<think>x</think><answer>5</answer> and some more text<|im_end|>",
    "nested_answer_open": "<think>x</think><answer>a<answer>b</answer>",
    "nested_answer_open_digits": "<think>x</think><answer>3<answer>8</answer>",
    "stray_think_close_in_answer": "<think>x</think><answer>a</think>b</answer>",
    "double_think_open": "<think>a<think>b</think><answer>c</answer>",
    "close_without_open": "</think><answer>5</answer>",
    "answer_close_only": "<think>x</think>5</answer>",
    "multiline_answer": "<think>x</think>\n\n<answer>\nx = 2\ny = 3\n</answer>\n",
    "unicode": "<think>法 3 个</think><answer>是</answer>",
    "answer_with_lt": "<think>x</think><answer>x < 3</answer>",
    "answer_with_html": "<think>x</think><answer><b>4</b></answer>",
    "tags_glued_to_words": "<think>x</think>Final:<answer>B.</answer>done",
}


@pytest.fixture(scope="module")
def tokenizer():
    from smoke.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


def expected_answer_tokens(text, offsets, lo, hi):
    """Tokens inside [lo, hi), or straddling its border with non-blank text inside it."""
    keep = set()
    for n, (s, e) in enumerate(offsets):
        inside = text[max(s, lo):min(e, hi)]
        if inside and ((lo <= s and e <= hi) or inside.strip()):
            keep.add(n)
    return keep


def assert_agreement(tokenizer, text, ids_row, mask_row, answer_row, has_answer):
    n = int(mask_row.sum())
    decoded, offsets = token_offsets(tokenizer, ids_row[:n].tolist())
    assert decoded == text, "the tokens' texts must concatenate to the response"
    graded = answer_span(text)
    _, answer = find_tag_spans(text)
    # What the reward manager grades: the decode without special tokens (recipe/care/reward_manager.py).
    production = answer_span(tokenizer.decode(ids_row[:n].tolist(), skip_special_tokens=True))
    if graded is None:
        assert production is None
    else:
        assert production == re.sub("|".join(map(re.escape, tokenizer.all_special_tokens)), "", graded)
    got = set(answer_row[:n].nonzero().squeeze(-1).tolist())
    if graded is None:
        assert answer is None and not has_answer and not got
        return
    assert answer is not None and text[answer[0]:answer[1]] == graded  # the same text, character for character
    assert has_answer
    if not graded.strip():
        assert not got  # an empty span credits no token (the row then weights every token)
        return
    assert got == expected_answer_tokens(text, offsets, *answer)
    credited = "".join(decoded[offsets[i][0]:offsets[i][1]] for i in sorted(got))
    head, found, tail = credited.partition(graded.strip())
    assert found, f"credited tokens {credited!r} miss the graded text {graded!r}"
    # Around the graded text only blanks and pieces of the surrounding tags.
    assert re.fullmatch(r"[\s<>/a-zA-Z]*", head) and re.fullmatch(r"[\s<>/a-zA-Z]*", tail)
    assert head.strip() in text[:answer[0]] and tail.strip() in text[answer[1]:]
    pred, source = extract_answer(text)
    if source == "answer_span":  # several boxes are graded as one list "a, b": each part is credited
        assert pred in credited or all(part.strip() in credited for part in pred.split(","))


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_answer_span_is_what_the_verifier_graded(tokenizer, name):
    text = MALFORMED[name]
    ids, mask = encode_batch(tokenizer, [text])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert_agreement(tokenizer, text, ids[0], mask[0], spans.answer_mask[0], bool(spans.has_answer[0]))
    assert not (spans.think_mask & spans.answer_mask).any()


def test_batch_of_malformed_responses_agrees_row_by_row(tokenizer):
    """The same table as one right-padded batch (rows of different lengths, as verl lays them out)."""
    texts = [MALFORMED[k] for k in sorted(MALFORMED)]
    ids, mask = encode_batch(tokenizer, texts)
    spans = compute_response_spans(tokenizer, ids, mask)
    for row, text in enumerate(texts):
        assert_agreement(tokenizer, text, ids[row], mask[row], spans.answer_mask[row], bool(spans.has_answer[row]))


@pytest.mark.parametrize("name,expected", [
    ("unclosed_think_then_answer", "5"),
    ("several_answers", "4"),
    ("answer_think_answer", "2"),
    ("answer_before_think", "5"),
    ("answer_inside_think", "6"),
    ("nested_answer_open_digits", "8"),
])
def test_verifier_grades_the_credited_answer(tokenizer, name, expected):
    """End to end: verify() scores the answer the span credits (acc 1 against that gold only)."""
    text = MALFORMED[name]
    ids, mask = encode_batch(tokenizer, [text])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert tokenizer.decode(ids[0][spans.answer_mask[0]].tolist()).strip() == expected
    assert verify("geometry3k", text, expected)["acc"] == 1
    assert verify("geometry3k", text, "0" if expected != "0" else "1")["acc"] == 0


TAGS = ["<think>", "</think>", "<answer>", "</answer>", "< think >", "</ answer>", "<ANSWER>", "<answer", "</"]
WORDS = ["x", "12", " ", "\n", "=", "\\boxed{3}", "是", ">", "<", "think", "answer", "a b", "<|im_end|>"]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from(TAGS + WORDS), min_size=0, max_size=14))
def test_property_any_tag_soup_agrees(tokenizer, parts):
    text = "".join(parts) or "x"
    ids, mask = encode_batch(tokenizer, [text])
    decoded, _ = token_offsets(tokenizer, ids[0][: int(mask[0].sum())].tolist())
    if decoded != text:  # the tokenizer normalised something: compare against what the model wrote
        text = decoded
    spans = compute_response_spans(tokenizer, ids, mask)
    assert_agreement(tokenizer, text, ids[0], mask[0], spans.answer_mask[0], bool(spans.has_answer[0]))
    assert not (spans.think_mask & spans.answer_mask).any()
