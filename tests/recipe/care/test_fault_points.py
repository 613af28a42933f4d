"""recipe/care/fault_points.py: inert by default, fires once per point and step, kills when blocking."""

import json
import signal
import subprocess
import sys

import pytest

from recipe.care import fault_points
from recipe.care.fault_points import FAULT_AT_ENV, FAULT_DIR_ENV, FAULT_WAIT_ENV, POINTS, reached, requested


def test_inert_without_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(FAULT_AT_ENV, raising=False)
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    for point in POINTS:
        reached(point, 1)  # would block or kill if it fired
    assert list(tmp_path.iterdir()) == []


def test_unknown_point_is_refused(monkeypatch):
    monkeypatch.setenv(FAULT_AT_ENV, "ckpt/after_actr@3")
    with pytest.raises(ValueError, match="unknown point 'ckpt/after_actr'.*ckpt/after_actor"):
        requested()


def test_missing_marker_folder_is_refused(monkeypatch):
    monkeypatch.setenv(FAULT_AT_ENV, "rollout@1")
    monkeypatch.delenv(FAULT_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=FAULT_DIR_ENV):
        reached("rollout", 1, block=False)


def test_fires_only_at_its_step_and_only_once(monkeypatch, tmp_path):
    monkeypatch.setenv(FAULT_AT_ENV, "update_actor@2,rollout")
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    reached("update_actor", 1, block=False)
    assert list(tmp_path.iterdir()) == []
    reached("update_actor", 2, block=False)
    marker = tmp_path / "update_actor@2"
    first = json.loads(marker.read_text())
    assert first["point"] == "update_actor" and first["step"] == 2
    reached("update_actor", 2, block=False)  # already fired: the marker is not rewritten
    assert json.loads(marker.read_text()) == first
    reached("rollout", 7, block=False)  # no step asked: any step, one marker
    reached("rollout", 8, block=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout@", "update_actor@2"]


def test_blocking_point_kills_its_process_and_not_again_after_a_restart(tmp_path):
    code = ("from recipe.care.fault_points import reached; reached('ckpt/after_actor', 3); "
            "print('went on', flush=True)")
    env = {FAULT_AT_ENV: "ckpt/after_actor@3", FAULT_DIR_ENV: str(tmp_path), FAULT_WAIT_ENV: "0"}
    import os

    env = {**os.environ, **env}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL and "went on" not in first.stdout
    assert (tmp_path / "ckpt.after_actor@3").is_file()
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "went on" in second.stdout


def test_points_are_unique():
    assert len(set(fault_points.POINTS)) == len(fault_points.POINTS)


def test_actor_file_hook_stops_between_the_model_and_optimizer_shards(tmp_path):
    import os

    out = tmp_path / "actor"
    code = ("import torch, pathlib; from recipe.care.fault_points import actor_file_hook\n"
            f"out = pathlib.Path({str(out)!r}); out.mkdir()\n"
            "with actor_file_hook(4):\n"
            "    torch.save({'w': 1}, out / 'model_world_size_1_rank_0.pt')\n"
            "    torch.save({'m': 1}, out / 'optim_world_size_1_rank_0.pt')\n"
            "print('saved', torch.save.__name__, flush=True)\n")
    env = {**os.environ, FAULT_DIR_ENV: str(tmp_path), FAULT_WAIT_ENV: "0"}
    other_step = subprocess.run([sys.executable, "-c", code], env={**env, FAULT_AT_ENV: "ckpt/actor_shard@5"},
                                capture_output=True, text=True, timeout=120)
    assert other_step.returncode == 0 and "saved save" in other_step.stdout  # torch.save restored
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    killed = subprocess.run([sys.executable, "-c", code], env={**env, FAULT_AT_ENV: "ckpt/actor_shard@4"},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == ["model_world_size_1_rank_0.pt"]
