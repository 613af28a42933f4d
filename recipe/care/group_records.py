"""Per-group and per-repair records (docs/algorithm.md section 8, ``care.records``), off by default.

The paper's mechanism-signature fit (Pearson r between A_raw(y+)/√K' and the equalisation, R²
per K') is computed over groups, so per-step aggregates cannot reproduce it; the authors' code
writes one record per group and per repair (``care.instrument``). Here:

- :func:`build_group_records` and :func:`build_repair_records` are pure functions of the tensors
  the advantage step already holds (``compute_care_sequence_advantages``'s ``info``, the
  sequence advantages, acc, reflected flags, span lengths, RGR's per-row outcome records);
- :class:`RecordsWriter` appends them as JSON lines (``groups.jsonl``, ``repairs.jsonl``) under
  the run folder; the trainer (``recipe.care.trainer``) calls both, in the driver process.

Cost: the per-row tensors are turned into Python lists once (``tolist``) and sliced per group, and
a step's lines are written with one ``write`` call on a file opened for append (so a run killed
mid-way keeps every finished step, and a resumed run appends), on a background thread
(:meth:`RecordsWriter.submit`). ``benchmarks/bench_records.py`` measures the advantage step with
records on against off.

Group record::

    {"step": 3, "group": "<uid>", "kind": "mixed", "k": 4, "k_prime": 2, "equalize": 1.414,
     "rescue": false, "anchor": 1, "roles": ["negative", "anchor", "none", ...],
     "acc": [0, 1, 1, ...], "reflected": [false, ...], "raw_adv": [...], "adv": [...]}

Every record also carries ``"run"``, the id of the trainer process that wrote it (see
:class:`RecordsWriter`). ``anchor`` indexes the member lists (the pseudo-anchor for a rescue; null when the group has no
subgroup); members are in batch order. Repair record::

    {"step": 3, "group": "<uid>", "triggered": 1, "replaced": 1, "passed": 1, "reason": "",
     "source": 2, "row": 2, "think_len": 31, "answer_len": 2, "scale": 1.0, "adv": 2.0,
     "extra_tokens": 17, "selector": "lexical", "mode": "rederive", "cue": "..."}

``source`` is RGR's index of the failure it chose (rollout order), ``row`` the repaired row's
index in the group record's member lists; ``scale`` is what the advantage step applied to the
repaired rollout: 1 when it passed (a positive keeps A_raw), s_refl when it failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipe.care.care_config import CareConfig
from recipe.care.core_algos import GROUP_KIND_NAMES, ROLE_NAMES

try:  # verl's own JSON writer (its file logger uses it); 5-10x faster than json for these lines
    import orjson

    def _dumps(records: Sequence[Mapping]) -> bytes:
        return b"".join(orjson.dumps(r) + b"\n" for r in records)
except ImportError:  # pragma: no cover - verl installs orjson
    def _dumps(records: Sequence[Mapping]) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in records).encode()

logger = logging.getLogger(__name__)

__all__ = ["RecordsWriter", "GROUPS_FILE", "REPAIRS_FILE", "build_group_records", "build_repair_records"]

GROUPS_FILE, REPAIRS_FILE = "groups.jsonl", "repairs.jsonl"
_ANCHOR_ROLES = (ROLE_NAMES.index("anchor"), ROLE_NAMES.index("rescue_anchor"))
_RESCUE_ANCHOR = ROLE_NAMES.index("rescue_anchor")


@dataclass(frozen=True)
class _Sorted:
    """Rows ordered by group (batch order inside a group): ``order`` [B], and per group its first
    position ``starts`` and size ``counts`` (lists), so each group's members are one slice."""

    order: torch.Tensor
    group_of: torch.Tensor  # [B] group of each sorted row
    pos: torch.Tensor  # [B] index of each sorted row inside its group
    starts: list[int]
    counts: list[int]

    @classmethod
    def of(cls, group_id: torch.Tensor) -> "_Sorted":
        order = torch.sort(group_id, stable=True).indices
        counts = torch.bincount(group_id) if group_id.numel() else torch.zeros(0, dtype=torch.long)
        starts = torch.cumsum(counts, 0) - counts
        group_of = group_id.index_select(0, order)
        pos = torch.arange(order.numel()) - starts.index_select(0, group_of)
        return cls(order, group_of, pos, starts.tolist(), counts.tolist())

    def take(self, values) -> list:
        """Per-row values [B] (tensor or sequence) in sorted order, as a Python list."""
        if isinstance(values, torch.Tensor):
            return values.detach().cpu().index_select(0, self.order).tolist()
        return np.asarray(values, dtype=object)[self.order.numpy()].tolist()

    def per_group(self, mask: torch.Tensor, fill: int = -1) -> list[int]:
        """Index inside its group of the (last) sorted row where ``mask`` is set, per group; ``fill`` if none."""
        out = torch.full((len(self.counts),), fill, dtype=torch.long)
        out[self.group_of[mask]] = self.pos[mask]
        return out.tolist()


# Per-group and per-row Python work is kept to slicing lists built once per step: a step of 1024
# rows costs about a millisecond (benchmarks/bench_records.py).
_ROLE_NAME = np.asarray(ROLE_NAMES, dtype=object)
_KIND_NAME = np.asarray(GROUP_KIND_NAMES, dtype=object)


def build_group_records(step: int, uid: Sequence, seq_adv: torch.Tensor, acc: torch.Tensor,
                        reflected: torch.Tensor, info: Mapping[str, torch.Tensor],
                        config: CareConfig) -> list[dict]:
    """One record per group of the step (see the module docstring).

    uid: [B] group key per row; seq_adv: float [B] final advantages; acc: [B] 0/1; reflected:
    bool [B]; info: ``compute_care_sequence_advantages``'s per-row dict (role, raw_adv, k_prime,
    group_kind, group_id). Rows are the real rows the advantage step saw (no padding).
    """
    rows = _Sorted.of(info["group_id"])
    role = info["role"].index_select(0, rows.order)
    roles = _ROLE_NAME[role.numpy()].tolist()
    anchor = rows.per_group((role == _ANCHOR_ROLES[0]) | (role == _ANCHOR_ROLES[1]))
    rescue = rows.per_group(role == _RESCUE_ANCHOR, fill=-1)
    raw, adv = rows.take(info["raw_adv"].float()), rows.take(seq_adv.float())
    acc_l, refl = rows.take(torch.as_tensor(acc).long()), rows.take(torch.as_tensor(reflected).bool())
    firsts = rows.order[torch.as_tensor(rows.starts, dtype=torch.long)] if rows.starts else rows.order
    keys = np.asarray(uid, dtype=object)[firsts.numpy()].tolist()
    kps = info["k_prime"].index_select(0, firsts).tolist()
    kinds = _KIND_NAME[info["group_kind"].index_select(0, firsts).numpy()].tolist()
    k = int(config.k)
    records = []
    for g, (start, count) in enumerate(zip(rows.starts, rows.counts)):
        end, k_prime = start + count, int(kps[g])
        records.append({
            "step": int(step),
            "group": str(keys[g]),
            "kind": kinds[g],
            "k": k,
            "k_prime": k_prime,
            "equalize": math.sqrt(k / k_prime) if config.equalize and k_prime > 0 else 1.0,
            "rescue": rescue[g] >= 0,
            "anchor": anchor[g] if anchor[g] >= 0 else None,
            "roles": roles[start:end],
            "acc": acc_l[start:end],
            "reflected": refl[start:end],
            "raw_adv": raw[start:end],
            "adv": adv[start:end],
        })
    return records


def build_repair_records(step: int, uid: Sequence, rgr: Sequence[Mapping[str, Any] | None], seq_adv: torch.Tensor,
                         acc: torch.Tensor, reflected: torch.Tensor, think_len: torch.Tensor,
                         answer_len: torch.Tensor, group_id: torch.Tensor, config: CareConfig,
                         rgr_settings: Mapping[str, Any] | None = None) -> list[dict]:
    """One record per RGR repair attempt of the step (groups whose RGR record says ``triggered``).

    rgr: per row, its ``extra_fields["rgr"]`` record (``RGROutcome.record``: the same on every row
    of a group) or None; think_len, answer_len: long [B], the advantage step's span lengths;
    group_id: long [B] (``info["group_id"]``); rgr_settings: what the config says about the repair
    (selector, mode, cue), copied into every record. Empty when RGR is off.
    """
    gids = group_id.tolist()
    outcome_of: dict[int, tuple[int, Mapping]] = {}  # group -> (first row, its outcome)
    for row, outcome in enumerate(rgr):
        if outcome is not None and outcome.get("triggered") and gids[row] not in outcome_of:
            outcome_of[gids[row]] = (row, outcome)
    if not outcome_of:
        return []
    rows = _Sorted.of(group_id)
    refl = torch.as_tensor(reflected).bool()
    repaired_pos = rows.per_group(refl.index_select(0, rows.order))
    repaired_row = {int(g): int(r) for g, r in zip(group_id[refl].tolist(), refl.nonzero().squeeze(1).tolist())}
    settings = dict(rgr_settings or {})
    passed_scale = float(config.reflected_neg_scale)
    acc_l, adv_l = torch.as_tensor(acc).tolist(), seq_adv.detach().float().cpu().tolist()
    think_l, answer_l = think_len.tolist(), answer_len.tolist()
    records = []
    for g in sorted(outcome_of):
        first, outcome = outcome_of[g]
        source = int(outcome.get("source", -1))
        record = {
            "step": int(step),
            "group": str(uid[first]),
            "triggered": int(outcome.get("triggered", 0)),
            "replaced": int(outcome.get("replaced", 0)),
            "passed": int(outcome.get("success", 0)),
            "reason": str(outcome.get("reason") or ""),
            "source": source if source >= 0 else None,
            "row": None, "think_len": None, "answer_len": None, "scale": None, "adv": None,
            "extra_tokens": int(outcome.get("extra_tokens", 0)),
            **settings,
        }
        if g in repaired_row:
            row = repaired_row[g]
            passed = bool(acc_l[row])
            record.update(passed=int(passed), row=repaired_pos[g], think_len=int(think_l[row]),
                          answer_len=int(answer_l[row]), scale=1.0 if passed else passed_scale, adv=adv_l[row])
        records.append(record)
    return records


class RecordsWriter:
    """Appends a step's records as JSON lines to ``<directory>/groups.jsonl`` and ``repairs.jsonl``.

    :meth:`submit` builds and writes a step's records on one background thread, so the training
    step only pays for handing over references (the tensors it passes are not modified afterwards);
    the next ``submit`` first waits for the previous step's (long done: a step takes minutes), and
    :meth:`close` waits for the last. A failure is logged, never raised into training.

    Every record gets ``"run"``: an id of this writer (one per trainer process). A run that crashed
    after writing step N and resumed from an earlier checkpoint writes step N again; readers keep,
    per step, only the records of the last writer that wrote it.
    """

    def __init__(self, directory: str | os.PathLike, run_id: str | None = None, background: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="care-records") if background else None
        self._pending: Future | None = None

    def write(self, name: str, records: Sequence[Mapping]) -> None:
        if not records:
            return
        for record in records:
            record["run"] = self.run_id
        # one open + one write per step: a killed run loses at most the step being written
        with open(self.directory / name, "ab") as fh:
            fh.write(_dumps(records))

    def submit(self, build: Callable[..., Mapping[str, Sequence[Mapping]]], /, **kwargs) -> None:
        """Write ``build(**kwargs)`` ({file name: records}) off the caller's thread."""
        def job() -> None:
            for name, records in build(**kwargs).items():
                self.write(name, records)

        if self._pool is None:
            job()
            return
        self.flush()
        self._pending = self._pool.submit(job)

    def flush(self) -> None:
        """Wait until the submitted step is written."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.exception() is not None:
            logger.error("care.records: a step's records were not written", exc_info=pending.exception())

    def close(self) -> None:
        self.flush()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
