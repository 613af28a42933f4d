"""CareRLDataset over a parquet with poisoned rows among good ones (verl 0.9.1's real RLHFDataset underneath)."""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipe.care.dataset import SKIPPED_KEY, CareRLDataset

MAX_PROMPT = 256


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (28, 28), "white").save(out, format="PNG")
    return out.getvalue()


def _row(i, prompt="<image>How many bars?", images=None, gold="3", source="chartqa"):
    images = [{"bytes": _png(), "path": None}] if images is None else images
    return {"data_source": source, "prompt": None if prompt is None else [{"role": "user", "content": prompt}],
            "images": images, "reward_model": {"style": "rule", "ground_truth": gold},
            "extra_info": {"id": f"row-{i}", "index": i}}


# position -> (row, reason) of the poisoned rows
POISON = {
    2: (dict(images=[{"bytes": b"not an image", "path": None}]), "image_undecodable"),
    3: (dict(prompt=None), "error:TypeError"),
    5: (dict(gold=None), "gold_missing"),
    6: (dict(prompt="x " * 100_000, images=[]), "prompt_too_long"),
    7: (dict(prompt="<image><image>two?"), "error:AssertionError"),
    8: (dict(source="openai/gsm8k"), "unknown_data_source"),
    9: (dict(prompt="<image>text-only row with a placeholder", images=[]), "image_placeholder_mismatch"),
}
N_ROWS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from omegaconf import OmegaConf

    from recipe.care.verl_compat import require_verl_attr
    from smoke.tiny_models import tiny_qwen25_vl_dir

    hf_processor, hf_tokenizer = require_verl_attr("verl.utils", "hf_processor", "hf_tokenizer")
    path = str(tiny_qwen25_vl_dir())
    rows = [_row(i, **POISON[i][0]) if i in POISON else _row(i) for i in range(N_ROWS)]
    root = tmp_path_factory.mktemp("poison")
    pq.write_table(pa.Table.from_pylist(rows), root / "train.parquet")
    config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": MAX_PROMPT,
                               "filter_overlong_prompts": False, "cache_dir": str(root / "cache")})
    return CareRLDataset([str(root / "train.parquet")], hf_tokenizer(path), config, processor=hf_processor(path))


def test_poisoned_rows_are_skipped_named_and_stamped(dataset, printed):
    items = [dataset[i] for i in range(N_ROWS)]
    good = {i for i in range(N_ROWS) if i not in POISON}
    assert {item["extra_info"]["id"] for item in items} == {f"row-{i}" for i in good}
    skipped = [r for item in items for r in item["extra_info"].get(SKIPPED_KEY, [])]
    # each fetch of a bad row is counted once where it was asked for (row 2 and 3 chain into 4)
    assert sorted(r["row"] for r in skipped) == sorted(
        [2, 3, 3, 5, 6, 7, 8, 9, 6, 7, 8, 9, 7, 8, 9, 8, 9, 9])
    assert {r["row"]: r["reason"] for r in skipped} == {i: reason for i, (_, reason) in POISON.items()}
    assert all(r["id"] == f"row-{r['row']}" for r in skipped)
    for i in POISON:
        assert f"care: skipped row {i} id=row-{i} source=" in printed.text
    assert "care: skipped row 8 id=row-8 source=openai/gsm8k: unknown_data_source" in printed.text
    assert items[1]["extra_info"].get(SKIPPED_KEY) is None  # good rows carry no stamp
    first = items[2]
    assert first["extra_info"]["id"] == "row-4" and [r["row"] for r in first["extra_info"][SKIPPED_KEY]] == [2, 3]


def test_substitution_is_deterministic(dataset):
    first = [(dataset[i]["extra_info"]["id"], dataset[i]["extra_info"].get(SKIPPED_KEY)) for i in range(N_ROWS)]
    second = [(dataset[i]["extra_info"]["id"], dataset[i]["extra_info"].get(SKIPPED_KEY)) for i in range(N_ROWS)]
    assert first == second


def test_skip_stamps_survive_verls_collate_and_dataloader_workers(dataset):
    from torch.utils.data import DataLoader

    from recipe.care.trainer import skipped_rows_of
    from recipe.care.verl_compat import require_verl_attr

    collate_fn = require_verl_attr("verl.utils.dataset.rl_dataset", "collate_fn")
    loader = DataLoader(dataset, batch_size=4, num_workers=0, collate_fn=collate_fn)
    records = [r for batch in loader for r in skipped_rows_of(list(batch["extra_info"]))]
    assert sorted({r["row"] for r in records}) == sorted(POISON)
    assert len(records) == 18


def test_all_bad_data_is_one_clear_error(dataset, monkeypatch):
    monkeypatch.setattr(CareRLDataset, "_checked_item", lambda self, index: (None, ("gold_missing", "no gold")))
    with pytest.raises(RuntimeError, match="all bad.*gold_missing"):
        dataset[0]
