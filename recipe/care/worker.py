"""Actor worker that returns think embeddings from the old-log-prob forward pass (no extra pass).

verl 0.9.1's actor engine emits log-probs and entropy only. CARE also needs h_i, the mean of the
final-layer hidden states over each rollout's think span (care-algorithm.md section 1). Rather
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

``init_model`` also installs a small fix pinned to verl 0.9.1 for Qwen2(.5)-VL micro-batches
without any image (:func:`install_qwen2_vl_text_only_fix`), which crash in verl otherwise.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata

import torch

from recipe.care.think_embedding import pool_think_embeddings, response_states_packed, response_states_padded
from recipe.care.verl_compat import VERL_VERSION, require_verl_attr

# Written against verl 0.9.1.
ActorRolloutRefWorker = require_verl_attr("verl.workers.engine_workers", "ActorRolloutRefWorker")
Dispatch, register = require_verl_attr("verl.single_controller.base.decorator", "Dispatch", "register")
FSDPEngineWithLMHead = require_verl_attr("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead")
tu = require_verl_attr("verl.utils", "tensordict_utils")
unpack_visual_output = require_verl_attr("verl.utils.transformers_compat", "unpack_visual_output")

EMB_FLAG = "care_think_emb"  # non-tensor flag on the batch: return think embeddings
POOL_MASK = "care_pool_mask"  # nested [B, response_len] 0/1: response positions pooled into h_i
THINK_EMB = "think_emb"  # output: float32 [B, H], L2-normalised


class ThinkEmbeddingUnsupported(RuntimeError):
    pass


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
        self.hidden: torch.Tensor | None = None
        self.forward_calls = 0
        self._handle = find_final_norm(engine.module).register_forward_hook(self._on_norm_output)
        self._prepare_inputs = engine.prepare_model_inputs
        self._prepare_outputs = engine.prepare_model_outputs
        # Instance attributes shadow the class methods forward_step calls (verl 0.9.1
        # transformer_impl.py:1554 and :1578); nothing of verl's code is copied.
        engine.prepare_model_inputs = self.prepare_model_inputs
        engine.prepare_model_outputs = self.prepare_model_outputs

    def _on_norm_output(self, module, args, output):
        self.forward_calls += 1
        if self.armed:
            self.hidden = output[0] if isinstance(output, tuple) else output

    def prepare_model_inputs(self, micro_batch):
        self.armed = bool(tu.get_non_tensor_data(data=micro_batch, key=EMB_FLAG, default=False))
        self.hidden = None
        if self.armed:
            sp = getattr(self.engine, "ulysses_sequence_parallel_size", 1)
            if sp > 1:
                raise ThinkEmbeddingUnsupported(
                    f"CARE think embeddings do not support Ulysses sequence parallelism yet "
                    f"(ulysses_sequence_parallel_size={sp}); set actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=1."
                )
            if POOL_MASK not in micro_batch.keys():
                raise KeyError(f"`{EMB_FLAG}` is set but the batch has no `{POOL_MASK}` field (the CARE trainer writes it).")
        return self._prepare_inputs(micro_batch)

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        model_output = self._prepare_outputs(
            output=output, output_args=output_args, micro_batch=micro_batch, logits_processor_func=logits_processor_func
        )
        if self.armed:
            hidden, self.hidden, self.armed = self.hidden, None, False
            if hidden is None:
                raise RuntimeError("the final-norm hook captured nothing during the old-log-prob forward pass")
            model_output[THINK_EMB] = self.pool(hidden.detach(), micro_batch)
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


def _pooled_visual_output(module, args, output):
    return unpack_visual_output(output)[0]


def _text_only_safe(get_input_embeds):
    """Wrap verl's Qwen2-VL/Qwen2.5-VL ``_get_input_embeds`` so image-free micro-batches run.

    verl 0.9.1 bug (verl/models/transformers/qwen2_vl.py:388-394): for a micro-batch without
    images or videos it runs the vision tower on a dummy image, so that every FSDP rank joins the
    vision tower's collectives, and adds ``0.0 * image_embeds.mean()``; with transformers >= 5
    ``model.visual(...)`` returns a ``BaseModelOutputWithPooling`` and ``.mean()`` raises
    AttributeError. The image and video branches above it unpack that output with verl's
    ``unpack_visual_output``; only the dummy branch does not. Every Qwen2.5-VL run whose batch
    holds a micro-batch of text-only rows (ViRL39K's DeepScaleR rows) crashes, on GPU as on CPU.
    For those micro-batches only, a forward hook hands verl's code the pooled tensor it expects;
    the dummy pass (and its zero contribution) is verl's own.
    """

    @functools.wraps(get_input_embeds)
    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None, *args, **kwargs):
        if pixel_values is not None or pixel_values_videos is not None:
            return get_input_embeds(model, input_ids, attention_mask, pixel_values, pixel_values_videos, *args, **kwargs)
        handle = model.visual.register_forward_hook(_pooled_visual_output)
        try:
            return get_input_embeds(model, input_ids, attention_mask, pixel_values, pixel_values_videos, *args, **kwargs)
        finally:
            handle.remove()

    _get_input_embeds.care_text_only_fix = True
    return _get_input_embeds


def install_qwen2_vl_text_only_fix() -> bool:
    """Patch verl 0.9.1's Qwen2(.5)-VL input embedding for image-free micro-batches (see :func:`_text_only_safe`).

    Pinned: only verl 0.9.1 is patched (another verl may have fixed it; its code must be re-read).
    ``qwen2_vl_base_forward`` looks ``_get_input_embeds`` up in its module at call time, so
    replacing the module attribute is enough. Returns whether the patch is in place.
    """
    try:
        installed = metadata.version("verl")
    except metadata.PackageNotFoundError:
        return False
    if installed != VERL_VERSION:
        return False
    module = "verl.models.transformers.qwen2_vl"
    original = require_verl_attr(module, "_get_input_embeds")
    if not getattr(original, "care_text_only_fix", False):
        setattr(importlib.import_module(module), "_get_input_embeds", _text_only_safe(original))
    return True


class CareActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor/rollout/ref worker plus the think-embedding tap on the actor engine."""

    # Re-registered: an override loses the parent's dispatch attributes (verl 0.9.1 decorator.py:398).
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        install_qwen2_vl_text_only_fix()
        super().init_model()
        self.think_embedding_tap = None
        if self.actor is not None:
            sp = getattr(self.actor.engine, "ulysses_sequence_parallel_size", 1)
            if sp > 1:
                raise ThinkEmbeddingUnsupported(
                    f"CARE takes think embeddings from the actor's old-log-prob pass, which does not support "
                    f"Ulysses sequence parallelism yet (ulysses_sequence_parallel_size={sp}); set actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=1."
                )
            self.think_embedding_tap = ThinkEmbeddingTap(self.actor.engine)
