"""Whole-source problems are clear errors before any work; row problems are counted, never fatal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mix_fixtures import REPO, build_args, draw_triangle, encode

from data_prep.build_mix import main


def run(paths, out, *extra):
    return main(build_args(paths, str(out), "--workers", "1", *extra))


def assert_no_output(out):
    assert not os.path.exists(out) or not os.listdir(out)


@pytest.mark.parametrize("flag", ["--chartqa", "--geometry3k", "--virl39k"])
def test_wrong_path_is_a_clear_error_before_any_work(mix_inputs, tmp_path, capsys, flag):
    paths = dict(mix_inputs["paths"])
    paths[flag.lstrip("-")] = str(tmp_path / "no" / "such" / "dir")
    out = tmp_path / "out"
    assert run(paths, out) == 2
    err = capsys.readouterr().err
    assert flag in err and "does not exist" in err
    assert_no_output(out)


def test_missing_required_column_in_a_source_is_a_clear_error(mix_inputs, tmp_path, capsys):
    import datasets

    broken = tmp_path / "chartqa_no_label"
    datasets.load_from_disk(mix_inputs["paths"]["chartqa"]).remove_columns("label").save_to_disk(str(broken))
    paths = {**mix_inputs["paths"], "chartqa": str(broken)}
    out = tmp_path / "out"
    assert run(paths, out) == 2
    err = capsys.readouterr().err
    assert "--chartqa" in err and "'label'" in err
    assert_no_output(out)


def test_virl_folder_without_images_or_parquet_column_is_a_clear_error(mix_inputs, tmp_path, capsys):
    folder = tmp_path / "virl"
    folder.mkdir()
    shutil.copy(os.path.join(mix_inputs["paths"]["virl39k"], "39Krelease.parquet"), folder)
    out = tmp_path / "out"
    assert run({**mix_inputs["paths"], "virl39k": str(folder)}, out) == 2
    assert "neither images/ nor images.zip" in capsys.readouterr().err
    table = pq.read_table(folder / "39Krelease.parquet").drop_columns(["answer"])
    pq.write_table(table, folder / "39Krelease.parquet")
    shutil.copy(os.path.join(mix_inputs["paths"]["virl39k"], "images.zip"), folder)
    assert run({**mix_inputs["paths"], "virl39k": str(folder)}, out) == 2
    assert "'answer'" in capsys.readouterr().err
    assert_no_output(out)


def test_missing_split_is_a_clear_error(mix_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, "--chartqa-splits", "validation") == 2
    err = capsys.readouterr().err
    assert "no split 'validation'" in err and "train" in err


def test_an_existing_build_is_not_overwritten_silently(mix_inputs, tmp_path, capsys):
    args = ("--sources", "geometry3k")
    assert run(mix_inputs["paths"], tmp_path, *args) == 0
    assert run(mix_inputs["paths"], tmp_path, *args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(mix_inputs["paths"], tmp_path, *args, "--overwrite") == 0


def test_damaged_parquet_row_group_is_counted_not_fatal(mix_inputs, tmp_path):
    """A Geometry3K copy as a parquet folder whose second row group cannot be decoded."""
    folder = tmp_path / "geo_parquet"
    folder.mkdir()
    rows = [{"images": [{"bytes": encode(draw_triangle(70 + i)), "path": None}], "problem": f"<image>Find y{i}.",
             "answer": str(i)} for i in range(8)]
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    page = pq.read_metadata(path).row_group(1).column(0).data_page_offset
    with open(path, "r+b") as fh:
        fh.seek(page)
        fh.write(b"\xff" * 40)
    out = tmp_path / "out"
    assert run({**mix_inputs["paths"], "geometry3k": str(folder)}, out, "--sources", "geometry3k") == 0
    report = json.loads((out / "report.json").read_text())["sources"]["geometry3k"]
    assert report["read"] == 8 and report["kept"] == 4 and report["dropped"]["unreadable_file"] == 4
    assert [r["id"] for r in report["bad_rows"]["unreadable_file"]] == [f"train/{i}" for i in range(4, 8)]


def test_text_only_rows_can_be_dropped(mix_inputs, tmp_path):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, "--sources", "virl39k", "--text-only", "drop", "--val-size", "0") == 0
    report = json.loads((out / "report.json").read_text())["sources"]["virl39k"]
    assert report["dropped"]["text_only"] == 1
    assert report["read"] == report["kept"] + report["dropped_total"]
    assert all(row["images"] for row in pq.read_table(out / "train-00000.parquet").to_pylist())


def test_prompt_budget_drops_rows_over_it(mix_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    # Each drawn triangle is ~25 visual tokens; the instruction alone ~90 estimated tokens: every row
    # is over, which leaves nothing to train on (an error naming the input and the count).
    assert run(mix_inputs["paths"], out, "--sources", "geometry3k", "--max-prompt-tokens", "60",
               "--val-size", "0") == 2
    err = capsys.readouterr().err
    assert "no training rows" in err and "--geometry3k" in err and "6 read, dropped: 6 over_budget" in err
    assert_no_output(out)


@pytest.mark.parametrize("entry", [["data_prep/build_mix.py"], ["-m", "data_prep.build_mix"]])
def test_both_entry_points_explain_every_flag(entry):
    env = {**os.environ, "COLUMNS": "300"}  # argparse wraps at hyphens (TIGER-\nLab) on narrow terminals
    done = subprocess.run([sys.executable, *entry, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    for flag in ("--chartqa", "--chartqa-subset", "--chartqa-splits", "--geometry3k", "--geometry3k-splits",
                 "--virl39k", "--exclude", "--text-only", "--max-pixels", "--max-prompt-tokens", "--shard-size",
                 "--val-size", "--seed", "--out", "--workers", "--hash-distance"):
        assert flag in done.stdout
    assert "HuggingFaceM4/ChartQA" in done.stdout and "TIGER-Lab/ViRL39K" in done.stdout


def test_script_entry_point_builds_from_a_parquet_folder(mix_inputs, tmp_path):
    """`python data_prep/build_mix.py` end to end, ChartQA given as a hub-style parquet folder."""
    import datasets

    folder = tmp_path / "chartqa_parquet" / "data"
    folder.mkdir(parents=True)
    saved = datasets.load_from_disk(mix_inputs["paths"]["chartqa"])
    for split in ("train", "test"):
        saved[split].to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    out = tmp_path / "out"
    args = build_args({**mix_inputs["paths"], "chartqa": str(folder.parent)}, str(out), "--workers", "2",
                      "--sources", "chartqa,virl39k")
    done = subprocess.run([sys.executable, "data_prep/build_mix.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "read" in done.stdout and "kept" in done.stdout  # the printed table
    report = json.loads((out / "report.json").read_text())
    assert report["sources"]["chartqa"]["kept"] == 8
    # the parquet folder's test split was found and excluded automatically
    assert report["sources"]["virl39k"]["dropped"]["test_overlap"] == 1
