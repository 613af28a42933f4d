"""Named moments of a training step where a test harness can stop the whole job dead.

A resume is only trustworthy if it has been tried from the unlucky moments: mid-rollout, mid-repair,
mid-update, and between the files of a checkpoint. The trainer, the agent loop and the checkpoint code
call :func:`reached` at those moments; it does nothing unless the environment asks for a fault, so a
normal run pays one dictionary lookup.

    CARE_FAULT_AT="ckpt/after_actor@3,rollout@5"   # point@step, comma-separated
    CARE_FAULT_DIR=/tmp/faults                     # where a fired point leaves its marker

At a requested point the process writes ``<CARE_FAULT_DIR>/<point>@<step>`` (the marker) and then, for a
*blocking* point, waits there; the harness (``benchmarks/kill_resume.py``) sees the marker and SIGKILLs
every process of the job, as a preempted node would. A non-blocking point (``block=False``) only leaves
its marker and goes on, so the kill lands while the work is in flight (the actor update). A marker also
means "already fired": after the restart the same point does not fire again, which lets one chain of
restarts visit several points. With no harness watching, a blocked process kills itself after
``CARE_FAULT_WAIT_S`` seconds (default 600) rather than hang a job forever.

Every process of a job reads the same variables: Ray workers of a local cluster inherit the driver's
environment, and a cluster's workers get them through the runtime environment like any other variable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

FAULT_AT_ENV = "CARE_FAULT_AT"
FAULT_DIR_ENV = "CARE_FAULT_DIR"
FAULT_WAIT_ENV = "CARE_FAULT_WAIT_S"

# The moments the recipe exposes, in the order a training step meets them. ``ckpt/*`` are the phases of
# the trainer's checkpoint save (recipe/care/checkpoints.py): before anything, after verl's actor shards,
# after verl's dataloader state, after the completion mark, after the tracker, and after the rotation.
POINTS = (
    "rollout",  # agent loop: the first training session of the step has started generating
    "rgr_repair",  # agent loop: a repair request is about to go to the engine
    "update_actor",  # trainer: the actor update has been sent to the workers (non-blocking point)
    "ckpt/start",
    "ckpt/actor_shard",  # actor worker: between verl's model shard and its optimizer shard (see actor_file_hook)
    "ckpt/after_actor",
    "ckpt/after_data",
    "ckpt/after_mark",
    "ckpt/after_tracker",
    "ckpt/after_rotation",
)


def requested() -> dict[str, set[int | None]]:
    """``CARE_FAULT_AT`` parsed: point -> the steps it fires at (``None``: any step). Unknown points raise,
    so a typo in a kill test fails at once instead of never firing."""
    spec = os.environ.get(FAULT_AT_ENV, "").strip()
    points: dict[str, set[int | None]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, step = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"{FAULT_AT_ENV}: unknown point {name!r}; known: {', '.join(POINTS)}")
        points.setdefault(name, set()).add(int(step) if step else None)
    return points


def marker_path(point: str, step: int | None) -> Path:
    """The file a fired point leaves (its name is the ``point@step`` that was asked for; ``/`` -> ``.``)."""
    directory = os.environ.get(FAULT_DIR_ENV)
    if not directory:
        raise ValueError(f"{FAULT_AT_ENV} is set but {FAULT_DIR_ENV} is not: the harness cannot see a fired point")
    return Path(directory) / f"{point.replace('/', '.')}@{'' if step is None else step}"


def reached(point: str, step: int | None = None, *, block: bool = True) -> None:
    """Fire ``point`` at ``step`` if the environment asks for it and it has not fired before.

    Fires at most once per (point, step) across restarts (its marker stays). Blocking: wait for the
    harness's SIGKILL (or kill this process after ``CARE_FAULT_WAIT_S``). Non-blocking: return at once.
    """
    if not os.environ.get(FAULT_AT_ENV):
        return
    steps = requested().get(point)
    if not steps or (step not in steps and None not in steps):
        return
    marker = marker_path(point, step if step in steps else None)
    try:  # O_EXCL: one process fires a point even when several reach it at once (agent-loop sessions)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        json.dump({"point": point, "step": step, "pid": os.getpid(), "time": time.time()}, f)
    if not block:
        return
    time.sleep(float(os.environ.get(FAULT_WAIT_ENV, "600")))
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def actor_file_hook(step: int):
    """Fire ``ckpt/actor_shard`` right after the first model shard file of ``step`` is written.

    verl 0.9.1's ``FSDPCheckpointManager.save_checkpoint`` writes ``model_*.pt``, ``optim_*.pt`` and
    ``extra_state_*.pt`` one after another with ``torch.save`` and offers no hook between them, so while
    that point is requested (and only then) ``torch.save`` is wrapped for the duration of the save.
    """
    if step not in requested().get("ckpt/actor_shard", set()) and None not in requested().get("ckpt/actor_shard", set()):
        yield
        return
    import torch

    original = torch.save

    def save_then_maybe_stop(obj, f, *args, **kwargs):
        original(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)) and Path(f).name.startswith("model_world_size_"):
            reached("ckpt/actor_shard", step)

    torch.save = save_then_maybe_stop
    try:
        yield
    finally:
        torch.save = original
