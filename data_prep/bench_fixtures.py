"""Tiny offline look-alikes of the six benchmarks, shaped like the hub datasets (columns, types, answer
conventions; see :mod:`data_prep.bench`), saved with ``datasets.save_to_disk``.

Used by the tests and by the smoke run (a few rows each, built without network; the smoke also hands
them to lmms-eval, so the default rows are what the real splits hold). ``bad=True`` adds the rows the
tests plant: the bad ones they expect to be dropped (a corrupt image, missing options, an answer that
is not an option, a marker naming an absent image) and a MathVerse Text Only row without an image,
which build_bench keeps.
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageDraw

from data_prep.schema import MATHVERSE, MATHVISION, MATHVISTA, MMMU, MMMU_PRO_STANDARD, MMMU_PRO_VISION

CORRUPT = b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 4


def picture(seed: int, size=(96, 72)) -> bytes:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k in range(3):
        x = 8 + 28 * k
        draw.rectangle([x, size[1] - 10 - (seed * 7 + k * 13) % 50, x + 18, size[1] - 6], fill=(40 * k, 90, 200))
    draw.text((4, 2), str(seed), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _img(seed: int) -> dict:
    return {"bytes": picture(seed), "path": None}


def mathvista_rows(bad: bool) -> list[dict]:
    def row(pid, question, answer, qtype, choices=None, atype="integer", precision=None, unit="", seed=0):
        return {"pid": pid, "question": question, "decoded_image": _img(seed), "choices": choices,
                "answer": answer, "question_type": qtype, "answer_type": atype, "precision": precision,
                "unit": unit}
    rows = [
        row("1", "Which bar is tallest?", "the middle one", "multi_choice",
            ["the left one", "the middle one", "the right one"], atype="text", seed=1),
        row("2", "How many bars are there?", "3", "free_form", seed=2),
        row("3", "What is the ratio of the bars?", "1.5", "free_form", atype="float", precision=1.0, seed=3),
        row("4", "What is the length of the side?", "12", "free_form", unit="cm", seed=4),
    ]
    if bad:
        rows += [row("5", "Corrupt?", "1", "free_form", seed=5),
                 row("6", "Which one?", "none of these", "multi_choice", ["a", "b"], atype="text", seed=6),
                 row("7", "Which one?", "a", "multi_choice", [], atype="text", seed=7)]
        rows[4]["decoded_image"] = {"bytes": CORRUPT, "path": None}
    return rows


def mathverse_rows(bad: bool) -> list[dict]:
    def row(i, question, answer, qtype, version="Text Dominant", image=True):
        return {"sample_index": str(i), "problem_index": str(i), "problem_version": version, "question": question,
                "image": _img(10 + i) if image else None, "answer": answer, "question_type": qtype,
                "query_wo": question, "query_cot": question}
    rows = [
        row(1, "As shown in the figure, find the angle ABC.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°", "B",
            "multi-choice"),
        row(2, "Find the area of the triangle.", "24", "free-form"),
        row(3, "", "C", "multi-choice", version="Vision Only"),
    ]
    if bad:
        # a Text Only row, image None: MathVerse's testmini_text_only config; the testmini split
        # (lmms-eval's reasoning task, whose doc_to_visual cannot take None) has only imaged versions
        rows.append(row(4, "A circle has radius 2. What is its area?\nChoices:\nA:2\\pi\nB:4\\pi", "B",
                        "multi-choice", version="Text Only", image=False))
        rows.append(row(5, "Which?\nChoices:\nA:1\nB:2", "E", "multi-choice"))
    return rows


def mathvision_rows(bad: bool) -> list[dict]:
    def row(i, question, options, answer):
        return {"id": str(i), "question": question, "options": options, "image": f"images/{i}.jpg",
                "decoded_image": _img(20 + i), "answer": answer, "solution": None, "level": 2, "subject": "algebra"}
    rows = [
        row(1, "<image1>\nWhich figure comes next?", ["1", "2", "3", "4", "5"], "C"),
        row(2, "How many triangles are in the picture?", [], "7"),
        row(3, "What is the value of $x$ in <image1>?", [], "\\frac{3}{2}"),
    ]
    if bad:
        rows.append(row(4, "<image1> and <image2>: which is bigger?", ["left", "right"], "A"))
    return rows


def _mmmu_row(i, question, options, answer, qtype="multiple-choice", images=1, subject="Math"):
    row = {"id": f"validation_{subject}_{i}", "question": question, "options": str(options), "explanation": "",
           "answer": answer, "question_type": qtype, "subfield": subject, "img_type": "['Diagrams']",
           "topic_difficulty": "Easy", "subject": subject}
    for k in range(1, 8):
        row[f"image_{k}"] = _img(30 + 10 * i + k) if k <= images else None
    return row


def mmmu_rows(bad: bool) -> list[dict]:
    rows = [
        _mmmu_row(1, "<image 1> What is shown in the chart?", ["a bar chart", "a pie chart", "a map", "a photo"], "A"),
        _mmmu_row(2, "Compare <image 1> and <image 2>. Which has more bars?", ["<image 1>", "<image 2>"], "B",
                  images=2),
        _mmmu_row(3, "<image 1> What is the total cost in dollars?", [], "['24.5', '24.50']", qtype="open"),
        _mmmu_row(4, "<image 1> Name the shape.", [], "triangle", qtype="open"),
    ]
    if bad:
        rows += [_mmmu_row(5, "<image 1> Which?", "not a list", "A"),
                 _mmmu_row(6, "<image 1> Which?", ["x", "y"], "D"),
                 _mmmu_row(7, "<image 1> and <image 3>?", ["x", "y"], "A", images=1)]
    return rows


def mmmu_pro_standard_rows(bad: bool) -> list[dict]:
    letters = [str(k) for k in range(10)]
    rows = [_mmmu_row(1, "<image 1> Which digit is shown?", letters, "H", subject="Art"),
            _mmmu_row(2, "<image 1> Which value?", ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"], "A")]
    for r in rows:
        del r["question_type"], r["subfield"]
    if bad:
        rows.append({**rows[0], "id": "bad_1", "options": "[]"})
    return rows


def mmmu_pro_vision_rows(bad: bool) -> list[dict]:
    rows = [{"id": f"test_Math_{i}", "image": _img(60 + i), "options": str([f"option {k}" for k in range(10)]),
             "answer": "BCD"[i], "subject": "Math"} for i in range(3)]
    if bad:
        rows.append({"id": "test_Math_9", "image": {"bytes": CORRUPT, "path": None}, "options": "['a', 'b']",
                     "answer": "A", "subject": "Math"})
    return rows


def _features(name: str):
    import datasets

    V, Img = datasets.Value, datasets.Image
    if name == MATHVISTA:
        return datasets.Features({"pid": V("string"), "question": V("string"), "decoded_image": Img(),
                                  "choices": datasets.List(V("string")), "answer": V("string"),
                                  "question_type": V("string"), "answer_type": V("string"),
                                  "precision": V("float64"), "unit": V("string")})
    if name == MATHVERSE:
        return datasets.Features({k: V("string") for k in ("sample_index", "problem_index", "problem_version",
                                                            "question", "answer", "question_type", "query_wo",
                                                            "query_cot")} | {"image": Img()})
    if name == MATHVISION:
        return datasets.Features({"id": V("string"), "question": V("string"), "options": datasets.List(V("string")),
                                  "image": V("string"), "decoded_image": Img(), "answer": V("string"),
                                  "solution": V("string"), "level": V("int64"), "subject": V("string")})
    if name == MMMU_PRO_VISION:
        return datasets.Features({"id": V("string"), "image": Img(), "options": V("string"), "answer": V("string"),
                                  "subject": V("string")})
    cols = ["id", "question", "options", "explanation", "answer", "img_type", "topic_difficulty", "subject"]
    if name == MMMU:
        cols += ["question_type", "subfield"]
    return datasets.Features({c: V("string") for c in cols} | {f"image_{k}": Img() for k in range(1, 8)})


ROWS = {MATHVISTA: (mathvista_rows, "testmini"), MATHVERSE: (mathverse_rows, "testmini"),
        MATHVISION: (mathvision_rows, "test"), MMMU: (mmmu_rows, "validation"),
        MMMU_PRO_STANDARD: (mmmu_pro_standard_rows, "test"), MMMU_PRO_VISION: (mmmu_pro_vision_rows, "test")}


def save_benchmarks(root: str, bad: bool = False) -> dict[str, str]:
    """Write the six look-alikes under ``root``; returns {benchmark: path} for build_bench's inputs."""
    import datasets

    from data_prep.cli import datasets_bars_off

    paths = {}
    with datasets_bars_off():  # six saves of a few rows: a bar each is noise in the smoke's console
        for name, (make, split) in ROWS.items():
            path = os.path.join(root, name)
            features = _features(name)
            rows = [{k: r.get(k) for k in features} for r in make(bad)]
            datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)}).save_to_disk(path)
            paths[name] = path
    return paths
