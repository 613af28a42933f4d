"""data_prep/build_sft.py on a Vision-R1-cold look-alike: conversion, drops, overlap, verl's SFT dataset."""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq
import pytest

import sft_fixtures
from data_prep.cold_start import AnswerNotFound, split_response
from data_prep.prompts import CARE_INSTRUCTION, IMAGE_PLACEHOLDER, build_prompt
from verifiers.format import check_format, extract_answer


@pytest.fixture(scope="module")
def built_sft(tmp_path_factory):
    from data_prep.build_sft import main

    root = str(tmp_path_factory.mktemp("sft_inputs"))
    paths = sft_fixtures.build(root)
    out = str(tmp_path_factory.mktemp("sft_out"))
    # 2 workers: the process pool, as a user runs it
    assert main(sft_fixtures.build_args(paths, out, "--workers", "2", "--batch-size", "3")) == 0
    with open(os.path.join(out, "report.json")) as fh:
        report = json.load(fh)
    rows = [row for path in sorted(glob.glob(os.path.join(out, "train-*.parquet")))
            for row in pq.read_table(path).to_pylist()]
    return {"out": out, "report": report, "rows": rows, "paths": paths}


def test_report_reconciles_and_every_planted_row_lands_under_its_reason(built_sft):
    report, out = built_sft["report"], built_sft["out"]
    with open(os.path.join(out, "dropped.jsonl")) as fh:
        dropped = {(d["source"], d["id"]): d["reason"] for d in map(json.loads, fh)}
    kept = {(row["extra_info"]["source"], row["extra_info"]["id"]) for row in built_sft["rows"]}
    for subset, planted in sft_fixtures.PLANTED.items():
        counts = report["sources"][subset]
        assert counts["read"] == len(planted)
        assert counts["read"] == counts["kept"] + counts["dropped_total"]
        assert counts["kept"] == sum(reason is None for reason in planted.values())
        for row_id, reason in planted.items():
            if reason is None:
                assert (subset, row_id) in kept, row_id
            else:
                assert dropped.get((subset, row_id)) == reason, row_id
        # every bad-input row is listed with its id in report.json
        for reason in ("answer_not_found", "corrupt_image", "missing_image", "missing_field"):
            listed = {r["id"] for r in counts["bad_rows"].get(reason, [])}
            assert listed == {i for i, r in planted.items() if r == reason}
    assert report["totals"]["read"] == report["totals"]["kept"] + report["totals"]["dropped"]
    assert report["outputs"]["train_rows"] == len(built_sft["rows"]) == report["totals"]["kept"]
    assert sorted(e["kind"] for e in report["excluded_test_splits"]) == ["bench_parquet", "benchmark"]


def test_every_kept_row_is_a_care_format_conversation_with_the_rl_instruction(built_sft):
    assert built_sft["rows"]
    for row in built_sft["rows"]:
        user, assistant = row["messages"]
        question = row["extra_info"]["question"]
        assert [user["role"], assistant["role"]] == ["user", "assistant"]
        # the RL prompt, byte for byte (data_prep.prompts is the one source of the instruction)
        assert [user] == build_prompt(question) and CARE_INSTRUCTION in user["content"]
        assert user["content"].count(IMAGE_PLACEHOLDER) == len(row["images"])
        assert check_format(assistant["content"], strict=True), assistant["content"]
        pred, _ = extract_answer(assistant["content"])
        assert pred == row["extra_info"]["answer"] == sft_fixtures.KEPT_ANSWERS[row["extra_info"]["id"]]
        assert "Final Answer" not in assistant["content"]


def test_images_several_none_and_downscaled(built_sft):
    import io

    from PIL import Image

    by_id = {row["extra_info"]["id"]: row for row in built_sft["rows"]}
    assert len(by_id["row0"]["images"]) == 2 and by_id["l2"]["images"] == []
    big = Image.open(io.BytesIO(by_id["l8"]["images"][0]["bytes"]))
    assert big.width * big.height <= sft_fixtures.TEST_MAX_PIXELS
    assert built_sft["report"]["sources"]["llava_cot"]["resized_images"] == 1


@pytest.mark.parametrize("text, expected", [
    ("<think>\nr\n</think>\n\nFinal Answer: 4", ("r", "4")),
    ("<think>r</think>**Final Answer:** $x=2$", ("r", "$x=2$")),
    ("<think>r</think>\n### Answer: B", ("r", "B")),
    ("r only closes</think> The answer is 7", ("r only closes", "The answer is 7")),
    ("<think>r</think><answer> \\boxed{3} </answer>", ("r", "\\boxed{3}")),
])
def test_split_response_locates_reasoning_and_answer(text, expected):
    assert split_response(text) == expected


@pytest.mark.parametrize("text", ["no tags at all: 4", "<think>r</think>   ", "<think></think>4",
                                  "<think>r</think><answer>1</answer><think>again</think>", None])
def test_split_response_refuses_what_it_cannot_locate(text):
    with pytest.raises(AnswerNotFound):
        split_response(text)


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    from data_prep.build_sft import main

    assert main(["--vision-r1-cold", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "ds").mkdir()
    assert main(["--vision-r1-cold", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "vision_r1_llava_cot_full.json" in capsys.readouterr().err


def test_multiturn_sft_dataset_trains_only_on_the_care_response(built_sft):
    """verl's own MultiTurnSFTDataset reads every row with the tiny Qwen2.5-VL processor."""
    from omegaconf import OmegaConf

    from smoke.tiny_models import tiny_qwen25_vl_dir
    from recipe.care.verl_compat import require_verl_attr

    hf_processor, hf_tokenizer = require_verl_attr("verl.utils", "hf_processor", "hf_tokenizer")
    Dataset = require_verl_attr("verl.utils.dataset.multiturn_sft_dataset", "MultiTurnSFTDataset")
    path = str(tiny_qwen25_vl_dir())
    tokenizer, processor = hf_tokenizer(path), hf_processor(path)
    files = sorted(glob.glob(os.path.join(built_sft["out"], "train-*.parquet")))
    config = OmegaConf.create({"messages_key": "messages", "max_length": 8192, "truncation": "error",
                               "pad_mode": "no_padding"})
    dataset = Dataset(files, tokenizer, config, processor=processor)
    assert len(dataset) == len(built_sft["rows"])
    for i, row in enumerate(built_sft["rows"]):
        item = dataset[i]
        trained = tokenizer.decode(item["input_ids"][item["loss_mask"].bool()])
        assert trained.startswith("<think>") and row["messages"][1]["content"] in trained
        assert CARE_INSTRUCTION not in trained  # the prompt is not trained on
        n_images = len(row["images"])
        assert ("pixel_values" in item.get("multi_modal_inputs", {})) == (n_images > 0)
