"""End the run with a clear error when a Ray node of it dies, instead of hanging.

When a node is lost (preempted, its raylet killed), Ray marks it dead within about a minute, but a
verl run does not always notice: the trainer can wait forever on an object that lived in the dead
node's object store, or on a collective with a rank that is gone. The launcher's driver therefore
watches the cluster from a daemon thread: every ``CARE_NODE_WATCHDOG_S`` seconds (default 10; 0 turns
it off) it compares ``ray.nodes()`` with the nodes that were alive, and when one has died it prints
which, why (Ray's death reason) and what to do, then exits the driver with status 1. Ray then stops the
job's actors, and the same command resumes from the newest complete checkpoint
(:mod:`recipe.care.checkpoints`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

WATCHDOG_ENV = "CARE_NODE_WATCHDOG_S"
EXIT_STATUS = 1


def newly_dead(alive_before: dict[str, dict], nodes: list[dict]) -> list[dict]:
    """The nodes of ``alive_before`` (node id -> ``ray.nodes()`` entry) that ``nodes`` reports dead or no
    longer lists."""
    now = {n["NodeID"]: n for n in nodes}
    return [now.get(node_id, {**before, "Alive": False, "DeathReasonMessage": "no longer listed by Ray"})
            for node_id, before in alive_before.items() if not now.get(node_id, {}).get("Alive", False)]


def death_message(dead: list[dict]) -> str:
    """One line naming the lost nodes and what to do."""
    names = "; ".join(f"node {n['NodeID'][:12]} ({n.get('NodeManagerAddress', '?')}): "
                      f"{n.get('DeathReasonMessage') or n.get('DeathReason') or 'dead'}" for n in dead)
    return (f"care: Ray node died during the run: {names}. Stopping the run instead of waiting on work that "
            f"was on it. Restart the lost node (or start the run on the nodes left, with the same number of "
            f"actor ranks) and run the same command: it resumes from the newest complete checkpoint.")


def _exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_STATUS)  # the main thread is blocked inside ray.get; only a hard exit ends the driver


def watch(period_s: float, nodes_fn: Callable[[], list[dict]], ready_fn: Callable[[], bool],
          on_death: Callable[[str], None] = _exit, stop: threading.Event | None = None) -> None:
    """The watchdog loop: once ``ready_fn()`` (Ray is initialised), remember the alive nodes (nodes that
    join later are added) and call ``on_death`` with :func:`death_message` when any of them dies."""
    stop = stop or threading.Event()
    while not ready_fn():
        if stop.wait(min(period_s, 1.0)):
            return
    alive: dict[str, dict] = {}
    while not stop.is_set():
        if alive and not ready_fn():  # the run is over and the driver shut Ray down
            return
        try:
            nodes = nodes_fn()
        except Exception:  # the driver is shutting Ray down, or GCS is briefly unreachable: look again later
            nodes = None
        if nodes is not None:
            dead = newly_dead(alive, nodes)
            if dead:
                on_death(death_message(dead))
                return
            alive.update({n["NodeID"]: n for n in nodes if n.get("Alive")})
        if stop.wait(period_s):
            return


def start(environ=os.environ) -> threading.Thread | None:
    """Start the watchdog thread in the launcher's driver (before verl calls ``ray.init``); None when off."""
    period = float(environ.get(WATCHDOG_ENV, "10") or 0)
    if period <= 0:
        return None
    import ray

    thread = threading.Thread(target=watch, args=(period, ray.nodes, ray.is_initialized), name="care-node-watchdog",
                              daemon=True)
    thread.start()
    return thread
