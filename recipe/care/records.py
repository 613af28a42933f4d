"""Per-group and per-repair records (care-algorithm.md section 8, ``care.records``), off by default.

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
mid-way keeps every finished step, and a resumed run appends). ``benchmarks/bench_records.py``
measures the advantage step with records on against off.

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
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from recipe.care.core_algos import GROUP_KIND_NAMES, ROLE_NAMES, CareConfig

try:  # verl's own JSON writer (its file logger uses it); 5-10x faster than json for these lines
    import orjson

    def _dumps(records: Sequence[Mapping]) -> bytes:
        return b"".join(orjson.dumps(r) + b"\n" for r in records)
except ImportError:  # pragma: no cover - verl installs orjson
    def _dumps(records: Sequence[Mapping]) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in records).encode()

__all__ = ["RecordsConfig", "RecordsWriter", "GROUPS_FILE", "REPAIRS_FILE", "DEFAULT_SUBDIR",
           "build_group_records", "build_repair_records"]

GROUPS_FILE, REPAIRS_FILE = "groups.jsonl", "repairs.jsonl"
DEFAULT_SUBDIR = "care_records"
_ANCHOR_ROLES = (ROLE_NAMES.index("anchor"), ROLE_NAMES.index("rescue_anchor"))
_RESCUE_ANCHOR = ROLE_NAMES.index("rescue_anchor")


@dataclass(frozen=True)
class RecordsConfig:
    """The ``care.records`` block.

    enable: write the records (off by default).
    dir: where; null = ``<trainer.default_local_dir>/care_records`` (the run folder verl
        checkpoints into, so a resumed run appends to the same files).
    """

    enable: bool = False
    dir: str | None = None

    @classmethod
    def from_config(cls, block) -> "RecordsConfig":
        if block is None:
            return cls()
        if hasattr(block, "items") and not isinstance(block, dict):  # DictConfig
            from omegaconf import OmegaConf

            block = OmegaConf.to_container(block, resolve=True)
        data = dict(block)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) care.records.{', care.records.'.join(unknown)}; known: {', '.join(known)}")
        return cls(**data)

    def directory(self, run_dir: str | os.PathLike) -> Path:
        return Path(self.dir) if self.dir else Path(run_dir) / DEFAULT_SUBDIR


def _group_slices(group_id: torch.Tensor) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows ordered by group (batch order inside a group) and each group's [start, end) in that order."""
    order = torch.sort(group_id, stable=True).indices
    counts = torch.bincount(group_id).tolist() if group_id.numel() else []
    bounds, start = [], 0
    for count in counts:
        bounds.append((start, start + count))
        start += count
    return order.tolist(), bounds


def build_group_records(step: int, uid: Sequence, seq_adv: torch.Tensor, acc: torch.Tensor,
                        reflected: torch.Tensor, info: Mapping[str, torch.Tensor],
                        config: CareConfig) -> list[dict]:
    """One record per group of the step (see the module docstring).

    uid: [B] group key per row; seq_adv: float [B] final advantages; acc: [B] 0/1; reflected:
    bool [B]; info: ``compute_care_sequence_advantages``'s per-row dict (role, raw_adv, k_prime,
    group_kind, group_id). Rows are the real rows the advantage step saw (no padding).
    """
    order, bounds = _group_slices(info["group_id"])
    roles = info["role"].tolist()
    raw = info["raw_adv"].float().tolist()
    adv = seq_adv.detach().float().cpu().tolist()
    acc_l = torch.as_tensor(acc).long().tolist()
    refl = torch.as_tensor(reflected).bool().tolist()
    kp = info["k_prime"].tolist()
    kind = info["group_kind"].tolist()
    uid = list(uid)
    k = int(config.k)
    records = []
    for start, end in bounds:
        rows = order[start:end]
        first = rows[0]
        member_roles = [roles[r] for r in rows]
        anchor = next((i for i, role in enumerate(member_roles) if role in _ANCHOR_ROLES), None)
        k_prime = int(kp[first])
        records.append({
            "step": int(step),
            "group": str(uid[first]),
            "kind": GROUP_KIND_NAMES[kind[first]],
            "k": k,
            "k_prime": k_prime,
            "equalize": math.sqrt(k / k_prime) if config.equalize and k_prime > 0 else 1.0,
            "rescue": anchor is not None and member_roles[anchor] == _RESCUE_ANCHOR,
            "anchor": anchor,
            "roles": [ROLE_NAMES[role] for role in member_roles],
            "acc": [acc_l[r] for r in rows],
            "reflected": [refl[r] for r in rows],
            "raw_adv": [raw[r] for r in rows],
            "adv": [adv[r] for r in rows],
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
    if not any(isinstance(r, Mapping) and r.get("triggered") for r in rgr):
        return []
    order, bounds = _group_slices(group_id)
    adv = seq_adv.detach().float().cpu().tolist()
    acc_l = torch.as_tensor(acc).long().tolist()
    refl = torch.as_tensor(reflected).bool().tolist()
    t_think, t_ans = think_len.tolist(), answer_len.tolist()
    settings = dict(rgr_settings or {})
    records = []
    for start, end in bounds:
        rows = order[start:end]
        outcome = next((rgr[r] for r in rows if isinstance(rgr[r], Mapping)), None)
        if not outcome or not outcome.get("triggered"):
            continue
        pos = next((i for i, r in enumerate(rows) if refl[r]), None)
        record = {
            "step": int(step),
            "group": str(uid[rows[0]]),
            "triggered": int(outcome.get("triggered", 0)),
            "replaced": int(outcome.get("replaced", 0)),
            "passed": int(outcome.get("success", 0)),
            "reason": str(outcome.get("reason") or ""),
            "source": outcome["source"] if int(outcome.get("source", -1)) >= 0 else None,
            "row": pos,
            "think_len": None, "answer_len": None, "scale": None, "adv": None,
            "extra_tokens": int(outcome.get("extra_tokens", 0)),
            **settings,
        }
        if pos is not None:
            row = rows[pos]
            passed = bool(acc_l[row])
            record.update(passed=int(passed), think_len=int(t_think[row]), answer_len=int(t_ans[row]),
                          scale=1.0 if passed else float(config.reflected_neg_scale), adv=adv[row])
        records.append(record)
    return records


class RecordsWriter:
    """Appends a step's records as JSON lines to ``<directory>/groups.jsonl`` and ``repairs.jsonl``.

    Every record gets ``"run"``: an id of this writer (one per trainer process). A run that crashed
    after writing step N and resumed from an earlier checkpoint writes step N again; readers keep,
    per step, only the records of the last writer that wrote it.
    """

    def __init__(self, directory: str | os.PathLike, run_id: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

    def write(self, name: str, records: Sequence[Mapping]) -> None:
        if not records:
            return
        for record in records:
            record["run"] = self.run_id
        # one open + one write per step: a killed run loses at most the step being written
        with open(self.directory / name, "ab") as fh:
            fh.write(_dumps(records))
