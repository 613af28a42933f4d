"""The smoke's tiny data, built offline: PIL-drawn look-alikes through the pipeline's real data_prep scripts.

- :func:`build_data`: ChartQA / Geometry3K look-alikes -> ``data_prep/build_mix.py`` -> verl parquet;
- :func:`build_bench_data`: the six benchmarks' look-alikes -> ``data_prep/build_bench.py``;
- :func:`build_sft_data`: a Vision-R1-cold look-alike -> ``data_prep/build_sft.py`` (the cold start).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
from pathlib import Path

from smoke.console import log
from smoke.cpu_run import MAX_PROMPT, SFT_MAX_LENGTH

REPO = Path(__file__).resolve().parents[1]

CHART_QUESTION = "How many bars are in the chart?"
GEOMETRY_QUESTION = "<image>What number is written inside the triangle?"


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def draw_bars(n_bars: int, seed: int, size=(112, 84)):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width = (size[0] - 12) // n_bars
    for i in range(n_bars):
        height = rng.randint(15, size[1] - 15)
        x0 = 6 + i * width
        draw.rectangle([x0 + 2, size[1] - 6 - height, x0 + width - 2, size[1] - 6], fill=(31, 119, 180))
    return image


def draw_triangle(number: int, seed: int, size=(84, 84)):
    from PIL import Image, ImageDraw

    rng = random.Random(1000 + seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(6, size[1] - 6), (size[0] - 6, size[1] - 6), (rng.randint(20, 64), 8)], outline="black", width=2)
    draw.text((size[0] // 2 - 3, size[1] // 2), str(number), fill="red")
    return image


def write_fixtures(root: Path, n_chart: int = 12, n_geo: int = 12, seed: int = 0) -> dict[str, str]:
    """ChartQA / Geometry3K look-alikes in their hub layouts (``datasets.save_to_disk``)."""
    import datasets

    from data_prep.cli import datasets_bars_off

    rng = random.Random(seed)
    chart = lambda i, n: {"image": {"bytes": _png(draw_bars(n, seed * 100 + i)), "path": None},  # noqa: E731
                          "query": CHART_QUESTION, "label": [str(n)], "human_or_machine": 0}
    geo = lambda i, n: {"images": [{"bytes": _png(draw_triangle(n, seed * 100 + i)), "path": None}],  # noqa: E731
                        "problem": GEOMETRY_QUESTION, "answer": str(n), "id": str(i), "choices": []}
    chart_rows = [chart(i, rng.choice([2, 3, 4])) for i in range(n_chart)]
    geo_rows = [geo(i, rng.choice([5, 6, 7])) for i in range(n_geo)]
    chart_test = [chart(900 + i, 5) for i in range(2)]
    geo_test = [geo(900 + i, 8) for i in range(2)]
    chart_features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                        "label": datasets.List(datasets.Value("string")),
                                        "human_or_machine": datasets.Value("int64")})
    geo_features = datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                                      "answer": datasets.Value("string"), "id": datasets.Value("string"),
                                      "choices": datasets.List(datasets.Value("string"))})
    paths = {}
    for name, train, test, features in (("chartqa", chart_rows, chart_test, chart_features),
                                        ("geometry3k", geo_rows, geo_test, geo_features)):
        path = root / name
        with datasets_bars_off():  # the console shows stages, not a bar per split
            datasets.DatasetDict({"train": datasets.Dataset.from_list(train, features=features),
                                  "test": datasets.Dataset.from_list(test, features=features)}).save_to_disk(str(path))
        paths[name] = str(path)
    return paths


# Vision-R1-cold's layout (data_prep/cold_start.py): two sharegpt JSON files, image paths relative to
# the folder. The assistant turn is R1-style, reasoning in <think> then "Final Answer: N";
# build_sft.py rewrites it into CARE's format.
COLD_START_RESPONSE = "<think>\ncount\n</think>\n\nFinal Answer: {answer}"


def write_cold_start_fixture(root: Path, parquet_files: list[str]) -> Path:
    """A tiny Vision-R1-cold look-alike made from the RL training rows (their pictures and answers).

    Charts go to the LLaVA-CoT file (``image``: one path, human/gpt turns), triangles to the Mulberry
    file (``images``: a list, user/assistant turns), each picture saved under the subset's image
    folder, the answer in an R1-style response. The cold start sees the RL
    training pictures: with other pictures the 10M-parameter model cannot learn to count, so its
    accuracy (and the share of mixed groups) would rest on guessing alone.
    """
    import pyarrow.parquet as pq

    files = {"chartqa": ("vision_r1_llava_cot_full.json", "llava_cot_images"),
             "geometry3k": ("vision_r1_mulberry_sft_full.json", "mulberry_images")}
    rows = {name: [] for name in files}
    for path in parquet_files:
        for row in pq.read_table(path).to_pylist():
            source, info = row["data_source"], row["extra_info"]
            _, image_dir = files[source]
            rels = []
            for k, image in enumerate(row["images"]):
                rel = f"{image_dir}/{source}/{info['id'].replace('/', '_')}-{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(image["bytes"])
                rels.append(rel)
            reply = COLD_START_RESPONSE.format(answer=info["answer"])
            if source == "chartqa":
                rows[source].append({"id": info["id"], "image": rels[0], "conversations": [
                    {"from": "human", "value": info["question"]}, {"from": "gpt", "value": reply}]})
            else:
                rows[source].append({"images": rels, "conversations": [
                    {"from": "user", "value": info["question"]}, {"from": "assistant", "value": reply}]})
    for source, (name, _) in files.items():
        (root / name).write_text(json.dumps(rows[source]))
    return root


def build_sft_data(workdir: Path, tokenizer_dir: Path, python: str, rl_train_files: list[str]) -> Path:
    """Cold-start fixtures -> ``data_prep/build_sft.py`` -> SFT parquet; returns its folder."""
    out = workdir / "sft_data"
    if not (out / "report.json").exists():
        fixtures = write_cold_start_fixture(workdir / "fixtures" / "vision_r1_cold", rl_train_files)
        cmd = [python, str(REPO / "data_prep" / "build_sft.py"), "--vision-r1-cold", str(fixtures),
               "--out", str(out), "--overwrite", "--tokenizer", str(tokenizer_dir),
               "--max-length", str(SFT_MAX_LENGTH), "--workers", "1", "--no-progress"]
        log("building the cold-start set: " + " ".join(cmd[1:]))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"build_sft.py failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    train = sorted(out.glob("train-*.parquet"))
    if not train:
        raise RuntimeError(f"build_sft.py wrote no train-*.parquet into {out}")
    return out


def build_data(workdir: Path, tokenizer_dir: Path, python: str, bench_dir: Path | None = None) -> list[str]:
    """Fixtures -> ``data_prep/build_mix.py`` -> verl parquet shards; returns [train files..., val file].

    ``bench_dir``: build_bench.py's output; the mix drops rows that overlap it (``--exclude-bench``),
    as a real build does.
    """
    out = workdir / "data"
    done = out / "report.json"
    if not done.exists():
        fixtures = write_fixtures(workdir / "fixtures")
        cmd = [python, str(REPO / "data_prep" / "build_mix.py"), "--sources", "chartqa,geometry3k",
               "--chartqa", fixtures["chartqa"], "--geometry3k", fixtures["geometry3k"],
               "--out", str(out), "--overwrite", "--val-size", "4", "--tokenizer", str(tokenizer_dir),
               "--max-prompt-tokens", str(MAX_PROMPT), "--workers", "1", "--no-progress",
               *(["--exclude-bench", str(bench_dir)] if bench_dir else [])]
        log("building the training mix: " + " ".join(cmd[1:]))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"build_mix.py failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    train = sorted(str(p) for p in out.glob("train-*.parquet"))
    val = out / "val.parquet"
    if not train or not val.exists():
        raise RuntimeError(f"build_mix.py wrote no train-*.parquet / val.parquet into {out}")
    return [*train, str(val)]


def build_bench_data(workdir: Path, tokenizer_dir: Path, python: str) -> tuple[Path, Path]:
    """Look-alikes of the six benchmarks -> ``data_prep/build_bench.py`` -> six verl parquets.

    Returns (the parquet folder, verl's validation sets: ``BENCH_DIR``; the look-alikes' own
    ``datasets`` saves, lmms-eval's ``--data-dir``). The look-alikes are the hub datasets' columns
    and answer conventions with a few rows each (``data_prep/bench_fixtures.py``).
    """
    from data_prep.bench_fixtures import save_benchmarks
    from data_prep.schema import BENCHMARKS

    out, raw = workdir / "bench", workdir / "fixtures" / "bench"
    if not (out / "report.json").exists():
        inputs = save_benchmarks(str(raw))
        cmd = [python, str(REPO / "data_prep" / "build_bench.py"), "--out", str(out), "--overwrite",
               "--tokenizer", str(tokenizer_dir), "--workers", "1", "--no-progress",
               *[a for name, path in inputs.items() for a in (f"--{name.replace('_', '-')}", path)]]
        log("building the six benchmark look-alikes: " + " ".join(cmd[1:4]) + " ...")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"build_bench.py failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    missing = [b for b in BENCHMARKS if not (out / f"{b}.parquet").exists()]
    if missing:
        raise RuntimeError(f"build_bench.py wrote no {', '.join(missing)} parquet into {out}")
    return out, raw


POISON_KINDS = ("image_undecodable", "prompt_missing", "gold_missing", "prompt_too_long", "gold_unparseable")


def poison_shard(path: Path, n: int, seed: int = 0) -> list[dict]:
    """Overwrite ``n`` rows of a verl training parquet in place with poisoned copies, cycling through
    :data:`POISON_KINDS` (an undecodable image, prompt None, no gold, a 200k-character prompt, a gold the
    verifier cannot parse); the rows keep their ``extra_info`` id. Returns ``[{"row", "id", "kind"}]``.
    Not used by the default smoke data; for kill/poison runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rows = table.to_pylist()
    rng = random.Random(seed)
    picks = rng.sample(range(len(rows)), min(n, len(rows)))
    # ChartQA golds are free text that any string satisfies: an unparseable gold needs a math row
    math_rows = [i for i in rng.sample(range(len(rows)), len(rows)) if rows[i].get("data_source") != "chartqa"]
    for k, i in enumerate(picks):
        if POISON_KINDS[k % len(POISON_KINDS)] == "gold_unparseable" and rows[i].get("data_source") == "chartqa":
            spare = [j for j in math_rows if j not in picks]
            if spare:
                picks[k] = spare[0]
    done = []
    for k, i in enumerate(picks):
        kind, row = POISON_KINDS[k % len(POISON_KINDS)], rows[i]
        if kind == "image_undecodable" and row.get("images"):
            row["images"] = [{"bytes": b"\x89PNG poisoned", "path": None} for _ in row["images"]]
        elif kind == "image_undecodable" or kind == "prompt_missing":
            kind, row["prompt"] = "prompt_missing", None
        elif kind == "gold_missing":
            row["reward_model"] = {**row["reward_model"], "ground_truth": ""}
        elif kind == "prompt_too_long":
            row["prompt"] = [{**row["prompt"][0], "content": row["prompt"][0]["content"] + " x" * 100_000},
                             *row["prompt"][1:]]
        else:
            row["reward_model"] = {**row["reward_model"], "ground_truth": "\\frac{{{"}
        done.append({"row": i, "id": (row.get("extra_info") or {}).get("id"), "kind": kind})
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return done
