"""Dataset rows of one source: one raw row (a dict from Arrow) -> a source-independent :class:`Record`.

Only cheap work happens here (it runs in the main process); images stay undecoded references.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.prompts import clean_labels, parse_choices, strip_boxed
from data_prep.schema import (BENCHMARK, CHARTQA, GEOMETRY3K, LLAVA_COT, MISSING_FIELD, MULBERRY, NOT_IN_SUBSET,
                              VIRL39K)

# Columns a whole source must have (checked before any work) and optional ones used when present.
REQUIRED_COLUMNS = {
    CHARTQA: ("image", "query", "label"),
    GEOMETRY3K: ("images", "problem", "answer"),
    VIRL39K: ("question", "answer", "image"),
    # Vision-R1-cold (sharegpt): one user and one assistant turn; images in `image` (LLaVA-CoT file,
    # one path) or `images` (Mulberry file, a list), relative to the dataset folder.
    LLAVA_COT: ("conversations",),
    MULBERRY: ("conversations",),
}
OPTIONAL_COLUMNS = {
    LLAVA_COT: ("id", "image", "images"),
    MULBERRY: ("id", "image", "images"),
    BENCHMARK: ("id",),
    CHARTQA: ("human_or_machine",),
    GEOMETRY3K: ("id", "choices"),
    VIRL39K: ("qid", "category", "source"),
}
# For test-split exclusion only the question and the image(s) matter.
# BENCHMARK: any other test set written with a `question` and an `images` list (--exclude).
# BENCH_PARQUET: a data_prep/build_bench.py parquet (question as prompted in extra_info, images as
# bytes; --exclude-bench).
BENCH_PARQUET = "bench_parquet"
EXCLUDE_COLUMNS = {CHARTQA: ("image", "query"), GEOMETRY3K: ("images", "problem"), BENCHMARK: ("images", "question"),
                   BENCH_PARQUET: ("images", "extra_info")}

CHARTQA_SUBSETS = {"human": (0,), "augmented": (1,), "all": (0, 1)}
CHARTQA_ORIGIN = {0: "human", 1: "augmented"}

# An image reference: ("bytes", encoded bytes), ("file", path on disk) or ("virl", path inside ViRL's
# images.zip / images folder). Decoding happens in the worker processes.
ImageRef = tuple


@dataclass
class Record:
    source: str
    id: str
    split: str
    question: str | None = None
    labels: list[str] | None = None
    images: list[ImageRef] = field(default_factory=list)
    origin: str = ""
    category: str = ""
    choices: list[str] = field(default_factory=list)
    reasoning: str = ""  # cold-start rows: the reasoning that goes inside <think>
    # Extra ``extra_info`` fields (benchmarks: question_type, answer_type, precision, unit); the
    # writer's schema must declare them. Empty for the training sources.
    meta: dict = field(default_factory=dict)
    # Set when the row is dropped before any image work: (reason, detail).
    drop: tuple[str, str] | None = None


def _hf_image_ref(value) -> ImageRef | None:
    """An HF ``Image`` cell (``{"bytes", "path"}`` struct, undecoded) -> reference, None if empty."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes"):
            return ("bytes", value["bytes"])
        if value.get("path"):
            return ("file", value["path"])
        if value.get("bytes") is not None:  # present but 0 bytes: a corrupt image, not an absent one
            return ("bytes", b"")
        return None
    if isinstance(value, (bytes, bytearray)):
        return ("bytes", bytes(value))
    if isinstance(value, str) and value:
        return ("file", value)
    return None


def _missing(record: Record, *columns: str) -> Record:
    record.drop = (MISSING_FIELD, "null or absent: " + ", ".join(columns))
    return record


def chartqa_record(row: dict, split: str, index: int, subset: str = "human") -> Record:
    rec = Record(CHARTQA, f"{split}/{index}", split, category="chart")
    kind = row.get("human_or_machine")
    if subset != "all":
        if kind is None:
            return _missing(rec, "human_or_machine")
        if kind not in CHARTQA_SUBSETS[subset]:
            rec.drop = (NOT_IN_SUBSET, f"human_or_machine={kind}, subset={subset}")
            return rec
    rec.origin = CHARTQA_ORIGIN.get(kind, "")
    rec.question, rec.labels = row.get("query"), clean_labels(row.get("label"))
    image = _hf_image_ref(row.get("image"))
    absent = [name for name, value in (("query", rec.question), ("label", rec.labels), ("image", image))
              if value is None]
    if absent:
        return _missing(rec, *absent)
    rec.images = [image]
    return rec


def geometry3k_record(row: dict, split: str, index: int) -> Record:
    raw_id = row.get("id")
    rec = Record(GEOMETRY3K, f"{split}/{raw_id if raw_id not in (None, '') else index}", split,
                 category="geometry", origin="geometry3k")
    rec.question, rec.labels = row.get("problem"), clean_labels(row.get("answer"))
    images = row.get("images")
    absent = [name for name, value in (("problem", rec.question), ("answer", rec.labels), ("images", images))
              if value is None]
    if absent:
        return _missing(rec, *absent)
    refs = [_hf_image_ref(v) for v in images]
    if any(ref is None for ref in refs):
        return _missing(rec, "images[i]")
    rec.images = refs
    rec.choices = [str(c) for c in (row.get("choices") or [])]
    return rec


def virl39k_record(row: dict, split: str, index: int) -> Record:
    qid = row.get("qid")
    rec = Record(VIRL39K, str(qid) if qid not in (None, "") else f"row{index}", split,
                 origin=str(row.get("source") or ""), category=str(row.get("category") or ""))
    rec.question = row.get("question")
    answer = row.get("answer")
    absent = [name for name, value in (("question", rec.question), ("answer", answer)) if value is None]
    if absent:
        return _missing(rec, *absent)
    rec.labels = clean_labels(strip_boxed(str(answer)))
    paths = row.get("image")
    if isinstance(paths, str):
        paths = [paths]
    # A null / empty image list is a text-only row (DeepScaleR); a question that still asks for an
    # image is caught later as a missing image.
    rec.images = [("virl", p) if p else None for p in (paths or [])]
    if any(ref is None for ref in rec.images):
        return _missing(rec, "image[i]")
    rec.choices = parse_choices(rec.question)
    return rec


def exclude_record(kind: str, row: dict, split: str, index: int) -> Record:
    """A test-split row reduced to what the overlap check needs (no subset filter, no answer)."""
    if kind == CHARTQA:
        rec = Record(CHARTQA, f"{split}/{index}", split, question=row.get("query"))
        image = _hf_image_ref(row.get("image"))
        refs = [image]
    elif kind == BENCH_PARQUET:
        # The question as build_bench.py prompted it (options as "Choices:\n(A) ..." lines, the layout
        # MathVista and ViRL39K use; normalise_question ignores the punctuation), so a training copy
        # matches when its text, options included, and its images match.
        info = row.get("extra_info") or {}
        rec = Record(BENCH_PARQUET, f"{info.get('source', split)}/{info.get('id', index)}", split,
                     question=info.get("question"))
        refs = [_hf_image_ref(v) for v in (row.get("images") or [])]
        if rec.question is None or any(ref is None for ref in refs):
            return _missing(rec, "question or image")
        rec.labels, rec.images = ["-"], refs
        return rec
    else:
        question = row.get("problem") if kind == GEOMETRY3K else row.get("question")
        rec = Record(kind, f"{split}/{row.get('id', index)}", split, question=question)
        refs = [_hf_image_ref(v) for v in (row.get("images") or [])]
    if rec.question is None or not refs or any(ref is None for ref in refs):
        return _missing(rec, "question or image")
    rec.labels = ["-"]
    rec.images = refs
    return rec


RECORD_BUILDERS = {CHARTQA: chartqa_record, GEOMETRY3K: geometry3k_record, VIRL39K: virl39k_record}
