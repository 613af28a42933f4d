"""Registers the ``vanilla_clip_by_sign`` policy loss (written against verl 0.9.1).

docs/algorithm.md section 8 asks for the clip fraction split by advantage sign: CARE's negatives
are scaled down (−s·|A_raw|) while the anchor is equalised up to √K, so whether the PPO clip bites
mostly on positives or on failures is the diagnostic that tells the two apart. verl computes the
clip inside its policy-loss function and returns only the pooled ``actor/pg_clipfrac``, and the
loss function is the one place that sees the current and old log-probs together with the
advantages of each micro-batch. So this entry delegates the loss itself, unchanged, to verl's
registered ``vanilla`` and adds :func:`recipe.care.metrics.clip_fraction_by_sign` to its metrics.

The split by region (think/answer) is not logged: verl 0.9.1's ``ppo_loss``
(verl/workers/utils/losses.py) passes only ``old_log_probs``, ``advantages`` and the response mask
to the policy-loss function.

Selected with ``actor_rollout_ref.actor.policy_loss.loss_mode=vanilla_clip_by_sign`` (the default
of the CARE config and of the GRPO and DAPO presets, so A/B runs log the same split). The
registration must happen in the actor worker processes, so the config lists this module in
``VERL_USE_EXTERNAL_MODULES``.
"""

from __future__ import annotations

from typing import Any

import torch

from recipe.care.metrics import clip_fraction_by_sign
from recipe.care.verl_compat import require_verl_attr

register_policy_loss, get_policy_loss_fn = require_verl_attr(
    "verl.trainer.ppo.core_algos", "register_policy_loss", "get_policy_loss_fn")

CLIP_BY_SIGN_LOSS = "vanilla_clip_by_sign"
_BASE_LOSS = "vanilla"


@register_policy_loss(CLIP_BY_SIGN_LOSS)
def compute_policy_loss_vanilla_clip_by_sign(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's ``vanilla`` PPO loss plus the clip fraction by advantage sign. Tensors [B, L]."""
    pg_loss, metrics = get_policy_loss_fn(_BASE_LOSS)(
        old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages, response_mask=response_mask,
        loss_agg_mode=loss_agg_mode, config=config, rollout_is_weights=rollout_is_weights,
    )
    # The same clip range resolution as verl's vanilla loss (core_algos.py, verl 0.9.1).
    clip_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    clip_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    with torch.no_grad():
        metrics.update(clip_fraction_by_sign(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high))
    return pg_loss, metrics
