"""A small Vision-R1-cold look-alike (the two sharegpt JSON files + image folders) with planted problems.

Shaped like the real files (data_prep/cold_start.py): LLaVA-CoT rows have ``id``, ``image`` (one
relative path) and human/gpt turns; Mulberry rows have ``images`` (a list) and user/assistant turns.
Every planted row is named in PLANTED with the drop reason it must land under (None = kept).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from mix_fixtures import CORRUPT_BYTES, draw_chart, draw_triangle, encode

BIG = (900, 700)  # above the tests' --max-pixels: must be downscaled
TEST_MAX_PIXELS = 200_000

R1 = "<think>\nLet me look at the figure. {why}\n</think>\n\nFinal Answer: {answer}"

PLANTED = {
    "llava_cot": {
        "l0": None, "l1": None,
        "l2": None,  # no image at all (text-only question)
        "l3": "answer_not_found",  # no </think>: reasoning and answer cannot be told apart
        "l4": "answer_not_found",  # nothing after </think>
        "l5": "corrupt_image",
        "l6": "missing_image",  # path that does not exist
        "l7": "test_overlap",  # same picture and question as a benchmark test row
        "l8": None,  # big image: kept, downscaled
        "l9": "missing_field",  # two user turns in a row
        "l10": None,  # "**Final Answer:** ..." label variant
        "l11": "test_overlap",  # same picture and question as a row of a build_bench.py parquet (--exclude-bench)
    },
    "mulberry": {
        "row0": None,  # several images
        "row1": None,  # answer already in <answer> tags
        "row2": "placeholder_mismatch",  # two images, one <image>
        "row3": None,  # path given relative to mulberry_images/ (resolved there)
        "row4": "answer_not_found",  # tags nested in the answer
    },
}
KEPT_ANSWERS = {"l0": "4", "l1": "B", "l2": "12", "l8": "7", "l10": "3", "row0": "9", "row1": "\\frac{1}{2}",
                "row3": "5"}
BENCHMARK_QUESTION = "How many bars does the chart have?"
BENCH_PARQUET_QUESTION = "What is the height of the first bar?"


def _save(root: str, rel: str, data: bytes) -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return rel


def build(root: str) -> dict:
    """Writes the dataset folder and a benchmark test set; returns their paths."""
    ds = os.path.join(root, "vision_r1_cold")
    img = lambda name, image: _save(ds, f"llava_cot_images/sqa/{name}.png", encode(image))  # noqa: E731
    turn = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    llava = [
        {"id": "l0", "image": img("l0", draw_chart(200)),
         "conversations": turn("<image>\nHow many bars are there?", R1.format(why="Four bars.", answer="4"))},
        {"id": "l1", "image": img("l1", draw_chart(201)),
         "conversations": turn("Which bar is tallest?\n(A) first (B) second\n<image>",
                               R1.format(why="The second.", answer="B"))},
        {"id": "l2", "conversations": turn("What is 5 + 7?", R1.format(why="5 + 7 = 12.", answer="12"))},
        {"id": "l3", "image": img("l3", draw_chart(203)),
         "conversations": turn("<image>\nCount the bars.", "There are 3 bars. Final Answer: 3")},
        {"id": "l4", "image": img("l4", draw_chart(204)),
         "conversations": turn("<image>\nCount the bars.", "<think>\nthree bars\n</think>\n\n")},
        {"id": "l5", "image": _save(ds, "llava_cot_images/sqa/l5.png", CORRUPT_BYTES),
         "conversations": turn("<image>\nCount the bars.", R1.format(why="x", answer="3"))},
        {"id": "l6", "image": "llava_cot_images/sqa/does_not_exist.png",
         "conversations": turn("<image>\nCount the bars.", R1.format(why="x", answer="3"))},
        {"id": "l7", "image": img("l7", draw_chart(300)),
         "conversations": turn("<image>\n" + BENCHMARK_QUESTION, R1.format(why="x", answer="5"))},
        {"id": "l8", "image": img("l8", draw_chart(208, size=BIG)),
         "conversations": turn("<image>\nWhat is the height of the last bar?", R1.format(why="7.", answer="7"))},
        {"id": "l9", "image": img("l9", draw_chart(209)),
         "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "human", "value": "again"},
                           {"from": "gpt", "value": R1.format(why="x", answer="1")}]},
        {"id": "l10", "image": img("l10", draw_chart(210)),
         "conversations": turn("<image>\nHow many red bars?", "<think>three</think>\n**Final Answer:** 3")},
        {"id": "l11", "image": img("l11", draw_chart(211)),
         "conversations": turn("<image>\n" + BENCH_PARQUET_QUESTION, R1.format(why="x", answer="4"))},
    ]
    geo = lambda name, seed: _save(ds, f"mulberry_images/geoqa/{name}.png", encode(draw_triangle(seed)))  # noqa: E731
    mturn = lambda q, a: [{"from": "user", "value": q}, {"from": "assistant", "value": a}]  # noqa: E731
    mulberry = [
        {"images": [geo("m0a", 1), geo("m0b", 2)],
         "conversations": mturn("<image><image>Sum the two numbers.", R1.format(why="4 + 5.", answer="9"))},
        {"images": [geo("m1", 3)],
         "conversations": mturn("<image>Ratio?", "<think>half</think>\n<answer>\\frac{1}{2}</answer>")},
        {"images": [geo("m2a", 4), geo("m2b", 5)],
         "conversations": mturn("<image>Compare.", R1.format(why="x", answer="1"))},
        {"images": [geo("m3", 6).removeprefix("mulberry_images/")],
         "conversations": mturn("<image>Find x.", R1.format(why="x = 5.", answer="5"))},
        {"images": [geo("m4", 7)],
         "conversations": mturn("<image>Find y.", "<think>y</think>Final Answer: <answer>2</answer> <think>")},
    ]
    with open(os.path.join(ds, "vision_r1_llava_cot_full.json"), "w") as fh:
        json.dump(llava, fh)
    with open(os.path.join(ds, "vision_r1_mulberry_sft_full.json"), "w") as fh:
        json.dump(mulberry, fh)

    # A benchmark test set as build_bench.py writes them: question + images (re-encoded JPEG of l7's picture).
    bench_dir = os.path.join(root, "benchmark")
    os.makedirs(bench_dir)
    table = pa.table({"id": ["b0", "b1"], "question": [BENCHMARK_QUESTION, "Other question?"],
                      "images": [[{"bytes": encode(draw_chart(300), "JPEG", 60)}],
                                 [{"bytes": encode(draw_chart(301))}]]})
    bench = os.path.join(bench_dir, "test.parquet")
    pq.write_table(table, bench)

    # A data_prep/build_bench.py output folder: the question as prompted lives in extra_info (only the
    # columns the overlap index reads are written here; the real files also hold prompt, reward_model...).
    bench_parquets = os.path.join(root, "care_bench")
    os.makedirs(bench_parquets)
    extra = pa.struct([("question", pa.string()), ("source", pa.string()), ("id", pa.string())])
    rows = pa.table({"images": [[{"bytes": encode(draw_chart(211), "JPEG", 60)}], [{"bytes": encode(draw_chart(302))}]],
                     "extra_info": pa.array([{"question": BENCH_PARQUET_QUESTION, "source": "mathvista", "id": "1"},
                                             {"question": "Other question?", "source": "mathvista", "id": "2"}],
                                            type=extra)})
    pq.write_table(rows, os.path.join(bench_parquets, "mathvista.parquet"))
    return {"dataset": ds, "benchmark": bench, "bench_dir": bench_parquets}


def build_args(paths: dict, out: str, *extra: str) -> list[str]:
    return ["--vision-r1-cold", paths["dataset"], "--exclude", paths["benchmark"], "--exclude-bench", paths["bench_dir"],
            "--out", out,
            "--max-pixels", str(TEST_MAX_PIXELS), "--no-progress", *extra]
