"""Small ChartQA / Geometry3K / ViRL39K look-alikes, drawn with PIL, with planted problems.

Every planted row is named in PLANTED so tests can check it landed under the right reason.
"""

from __future__ import annotations

import io
import json
import os
import random
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

# Shared by the tests (imported from here, not from conftest: sibling test folders have their own
# conftest.py, so the module name "conftest" is ambiguous).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Small enough that the 900x700 chart (630,000 px) must be downscaled, large enough for the rest.
TEST_MAX_PIXELS = 200_000
VAL_SIZE = 3


def build_args(paths: dict, out: str, *extra: str) -> list[str]:
    return ["--chartqa", paths["chartqa"], "--geometry3k", paths["geometry3k"], "--virl39k", paths["virl39k"],
            "--out", out, "--max-pixels", str(TEST_MAX_PIXELS), "--val-size", str(VAL_SIZE), "--shard-size", "5",
            "--no-progress", *extra]


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def draw_chart(seed: int, size=(160, 120)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    n = rng.randint(3, 6)
    width = (size[0] - 20) // n
    for i in range(n):
        height = rng.randint(10, size[1] - 20)
        x0 = 10 + i * width
        draw.rectangle([x0 + 2, size[1] - 10 - height, x0 + width - 2, size[1] - 10], fill=rng.choice(PALETTE))
    draw.line([8, size[1] - 10, size[0] - 8, size[1] - 10], fill="black", width=2)
    draw.text((10, 2), f"chart {seed}", fill="black")
    return image


def draw_triangle(seed: int, size=(140, 140)) -> Image.Image:
    rng = random.Random(1000 + seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    pts = [(rng.randint(5, size[0] - 5), rng.randint(5, size[1] - 5)) for _ in range(3)]
    draw.polygon(pts, outline="black", width=3)
    for label, (x, y) in zip("ABC", pts):
        draw.text((x, y), label, fill="blue")
    draw.text((size[0] // 2, size[1] // 2), str(rng.randint(2, 40)), fill="red")
    return image


def encode(image: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


CORRUPT_BYTES = b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a png" * 4

# id -> expected drop reason (None = kept); ids as the builder reports them.
PLANTED = {
    "chartqa": {
        "train/6": "not_in_subset", "train/7": "duplicate_within_source", "train/9": "corrupt_image",
        "train/10": "empty_answer", "train/12": "missing_field",
    },
    "geometry3k": {},
    "virl39k": {
        "v4": "placeholder_mismatch", "v5": "duplicate_across_sources", "v6": "test_overlap",
        "v7": "corrupt_image", "v8": "missing_image", "v10": "missing_field", "v11": "duplicate_within_source",
        "v12": "unreadable_file", "v13": "empty_answer", "v16": "test_overlap",
    },
}
READ = {"chartqa": 13, "geometry3k": 6, "virl39k": 17}
BIG_CHART = (900, 700)  # 630,000 px: above the tests' --max-pixels


def chartqa_rows():
    q = [f"What is the value of bar {i + 1} in chart {i}?" for i in range(13)]
    rows = []
    for i in range(13):
        rows.append({"image": {"bytes": encode(draw_chart(i)), "path": None}, "query": q[i],
                     "label": [str(10 + i)], "human_or_machine": 0})
    rows[1]["label"] = ["1,000", "1000"]  # several accepted labels survive as a list
    rows[6]["human_or_machine"] = 1
    rows[7] = {**rows[0], "query": "  WHAT is the value of bar 1, in chart 0 ??"}  # same picture + question
    rows[8] = {**rows[0], "query": "Which bar is the tallest?", "label": ["3"]}  # same picture, new question
    rows[9]["image"] = {"bytes": CORRUPT_BYTES, "path": None}
    rows[10]["label"] = ["  "]
    rows[11]["image"] = {"bytes": encode(draw_chart(11, size=BIG_CHART)), "path": None}
    rows[12]["label"] = None
    test = [{"image": {"bytes": encode(draw_chart(100 + i)), "path": None},
             "query": f"How many bars does test chart {i} have?", "label": ["4"], "human_or_machine": 0}
            for i in range(2)]
    return rows, test


def geometry_rows():
    rows = []
    for i in range(6):
        rows.append({"images": [{"bytes": encode(draw_triangle(i)), "path": None}],
                     "problem": "<image>Find x.", "answer": str(3 + i), "id": str(i),
                     "choices": [str(3 + i), str(4 + i), str(5 + i), str(6 + i)] if i == 4 else []})
    test = [{"images": [{"bytes": encode(draw_triangle(50 + i)), "path": None}],
             "problem": "<image>Find the area of the triangle.", "answer": "12", "id": f"t{i}", "choices": []}
            for i in range(2)]
    return rows, test


def save_hf(root: str, name: str, train: list, test: list, features) -> str:
    import datasets

    path = os.path.join(root, name)
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(train, features=features),
        "test": datasets.Dataset.from_list(test, features=features),
    })
    dd.save_to_disk(path)
    return path


def chartqa_features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                              "label": datasets.List(datasets.Value("string")),
                              "human_or_machine": datasets.Value("int64")})


def geometry_features():
    import datasets

    return datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                              "answer": datasets.Value("string"), "id": datasets.Value("string"),
                              "choices": datasets.List(datasets.Value("string"))})


def virl_folder(root: str, chart_train, chart_test, geo_test) -> str:
    folder = os.path.join(root, "ViRL39K")
    os.makedirs(folder)
    files: dict[str, bytes] = {}

    def put(name, data):
        files[f"images/{name}"] = data
        return f"images/{name}"

    def chart_of(row):
        return Image.open(io.BytesIO(row["image"]["bytes"]))

    rows = []

    def add(qid, question, answer, image, category="(GradeSchool) Non-Geo Math", source="Processed", **kw):
        rows.append({"question": question, "answer": answer, "image": image, "category": category,
                     "source": source, "qid": qid, "PassRate_32BTrained": 0.5, "PassRate_7BBase": -1.0, **kw})

    add("v0", "<image>What is the sum of all bars in virl chart 200?", r"\boxed{12}",
        [put("v0.png", encode(draw_chart(200)))])
    add("v1", "<image>Which colour is the tallest bar?\n(A) red (B) blue (C) green", r"\boxed{B}",
        [put("v1.png", encode(draw_chart(201)))])
    add("v2", "Compute 1+1.", r"\boxed{2}", None, category="Text", source="DeepScaleR")
    add("v3", "How many sides does the shape have?", r"\boxed{3}", [put("v3.png", encode(draw_triangle(300)))])
    add("v4", "<image> compare with <image>", r"\boxed{1}", [put("v4.png", encode(draw_chart(204)))])
    # ChartQA train/1 again: same question, the picture re-encoded as JPEG at another quality.
    add("v5", "<image>" + chart_train[1]["query"], r"\boxed{1000}",
        [put("v5.jpg", encode(chart_of(chart_train[1]), "JPEG", quality=60))])
    # Geometry3K test/t0, re-encoded: must not be trained on.
    add("v6", "<image>Find the area of the triangle.", r"\boxed{12}",
        [put("v6.jpg", encode(Image.open(io.BytesIO(geo_test[0]["images"][0]["bytes"])), "JPEG", quality=75))])
    add("v7", "<image>What is shown?", r"\boxed{7}", [put("v7.png", CORRUPT_BYTES)])
    add("v8", "<image>What is missing?", r"\boxed{8}", ["images/not_in_the_zip.png"])
    add("v9", "<image>Find the ratio of the shaded area in virl chart 209.", r"\boxed{\frac{1}{2}}",
        [put("v9.png", encode(draw_chart(209)))])
    add("v10", "<image>No answer here.", None, [put("v10.png", encode(draw_chart(210)))])
    add("v11", "<image>What is the sum of all bars in virl chart 200?", r"\boxed{12}",
        [put("v11.jpg", encode(draw_chart(200), "JPEG", quality=85))])
    add("v12", "<image>A damaged archive member.", r"\boxed{12}", [put("v12.png", encode(draw_chart(212)))])
    add("v13", "<image>Empty box.", r"\boxed{}", [put("v13.png", encode(draw_chart(213)))])
    add("v14", "Compare <image> and <image>: which has more bars?", r"\boxed{A}",
        [put("v14a.png", encode(draw_chart(214))), put("v14b.png", encode(draw_triangle(214)))])
    # Same question as ChartQA train/2 but a different picture: not a duplicate.
    add("v15", "<image>" + chart_train[2]["query"], r"\boxed{5}", [put("v15.png", encode(draw_chart(215)))])
    add("v16", chart_test[0]["query"], r"\boxed{4}",
        [put("v16.jpg", encode(chart_of(chart_test[0]), "JPEG", quality=70))])

    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("question", pa.string()), ("answer", pa.string()), ("image", pa.list_(pa.string())),
        ("category", pa.string()), ("source", pa.string()), ("qid", pa.string()),
        ("PassRate_32BTrained", pa.float64()), ("PassRate_7BBase", pa.float64())]))
    pq.write_table(table, os.path.join(folder, "39Krelease.parquet"))
    zip_path = os.path.join(folder, "images.zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    _damage_member(zip_path, "images/v12.png")
    return folder


def _damage_member(zip_path: str, name: str) -> None:
    """Flip bytes inside one stored member so reading it fails its CRC check."""
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo(name)
    with open(zip_path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
        data_start = info.header_offset + 30 + name_len + extra_len
        fh.seek(data_start + info.compress_size // 2)
        fh.write(b"\x00\xff" * 8)


def build_all(root: str) -> dict:
    chart_train, chart_test = chartqa_rows()
    geo_train, geo_test = geometry_rows()
    paths = {
        "chartqa": save_hf(root, "chartqa", chart_train, chart_test, chartqa_features()),
        "geometry3k": save_hf(root, "geometry3k", geo_train, geo_test, geometry_features()),
        "virl39k": virl_folder(root, chart_train, chart_test, geo_test),
    }
    with open(os.path.join(root, "fixture_index.json"), "w") as fh:
        json.dump(paths, fh)
    return {"paths": paths, "chartqa_train": chart_train, "geometry_train": geo_train}
