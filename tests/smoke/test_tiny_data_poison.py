"""smoke.tiny_data.poison_shard: N poisoned rows, each a kind CareRLDataset or the reward step must count."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from smoke.tiny_data import POISON_KINDS, poison_shard


def test_an_unparseable_gold_goes_to_a_math_row(tmp_path):
    rows = [{"data_source": "chartqa" if i % 3 else "geometry3k", "prompt": [{"role": "user", "content": "q"}],
             "images": [], "reward_model": {"style": "rule", "ground_truth": "3"},
             "extra_info": {"id": f"r{i}", "index": i}} for i in range(12)]
    for seed in range(5):
        path = tmp_path / f"train{seed}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        done = poison_shard(path, 5, seed=seed)
        after = pq.read_table(path).to_pylist()
        bad_gold = [d for d in done if d["kind"] == "gold_unparseable"]
        assert len(bad_gold) == 1 and after[bad_gold[0]["row"]]["data_source"] == "geometry3k"
        assert len({d["row"] for d in done}) == 5


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


def test_smoke_poison_option_trains_on_a_poisoned_copy_and_sums_what_the_run_counted(tmp_path):
    import json

    from smoke.driver import poison_summary, poisoned_copy

    rows = [{"data_source": "geometry3k", "prompt": [{"role": "user", "content": "<image>q"}],
             "images": [{"bytes": b"png", "path": None}], "reward_model": {"style": "rule", "ground_truth": "3"},
             "extra_info": {"id": f"r{i}", "index": i}} for i in range(8)]
    clean = tmp_path / "data" / "train-00000.parquet"
    clean.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), clean)
    (clean.parent / "report.json").write_text("{}")  # a complete build's
    files = poisoned_copy(tmp_path, [str(clean)], 5)
    assert (Path(files[0]).parent / "report.json").exists()  # the preflight accepts the copy
    assert files != [str(clean)] and pq.read_table(clean).to_pylist() == rows  # the cached data stays clean
    poisoned = pq.read_table(files[0]).to_pylist()
    assert sum(a != b for a, b in zip(poisoned, rows)) == 5
    assert poisoned_copy(tmp_path, [str(clean)], 5) == files  # built once per workdir
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    # a killed launch logged step 1-2, the restart redid step 2 (its line wins) and did step 3
    lines = {"care-run1.1.jsonl": [(1, 1, 0), (2, 2, 1)], "care-run1.jsonl": [(2, 1, 1), (3, 0, 2)]}
    for name, steps in lines.items():
        (metrics / name).write_text("".join(json.dumps({"step": s, "data": {
            "data/skipped_rows": k, "reward/failed_samples": f, "reward/reason/gold_unparseable": 0.1}}) + "\n"
            for s, k, f in steps))
    summary = poison_summary(tmp_path, "care", 5)
    assert "skipped 2 row reads over 3 steps" in summary and "failed 3 rollouts" in summary
    assert "gold_unparseable" in summary
