"""CARE advantage mathematics (docs/algorithm.md sections 2, 3 and 5) as pure torch functions.

No verl, Ray or TransferQueue import: the trainer adapter (``recipe.care.trainer``) reads the
tensors off the batch and calls :func:`compute_care_advantages` (sequence advantages by
:func:`compute_care_sequence_advantages`, spread over tokens by
:func:`compute_region_weighted_token_advantages`). Everything is vectorised across groups: rows are
laid out as a padded ``[G, N]`` grid (G groups, N = largest group), so the cost is a handful of
batched tensor ops whatever the number of prompts.

Notation (per group): P = rollouts with ``acc = 1``, F = rollouts with ``acc = 0``, reflected =
rollouts produced by reflection-guided resampling (section 4).

Group paths:

* **anchored** (a non-reflected positive exists, and a failure or a reflected rollout exists):
  anchor + K' hard negatives form the subgroup S; z-score inside S; negative-only scaling;
  update-size equalisation √(K/K').
* **rescue** (every rollout failed, ``config.rescue.enable``): pseudo-anchor with the largest log-prob,
  K' farthest-first pseudo-negatives, zero-sum pseudo-rewards (+γ, −γ/K'), then the same pipeline.
* everything else (all correct, single rollouts, rescue off): advantage 0.

Rows outside S get exactly 0 but stay in the batch (they still count in the KL term and the
token-mean denominator).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from recipe.care.care_config import NEGATIVE_SELECTORS, CareConfig

__all__ = [
    "GroupLayout",
    "ROLE_NAMES",
    "GROUP_KIND_NAMES",
    "build_group_layout",
    "select_anchor",
    "select_hard_negatives",
    "select_rescue_subgroup",
    "farthest_first_fill",
    "subgroup_zscore",
    "compute_care_sequence_advantages",
    "compute_region_weighted_token_advantages",
    "compute_care_advantages",
]

# Per-row role codes in ``info["role"]``.
ROLE_NAMES = ("none", "anchor", "negative", "reflected", "rescue_anchor", "rescue_negative")
ROLE_NONE, ROLE_ANCHOR, ROLE_NEGATIVE, ROLE_REFLECTED, ROLE_RESCUE_ANCHOR, ROLE_RESCUE_NEGATIVE = range(6)

# Per-group kind codes in ``info["group_kind"]``: by the verifier outcome of the group's rollouts
# (a group whose only failure was repaired by RGR is still "mixed": it takes the anchored path).
GROUP_KIND_NAMES = ("all_correct", "mixed", "all_wrong")
KIND_ALL_CORRECT, KIND_MIXED, KIND_ALL_WRONG = range(3)


# --------------------------------------------------------------------------------------------
# Group layout: rows of a group need not be adjacent; everything below works on a [G, N] grid.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupLayout:
    """Maps batch rows to a padded ``[G, N]`` grid.

    group_id: long [B], dense group number (groups sorted by their id, so batch order is irrelevant).
    slot: long [B], position of the row inside its group, in batch order (the "lower index" of ties).
    rows: long [G, N], batch row of each grid cell, -1 for padding.
    valid: bool [G, N].
    """

    group_id: torch.Tensor
    slot: torch.Tensor
    rows: torch.Tensor
    valid: torch.Tensor
    keys: list

    @property
    def num_groups(self) -> int:
        return self.rows.shape[0]

    @property
    def flat(self) -> torch.Tensor:
        """long [B]: each row's cell in the flattened grid."""
        return self.group_id * self.rows.shape[1] + self.slot

    # index_select / scatter rather than advanced indexing: on CPU the latter runs through a
    # parallel kernel whose thread barrier costs milliseconds per call when cores are busy.
    def to_grid(self, values: torch.Tensor, fill: Any = 0) -> torch.Tensor:
        """``[B]`` -> ``[G, N]``; padding cells hold ``fill``."""
        grid = values.new_full((self.rows.numel(),), fill)
        return grid.scatter_(0, self.flat, values).view(self.rows.shape)

    def to_rows(self, grid: torch.Tensor) -> torch.Tensor:
        """``[G, N]`` -> ``[B]``."""
        return grid.reshape(-1).index_select(0, self.flat)

    def gather_rows(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, H]`` -> ``[G, N, H]`` (padding cells repeat row 0; callers never select them)."""
        return values.index_select(0, self.rows.clamp_min(0).reshape(-1)).view(*self.rows.shape, -1)


def build_group_layout(index: Sequence | np.ndarray | torch.Tensor) -> GroupLayout:
    """Group rows by ``index`` (str or int ids, e.g. verl's ``uid``), keeping batch order inside a group."""
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    ids = np.asarray(index)
    if ids.ndim != 1:
        raise ValueError(f"index must be one-dimensional [B], got shape {ids.shape}")
    # A dict factorisation: np.unique sorts the whole object array of Python strings (10x slower).
    first_seen: dict = {}
    codes = np.fromiter((first_seen.setdefault(k, len(first_seen)) for k in ids.tolist()), dtype=np.int64,
                        count=len(ids))
    keys = list(first_seen)
    try:
        order = sorted(range(len(keys)), key=keys.__getitem__)
    except TypeError:  # mixed key types: order by their text
        order = sorted(range(len(keys)), key=lambda i: str(keys[i]))
    relabel = np.empty(len(keys), dtype=np.int64)
    relabel[order] = np.arange(len(keys))
    keys = [keys[i] for i in order]  # group numbers follow the sorted ids, not the batch order
    group_id = torch.from_numpy(relabel[codes]) if len(keys) else torch.zeros(0, dtype=torch.long)
    batch = group_id.numel()
    order = torch.sort(group_id, stable=True).indices  # by group, then batch order
    counts = torch.bincount(group_id, minlength=len(keys))
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty(batch, dtype=torch.long)
    slot[order] = torch.arange(batch) - starts[group_id[order]]
    width = int(counts.max()) if batch else 0
    rows = torch.full((len(keys), width), -1, dtype=torch.long)
    rows[group_id, slot] = torch.arange(batch)
    return GroupLayout(group_id=group_id, slot=slot, rows=rows, valid=rows >= 0, keys=list(keys))


# --------------------------------------------------------------------------------------------
# Selection primitives, all batched over groups.
# --------------------------------------------------------------------------------------------


def _rank(score: torch.Tensor, candidates: torch.Tensor, descending: bool = False) -> torch.Tensor:
    """Rank of each candidate within its group by ``score`` (ties: lower slot first); non-candidates rank last.

    score, candidates: [G, N]. Returns long [G, N].
    """
    fill = float("-inf") if descending else float("inf")
    masked = torch.where(candidates, score, torch.full_like(score, fill))
    order = torch.sort(masked, dim=1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return torch.where(candidates, rank, torch.full_like(rank, order.shape[1]))


def select_anchor(candidates: torch.Tensor, think_len: torch.Tensor, answer_len: torch.Tensor) -> torch.Tensor:
    """Section 2.1: argmin T_think; ties -> smaller T_ans; ties -> lower slot.

    candidates: bool [G, N] (non-reflected positives); think_len, answer_len: long [G, N].
    Returns long [G] (0 for groups without a candidate; callers mask those).
    """
    width = candidates.shape[1]
    ans_span = int(answer_len.max().item()) + 1 if answer_len.numel() else 1
    key = (think_len.long() * ans_span + answer_len.long()) * width + torch.arange(width)
    key = torch.where(candidates, key, torch.full_like(key, torch.iinfo(torch.long).max))
    return key.argmin(dim=1)


def _one_hot(slot: torch.Tensor, width: int, where: torch.Tensor) -> torch.Tensor:
    """bool [G, N]: True at ``slot[g]`` for groups with ``where[g]``."""
    return torch.zeros(slot.shape[0], width, dtype=torch.bool).scatter_(1, slot.unsqueeze(1), where.unsqueeze(1))


def _row_of(dist: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """dist[g, slot[g], :] for every group: [G, N]."""
    width = dist.shape[2]
    return dist.gather(1, slot.view(-1, 1, 1).expand(-1, 1, width)).squeeze(1)


def farthest_first_fill(dist: torch.Tensor, candidates: torch.Tensor, picked: torch.Tensor,
                        n_more: torch.Tensor) -> torch.Tensor:
    """Add ``n_more[g]`` rows to each group's picked set, farthest-first.

    Each step picks the candidate whose minimum distance to the rows already picked is largest
    (ties: lower slot). dist: [G, N, N]; candidates, picked: bool [G, N]; n_more: long [G].
    Returns the new picked mask (a copy).
    """
    picked = picked.clone()
    steps = int(n_more.max().item()) if n_more.numel() else 0
    if steps == 0:
        return picked
    width = picked.shape[1]
    # Distance of every row to its nearest picked row, updated with each pick (O(G·N) a step).
    nearest_picked = torch.where(picked.unsqueeze(1), dist, torch.full_like(dist, float("inf"))).amin(dim=2)
    for step in range(steps):
        free = candidates & ~picked
        score = torch.where(free, nearest_picked, torch.full_like(nearest_picked, float("-inf")))
        choice = score.argmax(dim=1)  # first maximum: the lower slot wins ties
        take = (n_more > step) & free.any(dim=1)
        picked |= _one_hot(choice, width, take)
        nearest_picked = torch.where(take.unsqueeze(1), torch.minimum(nearest_picked, _row_of(dist, choice)),
                                     nearest_picked)
    return picked


def _random_rank(layout: GroupLayout, candidates: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random rank per group: depends on (seed, group id, slot), not on batch order."""
    score = torch.zeros(candidates.shape, dtype=torch.float64)
    for g, key in enumerate(layout.keys):
        rng = np.random.default_rng([seed, zlib.crc32(str(key).encode())])
        score[g] = torch.from_numpy(rng.random(candidates.shape[1]))
    return _rank(score, candidates)


def select_hard_negatives(selector: str, dist: torch.Tensor, anchor: torch.Tensor, failures: torch.Tensor,
                          reflected: torch.Tensor, k: int, m: int, active: torch.Tensor,
                          layout: GroupLayout | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Section 2.2 (and 4.5 for reflected rollouts): the K' negative slots of each anchored group.

    dist: [G, N, N] cosine distances; anchor: long [G]; failures: bool [G, N] non-reflected
    failures; reflected: bool [G, N] reflected rollouts (they always take a slot, never join the
    pool); active: bool [G] groups on the anchored path.
    Returns (picked bool [G, N], k_prime long [G]); K' = min(K, n_reflected + |F|), never fewer
    slots than reflected rollouts.
    """
    failures = failures & active.unsqueeze(1)
    reflected = reflected & active.unsqueeze(1)
    n_fail = failures.sum(1)
    n_refl = reflected.sum(1)
    k_prime = torch.maximum(torch.clamp(n_refl + n_fail, max=k), n_refl) * active
    n_open = k_prime - n_refl
    d_anchor = _row_of(dist, anchor)  # [G, N]: d_i = 1 - h_i . h+
    picked = reflected.clone()

    if selector == "cosine":
        pool = _rank(d_anchor, failures) < torch.clamp(n_fail, max=m).unsqueeze(1)
        # Without a reflected rollout the first pick is the nearest failure; with one, the open
        # slots continue farthest-first from the reflected rollout(s) already in the slots.
        nearest_first = (n_refl == 0) & (n_open > 0)
        picked |= (_rank(d_anchor, pool) == 0) & nearest_first.unsqueeze(1)
        picked = farthest_first_fill(dist, pool, picked, n_open - nearest_first.long())
    elif selector == "nearest":
        picked |= _rank(d_anchor, failures) < n_open.unsqueeze(1)
    elif selector == "farthest":
        picked |= _rank(d_anchor, failures, descending=True) < n_open.unsqueeze(1)
    elif selector == "mixed":
        n_near = (n_open + 1) // 2
        near = _rank(d_anchor, failures) < n_near.unsqueeze(1)
        far = _rank(d_anchor, failures & ~near, descending=True) < (n_open - n_near).unsqueeze(1)
        picked |= near | far
    elif selector == "random":
        if layout is None:
            raise ValueError("the random selector needs the group layout (for per-group seeding)")
        picked |= _random_rank(layout, failures, seed) < n_open.unsqueeze(1)
    else:
        raise ValueError(f"unknown selector {selector!r}; expected one of {NEGATIVE_SELECTORS}")
    return picked & active.unsqueeze(1), k_prime


def select_rescue_subgroup(dist: torch.Tensor, failures: torch.Tensor, reflected: torch.Tensor,
                           logp: torch.Tensor, k: int, active: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Section 3.1-3.2 for all-wrong groups.

    Pseudo-anchor t = the failure with the largest ``logp`` (ties: lower slot; reflected rollouts
    only if nothing else is left); pseudo-negatives: K' = min(K, |F| - 1) others, the first the
    farthest from t, then farthest-first from the negatives picked (t is not in that set,
    matching section 2.2).
    dist: [G, N, N]; failures, reflected: bool [G, N]; logp: float [G, N]; active: bool [G].
    Returns (pseudo_anchor long [G], pseudo_negatives bool [G, N], k_prime long [G]).
    """
    failures = failures & active.unsqueeze(1)
    width = failures.shape[1]
    plain = failures & ~reflected
    anchor_pool = torch.where(plain.any(1, keepdim=True), plain, failures)
    neg_inf = torch.full_like(logp, float("-inf"))
    anchor = torch.where(anchor_pool, logp, neg_inf).argmax(dim=1)
    others = failures & ~_one_hot(anchor, width, active)
    k_prime = torch.clamp(others.sum(1), max=k) * active
    d_anchor = _row_of(dist, anchor)
    first = torch.where(others, d_anchor, torch.full_like(d_anchor, float("-inf"))).argmax(dim=1)
    picked = _one_hot(first, width, k_prime > 0)
    picked = farthest_first_fill(dist, others, picked, torch.clamp(k_prime - 1, min=0))
    return anchor, picked, k_prime


def subgroup_zscore(values: torch.Tensor, members: torch.Tensor, eps: float) -> torch.Tensor:
    """(v - mean_S v) / (std_S v + eps) with the population std (ddof = 0); 0 outside S.

    values: float [G, N]; members: bool [G, N].
    """
    m = members.to(values.dtype)
    count = m.sum(1, keepdim=True).clamp_min(1)
    mean = (values * m).sum(1, keepdim=True) / count
    std = (((values - mean) * m) ** 2).sum(1, keepdim=True).div(count).sqrt()
    return torch.where(members, (values - mean) / (std + eps), torch.zeros_like(values))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _as_tensor(name: str, value: Any, batch: int | None, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if isinstance(value, (list, tuple)) else value)
    tensor = tensor.detach().cpu().to(dtype)
    if tensor.ndim != 1 or (batch is not None and tensor.shape[0] != batch):
        raise ValueError(f"{name} must have shape [B] with B={batch}, got {tuple(tensor.shape)}")
    return tensor


@torch.no_grad()
def compute_care_sequence_advantages(
    rewards: torch.Tensor,
    acc: torch.Tensor,
    index: Sequence | np.ndarray | torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    think_emb: torch.Tensor,
    logp_sum: torch.Tensor,
    response_len: torch.Tensor,
    reflected: torch.Tensor | None = None,
    config: CareConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CARE sequence advantages (sections 2 and 3).

    Args:
        rewards: float [B], training reward r_i (z-scored inside S).
        acc: [B] in {0, 1}, verifier correctness: the positive/failure gate (never ``r > 0``).
        index: [B] group id per row (str or int; rows of a group need not be adjacent).
        think_len, answer_len: long [B], T_think / T_ans of section 1 (span token count, or the
            response length when the rollout has no such span).
        think_emb: float [B, H], think embeddings (L2-normalised here in fp32).
        logp_sum: float [B], sum of old log-probs over the response (rescue pseudo-anchor).
        response_len: long [B], response tokens (turns ``logp_sum`` into a mean for
            ``care.rescue.logp=mean``).
        reflected: bool [B] or None, rows produced by reflection-guided resampling.
        config: :class:`CareConfig`; ``None`` means the paper's defaults.

    Returns:
        seq_adv: float [B] on the device of ``rewards``.
        info: dict of per-row tensors [B]: ``role`` (long, see ``ROLE_NAMES``), ``in_subgroup``
        (bool), ``raw_adv`` (float, z-score before negative scaling and equalisation; with
        ``care.rescue.normalize=false`` the pseudo-reward), ``k_prime`` (long, K' of the row's group,
        0 if none), ``group_kind`` (long, see ``GROUP_KIND_NAMES``), ``group_id`` (long).
    """
    config = config or CareConfig()
    out_device = rewards.device if isinstance(rewards, torch.Tensor) else torch.device("cpu")
    r = _as_tensor("rewards", rewards, None, torch.float32)
    batch = r.shape[0]
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf")
    acc_t = _as_tensor("acc", acc, batch, torch.float32)
    if not ((acc_t == 0) | (acc_t == 1)).all():
        raise ValueError("acc must be exactly 0 or 1 per row (the verifier's correctness, not the reward)")
    acc_b = acc_t.bool()
    t_think = _as_tensor("think_len", think_len, batch, torch.long)
    t_ans = _as_tensor("answer_len", answer_len, batch, torch.long)
    logp = _as_tensor("logp_sum", logp_sum, batch, torch.float32)
    resp_len = _as_tensor("response_len", response_len, batch, torch.long)
    refl = torch.zeros(batch, dtype=torch.bool) if reflected is None else _as_tensor("reflected", reflected, batch, torch.bool)
    emb = torch.as_tensor(think_emb).detach().cpu().float()
    if emb.ndim != 2 or emb.shape[0] != batch:
        raise ValueError(f"think_emb must have shape [B, H] with B={batch}, got {tuple(emb.shape)}")
    layout = build_group_layout(index)
    if layout.group_id.numel() != batch:
        raise ValueError(f"index has {layout.group_id.numel()} rows, rewards has {batch}")

    valid = layout.valid
    g_acc = layout.to_grid(acc_b, False)
    g_refl = layout.to_grid(refl, False) & valid
    g_fail = valid & ~g_acc
    g_emb = layout.gather_rows(emb)
    gram = torch.bmm(g_emb, g_emb.transpose(1, 2))  # [G, N, N]; normalising after the product
    norm = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().clamp_min(1e-12)  # spares a pass over [B, H]
    dist = 1.0 - gram / (norm.unsqueeze(2) * norm.unsqueeze(1))  # cosine distance

    # Group paths.
    anchor_pool = g_acc & ~g_refl
    has_anchor = anchor_pool.any(1)
    anchored = has_anchor & ((g_fail & ~g_refl).any(1) | g_refl.any(1))
    all_wrong = ~(g_acc & valid).any(1)
    rescued = all_wrong & torch.full_like(all_wrong, bool(config.rescue.enable)) & (valid.sum(1) >= 2)
    group_kind = torch.where(all_wrong, KIND_ALL_WRONG, torch.where(anchored | g_fail.any(1), KIND_MIXED, KIND_ALL_CORRECT))

    width = valid.shape[1]
    # Anchored contrast.
    anchor = select_anchor(anchor_pool, layout.to_grid(t_think), layout.to_grid(t_ans))
    negatives, k_anchored = select_hard_negatives(
        config.selector, dist, anchor, g_fail & ~g_refl, g_refl, config.k, config.m, anchored,
        layout=layout, seed=config.seed)
    is_anchor = _one_hot(anchor, width, anchored)

    # All-negative rescue.
    logp_score = logp if config.rescue.logp == "sum" else logp / resp_len.clamp_min(1).float()
    r_anchor, r_negatives, k_rescue = select_rescue_subgroup(
        dist, g_fail, g_refl, layout.to_grid(logp_score, float("-inf")), config.k, rescued)
    rescued = rescued & (k_rescue > 0)
    is_r_anchor = _one_hot(r_anchor, width, rescued)
    r_negatives &= rescued.unsqueeze(1)

    k_prime = torch.where(anchored, k_anchored, torch.where(rescued, k_rescue, 0))
    members = is_anchor | negatives | is_r_anchor | r_negatives
    gamma = float(config.rescue.gamma)
    pseudo = torch.where(is_r_anchor, gamma, 0.0) - torch.where(r_negatives, gamma / k_prime.clamp_min(1).unsqueeze(1), 0.0)
    values = torch.where(rescued.unsqueeze(1), pseudo, layout.to_grid(r))

    raw = subgroup_zscore(values, members, float(config.eps))
    # Negative-only scaling: failures in S (and rescue pseudo-negatives) keep −s·|A_raw|.
    failing = (negatives & ~g_acc) | r_negatives
    scale = torch.where(g_refl, config.reflected_neg_scale, float(config.neg_scale))
    adv = torch.where(failing, -scale * raw.abs(), raw)
    if config.equalize:
        adv = adv * torch.sqrt(config.k / k_prime.clamp_min(1).float()).unsqueeze(1)
    if not config.rescue.normalize:  # ablation: the pseudo-rewards are the advantage (size γ)
        raw = torch.where(rescued.unsqueeze(1) & members, pseudo, raw)
        adv = torch.where(rescued.unsqueeze(1) & members, pseudo, adv)
    adv = torch.where(members, adv, torch.zeros_like(adv))

    role = torch.full(valid.shape, ROLE_NONE, dtype=torch.long)
    for mask, code in ((negatives & ~g_refl, ROLE_NEGATIVE), (negatives & g_refl, ROLE_REFLECTED),
                       (is_anchor, ROLE_ANCHOR), (r_negatives, ROLE_RESCUE_NEGATIVE), (is_r_anchor, ROLE_RESCUE_ANCHOR)):
        role = torch.where(mask, code, role)

    info = {
        "role": layout.to_rows(role),
        "in_subgroup": layout.to_rows(members),
        "raw_adv": layout.to_rows(raw),
        "k_prime": k_prime.index_select(0, layout.group_id),
        "group_kind": group_kind.index_select(0, layout.group_id),
        "group_id": layout.group_id.clone(),
    }
    return layout.to_rows(adv).to(out_device), info


@torch.no_grad()
def compute_region_weighted_token_advantages(
    seq_adv: torch.Tensor,
    acc: torch.Tensor,
    think_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    response_mask: torch.Tensor,
    config: CareConfig | None = None,
) -> torch.Tensor:
    """Section 5: spread each sequence advantage over its tokens.

    w_t = 1 on answer tokens, τ+ on think tokens of correct rollouts, 0 elsewhere (think tokens
    of failures, tags, text between spans, EOS); a response without answer tokens gets w = 1 on
    every response token. a_t = A · w_t / max(Σ w, 1e-6), so a row's token advantages sum to A.
    ``uniform`` instead broadcasts A to every response token (GRPO-style, no normalisation).

    seq_adv: float [B]; acc: [B] 0/1; think_mask, answer_mask, response_mask: [B, L].
    Returns float [B, L] (dtype of seq_adv if floating, else float32).
    """
    config = config or CareConfig()
    dtype = seq_adv.dtype if seq_adv.is_floating_point() else torch.float32
    adv = seq_adv.to(dtype)
    resp = response_mask.to(dtype)
    if config.token_weighting == "uniform":
        return adv.unsqueeze(1) * resp
    # The weights take three values per row (answer, think, rest), so the result is built in place
    # from float masks and per-row coefficients: each [B, L] pass costs about as much as GRPO's
    # broadcast (bool reductions and bool->float `where` are several times slower on CPU).
    out = answer_mask.to(dtype).mul_(resp)  # answer tokens inside the response
    n_answer = out.sum(1)
    has_answer = n_answer > 0
    tau = float(config.tau_think) if config.token_weighting == "region_weighted" else 0.0
    think_weight = torch.as_tensor(acc, device=adv.device).to(dtype) * tau  # τ+ for correct rollouts only
    think = None
    total = n_answer
    if tau and bool((think_weight > 0).any()):
        think = think_mask.to(dtype).mul_(resp)
        total = n_answer + think_weight * think.sum(1)
    per_answer = adv / total.clamp_min(1e-6)
    out.mul_(per_answer.unsqueeze(1))
    if think is not None:
        out.add_(think.mul_((per_answer * think_weight * has_answer).unsqueeze(1)))
    if not bool(has_answer.all()):  # rows without an answer span: w = 1 on every response token
        rows = (~has_answer).nonzero().squeeze(1)
        per_token = adv[rows] / resp[rows].sum(1).clamp_min(1e-6)
        out[rows] = resp[rows] * per_token.unsqueeze(1)
    return out


@torch.no_grad()
def compute_care_advantages(
    rewards: torch.Tensor,
    acc: torch.Tensor,
    index: Sequence | np.ndarray | torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    think_emb: torch.Tensor,
    logp_sum: torch.Tensor,
    response_len: torch.Tensor,
    think_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    response_mask: torch.Tensor,
    reflected: torch.Tensor | None = None,
    config: CareConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The whole CARE advantage step of one batch: sections 2-3, then section 5.

    Takes the arguments of :func:`compute_care_sequence_advantages` (all [B]; ``think_emb`` [B, H])
    plus the span masks think_mask, answer_mask and response_mask, [B, L].
    Returns (seq_adv float [B], token_adv float [B, L], info: the per-row dict of
    :func:`compute_care_sequence_advantages`).
    """
    seq_adv, info = compute_care_sequence_advantages(
        rewards=rewards, acc=acc, index=index, think_len=think_len, answer_len=answer_len, think_emb=think_emb,
        logp_sum=logp_sum, response_len=response_len, reflected=reflected, config=config)
    token_adv = compute_region_weighted_token_advantages(
        seq_adv=seq_adv, acc=acc, think_mask=think_mask, answer_mask=answer_mask, response_mask=response_mask,
        config=config)
    return seq_adv, token_adv, info
