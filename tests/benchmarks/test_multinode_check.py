"""benchmarks/multinode_check.py's pieces that need no Ray: commands, ps parsing, log checks, cleanup scope."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("multinode_check", REPO / "benchmarks" / "multinode_check.py")
mc = importlib.util.module_from_spec(_spec)
sys.modules["multinode_check"] = mc  # dataclasses look their module up there
_spec.loader.exec_module(mc)


def test_commands_name_the_ports_and_dirs_that_keep_two_raylets_apart():
    head = mc.head_start_args("ray", 6400, 8300, 52400, 12, "/tmp/rmnX/h", 1 << 29, None)
    node = mc.node_start_args("ray", "127.0.0.1:6400", 8, "/tmp/rmnX/n2", 40000, 52401, 1 << 29)
    assert head[:3] == ["ray", "start", "--head"] and "--include-dashboard=true" in head
    assert "--dashboard-port=8300" in head and "--temp-dir=/tmp/rmnX/h" in head
    assert "--address=127.0.0.1:6400" in node and "--node-manager-port=40000" in node
    assert json.loads(next(a for a in node if a.startswith("--resources="))[len("--resources="):]) == {"node2": 1}
    # the head-only flags Ray refuses on a joining node
    assert not any(a.startswith(("--port=", "--include-dashboard", "--ray-client-server-port")) for a in node)
    agent = [a for a in head + node if a.startswith("--dashboard-agent-listen-port=")]
    assert len(set(agent)) == 2  # Ray's default (52365) would clash between the two raylets


def test_submit_is_the_readmes_command():
    args = mc.submit_args("ray", 8300, "job1", {"NNODES": "2", "SMOKE_DIR": "/abs"}, ["--no-eval"])
    sep = args.index("--")
    assert args[:3] == ["ray", "job", "submit"] and "--runtime-env=runtime_env.yaml" in args[:sep]
    assert "--address=http://127.0.0.1:8300" in args[:sep]
    assert args[sep + 1:] == ["env", "NNODES=2", "SMOKE_DIR=/abs", "bash", "run_care.sh", "--smoke", "--no-eval"]


PS = """\
  101 /venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/rmnX/h/s --node_manager_port=39001 --python_worker_command=python default_worker.py --node-manager-port=RAY_NODE_MANAGER_PORT_PLACEHOLDER
  202 /venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/rmnX/n2/s --node_manager_port=40000 --temp_dir=/tmp/rmnX/n2
  303 /venv/bin/python -m something --node_manager_port=40000
  404 ray::IDLE
"""


def test_raylet_pid_is_the_one_on_node_2s_port():
    assert mc.raylet_pid(PS, 40000) == 202
    assert mc.raylet_pid(PS, 39001) == 101
    with pytest.raises(RuntimeError, match="expected one raylet"):
        mc.raylet_pid(PS, 12345)


def test_registration_lines_are_grouped_by_node():
    text = ("(pid=1) care-verl: recipe registrations present in the task runner (node aaa1, pid 11)\n"
            "(CareAgentLoopWorker pid=2) care-verl: recipe registrations present in CareAgentLoopWorker (node aaa1, pid 12)\n"
            "care-verl: recipe registrations present in CareActorRolloutRefWorker (node bbb2, pid 13)\nother\n")
    assert mc.registrations(text) == {"aaa1": ["the task runner", "CareAgentLoopWorker"],
                                      "bbb2": ["CareActorRolloutRefWorker"]}
    assert mc.registrations("nothing here") == {}


def test_registration_pattern_matches_what_the_recipe_prints(capsys, monkeypatch):
    from recipe.care.registrations import WORKER_MODULES, require_recipe_registrations

    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", ",".join(WORKER_MODULES))
    for module in WORKER_MODULES:
        __import__(module)
    require_recipe_registrations("probe worker", force=True)
    assert mc.registrations(capsys.readouterr().out) == {"none": ["probe worker"]}


def test_failure_lines_name_the_lost_actor_or_node():
    text = ("step 1 done\n"
            "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
            "transfer_queue...StorageUnitTimeout: unit 1 did not answer\nall good\n")
    assert [line.split(":")[0] for line in mc.failure_lines(text)] == ["ray.exceptions.ActorDiedError",
                                                                       "transfer_queue...StorageUnitTimeout"]
    assert mc.failure_lines("training finished\n") == []


def test_checkpoint_and_metric_steps(tmp_path):
    assert mc.checkpointed_step(tmp_path) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    assert mc.checkpointed_step(tmp_path) == 1
    (tmp_path / "m.jsonl").write_text('{"step": 2, "data": {}}\nnot json\n{"step": 3, "data": {}}\n')
    assert mc.metric_steps(tmp_path / "m.jsonl") == [2, 3] and mc.metric_steps(tmp_path / "none.jsonl") == []


def test_cleanup_takes_only_this_clusters_processes_and_their_children():
    procs = [(10, 1, ["/x/gcs_server", "--log_dir=/tmp/rmnX/h/session_1/logs"]),
             (11, 1, ["/x/raylet", "--temp_dir=/tmp/rmnX/h"]),
             (12, 11, ["ray::IDLE"]),  # a worker: its title hides the temp dir, its parent does not
             (13, 12, ["bash", "run_care.sh"]),
             (20, 1, ["/x/raylet", "--temp_dir=/tmp/ray"]),  # someone else's cluster
             (21, 20, ["ray::IDLE"]),
             (30, 1, ["/x/python", "dashboard.py", "--temp-dir=/tmp/rmnX/h"])]
    assert mc.cluster_processes(procs, "/tmp/rmnX") == [[11], [12, 13, 30], [10]]


def test_summary_table_has_one_row_per_phase():
    out = mc.table([mc.Result("submit", True, 12.4, "ok"), mc.Result("loss", False, 300, "TIMEOUT")])
    lines = out.splitlines()
    assert lines[0].split() == ["phase", "result", "seconds", "note"]
    assert lines[1].split()[:3] == ["submit", "PASS", "12"] and lines[2].split()[:3] == ["loss", "FAIL", "300"]


def test_workdir_must_be_absolute():
    with pytest.raises(SystemExit):
        mc.parse_args(["--workdir", "relative"])
    assert mc.parse_args(["--workdir", "/abs"]).smoke_base[:2] == ["--no-bench", "--no-eval"]
