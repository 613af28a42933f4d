"""Duplicate detection: normalised question text plus perceptual image hashes.

ViRL39K re-encodes images it took from ChartQA and Geometry3K, so byte hashes miss those copies;
a 256-bit pHash moves by a few bits under JPEG re-encoding and resizing, while different charts
or diagrams differ by dozens (see images.HASH_SIZE). Requiring the normalised question text to match as well keeps
ChartQA's several questions about one chart apart.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from data_prep.images import hamming
from data_prep.prompts import IMAGE_PLACEHOLDER

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_question(text: str) -> str:
    """Case, width, punctuation, whitespace and ``<image>`` placeholders do not make a new question."""
    text = unicodedata.normalize("NFKC", text).replace(IMAGE_PLACEHOLDER, " ").casefold()
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class Entry:
    source: str
    id: str
    hashes: tuple[int, ...]


class DedupIndex:
    """Rows seen so far, bucketed by normalised question; images compared pairwise within a bucket.

    A bucket is small (one question text), so a linear scan with a Hamming threshold is cheaper
    and simpler than a metric tree; ``imagehash`` itself offers no index.
    """

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self._buckets: dict[str, list[Entry]] = {}

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def find(self, question_key: str, hashes: tuple[int, ...]) -> Entry | None:
        for entry in self._buckets.get(question_key, ()):
            if len(entry.hashes) == len(hashes) and all(
                hamming(a, b) <= self.max_distance for a, b in zip(entry.hashes, hashes)
            ):
                return entry
        return None

    def add(self, question_key: str, hashes: tuple[int, ...], source: str, row_id: str) -> None:
        self._buckets.setdefault(question_key, []).append(Entry(source, row_id, tuple(hashes)))
