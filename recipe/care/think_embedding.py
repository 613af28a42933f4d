"""Think embeddings h_i (docs/algorithm.md section 1): pure pooling, no verl import.

h_i = L2-normalise( mean over the think-span tokens of the final-layer hidden states (after the
final norm) ), computed in fp32; the whole response when the rollout has no think span. The
hidden states come from the forward pass that already computes old log-probs, in one of the two
layouts verl's engine uses:

- packed (remove-padding): ``[T, H]`` (or ``[1, T, H]``), the sequences of a micro-batch
  concatenated, sample ``i`` occupying ``seq_lens[i]`` rows;
- padded: ``[B, S, H]``, sample ``i`` in row ``i``, right-padded after ``seq_lens[i]`` tokens.

In both, a sample's sequence is prompt + response, so its response is the last ``resp_len``
positions of its sequence. The pooled state of a token is the state at that token's own position
(what ``hidden_states[-1]`` of a plain forward holds there), not the shifted next-token position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# F.normalize's floor on the norm; a row with no pooled token stays exactly zero.
_NORM_EPS = 1e-12


def response_pool_mask(
    think_mask: torch.Tensor, has_think: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Which response tokens to pool: the think span, or the whole response where there is none.

    think_mask: bool [B, L]; has_think: bool [B]; response_mask: [B, L] (1 = token the policy
    produced; inserted tokens such as RGR's repair cue are 0 and are never pooled).
    Returns bool [B, L]. A think span that holds no policy token (``<think></think>``) counts as
    no think span, so every rollout with a response gets a non-zero embedding.
    """
    produced = response_mask.bool()
    think = think_mask.bool() & produced & has_think.bool().unsqueeze(-1)
    empty = ~think.any(dim=-1, keepdim=True)
    return torch.where(empty, produced, think)


def pool_think_embeddings(states: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Masked mean + L2 normalisation, per sample, in fp32.

    states: B tensors [r_i, H] (the hidden states over sample i's response positions);
    masks: B tensors [r_i] (bool or 0/1) selecting the pooled positions.
    Returns float32 [B, H]; a sample with no selected position gets the zero vector.
    """
    if len(states) != len(masks):
        raise ValueError(f"{len(states)} state blocks but {len(masks)} masks")
    if not states:
        raise ValueError("pool_think_embeddings needs at least one sample")
    # verl calls prepare_model_outputs (where this runs) inside torch.autocast: there the matmul
    # below would run in bf16 whatever its inputs' dtype (~1e-3 error on a unit vector, enough to
    # flip near-tie cosine rankings). Autocast is switched off for the pooling only.
    with torch.autocast(device_type=states[0].device.type, enabled=False):
        rows = []
        for state, mask in zip(states, masks, strict=True):
            if state.shape[0] != mask.shape[0]:
                raise ValueError(f"state block has {state.shape[0]} positions but its mask has {mask.shape[0]}")
            weight = mask.to(device=state.device, dtype=torch.float32)
            # [1, r] @ [r, H]: sums in fp32 without materialising an fp32 copy weighted elementwise.
            total = weight.unsqueeze(0) @ state.to(torch.float32)
            rows.append(total.squeeze(0) / weight.sum().clamp(min=1.0))
        return F.normalize(torch.stack(rows), p=2, dim=-1, eps=_NORM_EPS)


def _check_lengths(seq_lens: torch.Tensor, resp_lens: torch.Tensor) -> tuple[list[int], list[int]]:
    seq = [int(x) for x in seq_lens.tolist()]
    resp = [int(x) for x in resp_lens.tolist()]
    if len(seq) != len(resp):
        raise ValueError(f"{len(seq)} sequence lengths but {len(resp)} response lengths")
    for s, r in zip(seq, resp, strict=True):
        if r > s:
            raise ValueError(f"response length {r} exceeds its sequence length {s}")
    return seq, resp


def response_states_packed(hidden: torch.Tensor, seq_lens: torch.Tensor, resp_lens: torch.Tensor) -> list[torch.Tensor]:
    """Views of each sample's response positions in a packed ``[T(+pad), H]`` / ``[1, T(+pad), H]`` tensor.

    Trailing rows beyond ``sum(seq_lens)`` (the engine's static packing pad) are ignored.
    """
    if hidden.dim() == 3:
        if hidden.shape[0] != 1:
            raise ValueError(f"packed hidden states must be [1, T, H], got {tuple(hidden.shape)}")
        hidden = hidden[0]
    seq, resp = _check_lengths(seq_lens, resp_lens)
    if sum(seq) > hidden.shape[0]:
        raise ValueError(f"{sum(seq)} packed tokens expected, hidden states hold {hidden.shape[0]}")
    views, end = [], 0
    for s, r in zip(seq, resp, strict=True):
        end += s
        views.append(hidden[end - r : end])
    return views


def response_states_padded(hidden: torch.Tensor, seq_lens: torch.Tensor, resp_lens: torch.Tensor) -> list[torch.Tensor]:
    """Views of each sample's response positions in a right-padded ``[B, S, H]`` tensor."""
    if hidden.dim() != 3:
        raise ValueError(f"padded hidden states must be [B, S, H], got {tuple(hidden.shape)}")
    seq, resp = _check_lengths(seq_lens, resp_lens)
    if len(seq) != hidden.shape[0]:
        raise ValueError(f"{len(seq)} samples but hidden states hold {hidden.shape[0]} rows")
    if max(seq) > hidden.shape[1]:
        raise ValueError(f"sequence of {max(seq)} tokens does not fit hidden states of width {hidden.shape[1]}")
    return [hidden[i, s - r : s] for i, (s, r) in enumerate(zip(seq, resp, strict=True))]
