"""Pure pieces: placeholders, ground truths, choices, question keys, hashes, token counts, writers."""

from __future__ import annotations

import io
import math

import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from mix_fixtures import draw_chart, draw_triangle, encode
from PIL import Image

from data_prep.dedup import DedupIndex, normalise_question
from data_prep.images import fit_pixel_budget, hamming, perceptual_hash, visual_tokens
from data_prep.pipeline import BuildOptions
from data_prep.prompts import fix_placeholders, parse_choices, strip_boxed
from data_prep.report import ReconciliationError, Report
from data_prep.writer import HoldOut, ShardWriter

plain_text = st.text(st.characters(blacklist_characters="<>"), max_size=40)


@given(plain_text, st.integers(0, 4))
def test_missing_placeholders_are_prepended_one_per_image(text, n):
    fixed = fix_placeholders(text, n)
    assert fixed.count("<image>") == n
    assert text.strip() in fixed


@given(plain_text, st.integers(1, 4), st.integers(1, 4))
def test_a_wrong_nonzero_placeholder_count_is_never_guessed(text, k, n):
    with_k = "<image>" * k + text
    assert (fix_placeholders(with_k, n) == with_k) if k == n else fix_placeholders(with_k, n) is None


def test_other_placeholders_cannot_be_fixed():
    assert fix_placeholders("<image> a <video>", 1) is None


@pytest.mark.parametrize("raw,gold", [
    (r"\boxed{12}", "12"), (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"), (r"  \boxed{ B }", "B"),
    ("17", "17"), (r"\boxed{2}, \boxed{3}", "2, 3"), (r"\boxed{}", ""), (r"\boxed{None}", "None"),
    (r"\boxed{\sqrt{3", r"\boxed{\sqrt{3"),
])
def test_strip_boxed(raw, gold):
    assert strip_boxed(raw) == gold


@pytest.mark.parametrize("question,choices", [
    ("Which?\n(A) red (B) blue (C) green", ["red", "blue", "green"]),
    ("Which?\nA. 3\nB. 4\nC. 5\nD. 6", ["3", "4", "5", "6"]),
    ("Choices:\n(A) 1\n(B) 2", ["1", "2"]),
    ("Find x (in cm).", []),
    ("Point (B) lies on line (A).", []),
])
def test_parse_choices(question, choices):
    assert parse_choices(question) == choices


def test_question_key_ignores_case_punctuation_space_and_placeholders():
    assert normalise_question("<image>What is  the VALUE of bar 1?") == normalise_question("what is the value of bar 1")
    assert normalise_question("Find x.") != normalise_question("Find y.")


def test_pixel_hash_survives_reencoding_but_separates_distinct_pictures():
    threshold = BuildOptions(out="").hash_distance
    for seed in range(12):
        for draw in (draw_chart, draw_triangle):
            image = draw(seed)
            same = Image.open(io.BytesIO(encode(image, "JPEG", quality=55)))
            small = Image.open(io.BytesIO(encode(image.resize((image.width * 3 // 4, image.height * 3 // 4)),
                                                 "JPEG", quality=80)))
            assert hamming(perceptual_hash(image), perceptual_hash(same)) <= threshold
            assert hamming(perceptual_hash(image), perceptual_hash(small)) <= threshold
            other = draw(seed + 100)
            assert hamming(perceptual_hash(image), perceptual_hash(other)) > threshold


def test_dedup_index_needs_text_and_every_image():
    index = DedupIndex(max_distance=2)
    index.add("q", (0b1111, 0), "chartqa", "a")
    assert index.find("q", (0b0111, 0)).id == "a"
    assert index.find("q", (0b0000, 0)) is None  # 4 bits off
    assert index.find("q", (0b1111,)) is None  # another number of images
    assert index.find("other", (0b1111, 0)) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.sampled_from([28 * 28 * 64, 1003520, 12845056]))
def test_visual_tokens_match_qwen_vl_utils(width, height, max_pixels):
    from qwen_vl_utils.vision_process import smart_resize

    if max(width, height) / min(width, height) > 200:
        return
    h, w = smart_resize(height, width, factor=28, min_pixels=28 * 28, max_pixels=max_pixels)
    assume(h > 0 and w > 0)  # qwen_vl_utils floors a thin side to 0 (an unusable size); ours keeps 28
    assert visual_tokens(width, height, max_pixels) == (h // 28) * (w // 28)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_fit_pixel_budget(fmt):
    image = draw_chart(3, size=(600, 300))
    data = encode(image, fmt)
    decoded = Image.open(io.BytesIO(data))
    same, size, resized = fit_pixel_budget(decoded, data, 600 * 300)
    assert same is data and size == (600, 300) and not resized
    small, size, resized = fit_pixel_budget(decoded, data, 50_000)
    out = Image.open(io.BytesIO(small))
    assert resized and out.size == size and out.width * out.height <= 50_000 and out.format == fmt
    assert math.isclose(out.width / out.height, 2, rel_tol=0.02)


def _row(i):
    return {"data_source": "chartqa", "prompt": [{"role": "user", "content": f"<image>q{i}"}], "images": [],
            "ability": "chart", "reward_model": {"style": "rule", "ground_truth": [str(i)]},
            "extra_info": {"index": -1, "source": "chartqa", "origin": "", "id": str(i), "split": "train",
                           "category": "", "choices": [], "question": f"q{i}", "answer": str(i)}}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), size=st.integers(0, 10), shard=st.integers(1, 9), seed=st.integers(0, 5))
def test_holdout_and_shards_partition_the_stream(tmp_path_factory, n, size, shard, seed):
    out = str(tmp_path_factory.mktemp("w"))
    train = ShardWriter(out, "train", shard)
    holdout = HoldOut(size, seed, train)
    for i in range(n):
        holdout.offer(_row(i))
    val = ShardWriter(out, "val", file_name="val.parquet")
    holdout.write(val)
    files = train.close()
    val.close()
    train_ids = [r["extra_info"]["id"] for p, _ in files for r in pq.read_table(p).to_pylist()]
    val_ids = [r["extra_info"]["id"] for r in pq.read_table(f"{out}/val.parquet").to_pylist()]
    assert len(val_ids) == min(size, n)
    assert sorted(train_ids + val_ids, key=int) == [str(i) for i in range(n)]
    assert all(rows <= shard for _, rows in files)


def test_holdout_is_uniform():
    counts = [0] * 10
    for seed in range(400):
        train = ShardWriter("/nonexistent", "train")
        train.write = lambda row: None  # only the reservoir matters here
        holdout = HoldOut(2, seed, train)
        for i in range(10):
            holdout.offer({"i": i})
        for row in holdout.rows:
            counts[row["i"]] += 1
    assert min(counts) > 50 and max(counts) < 110  # expected 80 each


def test_report_check_fails_loudly_when_rows_go_missing():
    report = Report(["chartqa"])
    report.read("chartqa")
    report.read("chartqa")
    report.keep("chartqa")
    with pytest.raises(ReconciliationError):
        report.check()
    report.drop("chartqa", "x", "corrupt_image", "bad")
    report.check()
    with pytest.raises(ReconciliationError):
        report.check(written_rows=2)


def test_a_lost_row_makes_the_build_fail(mix_inputs, tmp_path, monkeypatch, capsys):
    """If a stage swallowed a row, the run ends with an error instead of a report that looks fine."""
    from mix_fixtures import build_args

    from data_prep import pipeline
    from data_prep.build_mix import main

    real = pipeline.process_batch
    monkeypatch.setattr(pipeline, "process_batch", lambda rows, cfg: real(rows, cfg)[:-1] if rows and
                        rows[0].source == "geometry3k" else real(rows, cfg))
    args = build_args(mix_inputs["paths"], str(tmp_path), "--workers", "1", "--sources", "geometry3k")
    assert main(args) == 3
    assert "read" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
