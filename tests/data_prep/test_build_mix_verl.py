"""The produced shards through verl's real RLHFDataset with a tiny Qwen2.5-VL processor (offline)."""

from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def qwen_vl():
    from smoke.tiny_models import tiny_qwen25_vl_dir
    from recipe.care.verl_compat import require_verl_attr

    hf_processor, hf_tokenizer = require_verl_attr("verl.utils", "hf_processor", "hf_tokenizer")
    path = str(tiny_qwen25_vl_dir())
    processor = hf_processor(path)
    assert processor is not None, "no Qwen2.5-VL processor (is torchvision installed?)"
    return hf_tokenizer(path), processor


def test_rlhf_dataset_loads_every_row_with_matching_images_and_placeholders(built_mix, qwen_vl, tmp_path):
    from omegaconf import OmegaConf

    from recipe.care.verl_compat import require_verl_attr

    RLHFDataset = require_verl_attr("verl.utils.dataset.rl_dataset", "RLHFDataset")
    build_inputs = require_verl_attr("verl.utils.tokenizer", "build_multimodal_processor_inputs")
    tokenizer, processor = qwen_vl
    files = sorted(glob.glob(os.path.join(built_mix["out"], "train-*.parquet"))) + [
        os.path.join(built_mix["out"], "val.parquet")]
    expected = [row for path in files for row in pq.read_table(path).to_pylist()]
    # workers=0 runs verl's filter in this process: datasets>=5 forks a pool even for num_proc=1, and
    # a fork after torch's OpenMP pool has started (earlier tests in the same pytest) deadlocks.
    config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 16384,
                               "filter_overlong_prompts": True, "filter_overlong_prompts_workers": 0,
                               "cache_dir": str(tmp_path / "verl_cache")})
    dataset = RLHFDataset(files, tokenizer, config, processor=processor)
    # verl's overlong filter runs the full processor on every row and drops rows that raise:
    # keeping them all means every row processed cleanly.
    assert len(dataset) == len(expected)

    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    multimodal_rows = 0
    for i, row in enumerate(expected):
        item = dataset[i]
        assert item["extra_info"]["id"] == row["extra_info"]["id"]
        messages = item["raw_prompt"]
        n_images = len(row["images"])
        content = messages[0]["content"]
        if n_images == 0:
            assert isinstance(content, str) and "<image>" not in content
            continue
        multimodal_rows += 1
        assert sum(part["type"] == "image" for part in content) == n_images
        images, videos, _ = RLHFDataset._process_multi_modal_info(messages, dataset.image_patch_size, config)
        assert len(images) == n_images and videos is None
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = build_inputs(processor, text=[prompt], images=images)
        ids = inputs["input_ids"][0].tolist()
        assert ids.count(vision_start) == n_images
        merge = processor.image_processor.merge_size ** 2
        assert ids.count(image_pad) == int(inputs["image_grid_thw"].prod(-1).sum()) // merge
    assert multimodal_rows >= len(expected) - 1  # only ViRL's DeepScaleR row is text-only
