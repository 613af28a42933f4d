"""recipe.care.rgr.reflect_group with deterministic generators (docs/algorithm.md section 4)."""

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe.care.care_config import DEFAULT_CUE
from recipe.care.rgr import FAILURE_REASONS, RepairedRollout
from tests.recipe.care.conftest import AnswerScore, ScriptedGenerate, member

RIGHT = "<think>2 plus 2 makes 4.</think>\n<answer>4</answer>"
WRONG = "<think>2 plus 2 makes 5 because I added one more.</think>\n<answer>5</answer>"
FIX = " Recount: 2 plus 2 is 4.</think>\n<answer>4</answer><|im_end|>"
STILL_WRONG = " I still think 5.</think>\n<answer>5</answer><|im_end|>"


def assert_group_kept(result, members, replaced_at=None):
    """Same size, same order; every row is the original object except the replaced one."""
    assert len(result.rollouts) == len(members)
    for i, (row, m) in enumerate(zip(result.rollouts, members)):
        if i == replaced_at:
            assert isinstance(row, RepairedRollout) and row.source == i and row.prompt_ids == list(m.prompt_ids)
        else:
            assert row is m


def test_success_replaces_the_failure_in_place(tokenizer, reflect):
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0), member(tokenizer, RIGHT, 1)]
    gen, score = ScriptedGenerate(tokenizer, FIX), AnswerScore(tokenizer)
    result = reflect(members, gen, score)
    out = result.outcome
    assert len(gen.requests) == 1 and len(score.calls) == 1
    assert out.eligible and out.triggered and out.success and out.reason is None and out.source == 1
    assert_group_kept(result, members, replaced_at=1)
    text = tokenizer.decode(result.rollouts[1].response_ids, skip_special_tokens=True)
    # the failed reasoning up to </think> (Qwen2.5 merges ".</" into one token, dropped with the tag)
    assert text.startswith("<think>2 plus 2 makes 5 because I added one more" + DEFAULT_CUE)
    assert text.endswith("<answer>4</answer>") and text.count("</think>") == 1
    assert out.extra_tokens == len(tokenizer.encode(FIX, add_special_tokens=False))
    assert out.rollout_tokens == sum(len(m.response_ids) for m in members)
    record = out.record("uid-1")
    assert record == {"group": "uid-1", "eligible": 1, "triggered": 1, "replaced": 1, "success": 1, "reason": "",
                      "extra_tokens": out.extra_tokens, "rollout_tokens": out.rollout_tokens, "source": 1,
                      "wall_s": 0.0,  # set by the agent-loop adapter, which times the whole RGR step
                      "choice_differs": -1}  # compared by the adapter, and only when it starts early


def test_failed_repair_is_still_kept_and_flagged(tokenizer, reflect):
    members = [member(tokenizer, WRONG, 0), member(tokenizer, RIGHT, 1)]
    result = reflect(members, ScriptedGenerate(tokenizer, STILL_WRONG), AnswerScore(tokenizer))
    assert result.outcome.repaired is not None and not result.outcome.success and result.outcome.reason is None
    assert_group_kept(result, members, replaced_at=0)
    assert result.rollouts[0].reflected
    assert result.outcome.record("g")["replaced"] == 1 and result.outcome.record("g")["success"] == 0


@pytest.mark.parametrize(
    "generate_kw, reason",
    [
        (dict(error=RuntimeError("engine died")), "generation_error"),
        (dict(stop_reason="aborted"), "generation_error"),
        (dict(text=""), "empty_continuation"),
        (dict(raw_ids="eos"), "empty_continuation"),  # only EOS: nothing was written
        (dict(logprobs=False), "generation_error"),  # the rollout has log-probs, the decode has none
        (dict(delay=5.0), "timeout"),
    ],
)
def test_failed_decode_keeps_the_original(tokenizer, reflect, generate_kw, reason):
    if generate_kw.get("raw_ids") == "eos":
        generate_kw = dict(raw_ids=[tokenizer.convert_tokens_to_ids("<|im_end|>")])
    generate_kw.setdefault("text", FIX)
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)]
    gen, score = ScriptedGenerate(tokenizer, **generate_kw), AnswerScore(tokenizer)
    result = reflect(members, gen, score, timeout_s=0.2)
    assert len(gen.requests) == 1 and score.calls == []
    assert result.outcome.triggered and result.outcome.repaired is None and result.outcome.reason == reason
    assert_group_kept(result, members)
    assert result.outcome.record("g")["replaced"] == 0


@pytest.mark.parametrize("scorer_kw", [dict(error=ValueError("verifier crashed")), dict(extra={"score": 1.0})])
def test_scoring_error_or_missing_acc_keeps_the_original(tokenizer, reflect, scorer_kw):
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)]
    gen, score = ScriptedGenerate(tokenizer, FIX), AnswerScore(tokenizer, **scorer_kw)
    result = reflect(members, gen, score)
    assert len(gen.requests) == 1 and len(score.calls) == 1
    assert result.outcome.reason == "score_error" and result.outcome.repaired is None
    assert_group_kept(result, members)


def test_no_budget_means_no_decode(tokenizer, reflect, rgr_env):
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)]
    _, tokens = rgr_env()
    probe = ScriptedGenerate(tokenizer, FIX)
    reflect(members, probe, AnswerScore(tokenizer), response_length=200)
    prefix = probe.requests[0].prefix_len
    assert probe.requests[0].max_tokens == 200 - prefix - len(tokens.cue_ids)
    # exactly full: prefix + cue == response_length leaves 0 tokens
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer), response_length=prefix + len(tokens.cue_ids))
    assert gen.requests == [] and result.outcome.reason == "no_budget" and result.outcome.triggered
    assert_group_kept(result, members)
    # one token of room is enough for the default min_budget=1 ...
    gen = ScriptedGenerate(tokenizer, FIX)
    reflect(members, gen, AnswerScore(tokenizer), response_length=prefix + len(tokens.cue_ids) + 1)
    assert len(gen.requests) == 1 and gen.requests[0].max_tokens == 1
    # ... but not for min_budget=8
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer), response_length=prefix + len(tokens.cue_ids) + 7,
                     min_budget=8)
    assert gen.requests == [] and result.outcome.reason == "no_budget"


def test_max_new_tokens_caps_the_repair_decode(tokenizer, reflect, rgr_env):
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, 0)]
    _, tokens = rgr_env()
    uncapped = ScriptedGenerate(tokenizer, FIX)
    reflect(members, uncapped, AnswerScore(tokenizer), response_length=400)
    room = uncapped.requests[0].max_tokens
    assert room > 5
    capped = ScriptedGenerate(tokenizer, FIX, overshoot=3)  # an engine ignoring max_tokens is still cut
    result = reflect(members, capped, AnswerScore(tokenizer), response_length=400, max_new_tokens=5)
    assert capped.requests[0].max_tokens == 5
    assert result.outcome.repaired.continuation_len == 5
    # a cap above the room left changes nothing
    loose = ScriptedGenerate(tokenizer, FIX)
    reflect(members, loose, AnswerScore(tokenizer), response_length=400, max_new_tokens=room + 100)
    assert loose.requests[0].max_tokens == room


@pytest.mark.parametrize("accs", [[1, 1, 1], [0, 0, 0], [1], [0]])
def test_all_correct_and_all_wrong_groups_are_untouched(tokenizer, reflect, accs):
    members = [member(tokenizer, RIGHT if a else WRONG, a) for a in accs]
    gen, score = ScriptedGenerate(tokenizer, FIX), AnswerScore(tokenizer)
    result = reflect(members, gen, score)
    assert gen.requests == [] and score.calls == []
    assert not result.outcome.eligible and not result.outcome.triggered and result.outcome.reason is None
    assert_group_kept(result, members)


def test_missing_acc_skips_the_group(tokenizer, reflect):
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, WRONG, None)]
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer))
    assert gen.requests == [] and result.outcome.reason == "missing_acc" and not result.outcome.eligible
    assert_group_kept(result, members)


def test_failures_without_think_are_not_repair_bases(tokenizer, reflect):
    no_think = "The answer is 5.\n<answer>5</answer>"
    members = [member(tokenizer, RIGHT, 1), member(tokenizer, no_think, 0)]
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer))
    assert gen.requests == [] and result.outcome.reason == "no_think_span" and result.outcome.triggered
    # with a think-bearing failure beside it, that one is repaired
    members.append(member(tokenizer, WRONG, 0))
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer))
    assert [r.source for r in gen.requests] == [2] and result.outcome.success


def test_exactly_one_decode_per_eligible_group_across_many_groups(tokenizer, rgr_env):
    """Several groups concurrently (as the agent-loop worker runs prompts): one decode per mixed group."""
    from recipe.care.rgr import reflect_group

    config, tokens = rgr_env()
    patterns = [[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1], [1, 0, 1, 1, 0, 0, 0, 1]]
    groups = [[member(tokenizer, RIGHT if a else WRONG, a) for a in p] for p in patterns]
    gens = [ScriptedGenerate(tokenizer, FIX, delay=0.01) for _ in groups]

    async def main():
        return await asyncio.gather(*[
            reflect_group(g, gen, AnswerScore(tokenizer), tokenizer=tokenizer, config=config, tokens=tokens,
                          response_length=256)
            for g, gen in zip(groups, gens)
        ])

    results = asyncio.run(main())
    for pattern, gen, result, group in zip(patterns, gens, results, groups):
        mixed = 0 < sum(pattern) < len(pattern)
        assert len(gen.requests) == int(mixed)
        assert result.outcome.eligible == mixed
        assert_group_kept(result, group, replaced_at=result.outcome.source if mixed else None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    accs=st.lists(st.sampled_from([0, 1]), min_size=1, max_size=8),
    thinks=st.lists(st.booleans(), min_size=8, max_size=8),
    outcome=st.sampled_from(["fix", "wrong", "error", "empty"]),
    selector=st.sampled_from(["lexical", "logprob", "random"]),
    seed=st.integers(0, 10),
)
def test_property_one_attempt_never_drops_or_duplicates(tokenizer, reflect, accs, thinks, outcome, selector, seed):
    texts = {1: RIGHT, 0: WRONG}
    members = [member(tokenizer, texts[a] if thinks[i] else f"No tags {i}. <answer>{4 if a else 5}</answer>", a,
                      logprob=-0.1 * (i + 1))
               for i, a in enumerate(accs)]
    kw = {"fix": dict(text=FIX), "wrong": dict(text=STILL_WRONG), "error": dict(error=RuntimeError("x")),
          "empty": dict(text="")}[outcome]
    gen, score = ScriptedGenerate(tokenizer, **kw), AnswerScore(tokenizer)
    result = reflect(members, gen, score, selector=selector, rng=random.Random(seed))
    eligible = 0 < sum(accs) < len(accs)
    repairable = [i for i, a in enumerate(accs) if not a and thinks[i]]
    assert result.outcome.eligible == eligible
    assert len(gen.requests) == int(eligible and bool(repairable))
    assert len(score.calls) <= len(gen.requests)
    if gen.requests:
        assert gen.requests[0].source in repairable  # only a failure is ever repaired
    replaced = result.outcome.source if result.outcome.repaired is not None else None
    assert (replaced is not None) == (eligible and bool(repairable) and outcome in ("fix", "wrong"))
    assert_group_kept(result, members, replaced_at=replaced)
    assert (result.outcome.reason in FAILURE_REASONS) == (eligible and replaced is None)
