"""recipe/care/node_watchdog.py against a real two-node Ray cluster: the driver is blocked the way verl
blocks on work that was on a lost node, and only the watchdog can end it, naming the node."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# The driver: watchdog on, an actor on node 2, then a wait that no Ray error interrupts (as verl's trainer
# waiting on a collective or on an object of the dead node's store).
DRIVER = """
import sys, threading, time
import ray
from recipe.care import node_watchdog

node_watchdog.start()
ray.init(address=sys.argv[1], logging_level="ERROR")

@ray.remote(resources={"node2": 1}, num_cpus=0)
class OnNode2:
    def node(self):
        return ray.get_runtime_context().get_node_id()

actor = OnNode2.remote()
print("READY", ray.get(actor.node.remote()), flush=True)
threading.Event().wait(600)
print("NOT STOPPED", flush=True)
"""


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_lost_node_ends_the_blocked_driver_with_the_nodes_name(monkeypatch):
    from ray.cluster_utils import Cluster

    # Ray notices a dead raylet by missed health checks; short ones keep the test short.
    for key, value in {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
                       "RAY_health_check_failure_threshold": "3", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_AUTH_MODE": "disabled"}.items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                           "include_dashboard": False})
    driver = None
    try:
        node2 = cluster.add_node(num_cpus=1, resources={"node2": 1}, object_store_memory=80 * 2**20)
        cluster.wait_for_nodes()
        env = {**os.environ, "PYTHONPATH": str(REPO), "CARE_NODE_WATCHDOG_S": "1"}
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = driver.stdout.readline()
        assert ready.startswith("READY "), ready + driver.stderr.read()[-3000:]
        node2_id = ready.split()[1]
        time.sleep(2)  # the watchdog has seen both nodes alive
        lost_at = time.time()
        cluster.remove_node(node2, allow_graceful=False)
        rc = driver.wait(timeout=180)
        took = time.time() - lost_at
        out, err = driver.stdout.read(), driver.stderr.read()
        assert rc == 1 and "NOT STOPPED" not in out, (rc, out[-2000:], err[-3000:])
        assert f"care: Ray node died during the run: node {node2_id[:12]}" in err, err[-3000:]
        assert "resumes from the newest complete checkpoint" in err
        print(f"driver stopped {took:.0f}s after the node was lost")
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.shutdown()
