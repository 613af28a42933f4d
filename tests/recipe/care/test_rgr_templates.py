"""care.rgr.template: the paper's cue or the authors' structured cue, cut to max_critique_tokens (section 4.2).

End to end through the pure RGR code (recipe.care.rgr.reflect_group) with the real Qwen2.5 vocabulary:
the decode sees prompt + failed think prefix + the template's cue tokens (+ ``</think>\\n<answer>`` in
answer_only mode); in the trained response those inserted tokens carry response_mask 0 and log-prob 0.
"""

import pytest
import torch

from recipe.care.care_config import DEFAULT_ANSWER_OPEN, DEFAULT_CUE, STRUCTURED_CUE, RGRConfig
from recipe.care.rgr import RepairTokens
from recipe.care.spans import compute_response_spans
from tests.recipe.care.conftest import AnswerScore, ScriptedGenerate, member

# docs/algorithm.md section 4.2 / the authors' code (verl/hooks/rgr.py _build_repair_cue), verbatim
AUTHORS_CUE = "\n<repair>\n- Mistake:\n- Fix:\n- Corrected final answer:\n</repair>\n"
RIGHT = "<think>2 plus 2 makes 4.</think>\n<answer>4</answer>"
WRONG = "<think>First, 2 plus 2 makes 5 because I added one more </think>\n<answer>5</answer>"
REDERIVE = " Recount: 2 plus 2 is 4.</think>\n<answer>4</answer><|im_end|>"
ANSWER = "4</answer><|im_end|>"


def repair(tokenizer, reflect, continuation, **block):
    failed = member(tokenizer, WRONG, 0, logprob=-0.7)
    gen = ScriptedGenerate(tokenizer, continuation)
    result = reflect([member(tokenizer, RIGHT, 1), failed], gen, AnswerScore(tokenizer), **block)
    assert len(gen.requests) == 1 and result.outcome.repaired is not None
    return failed, gen.requests[0], result.rollouts[1], result.outcome


def assert_inserted(tokenizer, failed, request, rep, inserted_ids):
    """prefix (mask 1, own log-probs) + inserted (mask 0, log-prob 0) + continuation (mask 1)."""
    k, c = rep.prefix_len, len(inserted_ids)
    assert rep.inserted_len == c
    assert rep.response_ids[:k] == failed.response_ids[:k] and rep.response_mask[:k] == [1] * k
    assert rep.response_ids[k:k + c] == list(inserted_ids)
    assert rep.response_mask[k:k + c] == [0] * c and rep.response_logprobs[k:k + c] == [0.0] * c
    assert rep.response_mask[k + c:] == [1] * rep.continuation_len
    assert request.prompt_ids == list(failed.prompt_ids) + failed.response_ids[:k] + list(inserted_ids)


def test_spec_and_authors_cue_texts():
    assert STRUCTURED_CUE == AUTHORS_CUE
    assert RGRConfig().cue_text == DEFAULT_CUE
    assert RGRConfig(template="structured").cue_text == AUTHORS_CUE
    assert RGRConfig(cue="Check again.").cue_text == "Check again."


@pytest.mark.parametrize("template, cue", [("paper", DEFAULT_CUE), ("structured", AUTHORS_CUE)])
def test_each_template_end_to_end_rederive(tokenizer, reflect, template, cue):
    failed, request, rep, outcome = repair(tokenizer, reflect, REDERIVE, template=template)
    cue_ids = tokenizer.encode(cue, add_special_tokens=False)
    assert len(cue_ids) <= 64  # both cues are under the default cut
    assert_inserted(tokenizer, failed, request, rep, cue_ids)
    assert tokenizer.decode(rep.response_ids[rep.prefix_len:rep.prefix_len + rep.inserted_len]) == cue
    assert outcome.success
    # what the trainer computes on the row: the cue is neither think nor answer (mask 0), the answer is found
    spans = compute_response_spans(tokenizer, torch.tensor([rep.response_ids]), torch.tensor([rep.response_mask]))
    inserted = slice(rep.prefix_len, rep.prefix_len + rep.inserted_len)
    assert not spans.think_mask[0, inserted].any() and not spans.answer_mask[0, inserted].any()
    assert tokenizer.decode(torch.tensor(rep.response_ids)[spans.answer_mask[0]].tolist()).strip() == "4"


def test_structured_with_answer_only_is_the_authors_repair(tokenizer, reflect):
    """Authors: failed reasoning + cue + "</think>\\n<answer>", then only the answer is decoded."""
    failed, request, rep, outcome = repair(tokenizer, reflect, ANSWER, template="structured", mode="answer_only")
    inserted = tokenizer.encode(AUTHORS_CUE, add_special_tokens=False) + \
        tokenizer.encode(DEFAULT_ANSWER_OPEN, add_special_tokens=False)
    assert_inserted(tokenizer, failed, request, rep, inserted)
    context = tokenizer.decode(request.prompt_ids[len(failed.prompt_ids):])
    assert context == "<think>First, 2 plus 2 makes 5 because I added one more" + AUTHORS_CUE + "</think>\n<answer>"
    assert outcome.success
    assert tokenizer.decode(rep.response_ids, skip_special_tokens=True).endswith("<answer>4</answer>")


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_cue_is_cut_to_max_critique_tokens(tokenizer, reflect, cut):
    full = tokenizer.encode(AUTHORS_CUE, add_special_tokens=False)
    assert len(full) > cut
    failed, request, rep, _ = repair(tokenizer, reflect, REDERIVE, template="structured", max_critique_tokens=cut)
    assert_inserted(tokenizer, failed, request, rep, full[:cut])
    assert rep.inserted_len == cut


def test_cut_applies_to_the_paper_cue_and_the_budget_counts_the_cut_cue(tokenizer):
    full = tokenizer.encode(DEFAULT_CUE, add_special_tokens=False)
    tokens = RepairTokens.build(tokenizer, RGRConfig(max_critique_tokens=3))
    assert tokens.cue_ids == tuple(full[:3])
    assert RepairTokens.build(tokenizer, RGRConfig()).cue_ids == tuple(full)  # 64 leaves the paper cue whole
    answer_only = RepairTokens.build(tokenizer, RGRConfig(template="structured", mode="answer_only", max_critique_tokens=4))
    assert answer_only.inserted_ids == tuple(tokenizer.encode(STRUCTURED_CUE, add_special_tokens=False)[:4]) + \
        tuple(tokenizer.encode(DEFAULT_ANSWER_OPEN, add_special_tokens=False))


def test_budget_uses_the_cut_cue(tokenizer, reflect):
    """prefix + inserted + continuation still fits the response length with either template."""
    for block in ({"template": "paper"}, {"template": "structured", "max_critique_tokens": 4},
                  {"template": "structured", "mode": "answer_only"}):
        failed, request, rep, _ = repair(tokenizer, reflect, REDERIVE, **block)
        assert request.max_tokens == 256 - rep.prefix_len - rep.inserted_len
        assert len(rep.response_ids) <= 256


def test_template_keys_compose_through_hydra_and_reach_the_worker_config():
    from tests.recipe.care.conftest import compose_with_rgr

    from recipe.care.config_loader import care_config_of

    cfg = compose_with_rgr(["care.rgr.template=structured", "care.rgr.max_critique_tokens=8", "care.rgr.mode=answer_only"])
    rgr = care_config_of(cfg).rgr
    assert (rgr.template, rgr.max_critique_tokens, rgr.mode, rgr.cue_text) == ("structured", 8, "answer_only", AUTHORS_CUE)
