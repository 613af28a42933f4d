"""Benchmark parquets through verl's RLHFDataset, and graded by the verifiers with their own extra_info."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from data_prep.schema import BENCHMARKS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    from data_prep.bench_fixtures import save_benchmarks
    from data_prep.build_bench import main

    root = tmp_path_factory.mktemp("bench_verl")
    paths = save_benchmarks(str(root / "in"))
    args = [a for name, path in paths.items() for a in (f"--{name.replace('_', '-')}", path)]
    assert main(args + ["--out", str(root / "out"), "--workers", "1", "--no-progress"]) == 0
    return str(root / "out")


def test_rlhf_dataset_keeps_every_benchmark_row(bench_dir, tmp_path):
    from omegaconf import OmegaConf

    from smoke.tiny_models import tiny_qwen25_vl_dir
    from recipe.care.verl_compat import require_verl_attr

    hf_processor, hf_tokenizer = require_verl_attr("verl.utils", "hf_processor", "hf_tokenizer")
    RLHFDataset = require_verl_attr("verl.utils.dataset.rl_dataset", "RLHFDataset")
    path = str(tiny_qwen25_vl_dir())
    files = [os.path.join(bench_dir, f"{b}.parquet") for b in BENCHMARKS]
    expected = [row for f in files for row in pq.read_table(f).to_pylist()]
    config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 16384,
                               "filter_overlong_prompts": True, "filter_overlong_prompts_workers": 0,
                               "cache_dir": str(tmp_path / "verl_cache")})
    dataset = RLHFDataset(files, hf_tokenizer(path), config, processor=hf_processor(path))
    assert len(dataset) == len(expected)  # verl's filter drops rows whose processing raises
    for i, row in enumerate(expected):
        item = dataset[i]
        assert item["data_source"] == row["data_source"]
        content = item["raw_prompt"][0]["content"]
        n_images = len(row["images"])
        if n_images:
            assert sum(part["type"] == "image" for part in content) == n_images


def test_every_gold_verifies_against_its_own_row(bench_dir):
    """What build_bench writes and what the verifiers read agree: the gold (letter or value), and for
    multiple choice the option text, score 1; another letter scores 0."""
    from verifiers import verify

    for bench in BENCHMARKS:
        for row in pq.read_table(os.path.join(bench_dir, f"{bench}.parquet")).to_pylist():
            gold, info = row["reward_model"]["ground_truth"][0], row["extra_info"]
            wrap = "<think>reasoning</think><answer>{}</answer>".format
            assert verify(bench, wrap(gold), row["reward_model"]["ground_truth"], info)["acc"] == 1, (bench, gold)
            if info["question_type"] == "multi_choice":
                other = "A" if gold != "A" else "B"
                assert verify(bench, wrap(other), gold, info)["acc"] == 0, (bench, info["id"])
                if info["choices"]:
                    text = info["choices"][ord(gold) - ord("A")]
                    assert verify(bench, wrap(text), gold, info)["acc"] == 1, (bench, info["id"], text)
