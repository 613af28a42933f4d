"""Image handling: reading references, decoding, the pixel budget, perceptual hashes, token counts."""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass

import imagehash
from PIL import Image

from data_prep.schema import CORRUPT_IMAGE, MISSING_IMAGE, UNREADABLE_FILE

# Qwen2.5-VL: 14 px patches merged 2x2, so one visual token per 28x28 pixels; its processor
# refuses aspect ratios above 200.
TOKEN_PIXELS = 28
MAX_ASPECT_RATIO = 200
# 256-bit pHash. Measured on drawn bar charts: JPEG re-encoding (q40-q60, also after a downscale)
# moves it by <= 10 bits while distinct charts stay >= 26 apart; the 64-bit hash (hash_size 8)
# put two distinct charts 2 bits apart, the same distance as a re-encode.
HASH_SIZE = 16


class ImageError(Exception):
    """A row-level image problem; ``reason`` is one of the report's drop reasons."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ImageStore:
    """Where ViRL39K's relative image paths live: an ``images/`` folder and/or ``images.zip``."""

    root: str | None = None  # folder the relative paths are relative to
    zip_path: str | None = None

    def read(self, rel_path: str) -> bytes:
        candidates = [rel_path, rel_path.lstrip("./")]
        candidates += [c[len("images/"):] for c in candidates if c.startswith("images/")]
        candidates += ["images/" + c for c in candidates if not c.startswith("images/")]
        if self.root:
            for cand in candidates:
                path = os.path.join(self.root, cand)
                if os.path.isfile(path):
                    return _read_file(path)
        if self.zip_path:
            archive, names = _open_zip(self.zip_path)
            for cand in candidates:
                if cand in names:
                    try:
                        return archive.read(cand)
                    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:  # bad CRC, bad deflate
                        raise ImageError(UNREADABLE_FILE, f"{self.zip_path}:{cand}: {exc}") from None
        where = " or ".join(filter(None, (self.root, self.zip_path)))
        raise ImageError(MISSING_IMAGE, f"{rel_path} not found in {where}")


_ZIPS: dict[str, tuple[zipfile.ZipFile, frozenset]] = {}


def _open_zip(path: str):
    """One open archive per worker process (ZipFile objects cannot be pickled to the pool)."""
    if path not in _ZIPS:
        archive = zipfile.ZipFile(path)
        _ZIPS[path] = (archive, frozenset(archive.namelist()))
    return _ZIPS[path]


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ImageError(UNREADABLE_FILE, f"{path}: {exc}") from None


def read_ref(ref: tuple, store: ImageStore | None) -> bytes:
    kind, value = ref
    if kind == "bytes":
        return value
    if kind == "file":
        if not os.path.exists(value):
            raise ImageError(MISSING_IMAGE, f"{value} does not exist")
        return _read_file(value)
    if kind == "virl":
        if store is None:
            raise ImageError(MISSING_IMAGE, f"{value}: no image folder or zip given")
        return store.read(value)
    raise ValueError(f"unknown image reference kind {kind!r}")


def decode(data: bytes) -> Image.Image:
    """Fully decode (``load`` catches truncated files, not only bad headers) and sanity-check."""
    if not data:
        raise ImageError(CORRUPT_IMAGE, "cannot decode: the image is 0 bytes")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise ImageError(CORRUPT_IMAGE, f"cannot decode: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(CORRUPT_IMAGE, f"empty image {width}x{height}")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageError(CORRUPT_IMAGE, f"aspect ratio {width}x{height} above {MAX_ASPECT_RATIO} (Qwen-VL rejects it)")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white, as qwen_vl_utils does before the processor."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def perceptual_hash(image: Image.Image) -> int:
    """256-bit pHash as an int (compact, picklable; Hamming distance is ``(a ^ b).bit_count()``)."""
    return int(str(imagehash.phash(to_rgb(image), hash_size=HASH_SIZE)), 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def fit_pixel_budget(image: Image.Image, data: bytes, max_pixels: int) -> tuple[bytes, tuple[int, int], bool]:
    """Original bytes when within ``max_pixels``; else a downscaled copy (aspect kept) re-encoded.

    JPEG stays JPEG (quality 95), anything else becomes PNG (lossless; keeps charts' thin lines).
    """
    width, height = image.size
    if max_pixels <= 0 or width * height <= max_pixels:
        return data, (width, height), False
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    resized = to_rgb(image) if image.format == "JPEG" else image
    if resized.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        resized = to_rgb(resized)
    resized = resized.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if image.format == "JPEG":
        resized.save(out, format="JPEG", quality=95)
    else:
        resized.save(out, format="PNG", optimize=False)
    return out.getvalue(), size, True


def visual_tokens(width: int, height: int, max_pixels: int) -> int:
    """Visual tokens Qwen2.5-VL's processor makes for one image (its ``smart_resize`` rounding).

    Reimplemented because ``qwen_vl_utils`` imports torch and torchvision at module import (seconds
    and hundreds of MiB per worker) for three lines of arithmetic.
    """
    factor = TOKEN_PIXELS
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if max_pixels > 0 and h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    return (h_bar // factor) * (w_bar // factor)
