"""Think/answer spans computed once per rollout, in the rollout workers, and rebuilt on the driver.

:func:`recipe.care.spans.compute_response_spans` decodes every token of a response, which costs
about 0.2 ms per response of ~870 Qwen2.5 tokens. On the trainer's driver, the one serial process
of a job, that is ~0.9 s per call on a 4096-row step, more than ten times verl's whole GRPO
estimator. So the CARE agent-loop worker (:mod:`recipe.care.agent_loop`) computes each rollout's
spans where the rollout is produced (many processes, overlapped with generation) and stores a
compact record in the row's ``extra_fields`` (which already travels to the trainer with the reward
info). The trainer rebuilds the masks and lengths from the records with a few vectorised tensor
operations (:func:`spans_from_records`), for the pool mask of the think-embedding pass and for the
advantage step alike: no response is decoded on the driver.

A record is 8 ints ``[think_start, think_end, answer_start, answer_end, think_len, answer_len,
has_think, has_answer]``: each span is the token range ``[start, end)`` covering the span, the
span mask is that range AND the response mask (inserted tokens such as RGR's cue are masked out
inside the range exactly as :func:`compute_response_spans` masks them), and the lengths and flags
are :func:`compute_response_spans`' own, so its rules (see :mod:`recipe.care.spans`) stay the
single source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recipe.care.spans import ResponseSpans, compute_response_spans

__all__ = ["SPANS_KEY", "RECORD_WIDTH", "span_records", "spans_from_records", "records_of", "pool_mask_from_records"]

SPANS_KEY = "care_spans"  # extra_fields key of a row's span record
RECORD_WIDTH = 8


def _range(mask_row: np.ndarray) -> tuple[int, int]:
    hits = np.flatnonzero(mask_row)
    return (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, 0)


def span_records(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor,
                 empty_span: str = "missing") -> list[list[int]]:
    """One record per row of a ``[B, L]`` batch (see the module docstring); lengths by ``empty_span``
    (care.empty_span)."""
    if response_ids.shape[1] == 0:  # empty responses: no span, lengths 0 (= the response length)
        return [[0] * RECORD_WIDTH for _ in range(response_ids.shape[0])]
    spans = compute_response_spans(tokenizer, response_ids, response_mask, empty_span=empty_span)
    think, answer = spans.think_mask.cpu().numpy(), spans.answer_mask.cpu().numpy()
    records = []
    for row in range(think.shape[0]):
        records.append([*_range(think[row]), *_range(answer[row]), int(spans.think_len[row]),
                        int(spans.answer_len[row]), int(spans.has_think[row]), int(spans.has_answer[row])])
    return records


def records_of(extra_fields: Sequence) -> list | None:
    """The span record of every row, or None when any row lacks one (then spans are computed on the driver)."""
    records = []
    for fields in extra_fields:
        record = (fields or {}).get(SPANS_KEY)
        if record is None or len(record) != RECORD_WIDTH:
            return None
        records.append(record)
    return records


def spans_from_records(records: Sequence[Sequence[int]], response_mask: torch.Tensor) -> ResponseSpans:
    """The :class:`ResponseSpans` of a ``[B, L]`` batch from its rows' records (no decoding)."""
    table = torch.as_tensor(np.asarray(records, dtype=np.int64).reshape(-1, RECORD_WIDTH))
    batch, width = response_mask.shape
    if table.shape[0] != batch:
        raise ValueError(f"{table.shape[0]} span records for {batch} rows")
    positions = torch.arange(width).unsqueeze(0)
    produced = response_mask.bool().cpu()

    def mask(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        return (positions >= start.unsqueeze(1)) & (positions < end.unsqueeze(1)) & produced

    device = response_mask.device
    return ResponseSpans(
        think_mask=mask(table[:, 0], table[:, 1]).to(device),
        answer_mask=mask(table[:, 2], table[:, 3]).to(device),
        think_len=table[:, 4].to(device),
        answer_len=table[:, 5].to(device),
        has_think=table[:, 6].bool().to(device),
        has_answer=table[:, 7].bool().to(device),
    )


def pool_mask_from_records(records: Sequence[Sequence[int]], response_mask: torch.Tensor) -> torch.Tensor:
    """int64 0/1 pool mask of each row (think span, else the whole produced response), shaped like
    ``response_mask``: a jagged nested tensor is processed on its values only (no padded ``[B, L]``
    copy and no re-nesting), a padded one as is. Same result as
    ``response_pool_mask(spans.think_mask, spans.has_think, response_mask)``."""
    table = torch.as_tensor(np.asarray(records, dtype=np.int64).reshape(-1, RECORD_WIDTH))
    start, end = table[:, 0], torch.where(table[:, 6].bool(), table[:, 1], table[:, 0])  # no think: empty range
    if not response_mask.is_nested:
        positions = torch.arange(response_mask.shape[1]).unsqueeze(0)
        produced = response_mask.bool()
        think = (positions >= start.unsqueeze(1)) & (positions < end.unsqueeze(1)) & produced
        return torch.where(think.any(1, keepdim=True), think, produced).long()
    offsets = response_mask.offsets()
    lengths = offsets.diff()
    if table.shape[0] != len(lengths):
        raise ValueError(f"{table.shape[0]} span records for {len(lengths)} rows")
    owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    positions = torch.arange(int(offsets[-1])) - offsets[:-1][owner]
    produced = response_mask.values().bool()
    think = (positions >= start[owner]) & (positions < end[owner]) & produced
    has = torch.zeros(len(lengths), dtype=torch.long).index_add_(0, owner, think.long()) > 0
    values = torch.where(has[owner], think, produced).long()
    return torch.nested.nested_tensor_from_jagged(values, offsets)
