"""The full build over the drawn fixtures: report, contract of every row, dedup, budget, hold-out."""

from __future__ import annotations

import glob
import io
import json
import os

import pyarrow.parquet as pq
from mix_fixtures import BIG_CHART, PLANTED, READ, TEST_MAX_PIXELS, VAL_SIZE, build_args
from PIL import Image

from data_prep import CARE_INSTRUCTION, DATA_SOURCES, OUTPUT_SCHEMA
from data_prep.schema import BAD_INPUT_REASONS


def rows_of(out: str, pattern: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, pattern))):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def all_rows(out):
    return rows_of(out, "train-*.parquet") + rows_of(out, "val.parquet")


def test_report_reconciles_and_every_planted_row_lands_under_its_reason(built_mix):
    report = built_mix["report"]
    for source in DATA_SOURCES:
        counts = report["sources"][source]
        assert counts["read"] == READ[source]
        assert counts["read"] == counts["kept"] + sum(counts["dropped"].values())
        expected = {}
        for reason in PLANTED[source].values():
            expected[reason] = expected.get(reason, 0) + 1
        assert {r: n for r, n in counts["dropped"].items() if n} == expected, source
        assert counts["kept"] == counts["train"] + counts["val"]
    dropped = [json.loads(line) for line in open(os.path.join(built_mix["out"], "dropped.jsonl"))]
    assert {(d["source"], d["id"]): d["reason"] for d in dropped} == {
        (s, i): r for s, planted in PLANTED.items() for i, r in planted.items()}
    assert report["outputs"]["val_rows"] == VAL_SIZE
    assert report["totals"]["kept"] == report["outputs"]["train_rows"] + VAL_SIZE


def test_bad_input_is_reported_with_its_row_id(built_mix):
    report = built_mix["report"]
    for source, planted in PLANTED.items():
        listed = {(reason, row["id"]) for reason, rows in report["sources"][source]["bad_rows"].items()
                  for row in rows}
        bad = {(reason, row_id) for row_id, reason in planted.items() if reason in BAD_INPUT_REASONS}
        assert listed == bad
        for rows in report["sources"][source]["bad_rows"].values():
            assert all(row["detail"] for row in rows)


def test_every_shard_has_the_declared_schema(built_mix):
    files = sorted(glob.glob(os.path.join(built_mix["out"], "*.parquet")))
    assert len(files) >= 3  # several training shards plus val.parquet
    for path in files:
        assert pq.read_schema(path).equals(OUTPUT_SCHEMA, check_metadata=False), path


def test_rows_follow_the_contract(built_mix):
    rows = all_rows(built_mix["out"])
    assert len(rows) == built_mix["report"]["totals"]["kept"]
    seen = set()
    for row in rows:
        assert row["data_source"] in DATA_SOURCES
        extra = row["extra_info"]
        assert extra["source"] == row["data_source"] and extra["split"] and extra["category"]
        key = (extra["source"], extra["id"])
        assert key not in seen
        seen.add(key)
        [message] = row["prompt"]
        assert message["role"] == "user"
        assert message["content"].endswith(CARE_INSTRUCTION)
        assert "<think> reasoning </think><answer> final answer </answer>" in message["content"]
        assert message["content"].count("<image>") == len(row["images"])
        assert set(row["reward_model"]) == {"style", "ground_truth"}
        assert row["reward_model"]["style"] == "rule"
        truth = row["reward_model"]["ground_truth"]
        assert isinstance(truth, list) and truth and all(isinstance(t, str) and t.strip() for t in truth)
        assert "\\boxed" not in "".join(truth)
        assert extra["answer"] == truth[0]
        for image in row["images"]:
            Image.open(io.BytesIO(image["bytes"])).load()
    by_id = {(r["data_source"], r["extra_info"]["id"]): r for r in rows}
    assert by_id[("chartqa", "train/1")]["reward_model"]["ground_truth"] == ["1,000", "1000"]
    assert by_id[("virl39k", "v9")]["reward_model"]["ground_truth"] == ["\\frac{1}{2}"]
    assert by_id[("virl39k", "v1")]["reward_model"]["ground_truth"] == ["B"]
    assert by_id[("virl39k", "v1")]["extra_info"]["choices"] == ["red", "blue", "green"]
    assert by_id[("geometry3k", "train/4")]["extra_info"]["choices"] == ["7", "8", "9", "10"]
    assert by_id[("chartqa", "train/0")]["extra_info"]["origin"] == "human"
    assert by_id[("virl39k", "v2")]["images"] == []  # text-only kept by default
    assert len(by_id[("virl39k", "v14")]["images"]) == 2
    # ViRL row that lost its placeholder: fixed, not dropped.
    assert by_id[("virl39k", "v3")]["prompt"][0]["content"].startswith("<image>")
    # extra_info.index is the position inside each split
    for pattern in ("train-*.parquet", "val.parquet"):
        assert [r["extra_info"]["index"] for r in rows_of(built_mix["out"], pattern)] == list(
            range(len(rows_of(built_mix["out"], pattern))))


def test_duplicates_keep_the_higher_priority_source_and_need_both_text_and_picture(built_mix):
    kept = {(r["data_source"], r["extra_info"]["id"]) for r in all_rows(built_mix["out"])}
    assert ("chartqa", "train/1") in kept and ("virl39k", "v5") not in kept  # planted cross-source copy
    assert ("chartqa", "train/0") in kept and ("chartqa", "train/7") not in kept
    assert ("chartqa", "train/8") in kept  # same chart, another question
    assert ("virl39k", "v15") in kept  # same question as chartqa train/2, another chart
    assert {f"train/{i}" for i in range(6)} <= {i for s, i in kept if s == "geometry3k"}  # "Find x." x6


def test_images_resized_only_above_the_pixel_budget(built_mix):
    rows = {(r["data_source"], r["extra_info"]["id"]): r for r in all_rows(built_mix["out"])}
    chart_train = built_mix["inputs"]["chartqa_train"]
    big = Image.open(io.BytesIO(rows[("chartqa", "train/11")]["images"][0]["bytes"]))
    assert big.width * big.height <= TEST_MAX_PIXELS
    assert abs(big.width / big.height - BIG_CHART[0] / BIG_CHART[1]) < 0.01
    assert built_mix["report"]["sources"]["chartqa"]["resized_images"] == 1
    for i in (0, 1, 2, 3):  # under budget: the original bytes, untouched
        assert rows[("chartqa", f"train/{i}")]["images"][0]["bytes"] == chart_train[i]["image"]["bytes"]


def test_holdout_is_disjoint_and_reproducible(built_mix, tmp_path):
    from data_prep.build_mix import main

    train = rows_of(built_mix["out"], "train-*.parquet")
    val = rows_of(built_mix["out"], "val.parquet")
    ids = lambda rows: [(r["data_source"], r["extra_info"]["id"]) for r in rows]  # noqa: E731
    assert len(val) == VAL_SIZE and not set(ids(val)) & set(ids(train))
    # Same seed in-process (no pool): the same split, row for row.
    rc = main(build_args(built_mix["inputs"]["paths"], str(tmp_path), "--workers", "1"))
    assert rc == 0
    assert ids(rows_of(str(tmp_path), "val.parquet")) == ids(val)
    assert ids(rows_of(str(tmp_path), "train-*.parquet")) == ids(train)
