"""The ``care_sync`` trainer: verl 0.9.1's v1 sync trainer with CARE's advantage step.

verl's registered advantage estimators only see rewards, masks and group ids; CARE also needs
verifier correctness, think/answer spans, think embeddings and old log-probs. So this trainer

- swaps in :class:`recipe.care.think_embedding_tap.CareActorRolloutRefWorker` (``_init_resource_pool_mgr``);
- in ``_compute_old_log_prob`` rebuilds each response's think span from the span record the CARE
  agent-loop worker stored with the rollout (``recipe.care.span_records``; decoded here only for
  rows without one), writes the pooling mask to TransferQueue and asks the actor for ``think_emb`` in the same
  forward pass that computes the old log-probs (no extra model pass);
- owns ``_compute_advantage`` in three steps: read the batch into plain tensors
  (:func:`read_advantage_inputs`), compute CARE sequence advantages spread over tokens by region
  weights (:func:`recipe.care.core_algos.compute_care_advantages`, pure), and the step's metrics
  (:func:`advantage_step_metrics`); written back as ``advantages``/``returns``, balance-padding rows
  get zeros;
- logs docs/algorithm.md section 8 diagnostics and per-``data_source`` accuracy/format rate;
- with ``care.records.enable``, writes per-group / per-repair JSON lines (``recipe.care.group_records``);
- adds ``val-core/macro/acc`` over the six benchmarks to validation (``recipe.care.bench_metrics``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf, open_dict
from tensordict import TensorDict

from recipe.care import checkpoints, fault_points
from recipe.care.bench_metrics import macro_benchmark_metrics
from recipe.care.care_config import CareConfig
from recipe.care.config_loader import care_config_of
from recipe.care.core_algos import compute_care_advantages
from recipe.care.dataset import SKIPPED_KEY, row_id
from recipe.care.group_records import GROUPS_FILE, REPAIRS_FILE, RecordsWriter, build_group_records, build_repair_records
from recipe.care.metrics import care_advantage_metrics, data_source_metrics
from recipe.care.notices import notice
from recipe.care.reward_manager import FAILED_KEY
from recipe.care.rgr import rgr_step_metrics
from recipe.care.span_records import SPANS_KEY, pool_mask_from_records, records_of, spans_from_records
from recipe.care.spans import ResponseSpans, compute_response_spans
from recipe.care.think_embedding import response_pool_mask
from recipe.care.think_embedding_tap import EMB_FLAG, POOL_MASK, THINK_EMB, CareActorRolloutRefWorker
from recipe.care.verl_compat import require_verl_attr
from verifiers import GOLD_UNPARSEABLE

# Written against verl 0.9.1.
PPOTrainerSync = require_verl_attr("verl.trainer.ppo.v1.trainer_sync", "PPOTrainerSync")
register_trainer = require_verl_attr("verl.trainer.ppo.v1.trainer_base", "register_trainer")
Role = require_verl_attr("verl.trainer.ppo.utils", "Role")
response_to_nested = require_verl_attr("verl.workers.utils.padding", "response_to_nested")

logger = logging.getLogger(__name__)

TRAINER_NAME = "care_sync"
BASELINE_TRAINER_NAME = "care_baseline_sync"  # ALGO=grpo|dapo|gspo: verl's sync trainer + the benchmark macro
ACC_KEY, FORMAT_KEY, REFLECTED_KEY = "acc", "format", "reflected"
DATA_SOURCE = "data_source"
REQUIRED_FIELDS = ["uid", "response_mask", "rm_scores", "old_log_probs", "extra_fields"]
ADVANTAGE_FIELDS = [*REQUIRED_FIELDS, THINK_EMB, DATA_SOURCE]
UNKNOWN_SOURCE = "unknown"
_ACTOR_ROLES = ("Actor", "ActorRollout", "ActorRolloutRef")


class MissingRewardInfo(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _column(data: TensorDict, key: str) -> list:
    value = data.get(key)
    # A NonTensorStack's tolist() goes through tensorclass attribute access per row (~7 us each,
    # 0.03 s per column of a 4096-row step on the driver); its rows' payloads are read directly
    # when they have the layout of tensordict<=0.10 (verl 0.9.1's pin), else through tolist().
    rows = getattr(value, "tensordicts", None)
    if rows is not None:
        try:
            return [row._non_tensordict["data"] for row in rows]
        except (AttributeError, KeyError, TypeError):
            pass
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _padded(tensor: torch.Tensor) -> torch.Tensor:
    return torch.nested.to_padded_tensor(tensor, 0) if tensor.is_nested else tensor


def read_reward_info(extra_fields: list, keys: list | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """acc (long [B]), format (float [B] or None when any row lacks it), reflected (bool [B])."""
    acc, fmt, reflected = [], [], []
    for row, fields in enumerate(extra_fields):
        fields = fields or {}
        info = fields.get("reward_extra_info") or {}
        if ACC_KEY not in info:
            where = f"row {keys[row]!r}" if keys else f"row {row}"
            raise MissingRewardInfo(
                f"CARE needs the verifier's correctness `acc` (0/1) in the reward's extra info, and {where} has "
                f"none (keys: {sorted(info)}). Use CARE's reward manager: reward.reward_manager.name=care "
                f"(recipe/care/reward_manager.py)."
            )
        value = float(np.asarray(info[ACC_KEY]).item())
        if value not in (0.0, 1.0):
            raise ValueError(f"`acc` must be 0 or 1 (verifier correctness), got {value} at row {row}")
        acc.append(int(value))
        fmt.append(info.get(FORMAT_KEY))
        reflected.append(bool(fields.get(REFLECTED_KEY, False)))
    fmt_tensor = None if any(f is None for f in fmt) else torch.tensor([float(np.asarray(f).item()) for f in fmt])
    return torch.tensor(acc, dtype=torch.long), fmt_tensor, torch.tensor(reflected, dtype=torch.bool)


def pool_mask_field(data: TensorDict, tokenizer, fetch_responses) -> torch.Tensor:
    """The nested ``care_pool_mask`` field for a batch read with ``response_mask`` and ``extra_fields``:
    from the rows' span records (on the jagged values, nothing decoded), else by decoding the
    responses (``fetch_responses()``) on the driver, with a warning."""
    response_mask = data["response_mask"]
    extra_fields = _column(data, "extra_fields") if "extra_fields" in data.keys() else None
    records = records_of(extra_fields) if extra_fields is not None else None
    if records is not None:
        pool = pool_mask_from_records(records, response_mask)
        return pool if pool.is_nested else response_to_nested(pool, response_mask)
    logger.warning("rows without span records (%s): decoding spans on the driver; use the CARE agent-loop "
                   "manager (recipe/care/config/rgr.yaml) to compute them in the rollout workers", SPANS_KEY)
    return response_to_nested(pool_masks_for(fetch_responses(), response_mask, tokenizer), response_mask)


def batch_spans(responses: torch.Tensor | None, response_mask: torch.Tensor, tokenizer,
                extra_fields: list | None = None, rows=slice(None), empty_span: str = "missing"):
    """Think/answer spans of a batch: rebuilt from the rows' span records (written by the CARE agent-loop
    worker, :mod:`recipe.care.span_records`) when every row has one, else decoded here on the driver
    (``responses[rows]``; ``response_mask`` and ``extra_fields`` are already those rows'). A record's
    lengths follow the ``care.empty_span`` rule the worker read from the same config; ``empty_span``
    applies to decoded rows."""
    response_mask = _padded(response_mask)
    records = records_of(extra_fields) if extra_fields is not None else None
    if records is not None:
        return spans_from_records(records, response_mask)
    if responses is None:
        raise ValueError("rows without span records need their `responses` to decode spans")
    return compute_response_spans(tokenizer, _padded(responses)[rows], response_mask, empty_span=empty_span)


def _nested_like(padded: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``padded`` [B, L] (left-aligned rows) as a jagged nested tensor with ``like``'s row lengths: the
    result of verl's ``response_to_nested``, built with one masked select instead of a loop over rows."""
    if not like.is_nested:
        return response_to_nested(padded, like)
    offsets = like.offsets()
    keep = torch.arange(padded.shape[1]).unsqueeze(0) < offsets.diff().unsqueeze(1)
    return torch.nested.nested_tensor_from_jagged(padded[keep], offsets)


def _row_sums(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [B] per-row sums of a [B, L] field (times ``weights``), padded or nested; a nested field is
    summed over its jagged values, without building the padded [B, L] copy."""
    if values.is_nested and (weights is None or weights.is_nested):
        flat = values.values().float()
        if weights is not None:
            flat = flat * weights.values().float()
        return torch.segment_reduce(flat, "sum", lengths=values.offsets().diff(), initial=0.0)
    dense = _padded(values).float()
    return (dense * _padded(weights).float()).sum(-1) if weights is not None else dense.sum(-1)


def pool_masks_for(responses: torch.Tensor | None, response_mask: torch.Tensor, tokenizer,
                   extra_fields: list | None = None) -> torch.Tensor:
    """The 0/1 [B, L] response positions pooled into each think embedding (think span, else response)."""
    spans = batch_spans(responses, response_mask, tokenizer, extra_fields)
    return response_pool_mask(spans.think_mask, spans.has_think, _padded(response_mask)).to(torch.int64)


def fetch_data_sources(keys: list, partition_id: str) -> list:
    """``data_source`` per key, ``None`` where a row has none.

    TransferQueue 0.1.11's ``kv_batch_get`` silently leaves a field out of the whole result when
    any requested row lacks it (no error), so one such row would hide every row's source. Halving
    finds the rows that lack it with O(missing * log B) gets; only called when that happened.
    """
    data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=[DATA_SOURCE])
    if DATA_SOURCE in data.keys():
        return _column(data, DATA_SOURCE)
    if len(keys) == 1:
        return [None]
    mid = len(keys) // 2
    return fetch_data_sources(keys[:mid], partition_id) + fetch_data_sources(keys[mid:], partition_id)


SKIPPED_ROWS_METRIC = "data/skipped_rows"
FAILED_SAMPLES_METRIC = "reward/failed_samples"
REASON_METRIC_PREFIX = "reward/reason/"
MAX_LOGGED_IDS = 50


def skipped_rows_of(extra_infos: list) -> list[dict]:
    """The dataset's skip records (``extra_info["care_skipped"]``, :mod:`recipe.care.dataset`) of a batch's rows."""
    return [record for info in extra_infos if isinstance(info, dict) for record in (info.get(SKIPPED_KEY) or ())]


def _reward_info(fields) -> dict:
    return ((fields or {}).get("reward_extra_info") or {}) if isinstance(fields, dict) else {}


def failed_reward_rows(extra_fields: list, uid) -> np.ndarray:
    """bool [B]: rows whose reward could not be graded (``failed`` in the reward's extra info, see
    :mod:`recipe.care.reward_manager`), plus every row of a group (``uid`` [B]) in which any row's gold is
    unparseable: the gold is the group's, so no rollout of it is a verdict (and no all-wrong rescue)."""
    infos = [_reward_info(f) for f in extra_fields]
    failed = np.array([bool(float(np.asarray(i.get(FAILED_KEY, 0)).item())) for i in infos], dtype=bool)
    bad_gold = {u for u, i in zip(uid, infos, strict=True) if i.get("reason") == GOLD_UNPARSEABLE}
    if bad_gold:
        failed |= np.array([u in bad_gold for u in uid], dtype=bool)
    return failed


def reward_failure_metrics(extra_fields: list, failed: np.ndarray, data_source: list) -> dict[str, float]:
    """``reward/failed_samples`` (count, and per source ``reward/failed_samples/<source>``) and the share
    of each verifier ``reason`` among the rows (``reward/reason/<reason>``), over the rows given."""
    metrics = {FAILED_SAMPLES_METRIC: float(failed.sum())}
    sources = [UNKNOWN_SOURCE if s is None else str(s) for s in data_source]
    for source in sorted(set(sources)):
        metrics[f"{FAILED_SAMPLES_METRIC}/{source}"] = float(sum(f for f, s in zip(failed, sources) if s == source))
    reasons = [str(_reward_info(f).get("reason", "")) or "none" for f in extra_fields]
    for reason in sorted(set(reasons)):
        metrics[REASON_METRIC_PREFIX + reason] = reasons.count(reason) / len(reasons)
    return metrics


def failed_row_names(extra_fields: list, failed: np.ndarray, data_source: list) -> list[str]:
    """``id=<id> source=<source> reason=<reason>`` of each failed row, for the step's log line."""
    return [f"id={row_id((fields or {}).get('extra_info'))} source={source} reason={_reward_info(fields).get('reason')}"
            for fields, bad, source in zip(extra_fields, failed, data_source, strict=True) if bad]


def masked_rows(response_mask: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """``response_mask`` [B, L] (nested or padded) with the ``rows`` (bool [B]) zeroed, same layout."""
    drop = torch.from_numpy(np.asarray(rows, dtype=bool))
    if response_mask.is_nested:
        lengths = response_mask.offsets().diff()
        keep = torch.repeat_interleave(~drop, lengths).to(response_mask.dtype)
        return torch.nested.nested_tensor_from_jagged(response_mask.values() * keep, response_mask.offsets())
    return response_mask * (~drop).to(response_mask.dtype).unsqueeze(-1)


@dataclass(frozen=True)
class AdvantageInputs:
    """What the advantage step reads off one batch, as plain tensors over its R real rows.

    uid: object [R] group ids; rewards, logp_sum: float [R] (reward and old log-prob sums over the
    response); response_len: long [R]; acc: long [R] 0/1; fmt: float [R] or None; reflected: bool [R];
    think_emb: float [R, H]; response_mask: [R, L]; spans: the rows' think/answer spans ([R, L]
    masks, [R] lengths); data_source: [R], None for a row without one; rgr: [R] RGR records (or
    None). For the write-back: rows, the real rows' positions in the batch (a slice when every
    row is real); response_mask_nested, the batch's own [B, L] mask (nested or padded).
    """

    uid: np.ndarray
    rewards: torch.Tensor
    acc: torch.Tensor
    fmt: torch.Tensor | None
    reflected: torch.Tensor
    think_emb: torch.Tensor
    logp_sum: torch.Tensor
    response_len: torch.Tensor
    response_mask: torch.Tensor
    spans: ResponseSpans
    data_source: list
    rgr: list
    rows: torch.Tensor | slice
    response_mask_nested: torch.Tensor
    failed_rows: int = 0  # real rows left out because their reward could not be graded

    @property
    def batch_size(self) -> int:
        return self.response_mask_nested.shape[0]

    def care_arguments(self) -> dict:
        """The keyword arguments of :func:`recipe.care.core_algos.compute_care_advantages`."""
        return dict(rewards=self.rewards, acc=self.acc, index=self.uid, think_len=self.spans.think_len,
                    answer_len=self.spans.answer_len, think_emb=self.think_emb, logp_sum=self.logp_sum,
                    response_len=self.response_len, think_mask=self.spans.think_mask,
                    answer_mask=self.spans.answer_mask, response_mask=self.response_mask, reflected=self.reflected)


def read_advantage_inputs(
    data: TensorDict,
    is_padding: np.ndarray,
    tokenizer,
    empty_span: str = "missing",
    keys: list | None = None,
    data_source: list | None = None,
    fetch_responses=None,
    failed: np.ndarray | None = None,
) -> AdvantageInputs:
    """The advantage step's inputs for one batch as read from TransferQueue (fields :data:`ADVANTAGE_FIELDS`).

    Padding rows (``is_padding``) and rows whose reward failed (``failed``, bool [B]) are left out. ``data_source`` (one per row, ``None`` for a row
    without one) overrides the batch's column. Spans come from the rows' span records; only when a
    row has none are the responses decoded (``data["responses"]``, else ``fetch_responses()``), with
    the ``care.empty_span`` rule ``empty_span``.
    """
    if THINK_EMB not in data.keys():
        raise KeyError(
            f"`{THINK_EMB}` is missing: the care_sync trainer takes it from the old-log-prob pass "
            f"(CareActorRolloutRefWorker); was algorithm.rollout_correction.bypass_mode enabled?"
        )
    missing = [f for f in REQUIRED_FIELDS if f not in data.keys()]
    if missing:
        raise KeyError(
            f"the batch read from TransferQueue has no {missing}: TransferQueue leaves a field out of "
            f"kv_batch_get when any row of the batch lacks it; every rollout row needs {REQUIRED_FIELDS}."
        )
    response_mask_nested = data["response_mask"]
    response_mask = _padded(response_mask_nested)
    batch = response_mask.shape[0]
    is_padding = np.asarray(is_padding, dtype=bool)
    failed = np.zeros_like(is_padding) if failed is None else np.asarray(failed, dtype=bool) & ~is_padding
    real = torch.from_numpy(~(is_padding | failed))
    rows = real.nonzero().squeeze(-1)
    row_list = rows.tolist()
    # Without balance padding (the usual case) every row is real: no [B, L] copies for the selection.
    sel = slice(None) if len(row_list) == batch else rows

    uid = np.asarray(_column(data, "uid"), dtype=object)
    extra_fields = _column(data, "extra_fields")
    if data_source is None:
        data_source = _column(data, DATA_SOURCE) if DATA_SOURCE in data.keys() else [None] * batch
    if len(data_source) != batch:
        raise ValueError(f"{len(data_source)} data sources for {batch} rows")
    row_keys = [keys[i] for i in row_list] if keys else None
    real_extra = [extra_fields[i] for i in row_list]
    acc, fmt, reflected = read_reward_info(real_extra, row_keys)

    rewards = _row_sums(data["rm_scores"])
    logp_sum = _row_sums(data["old_log_probs"], response_mask_nested)
    response_len = _row_sums(response_mask_nested).long()
    think_emb = data[THINK_EMB]
    think_emb = torch.stack(list(think_emb.unbind())) if think_emb.is_nested else think_emb

    real_mask = response_mask[sel]
    # responses are only decoded here when some row has no span record (see batch_spans)
    responses = None
    if records_of(real_extra) is None:
        if "responses" in data.keys():
            responses = data["responses"]
        elif fetch_responses is not None:
            responses = fetch_responses()
        else:
            raise KeyError(f"rows without span records (`{SPANS_KEY}`) need `responses` to decode their spans")
    spans = batch_spans(responses, real_mask, tokenizer, real_extra, rows=sel, empty_span=empty_span)
    return AdvantageInputs(
        uid=uid[rows.numpy()], rewards=rewards[sel], acc=acc, fmt=fmt, reflected=reflected,
        think_emb=think_emb[sel].float(), logp_sum=logp_sum[sel], response_len=response_len[sel],
        response_mask=real_mask, spans=spans, data_source=[data_source[i] for i in row_list],
        rgr=[(e or {}).get("rgr") for e in real_extra], rows=sel, response_mask_nested=response_mask_nested,
        failed_rows=int(failed.sum()),
    )


def advantage_step_metrics(inputs: AdvantageInputs, seq_adv: torch.Tensor, token_adv: torch.Tensor,
                           info: dict[str, torch.Tensor], config: CareConfig) -> dict[str, float]:
    """The step's metrics: section-8 diagnostics, per-``data_source`` accuracy/format (rows without a
    source as ``unknown``), the padding / source-less / reflected row counts and RGR's ``rgr/*``."""
    metrics = care_advantage_metrics(seq_adv, token_adv, inputs.acc, info, k=config.k)
    sources = [UNKNOWN_SOURCE if s is None else s for s in inputs.data_source]
    metrics.update(data_source_metrics(sources, inputs.acc, inputs.fmt))
    metrics["care/padding_rows"] = float(inputs.batch_size - len(inputs.acc) - inputs.failed_rows)
    metrics["care/rows_without_data_source"] = float(sum(s is None for s in inputs.data_source))
    metrics["care/reflected_rows"] = float(inputs.reflected.sum())
    # RGR reports per group through the rows' extra fields (verl 0.9.1's v1 trainer collects no
    # agent-loop metrics); rgr_step_metrics de-duplicates groups, so padding copies do not count.
    metrics.update(rgr_step_metrics(inputs.rgr))
    return metrics


def advantage_fields(inputs: AdvantageInputs, token_adv: torch.Tensor) -> TensorDict:
    """The nested ``advantages``/``returns`` [B, L] to write back; padding rows get zeros."""
    batch = inputs.batch_size
    if isinstance(inputs.rows, slice):
        advantages = token_adv.float()
    else:
        advantages = torch.zeros(batch, inputs.response_mask.shape[1], dtype=torch.float32)
        advantages[inputs.rows] = token_adv.float()
    # verl's GRPO path writes returns = advantages too (two tensors, as here).
    nested = _nested_like(advantages, inputs.response_mask_nested)
    returns = (torch.nested.nested_tensor_from_jagged(nested.values().clone(), nested.offsets()) if nested.is_nested
               else nested.clone())
    return TensorDict({"advantages": nested, "returns": returns}, batch_size=batch)


def compute_care_advantage_fields(
    data: TensorDict,
    is_padding: np.ndarray,
    tokenizer,
    config: CareConfig,
    keys: list | None = None,
    data_source: list | None = None,
    write_records: Callable[..., None] | None = None,
    fetch_responses=None,
    failed: np.ndarray | None = None,
) -> tuple[TensorDict, dict[str, float]]:
    """CARE advantages for one batch as read from TransferQueue: read (:func:`read_advantage_inputs`),
    compute (:func:`recipe.care.core_algos.compute_care_advantages`), metrics
    (:func:`advantage_step_metrics`).

    Returns the nested ``advantages``/``returns`` to write back and the step's CARE metrics.
    Padding rows (``is_padding``) and rows whose reward failed (``failed``, bool [B]) are left out of
    every group and get zero advantages; CARE's groups tolerate the shorter groups.
    ``write_records`` (``care.records``), when given, is called with the step's per-row tensors to build
    and write the per-group / per-repair records.
    """
    inputs = read_advantage_inputs(data, is_padding, tokenizer, config.empty_span, keys=keys,
                                   data_source=data_source, fetch_responses=fetch_responses, failed=failed)
    seq_adv, token_adv, info = compute_care_advantages(**inputs.care_arguments(), config=config)
    metrics = advantage_step_metrics(inputs, seq_adv, token_adv, info, config)
    if write_records is not None:
        write_records(uid=inputs.uid, seq_adv=seq_adv, acc=inputs.acc, reflected=inputs.reflected, info=info,
                think_len=inputs.spans.think_len, answer_len=inputs.spans.answer_len, rgr=inputs.rgr)
    return advantage_fields(inputs, token_adv), metrics


class SyncTrainerWithBenchmarkMacro(PPOTrainerSync):
    """verl's sync trainer (colocated rollout, no partial rollout) under a registered name of the
    recipe's, whose validation adds the paper's ``val-core/macro/acc`` (recipe.care.bench_metrics)."""

    # verl 0.9.1 branches on `self.trainer_mode == "sync"` (replay buffer choice, dataloader
    # refill, checkpointing of in-flight prompts: trainer_base.py:153, 731, 902, 912, 1004, 1499),
    # so a trainer registered under another name would silently run the async code paths.
    # Both recipe trainers *are* the sync trainer in all of them; the registered name is kept apart.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.registered_mode = value

    def _val_metrics_update(self, *args, **kwargs) -> dict[str, float]:
        # verl 0.9.1 builds val-core/<data_source>/acc/mean@N here; the paper's macro average joins them.
        metric_dict = super()._val_metrics_update(*args, **kwargs)
        metric_dict.update(macro_benchmark_metrics(metric_dict))
        return metric_dict

    # ------------------------------------------------------------ checkpoints that survive a kill
    # verl 0.9.1 writes every checkpoint file in place and commits with a truncate-then-write tracker;
    # its actor rotation (trainer.max_actor_ckpt_to_keep) deletes the previous actor folder before the
    # tracker moves on. The overrides below keep verl's save and load and add a completion mark, an
    # atomic tracker and a rotation that runs last (recipe/care/checkpoints.py, docs/verl-integration.md).

    def _checkpoint_root(self) -> str:
        # verl 0.9.1 _load_checkpoint joins a relative default_local_dir to this process's cwd; so do we.
        return os.path.abspath(str(self.config.trainer.default_local_dir))

    def _checkpoints_to_keep(self) -> int | None:
        """The user's retention (verl's keys), applied by :func:`recipe.care.checkpoints.rotate`."""
        trainer = self.config.trainer
        return 1 if trainer.get("remove_previous_ckpt_in_save", False) else trainer.get("max_actor_ckpt_to_keep", None)

    def _check_checkpoint_mode(self) -> None:
        ckpt = self.config.actor_rollout_ref.actor.get("checkpoint", {}) or {}
        if ckpt.get("async_save", False):
            raise checkpoints.CheckpointError(
                "actor_rollout_ref.actor.checkpoint.async_save=true: verl 0.9.1 returns before the shards are written "
                "and skips the tracker, so no checkpoint could be marked complete; set it to false")

    # verl 0.9.1 fit() saves checkpoint N *before* it logs step N's metrics, with validation in between: a
    # kill in that window resumes from N and step N's metrics line is never written. Inside fit, the save is
    # deferred to right after the log call of the same step (the log wrapper below): nothing between the
    # two changes what a checkpoint holds (validation and metric computation only read the model, and the
    # next step's prompts are fetched later). verl's timing_s/save_checkpoint then measures only the deferral.
    def _save_checkpoint(self):
        if self.__dict__.get("_care_defer_saves"):
            self._care_pending_save = self.global_steps
            return
        self._save_checkpoint_now()

    @property
    def logger(self):
        """verl's ``Tracking`` (created in fit), wrapped so a deferred checkpoint is saved after each log call."""
        return self.__dict__.get("_care_tracking")

    @logger.setter
    def logger(self, tracking) -> None:
        self.__dict__["_care_tracking"] = None if tracking is None else _SaveAfterLog(tracking, self)

    def _save_pending_checkpoint(self, step: int) -> None:
        if self.__dict__.get("_care_pending_save") == step:
            self._care_pending_save = None
            self._save_checkpoint_now()

    # verl 0.9.1 trainer_base._save_checkpoint (actor, critic, data.pt, then the tracker written in place).
    def _save_checkpoint_now(self):
        step, root = self.global_steps, self._checkpoint_root()
        folder = checkpoints.step_dir(root, step)
        fault_points.reached("ckpt/start", step)
        self._check_checkpoint_mode()
        records = getattr(self, "care_records", None)
        if records is not None:
            records.flush()  # "checkpoint N exists" implies "records of steps <= N are on disk"
        # A killed save of this step (or a discarded timeline's) leaves files verl would overwrite one by one.
        checkpoints.remove_step_dir(folder)
        keep = self._checkpoints_to_keep()
        trainer = self.config.trainer
        verl_rotation = {key: trainer.get(key, None) for key in
                         ("max_actor_ckpt_to_keep", "max_critic_ckpt_to_keep", "remove_previous_ckpt_in_save")}
        wg = self.actor_rollout_wg
        own_attr = "save_checkpoint" in vars(wg)  # verl binds worker methods on the instance
        save_actor = wg.save_checkpoint

        def save_actor_then_fault(*args, **kwargs):
            result = save_actor(*args, **kwargs)
            fault_points.reached("ckpt/after_actor", step)
            return result

        with open_dict(trainer):  # verl's rotation deletes before the new checkpoint is committed
            trainer.max_actor_ckpt_to_keep = None
            trainer.max_critic_ckpt_to_keep = None
            trainer.remove_previous_ckpt_in_save = False
        wg.save_checkpoint = save_actor_then_fault
        try:
            super()._save_checkpoint()
        finally:
            if own_attr:
                wg.save_checkpoint = save_actor
            else:
                del wg.save_checkpoint
            with open_dict(trainer):
                for key, value in verl_rotation.items():
                    trainer[key] = value
        # verl has just written the tracker with open("w") + write: a kill inside that leaves it empty or
        # torn. The mark, then an atomic rewrite of the same tracker, follow at once; a load repairs a
        # torn tracker from the marks and the folders (checkpoints.resolve_resume).
        fault_points.reached("ckpt/after_data", step)
        checkpoints.write_mark(folder, step, world_size=wg.world_size)
        fault_points.reached("ckpt/after_mark", step)
        checkpoints.write_tracker(root, step)
        fault_points.reached("ckpt/after_tracker", step)
        checkpoints.rotate(root, keep, step, log=notice)
        fault_points.reached("ckpt/after_rotation", step)

    # verl 0.9.1 trainer_base._load_checkpoint (tracker -> global_step_N; an empty tracker raises, one that
    # names a missing folder silently trains from scratch, an incomplete folder fails mid-load).
    def _load_checkpoint(self):
        self._check_checkpoint_mode()
        trainer = self.config.trainer
        world_size = self.actor_rollout_wg.world_size
        if trainer.resume_mode == "auto":
            step = checkpoints.resolve_resume(self._checkpoint_root(), world_size=world_size, log=notice)
            if step:  # a kill between the tracker and the rotation left folders beyond the retention
                checkpoints.rotate(self._checkpoint_root(), self._checkpoints_to_keep(), step, log=notice)
        elif trainer.resume_mode == "resume_path":
            folder = os.path.abspath(str(trainer.resume_from_path))
            why = checkpoints.why_incomplete(folder)
            if why is not None:
                raise checkpoints.CheckpointError(f"trainer.resume_from_path={folder}: not a complete checkpoint ({why})")
            saved = checkpoints.checkpoint_world_size(folder)
            if saved is not None and saved != world_size:
                raise checkpoints.CheckpointError(
                    f"{folder}: saved by {saved} actor ranks, this run has {world_size}; the FSDP shards only load "
                    f"with the same world size")
        result = super()._load_checkpoint()
        # verl logs its resume at INFO, which a default run does not show; a restarted job should say it.
        if self.global_steps:
            notice("care: resuming from %s, global step %d",
                           os.path.join(self._checkpoint_root(), f"global_step_{self.global_steps}"), self.global_steps)
        else:
            notice("care: training from scratch (no complete checkpoint in %s)", self._checkpoint_root())
        return result

    # verl 0.9.1 trainer_base._update_actor: a kill test stops the job while the update is in flight.
    def _update_actor(self, batch, metrics):
        fault_points.reached("update_actor", self.global_steps, block=False)
        return super()._update_actor(batch, metrics)

    def _metrics_path(self) -> str | None:
        """verl's FileLogger file for this run (None without a file logger): the env var the launcher put in
        the runtime env (recipe/care/main_care.py set_file_logger_path), else the config's copy."""
        loggers = self.config.trainer.logger
        if "file" not in ([loggers] if isinstance(loggers, str) else list(loggers)):
            return None
        env_vars = OmegaConf.select(self.config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
        return os.environ.get(checkpoints.FILE_LOGGER_ENV) or env_vars.get(checkpoints.FILE_LOGGER_ENV)

    def _appended_outputs(self) -> list[str]:
        """The JSON-lines files earlier runs of this folder appended to, cut back on a resume."""
        path = self._metrics_path()
        return [str(p) for p in checkpoints.aside_files(path)] if path else []

    def _trim_to_resumed_step(self) -> None:
        """Before training resumes at step N + 1: each appended output keeps steps <= N, no torn line.

        verl's FileLogger truncates its file when it opens it, so a file still there is moved aside first
        (the launcher normally did: main_care.keep_previous_metrics); rows of steps after N belong to the
        discarded timeline and are written again.
        """
        path = self._metrics_path()
        if path:
            moved = checkpoints.move_aside(path)
            if moved:
                notice("care: earlier step metrics kept as %s", moved)
        checkpoints.trim_files(self._appended_outputs(), self.global_steps, log=notice)

    # verl 0.9.1 trainer_base.fit(agent_loop_manager): self.global_steps is the resumed step N here
    # (_load_checkpoint ran in init()), and the file logger opens its file inside.
    def fit(self, *args, **kwargs):
        self._trim_to_resumed_step()
        self._care_defer_saves, self._care_pending_save = True, None
        try:
            return super().fit(*args, **kwargs)
        finally:
            self._care_defer_saves = False
            self._drop_empty_metrics_file()

    def _drop_empty_metrics_file(self) -> None:
        """A restart that finds the run already at its last step logs nothing, but verl's file logger has
        created (emptied) its file: remove it, so the run's metrics are its earlier files and the report,
        which refuses an empty metrics file, reads them."""
        path = self._metrics_path()
        if path and os.path.isfile(path) and os.path.getsize(path) == 0:
            os.remove(path)

    # verl 0.9.1 trainer_base.py:1466: one dataloader chunk as a TensorDict. The rows CareRLDataset
    # substituted carry the skipped rows' records; collect them for this step's metrics.
    def _fetch_one_gen_batch(self):
        batch = super()._fetch_one_gen_batch()
        if "extra_info" in batch.keys():
            pending = self.__dict__.setdefault("_care_skipped_pending", [])
            pending.extend(skipped_rows_of(_column(batch, "extra_info")))
        return batch

    # verl 0.9.1 trainer_base.py:1525: the sync trainer fetches the step's prompts here, and step()
    # folds the returned dict into the step's metrics.
    def prepare_step(self) -> dict:
        metrics = dict(super().prepare_step() or {})
        metrics.update(self._care_skipped_rows_metrics())
        return metrics

    def _care_skipped_rows_metrics(self) -> dict[str, float]:
        """``data/skipped_rows`` (this step; a run's total is the sum over its logged steps, which stays right
        across a resume, unlike a counter in this process) and one log line naming this step's skipped rows."""
        pending = self.__dict__.pop("_care_skipped_pending", [])
        if pending:
            names = [f"{r.get('row')}(id={r.get('id')} source={r.get('source')}: {r.get('reason')})"
                     for r in pending[:MAX_LOGGED_IDS]]
            notice("care: step %s skipped %d training row(s): %s%s", getattr(self, "global_steps", "?"),
                           len(pending), ", ".join(names), " ..." if len(pending) > MAX_LOGGED_IDS else "")
        return {SKIPPED_ROWS_METRIC: float(len(pending))}

    def _care_reward_failures(self, extra_fields: list, uid, data_source: list, is_padding: np.ndarray):
        """bool [B] rows whose reward failed (:func:`failed_reward_rows`, padding rows never) and the
        step's reward metrics over the real rows; logs the failed rows' ids once per step."""
        real = ~np.asarray(is_padding, dtype=bool)
        failed = failed_reward_rows(extra_fields, uid) & real
        idx = np.flatnonzero(real)
        real_fields = [extra_fields[i] for i in idx]
        real_sources = [data_source[i] for i in idx]
        metrics = reward_failure_metrics(real_fields, failed[idx], real_sources) if len(idx) else {}
        if failed.any():
            names = failed_row_names(real_fields, failed[idx], real_sources)
            notice("care: step %s left %d rollout(s) out of the update, reward not graded: %s%s",
                           getattr(self, "global_steps", "?"), len(names), "; ".join(names[:MAX_LOGGED_IDS]),
                           " ..." if len(names) > MAX_LOGGED_IDS else "")
        return failed, metrics

    # verl 0.9.1 trainer_base.py:1743 (the baselines' advantage step). A rollout whose reward failed
    # gets response_mask 0 before it, so no token of it is learned from.
    def _compute_advantage(self, batch, metrics):
        fields = ["uid", "response_mask", "extra_fields"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        if "extra_fields" in data.keys():
            extra_fields = _column(data, "extra_fields")
            sources = fetch_data_sources(list(batch.keys), batch.partition_id)
            is_padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags], dtype=bool)
            failed, reward_metrics = self._care_reward_failures(extra_fields, _column(data, "uid"), sources,
                                                                is_padding)
            metrics.update(reward_metrics)
            if failed.any():
                tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(
                    {"response_mask": masked_rows(data["response_mask"], failed)}, batch_size=len(batch)))
        return super()._compute_advantage(batch, metrics)


class _SaveAfterLog:
    """verl's ``Tracking`` with one addition: after ``log(data, step)`` returns, the trainer saves the
    checkpoint of ``step`` if fit asked for one (see ``SyncTrainerWithBenchmarkMacro._save_checkpoint``)."""

    def __init__(self, tracking, trainer):
        self._tracking, self._trainer = tracking, trainer

    def log(self, data, step, **kwargs):
        result = self._tracking.log(data=data, step=step, **kwargs)
        self._trainer._save_pending_checkpoint(step)
        return result

    def __getattr__(self, name):
        return getattr(self._tracking, name)


@register_trainer(BASELINE_TRAINER_NAME)
class BaselinePPOTrainer(SyncTrainerWithBenchmarkMacro):
    """The GRPO / DAPO / GSPO baselines (``ALGO=...``): verl's sync trainer and verl's advantage
    estimators unchanged; only the validation's benchmark macro average is added, so an A/B against
    CARE compares the same headline number."""


@register_trainer(TRAINER_NAME)
class CarePPOTrainer(SyncTrainerWithBenchmarkMacro):
    """verl's sync trainer (colocated rollout, no partial rollout) with CARE's advantage step."""

    def __init__(self, config):
        self.care_config = care_config_of(config)
        records = self.care_config.records
        self.care_records = RecordsWriter(records.directory(config.trainer.default_local_dir)) if records.enable else None
        rgr = self.care_config.rgr
        self.care_rgr_settings = {"selector": rgr.selector, "mode": rgr.mode, "cue": rgr.cue}
        super().__init__(config)

    def _write_care_records(self, *, uid, seq_adv, acc, reflected, info, think_len, answer_len, rgr) -> None:
        """``care.records``: this step's per-group and per-repair JSON lines, built and written on the
        writer's background thread (driver process); the tensors are not modified after this call."""
        step, config, settings = self.global_steps, self.care_config, self.care_rgr_settings
        self.care_records.submit(lambda: {
            GROUPS_FILE: build_group_records(step, uid, seq_adv, acc, reflected, info, config),
            REPAIRS_FILE: build_repair_records(step, uid, rgr, seq_adv, acc, reflected, think_len, answer_len,
                                               info["group_id"], config, settings),
        })

    def _appended_outputs(self) -> list[str]:
        outputs = super()._appended_outputs()
        if getattr(self, "care_records", None) is not None:
            outputs += [str(self.care_records.directory / name) for name in (GROUPS_FILE, REPAIRS_FILE)]
        return outputs

    # verl 0.9.1 trainer_base.py fit(agent_loop_manager): returns after the last step (no on_train_end then)
    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        finally:
            if getattr(self, "care_records", None) is not None:
                self.care_records.close()  # the last step's records are on disk before the run ends

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        care_worker = ray.remote(CareActorRolloutRefWorker)
        for role in list(self.role_worker_mapping):
            if role.name in _ACTOR_ROLES:
                self.role_worker_mapping[role] = care_worker

    def _compute_old_log_prob(self, batch, metrics):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["response_mask", "extra_fields"])
        fetch = lambda: tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,  # noqa: E731
                                        select_fields=["responses"])["responses"]
        pool = pool_mask_field(data, self.tokenizer, fetch)
        tq.kv_batch_put(
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({POOL_MASK: pool}, batch_size=len(batch)),
        )
        # The flag must not leak into the ref/update calls that reuse this KVBatchMeta.
        batch.extra_info[EMB_FLAG] = True
        try:
            output = super()._compute_old_log_prob(batch, metrics)
        finally:
            batch.extra_info.pop(EMB_FLAG, None)
        if output is not None and output is not batch:
            output.extra_info.pop(EMB_FLAG, None)
        return output

    def _compute_advantage(self, batch, metrics):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=ADVANTAGE_FIELDS)
        is_padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags], dtype=bool)
        sources = None
        if DATA_SOURCE not in data.keys():  # some row lacks it: TQ dropped the column for all
            sources = fetch_data_sources(list(batch.keys), batch.partition_id)
            logger.warning(
                "%d of %d rows have no `%s`; reported as `%s`", sum(s is None for s in sources), len(sources),
                DATA_SOURCE, UNKNOWN_SOURCE,
            )
        extra_fields = _column(data, "extra_fields")
        row_sources = sources if sources is not None else _column(data, DATA_SOURCE)
        failed, reward_metrics = self._care_reward_failures(extra_fields, _column(data, "uid"), row_sources,
                                                            is_padding)
        metrics.update(reward_metrics)
        fields, care_metrics = compute_care_advantage_fields(
            data, is_padding, self.tokenizer, self.care_config, keys=list(batch.keys), data_source=sources,
            failed=failed,
            write_records=self._write_care_records if getattr(self, "care_records", None) is not None else None,
            fetch_responses=lambda: tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                                    select_fields=["responses"])["responses"],
        )
        metrics.update(care_metrics)
        if failed.any():  # zero advantage already; masked, they add no tokens to the loss's means either
            fields["response_mask"] = masked_rows(data["response_mask"], failed)
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
