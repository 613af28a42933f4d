"""The README's multi-node path end to end, on one machine: two Ray nodes, `ray job submit`, losing node 2.

    python benchmarks/multinode_check.py [--workdir /abs/dir] [--phases submit,loss,resume] [--sft-steps 10]

From the repository root's interpreter (the virtualenv with verl and ``ray[default]``):

1. **cluster**: ``ray start --head`` (dashboard on: ``ray job submit`` talks to it) and a second raylet,
   ``ray start --address=127.0.0.1:PORT --resources='{"node2": 1}'``, each with a private ``--temp-dir``
   and free ports, so nothing else on the machine is touched; waits for two alive nodes.
2. **submit**: ``ray job submit --runtime-env runtime_env.yaml -- env NNODES=2 SMOKE_DIR=<abs> PYTHON=<venv python>
   bash run_care.sh --smoke --no-bench --no-eval --no-resume --steps 1 --sft-steps N``: data, cold-start SFT
   (torchrun inside the job), one RL step and its checkpoint. Checks: SUCCEEDED; the workers' start-up
   registration line (recipe/care/registrations.py) and no ``RecipeNotRegistered``; an actor ran on node 2
   (the smoke puts a TransferQueue storage unit on each node); data, SFT model, checkpoint and logs under
   the absolute workdir and none in the job's temporary copy of the repository.
3. **loss**: the same with ``--steps 4 trainer.save_freq=1``; once ``global_step_1`` is complete
   (``latest_checkpointed_iteration.txt`` says 1) node 2's raylet gets SIGKILL (by pid: ``ray stop``
   would stop every Ray process on the machine). Checks: the job ends FAILED within ``--fail-within``
   seconds, and its log names the dead actor, node or storage unit.
4. **resume**: on the head alone, the same world size (an FSDP checkpoint is per rank: 2 ranks on 1 node
   instead of 1 on each of 2): ``NNODES=1 ... --steps 2 trainer.n_gpus_per_node=2``. Checks: SUCCEEDED,
   verl's "Resuming from .../global_step_1", and the run logged step 2 only.

Prints a table (phase, result, seconds, note); exit 0 when every phase passed. On exit (also on Ctrl-C)
it stops this check's Ray processes only: those whose command line names its temp dir, and their children.
Every wait has a bound (--job-timeout, --fail-within).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# recipe/care/registrations.py PASSED: "<PASSED> <where> (node <id>, pid <n>)"
REGISTRATION_LINE = re.compile(r"care-verl: recipe registrations present in (?P<where>.+?) \(node (?P<node>\w+), pid \d+\)")
# What a lost node leaves in the driver's log: Ray's actor/node errors, TransferQueue's timeout on a dead unit.
FAILURE_PATTERNS = re.compile(r"ActorDiedError|RayActorError|ActorUnavailableError|NodeDiedError|StorageUnitTimeout|"
                              r"node .{0,80}(dead|died|failed)|(dead|died) .{0,40}node|OwnerDiedError|WorkerCrashedError",
                              re.IGNORECASE)
# recipe/care/trainer.py _load_checkpoint (verl's own "Resuming from" line is at INFO level)
RESUME_LINE = re.compile(r"(?:care: resuming|Resuming) from \S*global_step_(\d+)")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LOSS_STEPS = 4  # the loss phase's run; the resume phase continues it to the end
# Both "nodes" share this machine's 24 GB: two FSDP ranks and two vLLM-CPU servers (one per rank, each with
# vLLM's smallest CPU KV cache, 1 GiB) peak near 22.5 GB, past Ray's memory monitor (95% of the machine),
# which then kills a vLLM server at start-up. On one machine the monitor's threshold moves to 99%.
ONE_MACHINE_MEMORY = {"RAY_memory_usage_threshold": "0.99"}


# ----------------------------------------------------------------------------- pure pieces (tested)
def head_start_args(ray: str, port: int, dashboard_port: int, agent_port: int, cpus: int, temp_dir: str,
                    object_store: int, client_port: int | None) -> list[str]:
    """``ray start --head`` with the dashboard (``ray job submit`` needs it) and every fixed port chosen."""
    args = [ray, "start", "--head", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={agent_port}", "--min-worker-port=0", "--max-worker-port=0",
            f"--object-store-memory={object_store}", "--disable-usage-stats"]
    return args + ([f"--ray-client-server-port={client_port}"] if client_port else [])


def node_start_args(ray: str, address: str, cpus: int, temp_dir: str, node_manager_port: int, agent_port: int,
                    object_store: int) -> list[str]:
    """The second raylet: its own temp dir, node-manager and agent ports (two raylets share this host)
    and a ``node2`` resource that names it."""
    return [ray, "start", f"--address={address}", f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}",
            f"--node-manager-port={node_manager_port}", f"--dashboard-agent-listen-port={agent_port}",
            "--min-worker-port=0", "--max-worker-port=0", f"--object-store-memory={object_store}",
            "--resources=" + json.dumps({"node2": 1}), "--disable-usage-stats"]


def submit_args(ray: str, dashboard_port: int, submission_id: str, env: dict[str, str], smoke: list[str]) -> list[str]:
    """The README's ``ray job submit`` (run from the repository root: runtime_env.yaml's ``working_dir: .``)."""
    return [ray, "job", "submit", f"--address=http://127.0.0.1:{dashboard_port}", "--runtime-env=runtime_env.yaml",
            f"--submission-id={submission_id}", "--no-wait", "--",
            "env", *[f"{k}={v}" for k, v in env.items()], "bash", "run_care.sh", "--smoke", *smoke]


def raylet_pid(ps_output: str, node_manager_port: int) -> int:
    """The pid of the raylet listening on ``node_manager_port`` from ``ps -eo pid=,args=`` output."""
    flag = f"--node_manager_port={node_manager_port}"
    pids = []
    for line in ps_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].rsplit("/", 1)[-1] == "raylet" and flag in parts[2:]:
            pids.append(int(parts[0]))
    if len(pids) != 1:
        raise RuntimeError(f"expected one raylet with {flag}, found pids {pids}")
    return pids[0]


def registrations(log_text: str) -> dict[str, list[str]]:
    """node id -> the workers whose start-up registration check passed there."""
    found: dict[str, list[str]] = {}
    for m in REGISTRATION_LINE.finditer(log_text):
        found.setdefault(m.group("node"), []).append(m.group("where"))
    return found


def failure_lines(log_text: str, limit: int = 5) -> list[str]:
    """The log's lines that name a dead actor, node or storage unit (first ``limit``)."""
    return [line.strip()[:300] for line in log_text.splitlines() if FAILURE_PATTERNS.search(line)][:limit]


def checkpointed_step(ckpt_dir: Path) -> int | None:
    """The tracker's step (published after the checkpoint is complete), or None, as the recipe reads it."""
    from recipe.care.checkpoints import read_tracker

    return read_tracker(ckpt_dir)[0]


def metric_steps(path: Path) -> list[int]:
    """The steps in verl's file-logger output (one JSON object per line with a ``step`` key)."""
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    return steps


def cluster_processes(procs: list[tuple[int, int, list[str]]], marker: str) -> list[list[int]]:
    """This check's Ray processes as kill order ``[raylets, others, gcs_server]`` from ``(pid, ppid, argv)``:
    every process whose argv names ``marker`` (the private temp dir) and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in procs:
        children.setdefault(ppid, []).append(pid)
    argv = {pid: args for pid, _, args in procs}
    ours, stack = set(), [pid for pid, _, args in procs if any(marker in a for a in args)]
    while stack:
        pid = stack.pop()
        if pid not in ours:
            ours.add(pid)
            stack += children.get(pid, [])

    def name(pid: int) -> str:
        return argv[pid][0].rsplit("/", 1)[-1] if argv[pid] else ""

    raylets = sorted(p for p in ours if name(p) == "raylet")
    gcs = sorted(p for p in ours if name(p) == "gcs_server")
    return [raylets, sorted(ours - set(raylets) - set(gcs)), gcs]


@dataclass
class Result:
    phase: str
    ok: bool
    seconds: float
    note: str = ""


def table(results: list[Result]) -> str:
    rows = [("phase", "result", "seconds", "note")] + [(r.phase, "PASS" if r.ok else "FAIL", f"{r.seconds:.0f}", r.note)
                                                       for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows)


# ----------------------------------------------------------------------------- the run
def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def log(msg: str) -> None:
    print(f"[multinode] {msg}", flush=True)


@dataclass
class Cluster:
    ray: str
    temp: str
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    node2_id: str | None = None

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        log("$ " + shlex.join(args))
        proc = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[1:3]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def alive_nodes(self) -> list:
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)

    def stop(self) -> None:
        """SIGTERM this check's Ray processes (raylets, then the rest, then GCS), SIGKILL what remains."""
        import psutil

        procs = []
        for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
            procs.append((p.info["pid"], p.info["ppid"], p.info["cmdline"] or []))
        groups = cluster_processes(procs, self.temp)
        log(f"stopping this check's Ray processes: {sum(map(len, groups))} (other Ray clusters untouched)")
        for group in groups:
            live = []
            for pid in group:
                try:
                    proc = psutil.Process(pid)
                    proc.terminate()
                    live.append(proc)
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(live, timeout=10)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.Error:
                    pass


def start_cluster(args, temp: str) -> Cluster:
    from ray._private.utils import get_dashboard_dependency_error, get_ray_client_dependency_error

    if get_dashboard_dependency_error() is not None:
        raise SystemExit(f"{sys.executable} lacks ray[default] (the dashboard that `ray job submit` needs): "
                         f"pip install 'ray[default]' ({get_dashboard_dependency_error()})")
    venv_bin = str(Path(sys.executable).parent)
    ray = os.path.join(venv_bin, "ray")
    # the raylets' PATH is the one `ray start` has: run_care.sh's python3 inside the job is the venv's
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled", **ONE_MACHINE_MEMORY}
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(ray, temp, env)
    gcs, dash, agent1, agent2, nm2, client = free_ports(6)
    cluster.ports = {"gcs": gcs, "dashboard": dash, "node2_manager": nm2}
    client_port = client if get_ray_client_dependency_error() is None else None
    obj = 512 * 1024 ** 2
    cluster.run(head_start_args(ray, gcs, dash, agent1, args.head_cpus, f"{temp}/h", obj, client_port), 180)
    cluster.run(node_start_args(ray, f"127.0.0.1:{gcs}", args.node2_cpus, f"{temp}/n2", nm2, agent2, obj), 180)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            nodes = cluster.alive_nodes()
        except Exception:  # the dashboard is still starting
            nodes = []
        node2 = [n for n in nodes if (n.resources_total or {}).get("node2")]
        if len(nodes) == 2 and node2:
            cluster.node2_id = node2[0].node_id
            return cluster
        time.sleep(3)
    raise RuntimeError("two alive Ray nodes did not appear within 120 s")


def job_client(cluster: Cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard)


def wait_job(cluster: Cluster, job_id: str, timeout: float, until=None) -> str:
    """Poll the job until it is terminal (or ``until()`` is true: returns "UNTIL"); "TIMEOUT" after ``timeout``."""
    client, deadline = job_client(cluster), time.time() + timeout
    while time.time() < deadline:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        if status in TERMINAL:
            return status
        if until is not None and until():
            return "UNTIL"
        time.sleep(2)
    return "TIMEOUT"


def job_logs(cluster: Cluster, job_id: str, workdir: Path) -> str:
    """The job's own log (the smoke's console) and the smoke's full run logs in the workdir."""
    text = job_client(cluster).get_job_logs(job_id)
    return text + "".join(p.read_text(errors="replace") for p in sorted((workdir / "logs").glob("*.log")))


def submit(cluster: Cluster, job_id: str, nnodes: int, workdir: Path, smoke: list[str]) -> None:
    env = {"NNODES": str(nnodes), "SMOKE_DIR": str(workdir), "PYTHON": sys.executable}
    cluster.run(submit_args(cluster.ray, cluster.ports["dashboard"], job_id, env, smoke), 300)


def actors_on(cluster: Cluster, node_id: str) -> list[str]:
    from ray.util.state import list_actors

    return sorted({a.class_name for a in list_actors(address=cluster.dashboard, filters=[("node_id", "=", node_id)],
                                                      limit=1000, raise_on_missing_output=False)})


def phase_submit(cluster: Cluster, args, workdir: Path) -> Result:
    t0 = time.time()
    job = f"care-mn-submit-{int(t0)}"
    smoke = [*args.smoke_base, "--no-resume", "--fresh", "--steps", "1"]
    submit(cluster, job, 2, workdir, smoke)
    status = wait_job(cluster, job, args.job_timeout)
    text = job_logs(cluster, job, workdir)
    regs, problems = registrations(text), []
    if status != "SUCCEEDED":
        problems.append(f"job {status}")
    if not regs or "RecipeNotRegistered" in text:
        problems.append("no registration line" if not regs else "RecipeNotRegistered in the log")
    on_node2 = actors_on(cluster, cluster.node2_id)
    if not on_node2:
        problems.append("no actor ran on node 2")
    ckpt = workdir / "checkpoints" / "care"
    expected = {"data": workdir / "data", "SFT model": next(workdir.glob("sft-*/global_step_*/huggingface"), None),
                "checkpoint": ckpt / "global_step_1", "metrics": workdir / "metrics" / "care-run1.jsonl",
                "logs": workdir / "logs" / "care-run1.log"}
    problems += [f"no {name} at {path}" for name, path in expected.items() if path is None or not Path(path).exists()]
    strays = [str(p) for p in Path(cluster.temp).glob("*/session_*/runtime_resources/working_dir_files/*/checkpoints")]
    problems += [f"checkpoints inside the job's repo copy: {strays}"] if strays else []
    note = (f"registrations: {sum(map(len, regs.values()))} workers on {len(regs)} node(s); node 2 ran "
            f"{', '.join(on_node2) or 'nothing'}")
    log(f"submit: {status}; {note}; {problems or 'all checks passed'}")
    return Result("submit (NNODES=2, SFT + 1 step + checkpoint)", not problems, time.time() - t0,
                  "; ".join(problems) or note)


def phase_loss(cluster: Cluster, args, workdir: Path) -> tuple[Result, Result]:
    t0 = time.time()
    job = f"care-mn-loss-{int(t0)}"
    ckpt = workdir / "checkpoints" / "care"
    smoke = [*args.smoke_base, "--no-resume", "--fresh", "--steps", str(LOSS_STEPS), "--save-freq", "1"]
    submit(cluster, job, 2, workdir, smoke)
    status = wait_job(cluster, job, args.job_timeout, until=lambda: (checkpointed_step(ckpt) or 0) >= 1)
    if status != "UNTIL":
        return (Result("loss: run to global_step_1", False, time.time() - t0, f"job {status} before a checkpoint"),
                Result("resume on the head alone", False, 0, "not run"))
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pid = raylet_pid(ps, cluster.ports["node2_manager"])
    step_at_kill = checkpointed_step(ckpt)
    log(f"global_step_{step_at_kill} complete; SIGKILL node 2's raylet (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    status = wait_job(cluster, job, args.fail_within)
    took = time.time() - t_kill
    text = job_logs(cluster, job, workdir)
    named = failure_lines(text)
    ok = status == "FAILED" and bool(named)
    if status == "TIMEOUT":
        job_client(cluster).stop_job(job)
    note = (f"{status} {took:.0f}s after the kill (limit {args.fail_within}s); "
            + (f"log: {named[0]}" if named else "no line names the lost node/actor"))
    log(f"loss: {note}")
    loss = Result(f"loss: kill node 2 at global_step_{step_at_kill}", ok, time.time() - t0, note)
    # the lost run may have saved another step before it died: the resume starts from what is on disk
    return loss, phase_resume(cluster, args, workdir, checkpointed_step(ckpt) or step_at_kill)


def phase_resume(cluster: Cluster, args, workdir: Path, from_step: int) -> Result:
    t0 = time.time()
    job = f"care-mn-resume-{int(t0)}"
    steps = LOSS_STEPS
    # The same command as the lost run, so the smoke continues it (smoke/run_state.py), on the same world
    # size (2 nodes x 1 rank -> 1 node x 2 ranks): the FSDP shards are per rank.
    smoke = [*args.smoke_base, "--no-resume", "--steps", str(steps), "--n-gpus-per-node", "2", "--save-freq", "1"]
    submit(cluster, job, 1, workdir, smoke)
    status = wait_job(cluster, job, args.job_timeout)
    text = job_logs(cluster, job, workdir)
    resumed = [int(m.group(1)) for m in RESUME_LINE.finditer(text)]
    logged = metric_steps(workdir / "metrics" / "care-run1.jsonl")
    want = list(range(from_step + 1, steps + 1))
    ok = status == "SUCCEEDED" and from_step in resumed and logged == want
    note = f"{status}; resumed from {resumed or 'nothing'}; steps logged {logged} (want {want})"
    log(f"resume: {note}")
    return Result(f"resume on the head alone (1 node x 2 ranks) to step {steps}", ok, time.time() - t0, note)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=None, help="absolute SMOKE_DIR for every job (default: a new /tmp folder)")
    p.add_argument("--phases", default="submit,loss", help="submit and/or loss (loss includes the resume)")
    p.add_argument("--sft-steps", type=int, default=10, help="cold-start SFT steps of the smoke (done once per workdir)")
    p.add_argument("--head-cpus", type=int, default=12, help="logical CPUs of the head node")
    p.add_argument("--node2-cpus", type=int, default=8, help="logical CPUs of node 2")
    p.add_argument("--job-timeout", type=float, default=2400, help="seconds per job (or until the checkpoint)")
    p.add_argument("--fail-within", type=float, default=300, help="seconds from the kill to a FAILED job")
    args = p.parse_args(argv)
    if args.workdir is not None and not os.path.isabs(args.workdir):
        p.error("--workdir must be absolute (the jobs run from a temporary copy of the repository)")
    args.smoke_base = ["--no-bench", "--no-eval", "--sft-steps", str(args.sft_steps)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Ray's socket paths live under it
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="care-multinode-", dir="/tmp"))
    results: list[Result] = []
    cluster = None

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.time()
    try:
        cluster = start_cluster(args, temp)
        results.append(Result("cluster: head + node 2", True, time.time() - t0, f"node 2 = {cluster.node2_id[:12]}"))
        log(f"dashboard {cluster.dashboard}; workdir {workdir}; Ray temp {temp}")
        phases = args.phases.split(",")
        if "submit" in phases:
            results.append(phase_submit(cluster, args, workdir))
        if "loss" in phases:
            results.extend(phase_loss(cluster, args, workdir))
    except (Exception, KeyboardInterrupt) as exc:
        results.append(Result("aborted", False, time.time() - t0, f"{type(exc).__name__}: {str(exc)[-500:]}"))
    finally:
        if cluster is not None:
            cluster.stop()
        else:
            Cluster("", temp, {}).stop()
    print(table(results), flush=True)
    print(f"workdir (data, checkpoints, logs): {workdir}; Ray logs: {temp}/h/session_latest/logs, "
          f"{temp}/n2/session_latest/logs", flush=True)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
