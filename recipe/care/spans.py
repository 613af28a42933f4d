"""Think and answer spans of responses, from token ids (docs/algorithm.md section 1).

The tags are found in decoded text, not by token id, because the same tag is one token in some
vocabularies (Qwen3's ``<think>``) and several in others (Qwen2.5-VL: ``<th`` ``ink`` ``>\\n``), and
models write variants like ``< think >``. Tags are read by the verifier's own scanner
(:func:`verifiers.format.find_tags`), so both accept exactly the same spellings. Each token's text
is decoded once per tokenizer and cached; a response's text is the concatenation of its tokens'
texts, so every character offset maps back to exactly one token.

Span rules:
* answer = the span the verifier graded (:func:`verifiers.format.answer_span`): the text between
  the last ``<answer>`` tag that is immediately followed, among the tags, by ``</answer>``, and
  that ``</answer>``. Wherever it lies (before the think span, inside it, after it). No closed
  answer, no answer span: an unclosed ``<answer>`` is not graded, so it is not credited either.
* think = tokens strictly between the first ``<think>`` and the next ``</think>``. Unclosed: up to
  the first ``<answer>`` after it, else to the end of the response (so ``<think>abc<answer>5
  </answer>`` still has the answer span ``5``). Answer tokens and the answer's tags are never
  think tokens (a graded answer written inside the think span counts as the answer).
* A token belongs to a span when it lies inside it, or straddles a tag and carries non-blank
  span text (``>5`` in ``<answer>5``): tag-only and whitespace-only boundary tokens are excluded.
* An empty span (blank text between its tags, e.g. ``<think></think>``; for think, blank once an
  answer inside it is removed) is present (``has_think``/``has_answer``) but holds no token.
* ``think_len`` / ``answer_len`` are the span token counts, or the response length when the
  rollout has no such span (section 1). An empty span counts as missing (response length) with
  ``empty_span="missing"`` (default, as the authors' code: otherwise "no reasoning" is always the
  shortest anchor) and as 0 with ``empty_span="zero"``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from recipe.care.care_config import EMPTY_SPAN_RULES
from verifiers.format import find_tags

__all__ = ["ResponseSpans", "TokenTexts", "find_tag_spans", "compute_response_spans"]


@dataclass(frozen=True)
class ResponseSpans:
    """think_mask, answer_mask: bool [B, L]; think_len, answer_len: long [B]; has_think, has_answer: bool [B]."""

    think_mask: torch.Tensor
    answer_mask: torch.Tensor
    think_len: torch.Tensor
    answer_len: torch.Tensor
    has_think: torch.Tensor
    has_answer: torch.Tensor


Range = tuple[int, int]


def _answer_tags(tags: list) -> tuple[tuple, tuple] | None:
    """The ``(open, close)`` tags of the answer the verifier grades.

    The same scan as :func:`verifiers.format.answer_span`, which returns the text, not its place;
    ``tests/recipe/care/test_spans_verifier_agreement.py`` fails if the two ever choose differently.
    """
    for idx in range(len(tags) - 1, 0, -1):
        if tags[idx][0] == "/answer" and tags[idx - 1][0] == "answer":
            return tags[idx - 1], tags[idx]
    return None


def _think_range(tags: list, length: int) -> Range | None:
    opened = next((n for n, tag in enumerate(tags) if tag[0] == "think"), None)
    if opened is None:
        return None
    start = tags[opened][2]
    after = tags[opened + 1:]
    closed = next((tag for tag in after if tag[0] == "/think"), None)
    if closed is not None:
        return start, closed[1]
    answer = next((tag for tag in after if tag[0] == "answer"), None)  # unclosed: stop at the answer
    return start, (answer[1] if answer is not None else length)


def find_tag_spans(text: str, tags: list | None = None) -> tuple[Range | None, Range | None]:
    """Character ranges ``[start, end)`` of the think and answer contents of ``text`` (None if absent).

    ``tags``: :func:`verifiers.format.find_tags` of ``text``, if already computed. The think range
    may contain an answer written inside it; :func:`compute_response_spans` removes it.
    """
    tags = find_tags(text) if tags is None else tags
    answer = _answer_tags(tags)
    return _think_range(tags, len(text)), ((answer[0][2], answer[1][1]) if answer is not None else None)


class TokenTexts:
    """Decoded text of each token id, decoded once (in batches) and cached per tokenizer."""

    _shared: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.texts: dict[int, str] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "TokenTexts":
        try:
            table = cls._shared.get(tokenizer)
            if table is None:
                table = cls._shared[tokenizer] = cls(tokenizer)
            return table
        except TypeError:  # tokenizer objects that cannot be weak-referenced
            return cls(tokenizer)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Object array of token texts for ``ids`` (any shape)."""
        unique = np.unique(ids)
        missing = [int(i) for i in unique if int(i) not in self.texts]
        if missing:
            decoded = self.tokenizer.batch_decode([[i] for i in missing], skip_special_tokens=False,
                                                  clean_up_tokenization_spaces=False)
            self.texts.update(zip(missing, decoded))
        table = np.empty(len(unique), dtype=object)
        table[:] = [self.texts[int(i)] for i in unique]
        return table[np.searchsorted(unique, ids)]


def _token_range(starts: np.ndarray, ends: np.ndarray, text: str, lo: int, hi: int) -> tuple[int, int]:
    """Tokens ``[first, last)`` belonging to the character range ``[lo, hi)`` (see module rules)."""
    first = int(np.searchsorted(ends, lo, side="right"))  # first token ending after lo
    last = int(np.searchsorted(starts, hi, side="left"))  # tokens starting before hi
    if first < last and starts[first] < lo and not text[lo:min(ends[first], hi)].strip():
        first += 1
    if first < last and ends[last - 1] > hi and not text[max(starts[last - 1], lo):hi].strip():
        last -= 1
    return first, max(first, last)


def compute_response_spans(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor,
                           empty_span: str = "missing") -> ResponseSpans:
    """Think/answer masks and lengths for a batch of responses.

    tokenizer: a transformers tokenizer (or a :class:`TokenTexts`); response_ids: long [B, L];
    response_mask: [B, L], 1 on response tokens (left-aligned, as verl lays responses out; tokens
    with mask 0 inside the response, e.g. RGR cue tokens, are still part of the text).
    empty_span: ``missing`` (an empty span's length is the response length) or ``zero``
        (care.empty_span, see the module rules).
    """
    if empty_span not in EMPTY_SPAN_RULES:
        raise ValueError(f"empty_span must be one of {EMPTY_SPAN_RULES} (care.empty_span), got {empty_span!r}")
    table = tokenizer if isinstance(tokenizer, TokenTexts) else TokenTexts.for_tokenizer(tokenizer)
    ids = response_ids.detach().cpu().numpy()
    mask = response_mask.detach().cpu().numpy().astype(bool)
    batch, width = ids.shape
    # Response length = up to the last unmasked token, so masked tokens inside the response
    # (tool or cue tokens) keep their place in the text.
    lengths = np.where(mask.any(1), width - np.argmax(mask[:, ::-1], axis=1), 0)
    texts = table.lookup(ids)
    think_mask = np.zeros((batch, width), dtype=bool)
    answer_mask = np.zeros((batch, width), dtype=bool)
    has_think = np.zeros(batch, dtype=bool)
    has_answer = np.zeros(batch, dtype=bool)
    empty_think = np.zeros(batch, dtype=bool)
    empty_answer = np.zeros(batch, dtype=bool)
    for row in range(batch):
        n = int(lengths[row])
        pieces = texts[row, :n]
        text = "".join(pieces)
        if "<" not in text:
            continue
        tags = find_tags(text)
        if not tags:
            continue
        sizes = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=n)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        answer_tags = _answer_tags(tags)
        answer = (answer_tags[0][2], answer_tags[1][1]) if answer_tags is not None else None
        think = _think_range(tags, len(text))
        # The graded answer may lie inside the think span: its text and tags are then not reasoning.
        nested = think is not None and answer_tags is not None and think[0] <= answer_tags[0][1] < think[1]
        for span, out, flag, empty in ((think, think_mask, has_think, empty_think),
                                       (answer, answer_mask, has_answer, empty_answer)):
            if span is None:
                continue
            flag[row] = True
            content = text[span[0]:span[1]]
            if out is think_mask and nested:
                content = text[span[0]:answer_tags[0][1]] + text[answer_tags[1][2]:span[1]]
            if not content.strip():
                empty[row] = True  # blank content: no token of it is reasoning or an answer
                continue
            first, last = _token_range(starts, ends, text, *span)
            out[row, first:last] = True
        if nested:
            inside = (starts >= answer_tags[0][1]) & (ends <= answer_tags[1][2])
            think_mask[row, :n] &= ~(inside | answer_mask[row, :n])
    think_mask &= mask
    answer_mask &= mask
    resp_len = torch.from_numpy(mask.sum(1).astype(np.int64))
    t_think = torch.from_numpy(think_mask.sum(1).astype(np.int64))
    t_ans = torch.from_numpy(answer_mask.sum(1).astype(np.int64))
    has_think_t, has_answer_t = torch.from_numpy(has_think), torch.from_numpy(has_answer)
    counted_think, counted_answer = has_think_t, has_answer_t  # spans whose token count is the length
    if empty_span == "missing":
        counted_think = counted_think & ~torch.from_numpy(empty_think)
        counted_answer = counted_answer & ~torch.from_numpy(empty_answer)
    device = response_ids.device
    return ResponseSpans(
        think_mask=torch.from_numpy(think_mask).to(device),
        answer_mask=torch.from_numpy(answer_mask).to(device),
        think_len=torch.where(counted_think, t_think, resp_len).to(device),
        answer_len=torch.where(counted_answer, t_ans, resp_len).to(device),
        has_think=has_think_t.to(device),
        has_answer=has_answer_t.to(device),
    )
