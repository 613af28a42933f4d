"""Switches that change what is kept: test-set exclusion, source priority, subsets, input layouts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pyarrow.parquet as pq
from mix_fixtures import REPO, build_args

from data_prep.build_mix import main


def kept_ids(out) -> set:
    ids = set()
    for name in os.listdir(out):
        if name.endswith(".parquet"):
            rows = pq.read_table(os.path.join(out, name)).to_pylist()
            ids |= {(r["data_source"], r["extra_info"]["id"]) for r in rows}
    return ids


def report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def run(paths, out, *extra):
    assert main(build_args(paths, str(out), "--workers", "1", *extra)) == 0
    return report(out)


def test_without_test_exclusion_the_overlapping_rows_are_kept(mix_inputs, tmp_path):
    rep = run(mix_inputs["paths"], tmp_path, "--no-auto-exclude")
    assert rep["sources"]["virl39k"]["dropped"]["test_overlap"] == 0
    assert {("virl39k", "v6"), ("virl39k", "v16")} <= kept_ids(tmp_path)
    assert rep["excluded_test_splits"] == []


def test_explicit_exclude_of_a_single_test_set(mix_inputs, tmp_path):
    import datasets

    test_only = tmp_path / "chartqa_test"
    datasets.load_from_disk(mix_inputs["paths"]["chartqa"])["test"].save_to_disk(str(test_only))
    out = tmp_path / "out"
    rep = run(mix_inputs["paths"], out, "--no-auto-exclude", "--exclude", str(test_only))
    assert [(e["kind"], e["indexed"]) for e in rep["excluded_test_splits"]] == [("chartqa", 2)]
    dropped = [json.loads(line) for line in open(out / "dropped.jsonl")]
    assert [(d["id"], d["detail"]) for d in dropped if d["reason"] == "test_overlap"] == [
        ("v16", "matches chartqa test/0")]


def test_source_priority_decides_which_copy_survives(mix_inputs, tmp_path):
    run(mix_inputs["paths"], tmp_path, "--sources", "virl39k,chartqa,geometry3k")
    kept = kept_ids(tmp_path)
    assert ("virl39k", "v5") in kept and ("chartqa", "train/1") not in kept
    dropped = [json.loads(line) for line in open(tmp_path / "dropped.jsonl")]
    assert {"source": "chartqa", "id": "train/1", "reason": "duplicate_across_sources",
            "detail": "duplicate of virl39k v5"} in dropped


def test_chartqa_subsets(mix_inputs, tmp_path):
    rep = run(mix_inputs["paths"], tmp_path / "all", "--sources", "chartqa", "--chartqa-subset", "all")
    assert rep["sources"]["chartqa"]["dropped"]["not_in_subset"] == 0
    assert ("chartqa", "train/6") in kept_ids(tmp_path / "all")
    rep = run(mix_inputs["paths"], tmp_path / "aug", "--sources", "chartqa", "--chartqa-subset", "augmented")
    assert kept_ids(tmp_path / "aug") == {("chartqa", "train/6")}
    assert rep["sources"]["chartqa"]["dropped"]["not_in_subset"] == 12


def test_unzipped_virl_images_folder_gives_the_same_rows(mix_inputs, built_mix, tmp_path):
    folder = tmp_path / "virl_unzipped"
    folder.mkdir()
    shutil.copy(os.path.join(mix_inputs["paths"]["virl39k"], "39Krelease.parquet"), folder)
    with zipfile.ZipFile(os.path.join(mix_inputs["paths"]["virl39k"], "images.zip")) as archive:
        for name in archive.namelist():
            if name != "images/v12.png":  # the damaged member cannot be extracted
                archive.extract(name, folder)
    out = tmp_path / "out"
    rep = run({**mix_inputs["paths"], "virl39k": str(folder)}, out)
    assert kept_ids(out) == kept_ids(built_mix["out"])
    assert rep["sources"]["virl39k"]["dropped"]["missing_image"] == 2  # v8, and now v12


def test_a_hub_id_that_cannot_be_reached_is_a_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "data_prep/build_mix.py", "--chartqa", "someone/no-such-dataset",
                           "--sources", "chartqa", "--out", str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--chartqa: someone/no-such-dataset is not a local path" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
