"""Throughput and memory of data_prep/build_mix.py on a synthetic 10,000-row input.

    python benchmarks/bench_build_mix.py [--rows 10000] [--workers N]
    python benchmarks/bench_build_mix.py --quick     # 200 rows, 2 workers, seconds (what the test runs)

Builds ChartQA-, Geometry3K- and ViRL39K-like inputs (parquet folders, a ViRL folder with
39Krelease.parquet + images.zip; every question distinct so nothing is deduplicated away; 5% of
the charts above the default pixel budget so the resize path runs), then runs the real CLI in a
subprocess twice: with 1 worker (the baseline of this run) and with --workers. Peak RSS is the
largest sum over the builder's whole process tree (main + pool workers), sampled every 20 ms.
The last line is ``rows/s: N, peak RSS MiB: M`` for the --workers run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chart_png(seed: int, size: tuple[int, int]) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    n = rng.randint(3, 8)
    width = (size[0] - 40) // n
    for i in range(n):
        h = rng.randint(20, size[1] - 40)
        draw.rectangle([20 + i * width + 3, size[1] - 20 - h, 20 + (i + 1) * width - 3, size[1] - 20],
                       fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        draw.text((20 + i * width + 5, size[1] - 18), f"{h}", fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_inputs(root: str, rows: int) -> dict:
    pool = [chart_png(i, (640, 480)) for i in range(60)] + [chart_png(1000 + i, (1600, 1200)) for i in range(3)]
    pick = lambda i: pool[i % len(pool)]  # noqa: E731  (every 21st row gets a 1600x1200 chart)
    n_chart, n_geo = int(rows * 0.4), int(rows * 0.1)
    n_virl = rows - n_chart - n_geo
    paths = {k: os.path.join(root, k) for k in ("chartqa", "geometry3k", "virl39k")}
    for p in paths.values():
        os.makedirs(p)
    chart = [{"image": {"bytes": pick(i), "path": None}, "query": f"What is the value of bar {i}?",
              "label": [str(i)], "human_or_machine": 0} for i in range(n_chart)]
    pq.write_table(pa.Table.from_pylist(chart), os.path.join(paths["chartqa"], "train-00000-of-00001.parquet"),
                   row_group_size=500)
    geo = [{"images": [{"bytes": pick(7 * i), "path": None}], "problem": f"<image>Find x{i}.", "answer": str(i)}
           for i in range(n_geo)]
    pq.write_table(pa.Table.from_pylist(geo), os.path.join(paths["geometry3k"], "train-00000-of-00001.parquet"),
                   row_group_size=500)
    virl = []
    with zipfile.ZipFile(os.path.join(paths["virl39k"], "images.zip"), "w") as archive:
        for i in range(n_virl):
            name = f"images/{i}.png"
            archive.writestr(name, pick(13 * i))
            virl.append({"question": f"<image>How many bars in virl chart {i}?", "answer": f"\\boxed{{{i}}}",
                         "image": [name], "category": "chart", "source": "synthetic", "qid": f"q{i}"})
    pq.write_table(pa.Table.from_pylist(virl), os.path.join(paths["virl39k"], "39Krelease.parquet"))
    return paths


def run_build(paths: dict, out: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "data_prep.build_mix", "--chartqa", paths["chartqa"], "--geometry3k",
           paths["geometry3k"], "--virl39k", paths["virl39k"], "--out", out, "--workers", str(workers),
           "--no-progress", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    report = json.load(open(os.path.join(out, "report.json")))
    return {"wall": wall, "peak_mib": peak / 2**20, "read": report["totals"]["read"], "kept": report["totals"]["kept"],
            "table": stdout.decode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic input rows in all")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="pool size of the measured run")
    parser.add_argument("--quick", action="store_true", help="200 rows, 2 workers")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.workers = 200, 2
    with tempfile.TemporaryDirectory(prefix="bench_build_mix_") as root:
        t0 = time.perf_counter()
        paths = make_inputs(root, args.rows)
        input_mib = sum(os.path.getsize(os.path.join(d, f)) for d in paths.values() for f in os.listdir(d)) / 2**20
        made = time.perf_counter() - t0
        print(f"synthetic input: {args.rows} rows, {input_mib:.0f} MiB on disk, made in {made:.1f} s")
        base = run_build(paths, os.path.join(root, "out1"), 1)
        print(f"baseline, 1 worker : {base['read'] / base['wall']:.0f} rows/s, peak RSS {base['peak_mib']:.0f} MiB")
        best = run_build(paths, os.path.join(root, "outN"), args.workers)
        print(f"{args.workers} workers        : {best['read'] / best['wall']:.0f} rows/s, peak RSS "
              f"{best['peak_mib']:.0f} MiB (process tree)")
        print(best["table"].rstrip())
        print(f"speed-up vs 1 worker: {base['wall'] / best['wall']:.2f}x")
        assert best["read"] == args.rows, best["read"]
        print(f"rows/s: {best['read'] / best['wall']:.0f}, peak RSS MiB: {best['peak_mib']:.0f}")


if __name__ == "__main__":
    main()
