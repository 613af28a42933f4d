"""CARE's reward manager for verl's reward loop, and a plain ``compute_score``.

Select it in a verl 0.9.1 run with either

    reward.reward_manager.name=care                         # registry; this module must be imported
                                                            # in every process, e.g.
                                                            # VERL_USE_EXTERNAL_MODULES=recipe.care.reward_manager
or
    reward.reward_manager.source=importlib \\
    reward.reward_manager.name=CareRewardManager \\
    reward.reward_manager.module.path=/path/to/recipe/care/reward_manager.py

and tune it with ``+reward.reward_kwargs.<option>=...`` (``format_weight``, ``strict_format``,
``boxed_fallback``, ``timeout_s``, ``relaxed_tolerance``, ``strict_years``, ``rounding_tolerance``,
``rounding_rel_tol``; see :func:`verifiers.verify`). ``reward.reward_kwargs`` is where verl's own
DAPO manager reads its options.

Users of ``reward.custom_reward_function`` (any reward manager) can point it at this file with
``name=compute_score``; its ``reward_kwargs`` are passed through to :func:`verifiers.verify`.

Every sample's ``reward_extra_info`` has the same keys: ``acc`` (0/1, CARE's gate, read by the
trainer from ``extra_fields``), ``format`` (0/1), ``score``, ``verifier``, ``pred`` (the extracted
answer; verl uses it for maj@N in validation), ``reason`` and ``failed`` (0/1). verl logs the numeric
ones per data source in validation.

``failed = 1`` marks a sample that could not be graded: scoring raised (an unknown ``data_source``,
``reward_model`` None, a missing gold: reason ``reward_error:<Exc>``), the verifier raised
(``internal_error:<Exc>``) or the gold is unparseable (``gold_unparseable``). Such a sample fails
alone, not its group or the step: it gets ``acc = 0`` and ``score = 0`` so every result keeps the
same keys, one log line names its row (``extra_info`` id/index, ``data_source``), and the trainers
(``recipe/care/trainer.py``) keep it out of the learning signal and count it (``reward/failed_samples``,
``reward/reason/<reason>``) instead of treating it as a wrong answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import recipe.care  # noqa: F401  (the repo root is on sys.path)
except ImportError:  # loaded by file path (reward.reward_manager.source=importlib) from outside the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import recipe.care  # noqa: F401

import asyncio
import inspect
import logging
from functools import partial

from recipe.care.dataset import row_id
from recipe.care.notices import notice
from recipe.care.verl_compat import require_verl_attr
from verifiers import RESULT_KEYS, UnknownDataSourceError, is_ungraded, verify

logger = logging.getLogger(__name__)

# Written against verl 0.9.1: verl/experimental/reward_loop/reward_manager/{base,registry}.py.
RewardManagerBase = require_verl_attr("verl.experimental.reward_loop.reward_manager.base", "RewardManagerBase")
register = require_verl_attr("verl.experimental.reward_loop.reward_manager.registry", "register")

REGISTRY_NAME = "care"
VERIFY_OPTIONS = frozenset(
    name for name, p in inspect.signature(verify).parameters.items()
    if p.default is not inspect.Parameter.empty and name != "extra_info"
)
# Keyword arguments verl's managers add to every compute_score call; not verifier options.
_VERL_CALL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})


FAILED_KEY = "failed"
REWARD_ERROR = "reward_error"  # reason prefix: scoring the sample raised (``reward_error:<Exc>``)


def failed_result(reason: str, verifier: str = "") -> dict:
    """The result of a sample that could not be graded: :data:`verifiers.RESULT_KEYS` plus ``failed = 1``."""
    result = {"score": 0.0, "acc": 0, "format": 0, "pred": "", "verifier": verifier, "reason": reason}
    assert tuple(result) == RESULT_KEYS
    return {**result, FAILED_KEY: 1}


def with_failed_flag(result: dict) -> dict:
    """``result`` (:func:`verifiers.verify`'s) with ``failed`` set from its reason (see :func:`verifiers.is_ungraded`);
    an ungraded sample scores 0 (no format credit either), like :func:`failed_result`."""
    if is_ungraded(result["reason"]):
        return {**result, "score": 0.0, FAILED_KEY: 1}
    return {**result, FAILED_KEY: 0}


def safe_verify(data_source, response, ground_truth, extra_info=None, **options) -> dict:
    """:func:`verifiers.verify` that fails one sample instead of raising: any exception becomes
    :func:`failed_result` with reason ``reward_error:<Exc>``, logged with the row's id and source."""
    try:
        result = with_failed_flag(verify(data_source, response, ground_truth, extra_info, **options))
    except Exception as exc:
        result = failed_result(f"{REWARD_ERROR}:{type(exc).__name__}")
        notice("care: reward failed for row id=%s source=%s: %s: %s", row_id(extra_info), data_source,
               type(exc).__name__, str(exc)[:300])
        return result
    if result[FAILED_KEY]:
        notice("care: reward failed for row id=%s source=%s: %s", row_id(extra_info), data_source, result["reason"])
    return result


def verify_options(options) -> dict:
    """The verifier options in ``options`` (a dict or DictConfig); unknown keys are an error."""
    options = dict(options or {})
    unknown = sorted(set(options) - VERIFY_OPTIONS)
    if unknown:
        raise ValueError(f"unknown CARE reward option(s) {unknown}; known: {sorted(VERIFY_OPTIONS)}")
    return options


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl ``custom_reward_function`` entry point: :func:`verifiers.verify` with verl's signature."""
    options = verify_options({k: v for k, v in kwargs.items() if k not in _VERL_CALL_KWARGS})
    return safe_verify(data_source, solution_str, ground_truth, extra_info, **options)


# Overrides RewardManagerBase.__init__ / run_single of verl 0.9.1 (same contract as its NaiveRewardManager:
# run_single gets a one-row DataProto and returns {"reward_score", "reward_extra_info"}).
class CareRewardManager(RewardManagerBase):
    """Decodes the response, routes by ``data_source`` to :mod:`verifiers`, off the event loop."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None,
                 **kwargs):
        super().__init__(config, tokenizer, compute_score)
        reward_cfg = config.get("reward", None) if hasattr(config, "get") else None
        options = reward_cfg.get("reward_kwargs", None) if reward_cfg is not None else None
        self.options = verify_options(options)
        custom = reward_cfg.get("custom_reward_function", None) if reward_cfg is not None else None
        if custom is not None and custom.get("path"):
            logger.warning("reward manager %r grades with the CARE verifiers; reward.custom_reward_function "
                           "(%s) is not used by it", REGISTRY_NAME, custom.get("path"))

    async def run_single(self, data) -> dict:
        data = data[-1:]  # multi-sequence outputs: the last sequence carries the answer (as verl's naive manager)
        item = data[0]
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        valid_ids = response_ids[:valid_length]

        data_source = item.non_tensor_batch.get("data_source", None)
        extra_info = item.non_tensor_batch.get("extra_info", None)
        # A row that cannot be scored (reward_model None, no gold, unknown source) fails this sample
        # only, through safe_verify's failed result; raising here would fail the whole group.
        reward_model = item.non_tensor_batch.get("reward_model", None)
        ground_truth = reward_model.get("ground_truth", None) if isinstance(reward_model, dict) else None

        # The running loop, not the one captured at construction (verl's base class stores one in
        # __init__); they differ when the manager is built outside the loop that drives it.
        loop = asyncio.get_running_loop()
        response_str = await loop.run_in_executor(
            None, partial(self.tokenizer.decode, valid_ids, skip_special_tokens=True)
        )
        result = await loop.run_in_executor(
            None, partial(safe_verify, data_source, response_str, ground_truth, extra_info, **self.options)
        )
        return {"reward_score": result["score"], "reward_extra_info": result}


if __name__ == "recipe.care.reward_manager":
    register(REGISTRY_NAME)(CareRewardManager)
else:
    # Executed by file path under a synthetic module name (verl's importlib source): hand out the
    # canonical, registered class so one process never holds two different "care" managers.
    from recipe.care.reward_manager import CareRewardManager, compute_score  # noqa: F811

__all__ = ["CareRewardManager", "compute_score", "safe_verify", "failed_result", "REGISTRY_NAME", "FAILED_KEY",
           "UnknownDataSourceError"]
