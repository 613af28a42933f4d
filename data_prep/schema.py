"""The one Arrow schema every output shard uses, and the vocabulary of the report.

verl's ``RLHFDataset`` concatenates shards with ``datasets.concatenate_datasets``, which needs one
schema; inferring it per shard would differ (e.g. an all-text-only shard has ``images: list<null>``),
so it is declared here and passed to every writer.
"""

from __future__ import annotations

import pyarrow as pa

CHARTQA, GEOMETRY3K, VIRL39K = "chartqa", "geometry3k", "virl39k"
DATA_SOURCES = (CHARTQA, GEOMETRY3K, VIRL39K)  # also the default dedup priority, first wins

# The six evaluation benchmarks (data_prep/build_bench.py), as their rows' data_source.
MATHVISTA, MATHVERSE, MATHVISION, MMMU = "mathvista", "mathverse", "mathvision", "mmmu"
MMMU_PRO_STANDARD, MMMU_PRO_VISION = "mmmu_pro_standard", "mmmu_pro_vision"
BENCHMARKS = (MATHVISTA, MATHVERSE, MATHVISION, MMMU, MMMU_PRO_STANDARD, MMMU_PRO_VISION)

ABILITY = {CHARTQA: "chart", GEOMETRY3K: "geometry", VIRL39K: "visual_reasoning",
           MATHVISTA: "math", MATHVERSE: "math", MATHVISION: "math", MMMU: "multidiscipline",
           MMMU_PRO_STANDARD: "multidiscipline", MMMU_PRO_VISION: "multidiscipline"}

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string(), nullable=False),
        # verl's prompt_key: chat messages; the user text holds one "<image>" per entry of `images`.
        pa.field("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])), nullable=False),
        # verl's image_key: a list of {"bytes": encoded image}; empty for text-only rows.
        pa.field("images", pa.list_(pa.struct([("bytes", pa.binary())])), nullable=False),
        pa.field("ability", pa.string(), nullable=False),
        # ground_truth is a list for every source because one column has one type: ChartQA gives
        # several accepted labels, Geometry3K and ViRL39K give exactly one.
        pa.field("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.list_(pa.string()))]),
                 nullable=False),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),  # position in its output split (verl reads extra_info.index)
                    ("source", pa.string()),  # chartqa / geometry3k / virl39k
                    ("origin", pa.string()),  # finer provenance: ChartQA human/augmented, ViRL's `source`
                    ("id", pa.string()),  # the row's id in its source
                    ("split", pa.string()),  # the source split it came from
                    ("category", pa.string()),
                    ("choices", pa.list_(pa.string())),  # option texts in letter order (A, B, ...); [] if none
                    ("question", pa.string()),  # the question without the instruction
                    ("answer", pa.string()),  # first ground truth, as a plain string
                ]
            ),
            nullable=False,
        ),
    ]
)

# The cold-start SFT set (data_prep/build_sft.py): Vision-R1-cold's two files, each a report source.
VISION_R1_COLD = "vision_r1_cold"  # the data_source of every SFT row
LLAVA_COT, MULBERRY = "llava_cot", "mulberry"
SFT_SUBSETS = (LLAVA_COT, MULBERRY)
# Test sets of other benchmarks (data_prep/build_bench.py writes them): a question and its images, nothing else needed.
BENCHMARK = "benchmark"

# verl's MultiTurnSFTDataset: `messages` (chat turns; the user text holds one "<image>" per entry of
# `images`) and `images` (same struct as the RL shards, so verl's process_image reads the bytes).
SFT_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string(), nullable=False),
        pa.field("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])), nullable=False),
        pa.field("images", pa.list_(pa.struct([("bytes", pa.binary())])), nullable=False),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),  # position in its output split
                    ("source", pa.string()),  # llava_cot / mulberry
                    ("id", pa.string()),  # the row's id (or position) in its file
                    ("question", pa.string()),  # the question without the instruction
                    ("answer", pa.string()),  # the final answer put inside <answer>
                ]
            ),
            nullable=False,
        ),
    ]
)

# Drop reasons, in the order the report prints them.
NOT_IN_SUBSET = "not_in_subset"
MISSING_FIELD = "missing_field"
EMPTY_ANSWER = "empty_answer"
UNREADABLE_FILE = "unreadable_file"
# a text cell whose bytes are not UTF-8: only its row is dropped
UNDECODABLE_TEXT = "undecodable_text"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
PLACEHOLDER_MISMATCH = "placeholder_mismatch"
TEXT_ONLY = "text_only"
OVER_BUDGET = "over_budget"
TEST_OVERLAP = "test_overlap"
DUPLICATE_WITHIN = "duplicate_within_source"
DUPLICATE_ACROSS = "duplicate_across_sources"
# cold-start rows: no reasoning span or no final answer could be located in the assistant turn
ANSWER_NOT_FOUND = "answer_not_found"
# Benchmarks (data_prep/build_bench.py): a multiple-choice row whose options or answer are unusable.
BAD_CHOICES = "bad_choices"
ANSWER_NOT_IN_CHOICES = "answer_not_in_choices"

DROP_REASONS = (
    NOT_IN_SUBSET, MISSING_FIELD, EMPTY_ANSWER, ANSWER_NOT_FOUND, UNREADABLE_FILE, UNDECODABLE_TEXT, MISSING_IMAGE,
    CORRUPT_IMAGE, PLACEHOLDER_MISMATCH, TEXT_ONLY, OVER_BUDGET, TEST_OVERLAP, DUPLICATE_WITHIN, DUPLICATE_ACROSS,
    BAD_CHOICES, ANSWER_NOT_IN_CHOICES,
)
# Reasons caused by bad input rather than by a choice: each is listed with its row id in the report.
BAD_INPUT_REASONS = (MISSING_FIELD, EMPTY_ANSWER, ANSWER_NOT_FOUND, UNREADABLE_FILE, UNDECODABLE_TEXT, MISSING_IMAGE,
                     CORRUPT_IMAGE, PLACEHOLDER_MISMATCH, BAD_CHOICES, ANSWER_NOT_IN_CHOICES)

# Benchmark rows: the training schema with the answer metadata the verifiers read in extra_info.
_BENCH_EXTRA = [
    ("question_type", pa.string()),  # multi_choice | free_form
    ("answer_type", pa.string()),  # the source's (MathVista: integer/float/text/list; else text)
    ("precision", pa.int64()),  # decimals a float answer is graded at (MathVista), null otherwise
    ("unit", pa.string()),  # MathVista's unit ("" when none)
    ("answers", pa.list_(pa.string())),  # every accepted answer (MMMU open questions list several)
]
BENCH_SCHEMA = pa.schema(
    [f if f.name != "extra_info" else pa.field("extra_info", pa.struct(list(f.type) + [pa.field(n, t) for n, t in
                                                                                        _BENCH_EXTRA]),
                                               nullable=False)
     for f in OUTPUT_SCHEMA]
)
