"""A bad cell costs its row, counted under its own reason; the rest of its row group is kept."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from mix_fixtures import build_args, draw_chart, encode

from data_prep.build_mix import main
from data_prep.sources import BadRow, ParquetSplit


def chartqa_parquet(path, n: int, bad: set[int] = frozenset(), empty_image: set[int] = frozenset()):
    """A ChartQA-shaped parquet in one row group; rows in ``bad`` hold invalid UTF-8 in `query`.

    pyarrow refuses to cast invalid bytes to string, so the column is built as binary and viewed as
    string (no validation), as a damaged upstream file would hold it.
    """
    queries = [(f"How tall is bar {i}?".encode() if i not in bad else b"How tall is \xff\xfe bar?") for i in range(n)]
    images = [{"bytes": b"" if i in empty_image else encode(draw_chart(500 + i)), "path": None} for i in range(n)]
    table = pa.table({
        "image": pa.array(images, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "query": pa.array(queries, type=pa.binary()).view(pa.string()),
        "label": pa.array([[str(i)] for i in range(n)], type=pa.list_(pa.string())),
        "human_or_machine": pa.array([0] * n, type=pa.int64()),
    })
    pq.write_table(table, path, row_group_size=n)
    return path


def test_reader_turns_only_the_undecodable_row_into_a_bad_row(tmp_path):
    path = chartqa_parquet(tmp_path / "train.parquet", 10, bad={3})
    rows = [row for batch in ParquetSplit([str(path)], "--chartqa", "train").batches(4, ["query", "label"])
            for row in batch]
    assert len(rows) == 10
    bad = [i for i, row in enumerate(rows) if isinstance(row, BadRow)]
    assert bad == [3]
    assert rows[3].reason == "undecodable_text" and "query" in rows[3].detail
    assert rows[4]["query"] == "How tall is bar 4?"


def test_one_undecodable_question_drops_one_row(mix_inputs, tmp_path):
    folder = tmp_path / "chartqa"
    folder.mkdir()
    chartqa_parquet(folder / "train-00000-of-00001.parquet", 12, bad={5}, empty_image={8})
    out = tmp_path / "out"
    rc = main(build_args({**mix_inputs["paths"], "chartqa": str(folder)}, str(out), "--workers", "1",
                         "--sources", "chartqa"))
    assert rc == 0
    counts = json.loads((out / "report.json").read_text())["sources"]["chartqa"]
    assert counts["read"] == 12 and counts["read"] == counts["kept"] + counts["dropped_total"]
    assert {r: n for r, n in counts["dropped"].items() if n} == {"undecodable_text": 1, "corrupt_image": 1}
    assert [r["id"] for r in counts["bad_rows"]["undecodable_text"]] == ["train/5"]
    assert [r["id"] for r in counts["bad_rows"]["corrupt_image"]] == ["train/8"]
    assert counts["kept"] == 10
