"""Actor worker that returns think embeddings from the old-log-prob forward pass (no extra pass).

verl 0.9.1's actor engine emits log-probs and entropy only. CARE also needs h_i, the mean of the
final-layer hidden states over each rollout's think span (docs/algorithm.md section 1). Rather
than running the model a second time, as the authors' code does, this worker

1. puts a forward hook on the decoder's final norm (``get_decoder().norm``: its output is
   ``hidden_states[-1]`` for Qwen2, Qwen2.5-VL and Qwen3-VL text models), armed only for
   micro-batches whose batch carries the :data:`EMB_FLAG` flag (wrapper of
   ``prepare_model_inputs``), and
2. wraps the engine's ``prepare_model_outputs`` so that, for those micro-batches, the captured
   states are pooled over the :data:`POOL_MASK` positions (written by the trainer) and returned as
   a per-sample ``think_emb`` output next to ``log_probs``.

verl's own post-processing then concatenates micro-batches, undoes dynamic-batch reordering
(``postprocess_batch_func``/``restore_dynamic_batch``) and its ``tqbridge`` writes ``think_emb``
to TransferQueue, exactly like ``log_probs``. Both layouts of the engine are handled (packed
remove-padding ``[1, T, H]`` and padded ``[B, S, H]``). Ulysses sequence parallelism slices the
packed sequence across ranks; pooling would need an all-gather, so SP > 1 is refused.

``init_model`` also makes sure :mod:`recipe.care.verl_fixes` is applied in this process (it is
normally loaded in every verl process through ``VERL_USE_EXTERNAL_MODULES``).
"""

from __future__ import annotations

import torch

from recipe.care.fault_points import actor_file_hook
from recipe.care.registrations import require_recipe_registrations
from recipe.care.think_embedding import pool_think_embeddings, response_states_packed, response_states_padded
from recipe.care.verl_compat import require_verl_attr
from recipe.care.verl_fixes import install_qwen2_vl_text_only_fix

# Written against verl 0.9.1.
ActorRolloutRefWorker = require_verl_attr("verl.workers.engine_workers", "ActorRolloutRefWorker")
Dispatch, register = require_verl_attr("verl.single_controller.base.decorator", "Dispatch", "register")
FSDPEngineWithLMHead = require_verl_attr("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead")
tu = require_verl_attr("verl.utils", "tensordict_utils")

EMB_FLAG = "care_think_emb"  # non-tensor flag on the batch: return think embeddings
POOL_MASK = "care_pool_mask"  # nested [B, response_len] 0/1: response positions pooled into h_i
THINK_EMB = "think_emb"  # output: float32 [B, H], L2-normalised


class ThinkEmbeddingUnsupported(RuntimeError):
    pass


def refuse_sequence_parallel(engine) -> None:
    """Ulysses SP slices each packed sequence across ranks; pooling a think span would need an all-gather."""
    sp = getattr(engine, "ulysses_sequence_parallel_size", 1)
    if sp > 1:
        raise ThinkEmbeddingUnsupported(
            f"CARE takes think embeddings from the actor's old-log-prob pass, which does not support "
            f"Ulysses sequence parallelism yet (ulysses_sequence_parallel_size={sp}); set "
            f"actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=1."
        )


def find_final_norm(module: torch.nn.Module) -> torch.nn.Module:
    """The decoder's final norm of an HF causal LM / VLM, through FSDP1/PEFT wrappers."""
    model = module
    for _ in range(4):  # FSDP1 `.module`, PEFT `.base_model.model`, ...
        if hasattr(model, "get_decoder"):
            break
        model = getattr(model, "module", None) or getattr(model, "base_model", None)
        if model is None:
            break
    decoder = model.get_decoder() if model is not None and hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise ThinkEmbeddingUnsupported(
            f"CARE think embeddings hook the decoder's final norm (`get_decoder().norm`), which "
            f"{type(module).__name__} does not expose; supported: Qwen2/Qwen2.5-VL/Qwen3-VL style models."
        )
    return norm


class ThinkEmbeddingTap:
    """Hook + wrappers installed on one FSDP engine instance (see the module docstring)."""

    def __init__(self, engine):
        if not isinstance(engine, FSDPEngineWithLMHead):
            raise ThinkEmbeddingUnsupported(
                f"CARE think embeddings need verl's FSDP engine (actor strategy fsdp/fsdp2), got {type(engine).__name__}."
            )
        self.engine = engine
        self.armed = False
        self.micro_batch = None
        self.pooled: torch.Tensor | None = None
        self.forward_calls = 0
        self._handle = find_final_norm(engine.module).register_forward_hook(self._on_norm_output)
        self._prepare_inputs = engine.prepare_model_inputs
        self._prepare_outputs = engine.prepare_model_outputs
        # Instance attributes shadow the class methods forward_step calls (verl 0.9.1
        # transformer_impl.py:1554 and :1578); nothing of verl's code is copied.
        engine.prepare_model_inputs = self.prepare_model_inputs
        engine.prepare_model_outputs = self.prepare_model_outputs

    def _on_norm_output(self, module, args, output):
        # Pool right here, before the LM head runs: the tap then holds no reference to the
        # micro-batch's hidden states while logits and log-probs are computed; its only extra
        # memory is the fp32 copy of one sample's response states inside pool_think_embeddings
        # and the [B, H] result (benchmarks/bench_think_embedding.py measures time and memory).
        self.forward_calls += 1
        if self.armed:
            hidden = output[0] if isinstance(output, tuple) else output
            self.pooled = self.pool(hidden.detach(), self.micro_batch)

    def prepare_model_inputs(self, micro_batch):
        self.armed = bool(tu.get_non_tensor_data(data=micro_batch, key=EMB_FLAG, default=False))
        self.pooled = None
        self.micro_batch = micro_batch if self.armed else None
        if self.armed:
            refuse_sequence_parallel(self.engine)
            if POOL_MASK not in micro_batch.keys():
                raise KeyError(f"`{EMB_FLAG}` is set but the batch has no `{POOL_MASK}` field (the CARE trainer writes it).")
        return self._prepare_inputs(micro_batch)

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        model_output = self._prepare_outputs(
            output=output, output_args=output_args, micro_batch=micro_batch, logits_processor_func=logits_processor_func
        )
        if self.armed:
            pooled, self.pooled, self.armed, self.micro_batch = self.pooled, None, False, None
            if pooled is None:
                raise RuntimeError("the final-norm hook captured nothing during the old-log-prob forward pass")
            model_output[THINK_EMB] = pooled
        return model_output

    @staticmethod
    def pool(hidden: torch.Tensor, micro_batch) -> torch.Tensor:
        seq_lens = micro_batch["input_ids"].offsets().diff()
        masks = list(micro_batch[POOL_MASK].unbind())
        resp_lens = torch.tensor([m.shape[0] for m in masks])
        if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):
            states = response_states_packed(hidden, seq_lens, resp_lens)
        else:
            states = response_states_padded(hidden, seq_lens, resp_lens)
        return pool_think_embeddings(states, masks)

    def remove(self) -> None:
        self._handle.remove()
        self.engine.prepare_model_inputs = self._prepare_inputs
        self.engine.prepare_model_outputs = self._prepare_outputs


class CareActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor/rollout/ref worker plus the think-embedding tap on the actor engine."""

    # Re-registered: an override loses the parent's dispatch attributes (verl 0.9.1 decorator.py:398).
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        require_recipe_registrations("CareActorRolloutRefWorker")
        install_qwen2_vl_text_only_fix()
        super().init_model()
        self.think_embedding_tap = None
        if self.actor is not None:
            refuse_sequence_parallel(self.actor.engine)
            self.think_embedding_tap = ThinkEmbeddingTap(self.actor.engine)

    # verl 0.9.1 ActorRolloutRefWorker.save_checkpoint; re-registered like init_model.
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        with actor_file_hook(global_step):  # a kill test's "between the actor's files" moment; inert otherwise
            return super().save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep)
