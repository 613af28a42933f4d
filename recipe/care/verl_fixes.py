"""Small fixes of verl 0.9.1 bugs that CARE runs into, applied when this module is imported.

The CARE config loads this module in every verl process, Ray workers included
(``VERL_USE_EXTERNAL_MODULES`` in ``config/care_trainer.yaml``), for every ``ALGO``, so the GRPO,
DAPO and GSPO baselines run on the same footing as CARE. Each fix is pinned to verl 0.9.1: on
another verl it is not applied (its code must be re-read first), and a test pins the bug so it
fails once verl fixes it.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata

from recipe.care.verl_compat import VERL_VERSION, require_verl_attr

unpack_visual_output = require_verl_attr("verl.utils.transformers_compat", "unpack_visual_output")


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


install_qwen2_vl_text_only_fix()
