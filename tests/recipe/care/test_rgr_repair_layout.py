"""Token layout of a repaired rollout: prefix + inserted (mask 0, log-prob 0) + continuation, within the budget."""

import pytest
import torch

from recipe.care.care_config import DEFAULT_ANSWER_OPEN, DEFAULT_CUE
from recipe.care.rgr import think_prefix_length
from recipe.care.spans import compute_response_spans
from tests.recipe.care.conftest import AnswerScore, ScriptedGenerate, member

RIGHT = "<think>2 plus 2 makes 4.</think>\n<answer>4</answer>"
WRONG = "<think>First, 2 plus 2 makes 5 because I added one more </think>\n<answer>5</answer>"
FIX = " Recount: 2 plus 2 is 4.</think>\n<answer>4</answer><|im_end|>"


def _repair(tokenizer, reflect, members, text=FIX, **kw):
    gen = ScriptedGenerate(tokenizer, text)
    result = reflect(members, gen, AnswerScore(tokenizer), **kw)
    assert len(gen.requests) == 1
    return gen.requests[0], result


def test_masks_and_logprobs_of_a_repaired_rollout(tokenizer, reflect, rgr_env):
    failed = member(tokenizer, WRONG, 0, logprob=-0.7)
    request, result = _repair(tokenizer, reflect, [member(tokenizer, RIGHT, 1), failed])
    rep = result.rollouts[1]
    _, tokens = rgr_env()
    k, c = rep.prefix_len, len(tokens.cue_ids)
    cont = tokenizer.encode(FIX, add_special_tokens=False)
    n = len(rep.response_ids)
    assert n == k + c + len(cont) == len(rep.response_mask) == len(rep.response_logprobs)
    # prefix: the failed rollout's own tokens, mask and log-probs
    assert rep.response_ids[:k] == failed.response_ids[:k] and rep.response_mask[:k] == [1] * k
    assert rep.response_logprobs[:k] == [-0.7] * k
    assert tokenizer.decode(rep.response_ids[:k]) == "<think>First, 2 plus 2 makes 5 because I added one more"
    # cue: exactly the cue's tokens, mask 0, log-prob 0
    assert rep.response_ids[k:k + c] == list(tokens.cue_ids) and tokenizer.decode(tokens.cue_ids) == DEFAULT_CUE
    assert rep.response_mask[k:k + c] == [0] * c and rep.response_logprobs[k:k + c] == [0.0] * c
    # continuation: the decode's tokens and log-probs, mask 1
    assert rep.response_ids[k + c:] == cont and rep.response_mask[k + c:] == [1] * len(cont)
    assert rep.response_logprobs[k + c:] == pytest.approx([-0.01 * (i + 1) for i in range(len(cont))])
    # the decode saw exactly prompt + prefix + cue
    assert request.prompt_ids == list(failed.prompt_ids) + failed.response_ids[:k] + list(tokens.cue_ids)
    assert rep.prompt_ids == list(failed.prompt_ids)


def test_the_trainer_sees_one_think_span_without_the_cue(tokenizer, reflect):
    """What the advantage step will compute on the repaired row (recipe.care.spans): the think span runs
    from the failed prefix through the continuation, the cue tokens are out (mask 0), the answer is found."""
    _, result = _repair(tokenizer, reflect, [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)])
    rep = result.rollouts[1]
    ids, mask = torch.tensor([rep.response_ids]), torch.tensor([rep.response_mask])
    spans = compute_response_spans(tokenizer, ids, mask)
    assert bool(spans.has_think[0]) and bool(spans.has_answer[0])
    cue = slice(rep.prefix_len, rep.prefix_len + rep.inserted_len)
    assert not spans.think_mask[0, cue].any()
    assert spans.think_mask[0, 1:rep.prefix_len].any() and spans.think_mask[0, cue.stop:].any()
    assert tokenizer.decode(ids[0][spans.answer_mask[0]].tolist()).strip() == "4"


def test_length_limit_holds_even_if_the_engine_overshoots(tokenizer, reflect, rgr_env):
    _, tokens = rgr_env()
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)]
    gen = ScriptedGenerate(tokenizer, "loop ", overshoot=25)
    response_length = 64
    result = reflect(members, gen, AnswerScore(tokenizer), response_length=response_length)
    request = gen.requests[0]
    assert request.max_tokens == response_length - request.prefix_len - len(tokens.cue_ids) > 0
    rep = result.rollouts[1]
    assert len(rep.response_ids) == response_length  # truncated to the budget, not beyond
    assert rep.continuation_len == request.max_tokens
    assert result.outcome.extra_tokens == request.max_tokens + 25  # what the engine really produced


def test_answer_only_inserts_the_answer_tag(tokenizer, reflect, rgr_env):
    _, tokens = rgr_env(mode="answer_only")
    assert tokens.answer_open_ids == tuple(tokenizer.encode(DEFAULT_ANSWER_OPEN, add_special_tokens=False))
    request, result = _repair(tokenizer, reflect, [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)],
                              text="4</answer><|im_end|>", mode="answer_only")
    rep = result.rollouts[1]
    inserted = list(tokens.cue_ids) + list(tokens.answer_open_ids)
    k = rep.prefix_len
    assert rep.inserted_len == len(inserted) and rep.response_ids[k:k + len(inserted)] == inserted
    assert rep.response_mask[k:k + len(inserted)] == [0] * len(inserted)
    assert request.prompt_ids[-len(inserted):] == inserted
    text = tokenizer.decode(rep.response_ids, skip_special_tokens=True)
    assert text.endswith(DEFAULT_CUE + "</think>\n<answer>4</answer>") and result.outcome.success


def test_multimodal_data_is_passed_through(tokenizer, reflect):
    images = {"images": [object()]}
    members = [member(tokenizer, RIGHT, 1, mm=images), member(tokenizer, WRONG, 0, mm=images)]
    request, result = _repair(tokenizer, reflect, members)
    assert request.multi_modal_data is images and result.rollouts[1].multi_modal_data is images


def test_no_logprobs_in_the_rollout_none_in_the_repair(tokenizer, reflect):
    members = [member(tokenizer, RIGHT, 1, logprob=None), member(tokenizer, WRONG, 0, logprob=None)]
    _, result = _repair(tokenizer, reflect, members)
    assert result.rollouts[1].response_logprobs is None and result.outcome.success


@pytest.mark.parametrize(
    "text, expected_prefix_text",
    [
        ("<think>abc def</think>\n<answer>1</answer>", "<think>abc def"),
        ("<think>value is 3.</think><answer>3</answer>", "<think>value is 3"),  # ".</" is one token: dropped
        ("Intro <think>open ended reasoning that never closes", "Intro <think>open ended reasoning that never closes"),
        ("< think >spaced tags</ think ><answer>1</answer>", "< think >spaced tags"),
        # unclosed think: the think span stops at the first <answer> (spans.py), so the failed answer
        # is not part of the repair context
        ("<think>unclosed reasoning <answer>5</answer>", "<think>unclosed reasoning"),
    ],
)
def test_think_prefix(tokenizer, text, expected_prefix_text):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids in (tokenizer.encode(text, add_special_tokens=False),
                tokenizer.encode(text, add_special_tokens=False) + [eos]):
        k = think_prefix_length(tokenizer, ids, tokenizer.all_special_ids)
        assert tokenizer.decode(ids[:k]) == expected_prefix_text


def test_no_think_no_prefix(tokenizer):
    ids = tokenizer.encode("just an answer <answer>2</answer>", add_special_tokens=False)
    assert think_prefix_length(tokenizer, ids) is None
    assert think_prefix_length(tokenizer, []) is None
