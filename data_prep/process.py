"""The per-row work that runs in the process pool: images, placeholders, budget, the output row.

Everything that needs global state (deduplication, the hold-out, writing) stays in the main process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from data_prep import images as img
from data_prep.dedup import normalise_question
from data_prep.prompts import IMAGE_PLACEHOLDER, build_prompt, fix_placeholders, user_content
from data_prep.rows import Record
from data_prep.schema import (ABILITY, CORRUPT_IMAGE, EMPTY_ANSWER, MISSING_FIELD, MISSING_IMAGE, OVER_BUDGET,
                              PLACEHOLDER_MISMATCH, TEXT_ONLY)

# Chat-template tokens around the user text (system prompt, role tags) plus vision start/end per image.
CHAT_OVERHEAD_TOKENS = 32
PER_IMAGE_OVERHEAD_TOKENS = 2
# Without a tokenizer: a conservative bytes-per-token ratio for English/LaTeX (Qwen2.5 averages ~4).
BYTES_PER_TOKEN_ESTIMATE = 3


@dataclass(frozen=True)
class WorkerConfig:
    max_pixels: int = 1003520
    max_prompt_tokens: int = 2048
    keep_text_only: bool = True
    tokenizer: str | None = None
    store: img.ImageStore | None = None
    index_only: bool = False  # test-split rows: only the dedup key is needed
    max_sequence_tokens: int = 0  # cold-start rows: prompt + response budget (verl's SFT max_length); 0 = none


@dataclass
class Result:
    source: str
    id: str
    reason: str | None = None  # None = kept so far
    detail: str = ""
    question_key: str = ""
    hashes: tuple[int, ...] = ()
    row: dict | None = None
    resized: int = 0
    extra: dict = field(default_factory=dict)


_TOKENIZERS: dict = {}


def _text_tokens(text: str, tokenizer: str | None) -> int:
    if tokenizer is None:
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE)
    if tokenizer not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[tokenizer] = AutoTokenizer.from_pretrained(tokenizer)
    return len(_TOKENIZERS[tokenizer](text, add_special_tokens=False)["input_ids"])


@dataclass
class LoadedRow:
    """A row that passed the shared checks: its question (placeholders fixed) and re-encoded images."""

    question: str
    encoded: list[bytes]
    sizes: list[tuple[int, int]]


def load_row(rec: Record, cfg: WorkerConfig, res: Result) -> LoadedRow | None:
    """The checks every build shares: question, answer, placeholders, image decode/hash/downscale.

    Fills ``res`` (drop reason, question key, hashes, resized count); returns None when dropped.
    """
    if rec.drop is not None:
        res.reason, res.detail = rec.drop
        return None
    if not isinstance(rec.question, str) or not rec.question.strip():
        res.reason, res.detail = MISSING_FIELD, "question is empty or not text"
        return None
    if not cfg.index_only and not rec.labels:
        res.reason, res.detail = EMPTY_ANSWER, "answer is empty"
        return None
    n_images = len(rec.images)
    if n_images == 0:
        if IMAGE_PLACEHOLDER in rec.question:
            res.reason, res.detail = MISSING_IMAGE, "question has <image> but the row has no image"
            return None
        if not cfg.keep_text_only:
            res.reason, res.detail = TEXT_ONLY, "no image (--text-only drop)"
            return None
    question = fix_placeholders(rec.question, n_images)
    if question is None:
        res.reason = PLACEHOLDER_MISMATCH
        res.detail = f"{rec.question.count(IMAGE_PLACEHOLDER)} <image> in the text for {n_images} image(s)"
        return None
    res.question_key = normalise_question(question)

    encoded, sizes, hashes = [], [], []
    for position, ref in enumerate(rec.images):
        try:
            data = img.read_ref(ref, cfg.store)
            image = img.decode(data)
            hashes.append(img.perceptual_hash(image))
            if not cfg.index_only:
                data, size, resized = img.fit_pixel_budget(image, data, cfg.max_pixels)
                encoded.append(data)
                sizes.append(size)
                res.resized += int(resized)
        except img.ImageError as exc:
            res.reason, res.detail = exc.reason, f"image {position}: {exc.detail}"
            return None
        except Exception as exc:  # an unusual mode PIL cannot convert/resize: still a bad image, not a crash
            res.reason, res.detail = CORRUPT_IMAGE, f"image {position}: {type(exc).__name__}: {exc}"
            return None
    res.hashes = tuple(hashes)
    return LoadedRow(question, encoded, sizes)


def prompt_tokens(text: str, sizes: list[tuple[int, int]], cfg: WorkerConfig) -> int:
    """Tokens of a chat turn holding ``text`` and images of ``sizes`` (Qwen2.5-VL visual tokens)."""
    return (_text_tokens(text, cfg.tokenizer) + CHAT_OVERHEAD_TOKENS
            + sum(img.visual_tokens(w, h, cfg.max_pixels) + PER_IMAGE_OVERHEAD_TOKENS for w, h in sizes))


def process_record(rec: Record, cfg: WorkerConfig) -> Result:
    res = Result(rec.source, rec.id)
    loaded = load_row(rec, cfg, res)
    if loaded is None or cfg.index_only:
        return res
    question, encoded, sizes = loaded.question, loaded.encoded, loaded.sizes

    if cfg.max_prompt_tokens > 0:
        tokens = prompt_tokens(user_content(question), sizes, cfg)
        if tokens > cfg.max_prompt_tokens:
            res.reason, res.detail = OVER_BUDGET, f"~{tokens} prompt tokens > {cfg.max_prompt_tokens}"
            return res

    res.row = {
        "data_source": rec.source,
        "prompt": build_prompt(question),
        "images": [{"bytes": data} for data in encoded],
        "ability": ABILITY[rec.source],
        "reward_model": {"style": "rule", "ground_truth": list(rec.labels)},
        "extra_info": {
            "index": -1,  # set by the writer
            "source": rec.source,
            "origin": rec.origin,
            "id": rec.id,
            "split": rec.split,
            "category": rec.category,
            "choices": list(rec.choices),
            "question": question,
            "answer": rec.labels[0],
            **rec.meta,
        },
    }
    return res


def process_batch(records: list[Record], cfg: WorkerConfig) -> list[Result]:
    return [process_record(rec, cfg) for rec in records]
