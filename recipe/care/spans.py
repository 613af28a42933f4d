"""Think and answer spans of responses, from token ids (care-algorithm.md section 1).

The tags are found in decoded text, not by token id, because the same tag is one token in some
vocabularies (Qwen3's ``<think>``) and several in others (Qwen2.5-VL: ``<th`` ``ink`` ``>\\n``), and
models write variants like ``< think >``. Each token's text is decoded once per tokenizer and
cached; a response's text is the concatenation of its tokens' texts, so every character offset
maps back to exactly one token.

Span rules:
* think = tokens strictly between the first ``<think>`` and the next ``</think>``; to the end of
  the response when unclosed.
* answer = tokens strictly between the first ``<answer>`` after the think span (anywhere when there
  is no think span) and the next ``</answer>``; to the end of the response when unclosed (a
  truncated answer is still the answer attempt). No answer when the think span is unclosed.
* A token belongs to a span when it lies inside it, or straddles a tag and carries non-blank
  span text (``>5`` in ``<answer>5``): tag-only and whitespace-only boundary tokens are excluded.
* ``think_len`` / ``answer_len`` are the span token counts, or the response length when the
  rollout has no such span (section 1). An empty but present span has length 0.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ResponseSpans", "TokenTexts", "find_tag_spans", "compute_response_spans"]

THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class ResponseSpans:
    """think_mask, answer_mask: bool [B, L]; think_len, answer_len: long [B]; has_think, has_answer: bool [B]."""

    think_mask: torch.Tensor
    answer_mask: torch.Tensor
    think_len: torch.Tensor
    answer_len: torch.Tensor
    has_think: torch.Tensor
    has_answer: torch.Tensor


def _between(text: str, open_re: re.Pattern, close_re: re.Pattern, start: int) -> tuple[int, int, int | None] | None:
    """(content_start, content_end, end of the close tag or None if unclosed) of the first open tag at/after ``start``."""
    opened = open_re.search(text, start)
    if opened is None:
        return None
    closed = close_re.search(text, opened.end())
    if closed is None:
        return opened.end(), len(text), None
    return opened.end(), closed.start(), closed.end()


def find_tag_spans(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Character ranges ``[start, end)`` of the think and answer contents of ``text`` (None if absent)."""
    think = _between(text, THINK_OPEN, THINK_CLOSE, 0)
    if think is not None and think[2] is None:
        return (think[0], think[1]), None  # an unclosed think swallows the rest
    answer = _between(text, ANSWER_OPEN, ANSWER_CLOSE, think[2] if think else 0)
    return ((think[0], think[1]) if think else None), ((answer[0], answer[1]) if answer else None)


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


def compute_response_spans(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> ResponseSpans:
    """Think/answer masks and lengths for a batch of responses.

    tokenizer: a transformers tokenizer (or a :class:`TokenTexts`); response_ids: long [B, L];
    response_mask: [B, L], 1 on response tokens (left-aligned, as verl lays responses out; tokens
    with mask 0 inside the response, e.g. RGR cue tokens, are still part of the text).
    """
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
    for row in range(batch):
        n = int(lengths[row])
        pieces = texts[row, :n]
        sizes = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=n)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        text = "".join(pieces)
        if "<" not in text:
            continue
        think, answer = find_tag_spans(text)
        for span, out, flag in ((think, think_mask, has_think), (answer, answer_mask, has_answer)):
            if span is not None:
                flag[row] = True
                first, last = _token_range(starts, ends, text, *span)
                out[row, first:last] = True
    think_mask &= mask
    answer_mask &= mask
    resp_len = torch.from_numpy(mask.sum(1).astype(np.int64))
    t_think = torch.from_numpy(think_mask.sum(1).astype(np.int64))
    t_ans = torch.from_numpy(answer_mask.sum(1).astype(np.int64))
    has_think_t, has_answer_t = torch.from_numpy(has_think), torch.from_numpy(has_answer)
    device = response_ids.device
    return ResponseSpans(
        think_mask=torch.from_numpy(think_mask).to(device),
        answer_mask=torch.from_numpy(answer_mask).to(device),
        think_len=torch.where(has_think_t, t_think, resp_len).to(device),
        answer_len=torch.where(has_answer_t, t_ans, resp_len).to(device),
        has_think=has_think_t.to(device),
        has_answer=has_answer_t.to(device),
    )
