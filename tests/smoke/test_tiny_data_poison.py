"""smoke.tiny_data.poison_shard: N poisoned rows, each a kind CareRLDataset or the reward step must count."""

import pyarrow as pa
import pyarrow.parquet as pq

from smoke.tiny_data import POISON_KINDS, poison_shard


def test_poison_shard_rewrites_n_rows_in_place(tmp_path):
    rows = [{"data_source": "geometry3k", "prompt": [{"role": "user", "content": "<image>q"}],
             "images": [{"bytes": b"png", "path": None}], "reward_model": {"style": "rule", "ground_truth": "3"},
             "extra_info": {"id": f"r{i}", "index": i}} for i in range(8)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    done = poison_shard(path, 5)
    after = pq.read_table(path).to_pylist()
    assert len(after) == 8 and sorted(d["kind"] for d in done) == sorted(POISON_KINDS)
    for d in done:
        row = after[d["row"]]
        assert d["id"] == row["extra_info"]["id"]
        gold = row["reward_model"]["ground_truth"]
        assert {"image_undecodable": lambda: row["images"][0]["bytes"].startswith(b"\x89PNG poisoned"),
                "prompt_missing": lambda: row["prompt"] is None, "gold_missing": lambda: gold == "",
                "prompt_too_long": lambda: len(row["prompt"][0]["content"]) > 200_000,
                "gold_unparseable": lambda: gold == "\\frac{{{"}[d["kind"]]()
    untouched = set(range(8)) - {d["row"] for d in done}
    assert all(after[i] == rows[i] for i in untouched)
