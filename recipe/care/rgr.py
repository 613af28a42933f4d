"""Reflection-guided resampling (RGR, docs/algorithm.md section 4) as a pure async function.

For a group with at least one verified-correct and one failed rollout, :func:`reflect_group`
picks one failure, builds ``prompt + failed think prefix + repair cue``, decodes once through the
caller's ``generate``, scores the result through the caller's ``score`` and hands back the group
with that failure replaced in place by the repaired rollout. No verl, Ray or TransferQueue import:
the agent-loop adapter (:mod:`recipe.care.agent_loop`) supplies ``generate`` (verl's server
manager) and ``score`` (verl's reward loop), so this module tests with plain coroutines.

Token layout of a repaired response (``rederive`` mode; ``answer_only`` inserts
``</think>\\n<answer>`` after the cue)::

    response_ids  | <think> failed reasoning | cue tokens | continuation ... <|im_end|> |
    response_mask | 1 ...................... 1 | 0 ...... 0 | 1 ............... 1 |
    logprobs      | original rollout's      | 0 ...... 0 | the decode's             |

The prefix tokens are the failed rollout's own tokens (token in, token out: nothing is
re-tokenised), so the trained sequence is exactly the one the engine saw, and the trainer recomputes
old log-probs on it (section 4.6). Inserted tokens are masked like tool tokens in verl's
multi-turn rollouts.

Outcomes are counted, never raised: a generation error, an empty continuation, no token budget
left, a scoring error or no failure with a think span keeps the original rollout and records the
reason. Each group's outcome is stored on every row of the group (``extra_fields["rgr"]``) and
:func:`rgr_step_metrics` turns the rows of a training batch into step metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from recipe.care.care_config import REPAIR_SELECTORS, RGRConfig, RGRConfigError
from recipe.care.spans import TokenTexts, compute_response_spans, find_tag_spans

__all__ = [
    "REFLECTED_KEY",
    "RECORD_KEY",
    "FAILURE_REASONS",
    "SKIP_REASONS",
    "RepairTokens",
    "GroupMember",
    "RepairRequest",
    "RepairedRollout",
    "ScoreResult",
    "RGROutcome",
    "RGRResult",
    "think_prefix_length",
    "repair_candidates",
    "ready_to_repair",
    "select_failure",
    "build_repair_request",
    "build_repaired_rollout",
    "reflect_group",
    "rgr_step_metrics",
]

logger = logging.getLogger(__name__)

# extra_fields keys shared with the trainer (recipe/care/trainer.py reads REFLECTED_KEY; absent = False).
REFLECTED_KEY = "reflected"
RECORD_KEY = "rgr"
ACC_KEY = "acc"

# Why an eligible group kept its original rollouts.
FAILURE_REASONS = ("no_think_span", "no_budget", "generation_error", "timeout", "empty_continuation",
                   "score_error", "internal_error")
# Why a group's eligibility could not be judged (the group is left untouched).
SKIP_REASONS = ("missing_acc", "no_reward", "incomplete_group", "multi_output")

@dataclass(frozen=True)
class RepairTokens:
    """Token ids RGR inserts, tokenised once per worker.

    cue_ids: the cue (at most ``max_critique_tokens`` tokens); answer_open_ids: ``answer_open`` (answer_only mode, else empty);
    trailing_ids: special tokens (EOS, pad) dropped from the end of an unclosed think prefix.
    """

    cue_ids: tuple[int, ...]
    answer_open_ids: tuple[int, ...]
    trailing_ids: frozenset[int]

    @property
    def inserted_ids(self) -> tuple[int, ...]:
        return self.cue_ids + self.answer_open_ids

    @classmethod
    def build(cls, tokenizer, config: RGRConfig) -> "RepairTokens":
        full = tuple(tokenizer.encode(config.cue_text, add_special_tokens=False))
        # Token ids are cut, not text, so the inserted tokens are exactly the ones counted.
        cue = full[:config.max_critique_tokens]
        if len(cue) < len(full):
            logger.info("RGR cue cut from %d to care.rgr.max_critique_tokens=%d tokens: %r", len(full), len(cue),
                        tokenizer.decode(list(cue)))
        answer_open = tuple(tokenizer.encode(config.answer_open, add_special_tokens=False)) \
            if config.mode == "answer_only" else ()
        if not cue:
            raise RGRConfigError(f"care.rgr.cue {config.cue_text!r} tokenises to no tokens")
        return cls(cue, answer_open, frozenset(int(i) for i in (tokenizer.all_special_ids or ())))


@dataclass
class GroupMember:
    """One scored rollout of the group, as RGR needs it (lists of ints/floats, unpadded).

    acc: the verifier's correctness (0/1) or None when the reward gave none.
    multi_modal_data: the rollout's images/videos, handed to ``generate`` untouched.
    """

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    response_mask: Sequence[int]
    response_logprobs: Sequence[float] | None
    acc: float | None
    multi_modal_data: Any = None
    reflected: bool = False

    @property
    def passed(self) -> bool:
        return self.acc is not None and float(self.acc) > 0.5


@dataclass
class RepairRequest:
    """What ``generate`` gets: decode at most ``max_tokens`` after ``prompt_ids``.

    prompt_ids = the failure's prompt + its think prefix + the inserted tokens; source is the
    index of the failure in the group (the adapter finds the rollout's own generate arguments by it).
    """

    source: int
    prompt_ids: list[int]
    max_tokens: int
    multi_modal_data: Any
    prefix_len: int
    inserted_ids: tuple[int, ...]


@dataclass
class RepairedRollout:
    """The repaired rollout: same prompt, response = prefix + inserted + continuation."""

    source: int
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    response_logprobs: list[float] | None
    multi_modal_data: Any
    prefix_len: int
    inserted_len: int
    continuation_len: int
    generation: Any = None  # the raw ``generate`` output (routed experts, extra fields)
    reflected: bool = True


@dataclass
class ScoreResult:
    """What ``score`` returns: the reward, the reward's extra info (must hold ``acc``) and any payload."""

    reward: float
    extra_info: Mapping[str, Any]
    payload: Any = None


@dataclass
class RGROutcome:
    """What happened to one group. ``reason`` is set whenever the group kept its original rollouts
    although it was (or might have been) eligible; see FAILURE_REASONS and SKIP_REASONS."""

    eligible: bool = False
    triggered: bool = False
    source: int | None = None
    repaired: RepairedRollout | None = None
    score: ScoreResult | None = None
    success: bool = False
    reason: str | None = None
    extra_tokens: int = 0
    rollout_tokens: int = 0
    wall_s: float = 0.0  # from the group's last rollout to the end of RGR (set by the adapter)
    # start=early only: 1 when the after-group choice (whole group) is another failure, 0 when the
    # same, -1 when not compared (after_group start, random selector, nothing chosen)
    choice_differs: int = -1

    def record(self, group: str) -> dict:
        """The per-row ``extra_fields["rgr"]`` record (plain Python values, identical on every row)."""
        return {
            "group": str(group),
            "eligible": int(self.eligible),
            "triggered": int(self.triggered),
            "replaced": int(self.repaired is not None),
            "success": int(self.success),
            "reason": self.reason or "",
            "extra_tokens": int(self.extra_tokens),
            "rollout_tokens": int(self.rollout_tokens),
            # the chosen failure's index in the group (care.records' per-repair record); -1 = none
            "source": -1 if self.source is None else int(self.source),
            "wall_s": float(self.wall_s),
            "choice_differs": int(self.choice_differs),
        }


@dataclass
class RGRResult:
    """rollouts: the group in its original order, the chosen failure replaced (same length always)."""

    rollouts: list
    outcome: RGROutcome


GenerateFn = Callable[[RepairRequest], Awaitable[Any]]
ScoreFn = Callable[[RepairedRollout], Awaitable[ScoreResult]]


# ----------------------------------------------------------------------------------- selection


def think_prefix_length(tokenizer, response_ids: Sequence[int], trailing_ids: Iterable[int] = ()) -> int | None:
    """Number of leading response tokens that make up ``<think>`` + the reasoning, ``</think>`` excluded.

    None when the response has no ``<think>``. Closed think: the tokens that end before the close
    tag (a token straddling the tag is dropped with it, so no part of ``</think>`` survives).
    Unclosed think followed by an ``<answer>``: the same, cut before that tag (the think span ends
    there, :mod:`recipe.care.spans`), so the failed answer is not part of the repair context.
    Unclosed think without one: the whole response minus trailing special tokens (EOS, padding).
    Tags are found in decoded text with the same rules as :mod:`recipe.care.spans`.
    """
    ids = np.asarray(list(response_ids), dtype=np.int64)
    if ids.size == 0:
        return None
    texts = (tokenizer if isinstance(tokenizer, TokenTexts) else TokenTexts.for_tokenizer(tokenizer)).lookup(ids)
    ends = np.cumsum([len(t) for t in texts])
    text = "".join(texts)
    think, _ = find_tag_spans(text)
    if think is None:
        return None
    if think[1] < len(text):  # closed, or unclosed and cut at an <answer>
        return int(np.searchsorted(ends, think[1], side="right"))
    trailing = frozenset(int(i) for i in trailing_ids)
    k = len(ids)
    while k > 0 and int(ids[k - 1]) in trailing:
        k -= 1
    return k


def repair_candidates(members: Sequence[GroupMember], tokenizer, trailing_ids: Iterable[int] = ()) -> dict[int, int]:
    """The failures RGR may repair, ``{index: think prefix length}``: non-reflected, verified wrong,
    with a think span (members without ``acc`` are never candidates)."""
    found = {}
    for i, m in enumerate(members):
        if m.reflected or m.acc is None or m.passed:
            continue
        k = think_prefix_length(tokenizer, m.response_ids, trailing_ids)
        if k is not None:
            found[i] = k
    return found


def ready_to_repair(members: Sequence[GroupMember], tokenizer, trailing_ids: Iterable[int] = ()) -> bool:
    """True when these (possibly not yet all) rollouts already hold a verified positive and a
    repairable failure: the moment ``start=early`` starts the repair."""
    if any(m.acc is None for m in members) or not any(m.passed and not m.reflected for m in members):
        return False
    return bool(repair_candidates(members, tokenizer, trailing_ids))


def _padded(members: Sequence[GroupMember]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(m.response_ids) for m in members))
    ids = torch.zeros(len(members), width, dtype=torch.long)
    mask = torch.zeros(len(members), width, dtype=torch.long)
    for row, m in enumerate(members):
        n = len(m.response_ids)
        ids[row, :n] = torch.as_tensor(list(m.response_ids), dtype=torch.long)
        mask[row, :n] = torch.as_tensor(list(m.response_mask), dtype=torch.long)
    return ids, mask


def _ngram_counts(tokens: Sequence[int], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _cosine(a: Counter, b: Counter) -> float:
    # Sparse count vectors over a 150k-token vocabulary: a dict dot product is the whole job
    # (scikit-learn's CountVectorizer would add a dependency to do the same on token strings).
    if not a or not b:
        return 0.0
    dot = sum(count * b.get(gram, 0) for gram, count in a.items())
    return dot / math.sqrt(sum(c * c for c in a.values()) * sum(c * c for c in b.values()))


def select_failure(members: Sequence[GroupMember], candidates: Sequence[int], selector: str, *, tokenizer=None,
                   ngram: int = 2, rng: random.Random | None = None, empty_span: str = "missing") -> int:
    """Index of the failure to repair, among ``candidates`` (non-empty; non-reflected failures).

    lexical: the anchor is section 2.1's (shortest think, then shortest answer, then lowest index,
    among non-reflected positives; empty spans by the ``empty_span`` rule, care.empty_span); the
    chosen failure maximises the cosine of token n-gram count vectors of the think spans (whole
    response without a think span); ties go to the lower index.
    logprob: the highest mean rollout log-prob over response-mask tokens (ties: lower index).
    random: uniform with ``rng``.
    """
    candidates = sorted(candidates)
    if not candidates:
        raise ValueError("select_failure needs at least one candidate failure")
    if selector == "random":
        return (rng or random.Random(0)).choice(candidates)
    if selector == "logprob":
        def mean_logprob(i: int) -> float:
            m = members[i]
            if m.response_logprobs is None:
                raise ValueError("care.rgr.selector=logprob needs rollout log-probs "
                                 "(actor_rollout_ref.rollout.calculate_log_probs=true)")
            lp = [float(v) for v, keep in zip(m.response_logprobs, m.response_mask) if keep]
            return sum(lp) / len(lp) if lp else -math.inf
        return max(candidates, key=lambda i: (mean_logprob(i), -i))
    if selector != "lexical":
        raise ValueError(f"unknown RGR selector {selector!r}; choose one of {', '.join(REPAIR_SELECTORS)}")
    ids, mask = _padded(members)
    spans = compute_response_spans(tokenizer, ids, mask, empty_span=empty_span)
    positives = [i for i, m in enumerate(members) if m.passed and not m.reflected]
    if not positives:
        raise ValueError("the lexical selector needs a non-reflected positive (the anchor)")
    anchor = min(positives, key=lambda i: (int(spans.think_len[i]), int(spans.answer_len[i]), i))

    def think_tokens(i: int) -> list[int]:
        keep = spans.think_mask[i] if bool(spans.has_think[i]) else mask[i].bool()
        return ids[i][keep].tolist()

    anchor_vec = _ngram_counts(think_tokens(anchor), ngram)
    return max(candidates, key=lambda i: (_cosine(anchor_vec, _ngram_counts(think_tokens(i), ngram)), -i))


# ----------------------------------------------------------------------------------- layout


def build_repair_request(member: GroupMember, source: int, prefix_len: int, tokens: RepairTokens,
                         response_length: int) -> RepairRequest:
    """The decode request for one failure; ``max_tokens`` keeps prefix + inserted + continuation
    within ``response_length`` (it is < 1 when there is no room: the caller counts ``no_budget``)."""
    inserted = tokens.inserted_ids
    budget = int(response_length) - prefix_len - len(inserted)
    context = [int(t) for t in member.prompt_ids] + [int(t) for t in member.response_ids[:prefix_len]] + list(inserted)
    return RepairRequest(source=source, prompt_ids=context, max_tokens=budget,
                         multi_modal_data=member.multi_modal_data, prefix_len=prefix_len, inserted_ids=inserted)


def build_repaired_rollout(member: GroupMember, request: RepairRequest, continuation_ids: Sequence[int],
                           continuation_logprobs: Sequence[float] | None, generation: Any = None) -> RepairedRollout:
    """Prefix (original tokens, mask and log-probs) + inserted (mask 0, log-prob 0) + continuation (mask 1).

    Log-probs are kept only when the failed rollout had them (then the continuation must have them too).
    """
    k, inserted, cont = request.prefix_len, list(request.inserted_ids), [int(t) for t in continuation_ids]
    if len(cont) > request.max_tokens:
        raise ValueError(f"continuation of {len(cont)} tokens exceeds the repair budget {request.max_tokens}")
    logprobs = None
    if member.response_logprobs is not None:
        if continuation_logprobs is None or len(continuation_logprobs) < len(cont):
            raise ValueError("the repair decode returned no log-probs for its tokens but the rollout has them")
        logprobs = ([float(v) for v in member.response_logprobs[:k]] + [0.0] * len(inserted)
                    + [float(v) for v in continuation_logprobs[:len(cont)]])
    return RepairedRollout(
        source=request.source,
        prompt_ids=[int(t) for t in member.prompt_ids],
        response_ids=[int(t) for t in member.response_ids[:k]] + inserted + cont,
        response_mask=[int(t) for t in member.response_mask[:k]] + [0] * len(inserted) + [1] * len(cont),
        response_logprobs=logprobs,
        multi_modal_data=member.multi_modal_data,
        prefix_len=k,
        inserted_len=len(inserted),
        continuation_len=len(cont),
        generation=generation,
    )


# ----------------------------------------------------------------------------------- the step


async def reflect_group(members: Sequence[GroupMember], generate: GenerateFn, score: ScoreFn, *, tokenizer,
                        config: RGRConfig, tokens: RepairTokens, response_length: int,
                        rng: random.Random | None = None, empty_span: str = "missing") -> RGRResult:
    """Run RGR on one scored group: at most one ``generate`` and one ``score`` call, never raises
    for a failed repair (the reason is recorded), never changes the group's size or order.

    members: the group's rollouts; generate(RepairRequest) -> object with ``token_ids``,
    ``log_probs`` and optionally ``stop_reason`` (verl's ``TokenOutput``); score(RepairedRollout)
    -> :class:`ScoreResult` whose ``extra_info["acc"]`` decides success. empty_span: care.empty_span,
    for the lexical selector's anchor (section 2.1's rule).
    """
    rollouts: list = list(members)
    outcome = RGROutcome(rollout_tokens=sum(len(m.response_ids) for m in members))
    result = RGRResult(rollouts, outcome)
    if any(m.acc is None for m in members):
        outcome.reason = "missing_acc"
        return result
    plain = [i for i, m in enumerate(members) if not m.reflected]
    failures = [i for i in plain if not members[i].passed]
    if not failures or not any(members[i].passed for i in plain):
        return result  # all correct or all wrong: untouched
    outcome.eligible = outcome.triggered = True

    prefix = repair_candidates(members, tokenizer, tokens.trailing_ids)
    candidates = sorted(prefix)
    if not candidates:
        outcome.reason = "no_think_span"
        return result
    source = select_failure(members, candidates, config.selector, tokenizer=tokenizer, ngram=config.ngram, rng=rng,
                            empty_span=empty_span)
    outcome.source = source
    member = members[source]
    request = build_repair_request(member, source, prefix[source], tokens, response_length)
    if config.max_new_tokens is not None:
        request.max_tokens = min(request.max_tokens, config.max_new_tokens)
    if request.max_tokens < config.min_budget:
        outcome.reason = "no_budget"
        return result

    try:
        pending = generate(request)
        generation = await (asyncio.wait_for(pending, config.timeout_s) if config.timeout_s else pending)
    except asyncio.TimeoutError:
        outcome.reason = "timeout"
        return result
    except Exception:  # the engine's error is logged and counted; the group goes on unrepaired
        logger.warning("RGR repair decode failed; keeping the original rollout", exc_info=True)
        outcome.reason = "generation_error"
        return result
    token_ids = list(getattr(generation, "token_ids", None) or [])
    outcome.extra_tokens = len(token_ids)
    if getattr(generation, "stop_reason", None) == "aborted":
        outcome.reason = "generation_error"
        return result
    continuation = token_ids[:request.max_tokens]  # the engine honours max_tokens; never trust it blindly
    if not any(int(t) not in tokens.trailing_ids for t in continuation):
        outcome.reason = "empty_continuation"  # nothing, or only EOS/padding
        return result
    try:
        repaired = build_repaired_rollout(member, request, continuation, getattr(generation, "log_probs", None),
                                          generation)
    except ValueError:
        logger.warning("RGR repair decode returned an unusable output; keeping the original rollout", exc_info=True)
        outcome.reason = "generation_error"
        return result

    try:
        scored = await score(repaired)
        acc = scored.extra_info[ACC_KEY]
        success = float(acc) > 0.5
    except Exception:
        logger.warning("RGR could not score the repaired rollout; keeping the original", exc_info=True)
        outcome.reason = "score_error"
        return result
    outcome.repaired, outcome.score, outcome.success = repaired, scored, success
    rollouts[source] = repaired
    return result


# ----------------------------------------------------------------------------------- metrics


def rgr_step_metrics(records: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """Step metrics from the ``extra_fields["rgr"]`` records of a batch's rows (one per row, None allowed).

    Records are deduplicated by their ``group`` key, so copies (verl's balance-padding rows copy a
    real row's extra fields) never count twice. Empty when no row carries a record (RGR off).

    rgr/groups: training groups RGR saw; rgr/eligible: groups with a positive and a failure;
    rgr/triggered: repair attempts (one per eligible group); rgr/replaced: repaired rollouts kept;
    rgr/success: kept and verified correct; rgr/success_rate = success / triggered (only when
    something was triggered); rgr/extra_token_share = repair-decode tokens / tokens of the groups'
    original rollouts; rgr/failed/<reason> and rgr/skipped/<reason>: counts by reason;
    rgr/early_choice_differs_rate (start=early, deterministic selectors): the share of repaired-early
    groups whose after-group choice would have been another failure;
    timing_s/rgr: the longest time RGR held one group back in the step (from its last rollout to its
    repair scored; repairs of different groups overlap, so this bounds what RGR adds to the rollout's
    wall time); rgr/wall_s_mean: the mean over triggered groups.
    """
    groups: dict[str, Mapping[str, Any]] = {}
    for record in records:
        if isinstance(record, Mapping) and "group" in record:
            groups.setdefault(str(record["group"]), record)
    if not groups:
        return {}
    rows = list(groups.values())
    total = {key: float(sum(int(r.get(key, 0)) for r in rows))
             for key in ("eligible", "triggered", "replaced", "success", "extra_tokens", "rollout_tokens")}
    metrics = {
        "rgr/groups": float(len(rows)),
        "rgr/eligible": total["eligible"],
        "rgr/triggered": total["triggered"],
        "rgr/replaced": total["replaced"],
        "rgr/success": total["success"],
        "rgr/extra_tokens": total["extra_tokens"],
        "rgr/extra_token_share": total["extra_tokens"] / total["rollout_tokens"] if total["rollout_tokens"] else 0.0,
    }
    if total["triggered"]:
        metrics["rgr/success_rate"] = total["success"] / total["triggered"]
    compared = [int(r.get("choice_differs", -1)) for r in rows if int(r.get("choice_differs", -1)) >= 0]
    if compared:
        metrics["rgr/early_choice_differs_rate"] = sum(compared) / len(compared)
    walls = [float(r.get("wall_s", 0.0)) for r in rows if int(r.get("triggered", 0))]
    metrics["timing_s/rgr"] = max(walls, default=0.0)
    if walls:
        metrics["rgr/wall_s_mean"] = sum(walls) / len(walls)
    reasons = Counter(str(r.get("reason") or "") for r in rows)
    for reason in FAILURE_REASONS:
        metrics[f"rgr/failed/{reason}"] = float(reasons.get(reason, 0))
    for reason in SKIP_REASONS:
        metrics[f"rgr/skipped/{reason}"] = float(reasons.get(reason, 0))
    return metrics
