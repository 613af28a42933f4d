"""The ``vanilla_clip_by_sign`` policy loss through verl's real registry and ActorConfig."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl")

from recipe.care.main_care import CareConfigError, compose_config, to_verl_dataclasses, validate  # noqa: E402
from recipe.care.policy_loss import CLIP_BY_SIGN_LOSS  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402

pytestmark = pytest.mark.timeout(120)
MODEL = "actor_rollout_ref.model.path=/nonexistent"


def actor_config(algo="care", *overrides):
    return to_verl_dataclasses(compose_config([MODEL, *overrides], algo=algo))["actor"]


def random_step(seed=0, batch=6, length=20):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen) * 3
    new = old + torch.randn(batch, length, generator=gen) * 0.4  # ratios well outside [0.7, 1.3] too
    adv = torch.randn(batch, 1, generator=gen).expand(-1, length).clone()  # one sign per sequence
    adv[0] = 0.0
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -5:] = False
    return dict(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask)


@pytest.mark.parametrize("algo", ["care", "dapo"])  # DAPO: asymmetric clip-higher 0.2 / 0.28
def test_loss_is_verls_vanilla_and_the_split_adds_up_to_its_clipfrac(algo):
    config = actor_config(algo)
    assert config.policy_loss.loss_mode == CLIP_BY_SIGN_LOSS
    step = random_step()
    ours, metrics = get_policy_loss_fn(CLIP_BY_SIGN_LOSS)(**step, loss_agg_mode="token-mean", config=config)
    base, base_metrics = get_policy_loss_fn("vanilla")(**step, loss_agg_mode="token-mean", config=config)
    torch.testing.assert_close(ours, base, rtol=0, atol=0)
    for key, value in base_metrics.items():
        assert metrics[key] == value, key
    pos, neg = metrics["actor/pg_clipfrac/pos_adv"], metrics["actor/pg_clipfrac/neg_adv"]
    assert pos > 0 and neg > 0, "the random step clips on both sides"
    assert pos + neg == pytest.approx(base_metrics["actor/pg_clipfrac"], abs=1e-6)
    assert metrics["actor/token_frac/pos_adv"] + metrics["actor/token_frac/neg_adv"] == pytest.approx(5 / 6)


def test_gradient_is_unchanged():
    config = actor_config()
    grads = []
    for name in (CLIP_BY_SIGN_LOSS, "vanilla"):
        step = random_step(seed=1)
        step["log_prob"] = step["log_prob"].clone().requires_grad_(True)
        loss, _ = get_policy_loss_fn(name)(**step, loss_agg_mode="token-mean", config=config)
        loss.backward()
        grads.append(step["log_prob"].grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_presets_and_startup_checks():
    assert actor_config("grpo").policy_loss.loss_mode == CLIP_BY_SIGN_LOSS
    assert actor_config("gspo").policy_loss.loss_mode == "gspo"  # sequence-level clip: no token split
    with pytest.raises(CareConfigError, match="unknown actor_rollout_ref.actor.policy_loss.loss_mode='vanila'"):
        validate(compose_config([MODEL, "actor_rollout_ref.actor.policy_loss.loss_mode=vanila"]))
    no_module = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=recipe.care.reward_manager"
    with pytest.raises(CareConfigError, match="recipe.care.policy_loss"):
        validate(compose_config([MODEL, no_module]))
    validate(compose_config([MODEL, no_module, "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"]))
