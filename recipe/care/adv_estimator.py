"""Registers ``care`` as a verl advantage estimator name (written against verl 0.9.1).

verl's registered estimators receive only token rewards, the response mask and the group ids;
CARE also needs verifier correctness, think/answer spans, think embeddings and old log-probs, so
the CARE trainer (``trainer.v1.trainer_mode=care_sync``) owns the advantage step and never calls
this function. The registration exists so that ``algorithm.adv_estimator=care`` passes verl's
config validation, and so that the stock trainer fails with an explanation instead of silently
training something else.
"""

from __future__ import annotations

from recipe.care.verl_compat import require_verl_attr

register_adv_est = require_verl_attr("verl.trainer.ppo.core_algos", "register_adv_est")

CARE_ADV_ESTIMATOR = "care"


class CareNeedsCareTrainerError(RuntimeError):
    pass


@register_adv_est(CARE_ADV_ESTIMATOR)
def compute_care_outcome_advantage(token_level_rewards=None, response_mask=None, index=None, config=None, **kwargs):
    """verl registry entry for `care`: refuses to run outside the CARE trainer (see module docstring)."""
    raise CareNeedsCareTrainerError(
        "algorithm.adv_estimator=care needs the CARE trainer: CARE's advantages depend on verifier "
        "accuracy, think/answer spans, think embeddings and old log-probs, which verl's stock "
        "advantage step does not pass. Launch with `python -m recipe.care.main_care` (or "
        "`bash run_care.sh`), which sets trainer.v1.trainer_mode=care_sync; see the README."
    )
