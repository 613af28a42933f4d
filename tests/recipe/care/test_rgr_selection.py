"""Which failure RGR repairs: selectors lexical (default), logprob, random (docs/algorithm.md section 4.1)."""

import random

from recipe.care.rgr import GroupMember, select_failure
from tests.recipe.care.conftest import AnswerScore, ScriptedGenerate, member

FIX = " Recount.</think>\n<answer>4</answer><|im_end|>"

ANCHOR = "<think>Count apples: two apples and two apples.</think>\n<answer>4</answer>"
LONG_POSITIVE = ("<think>Use the number line, starting at two and stepping forward twice, which lands on four "
                 "on the number line.</think>\n<answer>4</answer>")
NEAR_ANCHOR = "<think>Count apples: two apples and three apples.</think>\n<answer>5</answer>"
NEAR_LONG = ("<think>Use the number line, starting at two and stepping forward thrice, which lands on five "
             "on the number line.</think>\n<answer>5</answer>")


def test_lexical_picks_the_failure_nearest_the_shortest_think_anchor(tokenizer, reflect):
    # index 1 is the first failure and the one nearest the *longer* positive; the right answer is 3
    members = [member(tokenizer, LONG_POSITIVE, 1), member(tokenizer, NEAR_LONG, 0), member(tokenizer, ANCHOR, 1),
               member(tokenizer, NEAR_ANCHOR, 0)]
    gen = ScriptedGenerate(tokenizer, FIX)
    result = reflect(members, gen, AnswerScore(tokenizer))
    assert [r.source for r in gen.requests] == [3] and result.outcome.source == 3
    # without the short positive, the anchor is the long one and its neighbour is chosen
    gen = ScriptedGenerate(tokenizer, FIX)
    reflect(members[:2] + members[3:], gen, AnswerScore(tokenizer))
    assert [r.source for r in gen.requests] == [1]


def test_lexical_anchor_ties_go_to_the_shorter_answer(tokenizer):
    think_a, think_b = "Count apples two and two", "Add numbers two and two"
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in (think_a, think_b)]
    assert len(ids[0]) == len(ids[1])  # precondition: equal think lengths, so the answer length decides
    members = [
        member(tokenizer, f"<think>{think_a}</think>\n<answer>4 apples in total here</answer>", 1),
        member(tokenizer, f"<think>{think_b}</think>\n<answer>4</answer>", 1),
        member(tokenizer, f"<think>{think_a} wrongly</think>\n<answer>5</answer>", 0),
        member(tokenizer, f"<think>{think_b} wrongly</think>\n<answer>5</answer>", 0),
    ]
    assert select_failure(members, [2, 3], "lexical", tokenizer=tokenizer) == 3
    members[1], members[0] = members[0], members[1]  # same pair, anchor now at index 0: still think_b's neighbour
    assert select_failure(members, [2, 3], "lexical", tokenizer=tokenizer) == 3


def test_lexical_ngram_order_matters(tokenizer):
    # same unigrams as the anchor in a different order: unigram cosine prefers it, bigram cosine does not
    members = [
        member(tokenizer, "<think>so red blue green yellow</think>\n<answer>4</answer>", 1),
        member(tokenizer, "<think>so yellow green blue red</think>\n<answer>5</answer>", 0),
        member(tokenizer, "<think>so red blue green purple black</think>\n<answer>5</answer>", 0),
    ]
    assert select_failure(members, [1, 2], "lexical", tokenizer=tokenizer, ngram=1) == 1
    assert select_failure(members, [1, 2], "lexical", tokenizer=tokenizer, ngram=2) == 2


def _with_logprobs(n_tokens: int, value: float, acc: int) -> GroupMember:
    return GroupMember(prompt_ids=[1, 2], response_ids=list(range(10, 10 + n_tokens)), response_mask=[1] * n_tokens,
                       response_logprobs=[value] * n_tokens, acc=acc)


def test_logprob_selector_uses_the_mean_not_the_sum():
    members = [_with_logprobs(5, -0.1, 1), _with_logprobs(10, -0.3, 0), _with_logprobs(30, -0.25, 0),
               _with_logprobs(8, -0.9, 0)]
    # sums: -3.0, -7.5, -7.2 -> a sum would pick 1; the mean picks 2
    assert select_failure(members, [1, 2, 3], "logprob") == 2


def test_logprob_selector_ignores_masked_tokens():
    m = _with_logprobs(6, -0.2, 0)
    m.response_logprobs = [-0.2, -0.2, 0.0, 0.0, -0.2, -0.2]
    m.response_mask = [1, 1, 0, 0, 1, 1]  # masked zeros must not raise the mean
    other = _with_logprobs(6, -0.15, 0)
    assert select_failure([_with_logprobs(3, -0.1, 1), m, other], [1, 2], "logprob") == 2


def test_random_selector_covers_failures_only(tokenizer):
    members = [_with_logprobs(4, -0.1, a) for a in (1, 0, 1, 0, 0)]
    picks = {select_failure(members, [1, 3, 4], "random", rng=random.Random(seed)) for seed in range(60)}
    assert picks == {1, 3, 4}
    same = [select_failure(members, [1, 3, 4], "random", rng=random.Random(7)) for _ in range(3)]
    assert len(set(same)) == 1  # seeded: reproducible


def test_lexical_anchor_follows_the_empty_span_rule(tokenizer):
    """care.empty_span reaches the lexical selector's anchor: with `missing` (default) the positive with
    an empty think is not the shortest-think anchor; with `zero` it is (and then no failure is nearer)."""
    members = [
        member(tokenizer, "<think></think>\n<answer>4</answer>", 1),
        member(tokenizer, ANCHOR, 1),
        member(tokenizer, "<think>Stars are far away and bright at night.</think>\n<answer>5</answer>", 0),
        member(tokenizer, NEAR_ANCHOR, 0),
    ]
    pick = {rule: select_failure(members, [2, 3], "lexical", tokenizer=tokenizer, empty_span=rule)
            for rule in ("missing", "zero")}
    assert pick == {"missing": 3, "zero": 2}
    assert select_failure(members, [2, 3], "lexical", tokenizer=tokenizer) == 3


def test_early_start_needs_a_positive_and_a_failure_with_a_think_span(tokenizer):
    from recipe.care.rgr import ready_to_repair, repair_candidates

    right, wrong = member(tokenizer, ANCHOR, 1), member(tokenizer, NEAR_ANCHOR, 0)
    no_think = member(tokenizer, "<answer>5</answer>", 0)
    assert not ready_to_repair([right], tokenizer)
    assert not ready_to_repair([wrong, no_think], tokenizer)  # no positive yet
    assert not ready_to_repair([right, no_think], tokenizer)  # nothing to cut a prefix from
    assert ready_to_repair([no_think, right, wrong], tokenizer)
    assert list(repair_candidates([no_think, right, wrong], tokenizer)) == [2]
    unjudged = member(tokenizer, NEAR_ANCHOR, None)
    assert not ready_to_repair([right, wrong, unjudged], tokenizer)  # a rollout without acc: never gate on it
    reflected = member(tokenizer, ANCHOR, 1)
    reflected.reflected = True
    assert not ready_to_repair([reflected, wrong], tokenizer)  # a repaired row is never the anchor
