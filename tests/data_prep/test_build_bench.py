"""build_bench.py on look-alikes of the six benchmarks (data_prep/bench_fixtures.py), bad rows included."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from data_prep import CARE_INSTRUCTION
from data_prep.bench_fixtures import save_benchmarks
from data_prep.build_bench import main
from data_prep.schema import BENCH_SCHEMA, BENCHMARKS

pytestmark = pytest.mark.timeout(300)

# id -> drop reason planted by bench_fixtures(bad=True)
PLANTED = {
    "mathvista": {"5": "corrupt_image", "6": "answer_not_in_choices", "7": "bad_choices"},
    "mathverse": {"5": "answer_not_in_choices"},
    "mathvision": {"4": "missing_image"},
    "mmmu": {"validation_Math_5": "bad_choices", "validation_Math_6": "answer_not_in_choices",
             "validation_Math_7": "missing_image"},
    "mmmu_pro_standard": {"bad_1": "bad_choices"},
    "mmmu_pro_vision": {"test_Math_9": "corrupt_image"},
}


def _args(paths: dict, out: str, *extra: str) -> list[str]:
    args = []
    for name, path in paths.items():
        args += [f"--{name.replace('_', '-')}", path]
    return args + ["--out", out, "--no-progress", *extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    paths = save_benchmarks(str(root / "in"), bad=True)
    out = str(root / "out")
    assert main(_args(paths, out, "--workers", "2")) == 0
    rows = {name: pq.read_table(os.path.join(out, f"{name}.parquet")).to_pylist() for name in BENCHMARKS}
    with open(os.path.join(out, "report.json")) as fh:
        report = json.load(fh)
    with open(os.path.join(out, "dropped.jsonl")) as fh:
        dropped = [json.loads(line) for line in fh]
    return {"paths": paths, "out": out, "rows": rows, "report": report, "dropped": dropped}


def test_one_file_per_benchmark_with_the_declared_schema_and_data_source(built):
    for name in BENCHMARKS:
        path = os.path.join(built["out"], f"{name}.parquet")
        assert pq.read_schema(path).equals(BENCH_SCHEMA, check_metadata=False)
        assert built["rows"][name] and {r["data_source"] for r in built["rows"][name]} == {name}


def test_report_reconciles_and_lists_every_planted_bad_row(built):
    for name, planted in PLANTED.items():
        counts = built["report"]["sources"][name]
        assert counts["read"] == counts["kept"] + counts["dropped_total"] == len(built["rows"][name]) + len(planted)
        got = {d["id"]: d["reason"] for d in built["dropped"] if d["source"] == name}
        assert got == planted, name


def test_placeholders_match_images_and_prompt_is_the_training_one(built):
    for name, rows in built["rows"].items():
        for row in rows:
            text = row["prompt"][0]["content"]
            assert text.endswith(CARE_INSTRUCTION)
            assert text.count("<image>") == len(row["images"]), (name, text)
            assert "<image " not in text and "<image1>" not in text  # MMMU / MATH-Vision markers replaced


def test_multiple_choice_gold_is_the_option_letter(built):
    by_id = {(n, r["extra_info"]["id"]): r for n, rows in built["rows"].items() for r in rows}
    vista = by_id[("mathvista", "1")]  # MathVista stores the option text "the middle one"
    assert vista["reward_model"]["ground_truth"] == ["B"]
    assert vista["extra_info"]["choices"] == ["the left one", "the middle one", "the right one"]
    assert vista["extra_info"]["question_type"] == "multi_choice"
    assert "(B) the middle one" in vista["prompt"][0]["content"]
    for (name, _), row in by_id.items():
        info = row["extra_info"]
        if info["question_type"] == "multi_choice":
            gold = row["reward_model"]["ground_truth"][0]
            assert len(gold) == 1 and gold.isupper(), (name, gold)
            if info["choices"]:
                assert ord(gold) - ord("A") < len(info["choices"])
    assert by_id[("mmmu_pro_standard", "validation_Art_1")]["reward_model"]["ground_truth"] == ["H"]
    verse = by_id[("mathverse", "1")]
    assert verse["extra_info"]["choices"] == ["30°", "45°", "60°", "90°"]


def test_free_form_metadata(built):
    by_id = {(n, r["extra_info"]["id"]): r for n, rows in built["rows"].items() for r in rows}
    ratio = by_id[("mathvista", "3")]["extra_info"]
    assert (ratio["question_type"], ratio["answer_type"], ratio["precision"]) == ("free_form", "float", 1)
    assert by_id[("mathvista", "4")]["extra_info"]["unit"] == "cm"
    cost = by_id[("mmmu", "validation_Math_3")]
    assert cost["extra_info"]["answers"] == ["24.5", "24.50"] and cost["extra_info"]["question_type"] == "free_form"


def test_mmmu_markers_interleave_images_in_reference_order(built):
    by_id = {r["extra_info"]["id"]: r for r in built["rows"]["mmmu"]}
    two = by_id["validation_Math_2"]
    assert len(two["images"]) == 2
    # options that are images ("<image 1>", "<image 2>") repeat a marker: spelled as words, no extra image
    assert two["extra_info"]["choices"] == ["image 1", "image 2"]


def test_text_only_mathverse_row_is_kept_without_image(built):
    text_only = [r for r in built["rows"]["mathverse"] if r["extra_info"]["origin"] == "Text Only"]
    assert len(text_only) == 1 and text_only[0]["images"] == []


def test_existing_output_needs_overwrite_and_bad_input_is_a_clear_error(built, tmp_path, capsys):
    assert main(_args(built["paths"], built["out"], "--workers", "1")) == 2
    assert "--overwrite" in capsys.readouterr().err
    paths = dict(built["paths"], mmmu=str(tmp_path / "nowhere"))
    assert main(_args(paths, str(tmp_path / "o"), "--workers", "1")) == 2
    assert "--mmmu" in capsys.readouterr().err


def test_limit_and_subset(built, tmp_path):
    out = str(tmp_path / "o")
    assert main(_args(built["paths"], out, "--workers", "1", "--limit", "2", "--benchmarks", "mmmu,mathvista")) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    assert set(report["sources"]) == {"mmmu", "mathvista"}
    assert all(s["read"] == 2 for s in report["sources"].values())


def test_build_mix_drops_training_rows_that_copy_a_benchmark_row(built, tmp_path):
    """build_mix.py --exclude-bench: a training copy of a benchmark question + picture is test_overlap."""
    import datasets

    from data_prep.bench_fixtures import picture
    from data_prep.build_mix import main as build_mix

    rows = [
        {"query": "How many bars are there?", "image": picture(2)},  # MathVista fixture pid 2, free form
        {"query": "Which bar is tallest? Choices: (A) the left one (B) the middle one (C) the right one",
         "image": picture(1)},  # MathVista pid 1, options written ViRL-style
        {"query": "How many bars are there?", "image": picture(40)},  # same question, another picture: kept
        {"query": "What is the value of the tallest bar?", "image": picture(2)},  # same picture, new question
    ]
    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string")),
                                  "human_or_machine": datasets.Value("int64")})
    data = [{"image": {"bytes": r["image"], "path": None}, "query": r["query"], "label": ["3"], "human_or_machine": 0}
            for r in rows]
    path = str(tmp_path / "chartqa")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(data, features=features)}).save_to_disk(path)
    out = str(tmp_path / "mix")
    assert build_mix(["--chartqa", path, "--sources", "chartqa", "--exclude-bench", built["out"], "--out", out,
                      "--val-size", "0", "--workers", "1", "--no-progress"]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    dropped = [json.loads(line) for line in open(os.path.join(out, "dropped.jsonl"))]
    assert {(d["id"], d["reason"]) for d in dropped} == {("train/0", "test_overlap"), ("train/1", "test_overlap")}
    assert "mathvista/2" in " ".join(d["detail"] for d in dropped)
    assert report["sources"]["chartqa"]["kept"] == 2
    indexed = {e["split"]: e["indexed"] for e in report["excluded_test_splits"]}
    assert indexed["mathvista"] == len(built["rows"]["mathvista"]) and set(indexed) == set(BENCHMARKS)
