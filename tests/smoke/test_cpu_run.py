"""Where a smoke run goes: its own Ray cluster, or a running one (``ray start``, ``ray job submit``), on N nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoke.cpu_run import MULTINODE_TQ_ENV, cluster_overrides, existing_ray_cluster
from smoke.driver import parse_args, smoke_workdir

# ray.init keys Ray 2.60 refuses when it connects to an existing cluster (ray/_private/worker.py ray.init)
REFUSED_WHEN_CONNECTING = {"num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "_system_config"}


def ray_init_keys(overrides: list[str]) -> set[str]:
    prefix = "+ray_kwargs.ray_init."
    return {o[len(prefix):].split("=")[0] for o in overrides if o.startswith(prefix) and "runtime_env" not in o}


def test_a_running_cluster_gets_none_of_the_keys_ray_refuses():
    assert not ray_init_keys(cluster_overrides(1, existing_cluster=True)) & REFUSED_WHEN_CONNECTING
    assert {"num_cpus", "object_store_memory"} <= ray_init_keys(cluster_overrides(1, existing_cluster=False))


def test_nnodes_sets_nodes_storage_units_and_short_tq_timeouts():
    one = cluster_overrides(1, existing_cluster=False, environ={})
    two = cluster_overrides(2, existing_cluster=True, environ={"TQ_SIMPLE_STORAGE_MAX_ATTEMPTS": "1"})
    assert "trainer.nnodes=1" in one and "transfer_queue.backend.SimpleStorage.num_data_storage_units=1" in one
    assert not any("TQ_SIMPLE_STORAGE" in o for o in one)
    assert {"trainer.nnodes=2", "trainer.n_gpus_per_node=1",
            "transfer_queue.backend.SimpleStorage.num_data_storage_units=2"} <= set(two)
    tq = {o.split("env_vars.")[1].split("=")[0]: o.split("=")[1].strip("'") for o in two if "TQ_SIMPLE_STORAGE" in o}
    assert set(tq) == set(MULTINODE_TQ_ENV) and tq["TQ_SIMPLE_STORAGE_MAX_ATTEMPTS"] == "1"  # the env wins
    assert int(tq["TQ_SIMPLE_STORAGE_SEND_RECV_TIMEOUT"]) * 2 + int(tq["TQ_SIMPLE_STORAGE_PROBE_TIMEOUT"]) < 60


def test_existing_cluster_is_found_as_ray_init_finds_it(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # ray.init reads <RAY_TMPDIR>/ray/ray_current_cluster
    assert existing_ray_cluster() is None
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6390\n")  # what `ray start --head` writes
    assert existing_ray_cluster().endswith(":6390")  # Ray resolves 127.0.0.1 to the node IP
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a `ray job submit` entrypoint: RAY_ADDRESS wins
    assert existing_ray_cluster().endswith(":6379")


def test_nnodes_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NNODES", "2")
    assert parse_args([])[0].nnodes == 2
    monkeypatch.delenv("NNODES")
    assert parse_args([])[0].nnodes == 1


def test_relative_workdir_is_refused_inside_a_ray_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert smoke_workdir("rel", {}) == tmp_path / "rel"
    assert smoke_workdir(str(tmp_path / "abs"), {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}) == tmp_path / "abs"
    with pytest.raises(SystemExit, match="absolute"):
        smoke_workdir("rel", {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})


def test_micro_batches_split_each_ranks_rows_whole():
    from smoke.cpu_run import job_overrides, micro_batch_size

    for rows in (24, 12, 30):
        for world in (1, 2, 3, 4):
            micro = micro_batch_size(rows, world)
            assert (rows // world) % micro == 0 and 1 <= micro <= 8
    assert micro_batch_size(24, 1) == 8  # the one-worker smoke keeps its 8
    two = job_overrides("care", Path("/m"), ["/t.parquet"], "/v.parquet", Path("/c"), 2, 1, nnodes=1,
                        existing_cluster=True, devices_per_node=2)
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=6" in two and "trainer.n_gpus_per_node=2" in two
