"""benchmarks/kill_resume.py's own parts, without Ray: the whole-job kill and the end-of-chain checks."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kill_resume", REPO / "benchmarks" / "kill_resume.py")
kill_resume = sys.modules["kill_resume"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_resume)


@pytest.mark.timeout(60)
def test_kill_job_kills_the_tree_and_the_detached_processes_of_the_job(tmp_path):
    import psutil

    fault_dir = tmp_path / "faults"
    env = {**os.environ, "CARE_FAULT_DIR": str(fault_dir)}
    # a child, and a process that left the tree (setsid + double fork) like Ray's daemons may
    script = "sleep 300 & (setsid sleep 301 &); wait"
    root = subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True)
    deadline = time.time() + 30

    def settled():  # the subshell that detached the second sleep has exited
        procs = kill_resume.job_processes(fault_dir, root.pid)
        tree = {root.pid, *(p.pid for p in psutil.Process(root.pid).children(recursive=True))}
        return procs, {p.pid for p in procs} - tree

    procs, outside = settled()
    while not (len(procs) == 3 and len(outside) == 1) and time.time() < deadline:
        time.sleep(0.1)
        procs, outside = settled()
    assert len(procs) == 3 and len(outside) == 1  # the root, its child, and one that left the tree
    assert kill_resume.kill_job(fault_dir, root.pid) >= 3
    root.wait(10)
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_check_records_finds_torn_lines_missing_and_twice_written_steps(tmp_path):
    path = tmp_path / "groups.jsonl"
    rows = [{"step": s, "group": g, "run": "a"} for s in (1, 2, 3) for g in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert kill_resume.check_records(path, 3) == "ok"
    assert "missing [4]" in kill_resume.check_records(path, 4)
    path.write_text(path.read_text() + json.dumps({"step": 3, "group": 9, "run": "b"}) + "\n")
    assert "from two launches [3]" in kill_resume.check_records(path, 3)
    path.write_text(path.read_text() + '{"step": 4, "gr')
    assert kill_resume.check_records(path, 3) == "torn last line"


def test_launch_rows_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "care-run1.jsonl"
    path.write_text('{"step": 1, "data": {}}\n{"step": 2, "data": {}}\n{"step": 3, "da')
    assert [r["step"] for r in kill_resume.launch_rows(path)] == [1, 2]


def test_resumed_from_reads_the_trainers_line_and_the_table_counts_redone_steps(tmp_path):
    log = tmp_path / "run.log"
    assert kill_resume.resumed_from(log) is None
    log.write_text("(CareTaskRunner pid=1) care: training from scratch (no complete checkpoint in /w/c)\n")
    assert kill_resume.resumed_from(log) == 0
    log.write_text("x\n(CareTaskRunner pid=7) care: resuming from /w/c/global_step_3, global step 3\n")
    assert kill_resume.resumed_from(log) == 3
    launches = [kill_resume.Launch(1.0, -9, "rollout@1", None, [], 0),
                kill_resume.Launch(1.0, -9, "ckpt/start@2", 1, [1], 0),
                kill_resume.Launch(1.0, -9, "ckpt/after_tracker@3", 3, [1, 3], 1),
                kill_resume.Launch(1.0, 0, None, None, [], 3)]
    result = {"name": "c", "keep": 1, "launches": launches, "checks": {"resume": "ok"}}
    row = kill_resume.table([result], 3)[-1]
    # rollout@1 redoes step 1; start@2 (step 2 trained, not saved) redoes 2; after_tracker@3 redoes nothing
    assert "| 1, 1, 0 |" in row and "| 4 |" in row


def test_optimizer_steps_count_the_updates_in_a_verl_shaped_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    for _ in range(4):
        model(torch.randn(5, 3)).sum().backward()
        optim.step()
        scheduler.step()
    actor = tmp_path / "global_step_4" / "actor"
    actor.mkdir(parents=True)
    torch.save(optim.state_dict(), actor / "optim_world_size_1_rank_0.pt")
    torch.save({"lr_scheduler": scheduler.state_dict(), "rng": None}, actor / "extra_state_world_size_1_rank_0.pt")
    assert kill_resume.optimizer_steps(tmp_path / "global_step_4") == (4, 4)


def test_same_dataloader_state_compares_nested_states(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    state = {"sampler": {"generator": torch.arange(4), "yielded": 8}, "workers": [1, 2]}
    torch.save(state, a)
    torch.save(state, b)
    assert kill_resume.same_dataloader_state(a, b) == "ok"
    torch.save({**state, "sampler": {"generator": torch.arange(4), "yielded": 12}}, b)
    assert kill_resume.same_dataloader_state(a, b) == "differs"


def test_every_kill_point_of_the_chains_is_a_fault_point():
    from recipe.care.fault_points import POINTS

    asked = {p.partition("@")[0] for _, points in kill_resume.CHAINS.values() for p in points}
    assert asked <= set(POINTS)
    assert set(POINTS) <= asked  # every moment the recipe exposes is tried by some chain


def test_every_point_of_a_chain_can_be_reached():
    """A kill that leaves its step's checkpoint complete is the last point at that step, and steps rise."""
    for name, (_, points) in kill_resume.CHAINS.items():
        steps = [int(p.partition("@")[2] or 0) for p in points]
        numbered = [s for s in steps if s]
        assert numbered == sorted(numbered), name
        for i, point in enumerate(points):
            if point.partition("@")[0] in kill_resume.COMPLETES_ITS_STEP:
                later_same_step = [p for p, s in zip(points[i + 1:], steps[i + 1:]) if s == steps[i]]
                assert not later_same_step, (name, point, later_same_step)
