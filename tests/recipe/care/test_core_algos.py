"""Properties of the CARE advantage core (docs/algorithm.md sections 2, 3, 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care.care_config import CareConfig, RescueConfig
from recipe.care.core_algos import (
    ROLE_NAMES,
    build_group_layout,
    compute_care_advantages,
    compute_care_sequence_advantages,
    compute_region_weighted_token_advantages,
)
from tests.recipe.care.reference_care import reference_care

pytestmark = pytest.mark.timeout(120)


def make_batch(acc_groups, *, seed=0, hidden=16, reflected_groups=None, think=None, answer=None, logp=None,
               rewards=None, keys=None):
    """Rows group by group; returns the keyword arguments of compute_care_sequence_advantages."""
    gen = torch.Generator().manual_seed(seed)
    acc = torch.tensor([a for group in acc_groups for a in group], dtype=torch.long)
    index = [keys[g] if keys else f"g{g}" for g, group in enumerate(acc_groups) for _ in group]
    batch = len(index)
    refl = torch.zeros(batch, dtype=torch.bool)
    if reflected_groups is not None:
        refl = torch.tensor([r for group in reflected_groups for r in group], dtype=torch.bool)
    return dict(
        rewards=acc.float() if rewards is None else torch.as_tensor(rewards, dtype=torch.float32),
        acc=acc,
        index=np.asarray(index, dtype=object),
        think_len=torch.as_tensor(think) if think is not None else torch.randint(5, 200, (batch,), generator=gen),
        answer_len=torch.as_tensor(answer) if answer is not None else torch.randint(1, 20, (batch,), generator=gen),
        think_emb=torch.randn(batch, hidden, generator=gen),
        logp_sum=torch.as_tensor(logp, dtype=torch.float32) if logp is not None else -torch.rand(batch, generator=gen) * 50,
        response_len=torch.full((batch,), 256),
        reflected=refl,
    )


def roles(info):
    return [ROLE_NAMES[r] for r in info["role"].tolist()]


# ------------------------------------------------------------------ mechanism signature


@pytest.mark.parametrize("k_prime", range(1, 8))
def test_mechanism_signature_raw_and_equalised(k_prime):
    """Binary rewards, one positive, K' negatives: A_raw = √K' / −1/√K'; after scaling and
    equalisation the anchor is √K and each negative −s·√K/K'."""
    k = 8
    cfg = CareConfig(k=k, m=k)
    batch = make_batch([[1] + [0] * k_prime])
    adv, info = compute_care_sequence_advantages(**batch, config=cfg)
    assert info["k_prime"].tolist() == [k_prime] * (k_prime + 1)
    assert roles(info) == ["anchor"] + ["negative"] * k_prime
    raw = info["raw_adv"]
    assert raw[0].item() == pytest.approx(math.sqrt(k_prime), rel=1e-5)
    assert raw[1:].tolist() == pytest.approx([-1 / math.sqrt(k_prime)] * k_prime, rel=1e-5)
    assert adv[0].item() == pytest.approx(math.sqrt(k), rel=1e-5)
    assert adv[1:].tolist() == pytest.approx([-cfg.neg_scale * math.sqrt(k) / k_prime] * k_prime, rel=1e-5)


@pytest.mark.parametrize("k_prime", range(1, 5))
def test_paper_defaults_anchor_is_two_for_every_k_prime(k_prime):
    adv, info = compute_care_sequence_advantages(**make_batch([[1] + [0] * k_prime]), config=CareConfig())
    assert adv[0].item() == pytest.approx(2.0, rel=1e-5)  # √K with K = 4


def test_equalize_off_leaves_raw_scale():
    adv, info = compute_care_sequence_advantages(**make_batch([[1, 0, 0]]), config=CareConfig(equalize=False))
    assert adv[0].item() == pytest.approx(math.sqrt(2), rel=1e-5)
    assert adv[1:].tolist() == pytest.approx([-0.5 / math.sqrt(2)] * 2, rel=1e-5)


# ------------------------------------------------------------------ subgroup membership


def test_rows_outside_subgroup_get_exactly_zero():
    batch = make_batch([[0, 0, 1, 0, 0, 0, 0, 0]], seed=3)  # 7 failures, K = 4
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig())
    outside = ~info["in_subgroup"]
    assert int(info["in_subgroup"].sum()) == 5
    assert (adv[outside] == 0).all()
    assert (adv[info["in_subgroup"]] != 0).all()


def test_all_correct_group_is_zero_and_all_wrong_without_rescue_is_zero():
    batch = make_batch([[1] * 8, [0] * 8], seed=1)
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig(rescue=RescueConfig(enable=False)))
    assert (adv == 0).all() and not info["in_subgroup"].any()
    assert info["group_kind"].tolist() == [0] * 8 + [2] * 8


def test_gate_is_accuracy_not_reward():
    """A well-formatted wrong answer (r = 0.1) is a failure, not a positive."""
    batch = make_batch([[1, 0, 0]], rewards=[1.0, 0.1, 0.1])
    adv, info = compute_care_sequence_advantages(**batch)
    assert roles(info) == ["anchor", "negative", "negative"]
    assert adv[0] > 0 and (adv[1:] < 0).all()
    only_failures = make_batch([[0, 0, 0]], rewards=[0.1, 0.1, 0.0])
    _, info = compute_care_sequence_advantages(**only_failures)
    assert "anchor" not in roles(info)


# ------------------------------------------------------------------ anchor choice


def test_anchor_shortest_think_then_shortest_answer_then_lower_index():
    think = [30, 10, 10, 10, 50]
    answer = [1, 5, 3, 3, 1]
    adv, info = compute_care_sequence_advantages(**make_batch([[1, 1, 1, 1, 0]], think=think, answer=answer))
    assert roles(info)[2] == "anchor"  # think 10 (tied with 1, 3), answer 3 (tied with 3), lower index


def test_anchor_tie_follows_group_order_not_batch_position():
    """Rows of a group need not be adjacent: "lower index" is the order of the group's rows."""
    batch = make_batch([[1, 1, 0]], think=[7, 7, 9], answer=[2, 2, 2])
    interleaved = make_batch([[1, 1, 0], [1, 0]], think=[7, 7, 9, 1, 1], answer=[2, 2, 2, 1, 1])
    perm = torch.tensor([3, 0, 4, 1, 2])  # g1 rows first, g0 rows keep their relative order
    shuffled = {k: (v[perm] if isinstance(v, torch.Tensor) else v[perm.numpy()]) for k, v in interleaved.items()}
    _, info = compute_care_sequence_advantages(**shuffled)
    assert roles(info)[1] == "anchor" and roles(info)[3] == "none"  # row 0 of g0 (now at position 1) wins the tie
    _, info = compute_care_sequence_advantages(**batch)
    assert roles(info)[0] == "anchor"


def test_reflected_rollout_is_never_the_anchor():
    batch = make_batch([[1, 1, 0, 0]], think=[1, 50, 60, 70], reflected_groups=[[True, False, False, False]])
    _, info = compute_care_sequence_advantages(**batch)
    assert roles(info)[0] == "reflected" and roles(info)[1] == "anchor"


# ------------------------------------------------------------------ hard negatives


def geometry_batch(selector, k=2, m=3):
    """Anchor at e0; failures at known cosine distances so each selector's choice is predictable."""
    angles = [0.0, 0.2, 0.3, 0.5, 1.4, 1.5]  # radians from the anchor: d = 1 - cos
    emb = torch.tensor([[math.cos(a), math.sin(a), 0.0] for a in angles])
    emb[2] = torch.tensor([math.cos(0.3), 0.0, math.sin(0.3)])  # off-plane: far from failure 1
    batch = make_batch([[1, 0, 0, 0, 0, 0]], think=[1, 9, 9, 9, 9, 9])
    batch["think_emb"] = emb
    return batch, CareConfig(k=k, m=m, selector=selector)


def picked(info):
    return sorted(i for i, r in enumerate(roles(info)) if r == "negative")


def test_cosine_selector_nearest_first_then_farthest_first_within_pool():
    batch, cfg = geometry_batch("cosine", k=2, m=3)
    # pool = 3 nearest {1, 2, 3}; first pick 1 (nearest); then the pool member farthest from 1:
    # d(1,2) uses the off-plane offset, larger than d(1,3) = 1 - cos(0.3).
    d12 = 1 - (math.cos(0.2) * math.cos(0.3))
    assert d12 > 1 - math.cos(0.3)
    _, info = compute_care_sequence_advantages(**batch, config=cfg)
    assert picked(info) == [1, 2]


def test_cosine_selector_never_leaves_the_pool():
    batch, cfg = geometry_batch("cosine", k=3, m=3)
    _, info = compute_care_sequence_advantages(**batch, config=cfg)
    assert picked(info) == [1, 2, 3]  # 4 and 5 are far but outside the M = 3 pool


@pytest.mark.parametrize("selector,expected", [("nearest", [1, 2]), ("farthest", [4, 5]), ("mixed", [1, 5])])
def test_plain_selectors(selector, expected):
    batch, cfg = geometry_batch(selector, k=2, m=3)
    _, info = compute_care_sequence_advantages(**batch, config=cfg)
    assert picked(info) == expected


def test_random_selector_is_seeded_per_group_and_independent_of_batch_order():
    acc = [[1] + [0] * 7 for _ in range(40)]
    batch = make_batch(acc, seed=5)
    cfg = CareConfig(selector="random", seed=11)
    _, a = compute_care_sequence_advantages(**batch, config=cfg)
    _, b = compute_care_sequence_advantages(**batch, config=cfg)
    assert torch.equal(a["role"], b["role"])
    _, c = compute_care_sequence_advantages(**batch, config=CareConfig(selector="random", seed=12))
    assert not torch.equal(a["role"], c["role"])
    chosen = a["role"].view(40, 8)[:, 1:] == 2
    assert (chosen.sum(1) == 4).all()
    assert len({tuple(row.tolist()) for row in chosen}) > 5  # not the same slots in every group
    groups_reversed = torch.arange(40).flip(0).repeat_interleave(8) * 8 + torch.arange(8).repeat(40)
    shuffled = {k: (v[groups_reversed] if isinstance(v, torch.Tensor) else v[groups_reversed.numpy()])
                for k, v in batch.items()}
    _, d = compute_care_sequence_advantages(**shuffled, config=cfg)
    assert torch.equal(d["role"], a["role"][groups_reversed])


# ------------------------------------------------------------------ reflected rollouts (section 4.5)


def test_reflected_takes_a_slot_and_remaining_slots_continue_farthest_first():
    batch, cfg = geometry_batch("cosine", k=2, m=3)
    batch["reflected"] = torch.tensor([False, False, False, True, False, False])  # row 3 repaired, still wrong
    adv, info = compute_care_sequence_advantages(**batch, config=cfg)
    assert roles(info)[3] == "reflected"
    # K' = min(2, 1 + 4 plain failures) = 2: one open slot, filled farthest-first from row 3 within
    # the pool of non-reflected failures {1, 2, 4} (no nearest-first pick).
    assert info["k_prime"][0].item() == 2
    assert picked(info) == [1] or picked(info) == [2] or picked(info) == [4]
    h = torch.nn.functional.normalize(batch["think_emb"], dim=-1)
    pool = [1, 2, 4]
    expected = max(pool, key=lambda i: (1 - h[i] @ h[3]).item())
    assert picked(info) == [expected]
    # A reflected failure is scaled with s_refl = s/2.
    raw = info["raw_adv"][3].item()
    assert adv[3].item() == pytest.approx(-0.25 * abs(raw) * math.sqrt(2 / 2), rel=1e-5)


def test_reflected_success_keeps_its_raw_advantage_and_counts_in_k_prime():
    batch = make_batch([[1, 1, 0, 0]], reflected_groups=[[False, True, False, False]], rewards=[1.0, 1.0, 0.0, 0.0])
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig(k=4, m=6))
    assert roles(info) == ["anchor", "reflected", "negative", "negative"]
    assert info["k_prime"][0].item() == 3
    assert adv[1].item() == pytest.approx(info["raw_adv"][1].item() * math.sqrt(4 / 3), rel=1e-6)
    assert adv[1] > 0


def test_refl_scale_is_configurable():
    batch = make_batch([[1, 0, 0]], reflected_groups=[[False, True, False]])
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig(refl_scale=0.1, equalize=False))
    assert adv[1].item() == pytest.approx(-0.1 * abs(info["raw_adv"][1].item()), rel=1e-6)


# ------------------------------------------------------------------ rescue (section 3)


def test_rescue_pseudo_anchor_is_max_logp_and_pseudo_rewards_are_zero_sum():
    logp = [-30.0, -5.0, -40.0, -20.0, -25.0, -35.0]
    batch = make_batch([[0] * 6], logp=logp, rewards=[0.1, 0.0, 0.1, 0.0, 0.1, 0.0])
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig(rescue=RescueConfig(normalize=False)))
    assert roles(info)[1] == "rescue_anchor"
    assert roles(info).count("rescue_negative") == 4
    assert adv[1].item() == pytest.approx(0.1)
    assert adv.sum().item() == pytest.approx(0.0, abs=1e-7)  # r'(t) = γ, r'(j) = −γ/K'
    assert info["raw_adv"].sum().item() == pytest.approx(0.0, abs=1e-7)


def test_rescue_normalised_follows_the_same_pipeline():
    batch = make_batch([[0] * 8], seed=2)
    adv, info = compute_care_sequence_advantages(**batch, config=CareConfig())
    members = info["in_subgroup"]
    assert int(members.sum()) == 5
    # The pseudo-rewards are binary-like, so the mechanism signature holds (z-score cancels γ).
    anchor = info["role"] == ROLE_NAMES.index("rescue_anchor")
    # σ of the pseudo-rewards is of order γ, so ε = 1e-6 shows at 1e-5 relative.
    assert adv[anchor].item() == pytest.approx(2.0, rel=1e-4)
    assert adv[members & ~anchor].tolist() == pytest.approx([-0.25] * 4, rel=1e-4)


def test_rescue_first_pick_is_farthest_from_pseudo_anchor():
    batch, _ = geometry_batch("cosine")
    batch["acc"] = torch.zeros(6, dtype=torch.long)
    batch["rewards"] = torch.zeros(6)
    batch["logp_sum"] = torch.tensor([0.0, -1, -1, -1, -1, -1])  # row 0 is the pseudo-anchor
    _, info = compute_care_sequence_advantages(**batch, config=CareConfig(k=1))
    assert roles(info) == ["rescue_anchor", "none", "none", "none", "none", "rescue_negative"]


def test_rescue_logp_mean_uses_per_token_mean():
    batch = make_batch([[0, 0, 0]], logp=[-10.0, -12.0, -30.0])
    batch["response_len"] = torch.tensor([10, 100, 300])
    _, by_sum = compute_care_sequence_advantages(**batch, config=CareConfig())
    _, by_mean = compute_care_sequence_advantages(**batch, config=CareConfig(rescue=RescueConfig(logp="mean")))
    assert roles(by_sum)[0] == "rescue_anchor"
    assert roles(by_mean)[2] == "rescue_anchor"  # -0.1 per token beats -1.0 and -0.12


def test_single_rollout_groups_get_zero():
    adv, info = compute_care_sequence_advantages(**make_batch([[0], [1]]))
    assert (adv == 0).all()


# ------------------------------------------------------------------ agreement with the plain reading


@st.composite
def random_batches(draw):
    n_groups = draw(st.integers(1, 6))
    acc_groups, refl_groups = [], []
    for _ in range(n_groups):
        size = draw(st.integers(1, 8))
        acc = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
        refl = [False] * size
        if draw(st.booleans()) and size > 1:
            refl[draw(st.integers(0, size - 1))] = True
        acc_groups.append(acc)
        refl_groups.append(refl)
    batch_size = sum(map(len, acc_groups))
    seed = draw(st.integers(0, 10_000))
    fmt = draw(st.lists(st.integers(0, 1), min_size=batch_size, max_size=batch_size))
    think = draw(st.lists(st.integers(0, 4), min_size=batch_size, max_size=batch_size))  # many ties
    answer = draw(st.lists(st.integers(0, 3), min_size=batch_size, max_size=batch_size))
    acc_flat = [a for g in acc_groups for a in g]
    rewards = [0.9 * a + 0.1 * f for a, f in zip(acc_flat, fmt)]
    cfg = CareConfig(
        k=draw(st.integers(1, 5)),
        m=draw(st.integers(5, 7)),
        selector=draw(st.sampled_from(["cosine", "nearest", "farthest", "mixed"])),
        equalize=draw(st.booleans()),
        rescue=RescueConfig(enable=draw(st.booleans()), normalize=draw(st.booleans()),
                            logp=draw(st.sampled_from(["sum", "mean"]))),
        refl_scale=draw(st.sampled_from([None, 0.1])),
    )
    batch = make_batch(acc_groups, seed=seed, reflected_groups=refl_groups, think=think, answer=answer,
                       rewards=rewards)
    return batch, cfg


@settings(max_examples=150, deadline=None)
@given(random_batches())
def test_vectorised_core_matches_plain_reading_of_the_spec(case):
    batch, cfg = case
    adv, info = compute_care_sequence_advantages(**batch, config=cfg)
    ref_adv, ref_roles, ref_k = reference_care(
        batch["rewards"].tolist(), batch["acc"].tolist(), list(batch["index"]), batch["think_len"].tolist(),
        batch["answer_len"].tolist(), batch["think_emb"].numpy(), batch["logp_sum"].tolist(),
        batch["response_len"].tolist(), batch["reflected"].tolist(), cfg)
    assert roles(info) == ref_roles
    assert info["k_prime"].tolist() == ref_k
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-4, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(random_batches(), st.randoms(use_true_random=False))
def test_invariant_to_row_order_when_groups_keep_their_internal_order(case, rnd):
    """Permuting rows (interleaving groups, each keeping its own row order) permutes the result."""
    batch, cfg = case
    index = list(batch["index"])
    queues = {}
    for row, key in enumerate(index):
        queues.setdefault(key, []).append(row)
    order = []
    keys = [k for k in queues for _ in queues[k]]
    rnd.shuffle(keys)
    for key in keys:
        order.append(queues[key].pop(0))
    perm = torch.tensor(order)
    shuffled = {k: (v[perm] if isinstance(v, torch.Tensor) else v[perm.numpy()]) for k, v in batch.items()}
    adv, info = compute_care_sequence_advantages(**batch, config=cfg)
    adv_p, info_p = compute_care_sequence_advantages(**shuffled, config=cfg)
    torch.testing.assert_close(adv_p, adv[perm])
    assert torch.equal(info_p["role"], info["role"][perm])


def test_deterministic_and_int_or_str_group_ids_agree():
    batch = make_batch([[1, 0, 0, 0], [0, 0, 0], [1, 1]], seed=9)
    adv1, _ = compute_care_sequence_advantages(**batch)
    adv2, _ = compute_care_sequence_advantages(**batch)
    assert torch.equal(adv1, adv2)
    int_ids = dict(batch, index=np.array([0] * 4 + [1] * 3 + [2] * 2))
    adv3, _ = compute_care_sequence_advantages(**int_ids)
    assert torch.equal(adv1, adv3)


def test_group_layout_handles_non_adjacent_rows():
    layout = build_group_layout(["b", "a", "b", "a", "c"])
    assert layout.rows.tolist() == [[1, 3], [0, 2], [4, -1]]
    assert layout.slot.tolist() == [0, 0, 1, 1, 0]


# ------------------------------------------------------------------ token advantages (section 5)


def spans_batch(seed=0, batch=6, length=24):
    gen = torch.Generator().manual_seed(seed)
    resp_len = torch.randint(6, length + 1, (batch,), generator=gen)
    response_mask = (torch.arange(length) < resp_len.unsqueeze(1)).long()
    think_mask = torch.zeros(batch, length, dtype=torch.bool)
    answer_mask = torch.zeros(batch, length, dtype=torch.bool)
    for i in range(batch):
        n = int(resp_len[i])
        think_mask[i, 1 : n // 2] = True
        answer_mask[i, n // 2 + 1 : n - 1] = True
    return think_mask, answer_mask, response_mask


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["region_weighted", "answer_only"]))
def test_token_advantages_sum_to_sequence_advantage(seed, weighting):
    think, answer, resp = spans_batch(seed)
    gen = torch.Generator().manual_seed(seed)
    answer[0] = False  # a response without an answer span
    seq_adv = torch.randn(6, generator=gen)
    acc = torch.randint(0, 2, (6,), generator=gen)
    cfg = CareConfig(token_weighting=weighting)
    token_adv = compute_region_weighted_token_advantages(seq_adv, acc, think, answer, resp, cfg)
    torch.testing.assert_close(token_adv.sum(1), seq_adv, rtol=1e-5, atol=1e-6)
    assert (token_adv[resp == 0] == 0).all()


def test_whole_step_spreads_each_rows_sequence_advantage_over_its_tokens():
    """compute_care_advantages (the trainer's compute step): sections 2-3 per row, section 5 per token."""
    batch = make_batch([[1, 0, 0, 1], [0, 0, 0], [1, 1]], seed=3)
    think, answer, resp = spans_batch(3, batch=9)
    seq_adv, token_adv, info = compute_care_advantages(**batch, think_mask=think, answer_mask=answer,
                                                       response_mask=resp, config=CareConfig(k=2, m=2))
    alone, alone_info = compute_care_sequence_advantages(**batch, config=CareConfig(k=2, m=2))
    torch.testing.assert_close(seq_adv, alone)
    assert all(torch.equal(info[key], alone_info[key]) for key in alone_info)
    torch.testing.assert_close(token_adv.sum(1), seq_adv, rtol=1e-5, atol=1e-6)
    assert (token_adv[resp == 0] == 0).all() and token_adv.shape == resp.shape


def test_region_weights():
    think, answer, resp = spans_batch(1, batch=3)
    answer[2] = False
    seq_adv = torch.tensor([1.0, -1.0, 2.0])
    acc = torch.tensor([1, 0, 1])
    token_adv = compute_region_weighted_token_advantages(seq_adv, acc, think, answer, resp, CareConfig())
    t, a = think[0], answer[0]
    ratio = token_adv[0][t] / token_adv[0][a][0]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.005))  # τ+ on a correct rollout's think tokens
    assert (token_adv[1][think[1]] == 0).all()  # failures: no weight on think tokens
    outside = (resp[0] == 1) & ~t & ~a
    assert (token_adv[0][outside] == 0).all()  # tags, gaps, EOS
    row2 = token_adv[2][resp[2] == 1]
    torch.testing.assert_close(row2, torch.full_like(row2, 2.0 / int(resp[2].sum())))  # no answer span: uniform
    answer_only = compute_region_weighted_token_advantages(seq_adv, acc, think, answer, resp,
                                                           CareConfig(token_weighting="answer_only"))
    assert (answer_only[0][t] == 0).all()
    uniform = compute_region_weighted_token_advantages(seq_adv, acc, think, answer, resp,
                                                       CareConfig(token_weighting="uniform"))
    torch.testing.assert_close(uniform, seq_adv.unsqueeze(1) * resp.float())  # GRPO-style broadcast


# ------------------------------------------------------------------ config and bad input


def test_default_config_is_the_paper():
    cfg = CareConfig()
    assert (cfg.k, cfg.m, cfg.neg_scale, cfg.reflected_neg_scale, cfg.tau_think, cfg.rescue.gamma, cfg.eps) == (
        4, 6, 0.5, 0.25, 0.005, 0.1, 1e-6)
    assert cfg.selector == "cosine" and cfg.token_weighting == "region_weighted" and cfg.equalize and cfg.rescue.enable


@pytest.mark.parametrize("kwargs,message", [
    (dict(k=4, m=3), "care.m"),
    (dict(selector="cosin"), "care.selector"),
    (dict(token_weighting="regional"), "care.token_weighting"),
    (dict(neg_scale=-1), "care.neg_scale"),
    (dict(k=0), "care.k"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CareConfig(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(logp="max"), "care.rescue.logp"),
    (dict(gamma=-0.1), "care.rescue.gamma"),
])
def test_rescue_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RescueConfig(**kwargs)


def test_bad_inputs_raise_clear_errors():
    batch = make_batch([[1, 0]])
    with pytest.raises(ValueError, match="acc must be exactly 0 or 1"):
        compute_care_sequence_advantages(**dict(batch, acc=torch.tensor([0.9, 0.1])))
    with pytest.raises(ValueError, match="NaN"):
        compute_care_sequence_advantages(**dict(batch, rewards=torch.tensor([float("nan"), 0.0])))
    with pytest.raises(ValueError, match="think_emb"):
        compute_care_sequence_advantages(**dict(batch, think_emb=torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="think_len"):
        compute_care_sequence_advantages(**dict(batch, think_len=torch.zeros(5)))


def test_registered_with_verl_and_refuses_the_stock_trainer():
    from recipe.care.adv_estimator import CareNeedsCareTrainerError
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    fn = get_adv_estimator_fn("care")
    with pytest.raises(CareNeedsCareTrainerError, match="care_sync"):
        fn(token_level_rewards=torch.zeros(2, 3), response_mask=torch.ones(2, 3), index=np.array(["a", "a"]))
