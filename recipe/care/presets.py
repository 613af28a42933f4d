"""Launch presets for the paper's backbones: ``bash run_care.sh --model qwen2.5-vl-3b|qwen2.5-vl-7b|qwen3-vl-8b``.

A preset is a list of hydra overrides placed after the ALGO preset and before the user's own
overrides, so any ``key=value`` on the command line (and ``MODEL_PATH``) still wins.

Every preset uses the authors' step shape (EasyR1 fork; docs/verl-integration.md, "The authors'
training settings"): 512 prompts per step, actor global batch 128 prompts (4 updates per step),
prompts and responses up to 2048 tokens each, n = 8 rollouts per prompt. The per-model settings were chosen for 8 GPUs of 80 GB or more per node
(H100/H200) and have not been run on a GPU yet: vLLM tensor parallel size and memory share,
per-GPU micro-batches, and dynamic batch sizes (token budgets per GPU; a sequence is at most
4096 tokens, so the actor budget holds at least 3 of the longest sequences).

Other GPU counts (``trainer.n_gpus_per_node`` x ``trainer.nnodes``): the step shape stays the
authors' (it is the algorithm; per-GPU memory depends on the micro-batches and token budgets, not
on the step size, so fewer GPUs means longer steps, not bigger ones). What depends on the count
is scaled: the tensor parallel size is capped at the GPUs of one node (and made a divisor of
it), and when the FSDP training state per GPU (fp32 parameters, gradients and Adam moments,
16 bytes per parameter, sharded over all GPUs) would exceed ``OFFLOAD_ABOVE_GB``, parameters and
optimizer state are offloaded to CPU. The step shape must split evenly over the GPUs (verl
asserts it); otherwise it is rounded down to the nearest multiple of the GPU count, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

# The authors' step shape.
PROMPTS_PER_STEP = 512
GLOBAL_BATCH = 128
MAX_PROMPT_TOKENS = 2048
MAX_RESPONSE_TOKENS = 2048
ROLLOUTS_PER_PROMPT = 8
REFERENCE_GPUS = 8
# FSDP training state per GPU above which parameters and optimizer state go to CPU memory
# (leaves room for activations, vLLM's share and the ref model on an 80 GB GPU).
OFFLOAD_ABOVE_GB = 30.0


@dataclass(frozen=True)
class ModelPreset:
    name: str
    model_path: str
    family: str  # qwen2.5-vl | qwen3-vl (the smoke's tiny model of the same family)
    params_b: float  # parameters, billions (for the offload rule)
    tensor_parallel: int  # vLLM TP at 8 GPUs per node
    gpu_memory_utilization: float  # vLLM's share of each GPU
    actor_micro_batch: int  # per GPU, used when dynamic batch size is off
    log_prob_micro_batch: int
    actor_max_tokens: int  # per GPU, dynamic batch size
    log_prob_max_tokens: int


PRESETS = {
    p.name: p
    for p in (
        ModelPreset("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl", 3.8, 1, 0.6, 8, 16, 24576, 49152),
        ModelPreset("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", 8.3, 2, 0.6, 4, 8, 16384, 32768),
        ModelPreset("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", "qwen3-vl", 8.8, 2, 0.6, 4, 8, 12288, 24576),
    )
}
DEFAULT_PRESET = "qwen2.5-vl-7b"


class PresetError(ValueError):
    pass


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise PresetError(f"unknown --model {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _round_to_multiple(value: int, step: int) -> int:
    return max(step, value // step * step)


def preset_overrides(name: str, n_gpus_per_node: int = REFERENCE_GPUS, nnodes: int = 1) -> tuple[list[str], list[str]]:
    """(hydra overrides, notes) for preset ``name`` on ``n_gpus_per_node`` x ``nnodes`` GPUs."""
    p = get_preset(name)
    if n_gpus_per_node < 1 or nnodes < 1:
        raise PresetError(f"need at least one GPU and one node, got {n_gpus_per_node} x {nnodes}")
    world = n_gpus_per_node * nnodes
    notes = []
    tp = _largest_divisor_at_most(n_gpus_per_node, p.tensor_parallel)
    if tp != p.tensor_parallel:
        notes.append(f"vLLM tensor parallel size {tp} (preset {p.tensor_parallel}) to fit {n_gpus_per_node} GPU(s) per node")
    # verl splits prompts*n and global_batch*n rollouts evenly over the data-parallel ranks.
    prompts, global_batch = PROMPTS_PER_STEP, GLOBAL_BATCH
    if (prompts * ROLLOUTS_PER_PROMPT) % world or (global_batch * ROLLOUTS_PER_PROMPT) % world:
        unit = world // gcd(world, ROLLOUTS_PER_PROMPT)  # prompts per step must be a multiple of this
        prompts, global_batch = _round_to_multiple(prompts, unit), _round_to_multiple(global_batch, unit)
        notes.append(f"step shape {prompts}/{global_batch} prompts (authors' {PROMPTS_PER_STEP}/{GLOBAL_BATCH}) "
                     f"so that it splits over {world} GPUs")
    state_gb = p.params_b * 16 / world
    offload = state_gb > OFFLOAD_ABOVE_GB
    if offload:
        notes.append(f"FSDP parameter and optimizer offload on: ~{state_gb:.0f} GB of training state per GPU on {world} GPU(s)")
    a, r, ref = "actor_rollout_ref.actor", "actor_rollout_ref.rollout", "actor_rollout_ref.ref"
    overrides = [
        f"actor_rollout_ref.model.path={p.model_path}",
        f"data.train_batch_size={prompts}",
        f"data.max_prompt_length={MAX_PROMPT_TOKENS}",
        f"data.max_response_length={MAX_RESPONSE_TOKENS}",
        f"{r}.n={ROLLOUTS_PER_PROMPT}",
        f"{a}.ppo_mini_batch_size={global_batch}",
        f"{r}.tensor_model_parallel_size={tp}",
        f"{r}.gpu_memory_utilization={p.gpu_memory_utilization}",
        f"{a}.ppo_micro_batch_size_per_gpu={p.actor_micro_batch}",
        f"{r}.log_prob_micro_batch_size_per_gpu={p.log_prob_micro_batch}",
        f"{ref}.log_prob_micro_batch_size_per_gpu={p.log_prob_micro_batch}",
        f"{a}.use_dynamic_bsz=true",
        f"{a}.ppo_max_token_len_per_gpu={p.actor_max_tokens}",
        f"{r}.log_prob_use_dynamic_bsz=true",
        f"{r}.log_prob_max_token_len_per_gpu={p.log_prob_max_tokens}",
        f"{ref}.log_prob_use_dynamic_bsz=true",
        f"{ref}.log_prob_max_token_len_per_gpu={p.log_prob_max_tokens}",
        f"{a}.fsdp_config.param_offload={str(offload).lower()}",
        f"{a}.fsdp_config.optimizer_offload={str(offload).lower()}",
        f"{ref}.fsdp_config.param_offload={str(offload).lower()}",
        f"trainer.n_gpus_per_node={n_gpus_per_node}",
        f"trainer.nnodes={nnodes}",
    ]
    return overrides, notes
