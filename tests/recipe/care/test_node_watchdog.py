"""recipe/care/node_watchdog.py: a node that dies during the run ends it with a message naming the node."""

import threading

from recipe.care.node_watchdog import death_message, newly_dead, start, watch


def node(node_id, alive=True, reason=""):
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0." + node_id[-1],
            "DeathReasonMessage": reason}


def test_newly_dead_names_the_nodes_that_were_alive_and_are_not():
    before = {"head1": node("head1"), "node2": node("node2")}
    assert newly_dead(before, [node("head1"), node("node2")]) == []
    dead = newly_dead(before, [node("head1"), node("node2", False, "health check failed")])
    assert [d["NodeID"] for d in dead] == ["node2"]
    gone = newly_dead(before, [node("head1")])
    assert gone[0]["NodeID"] == "node2" and "no longer listed" in gone[0]["DeathReasonMessage"]
    assert newly_dead({}, [node("x", False)]) == []  # dead before the run: not ours


def test_watch_reports_a_death_once_with_the_reason_and_what_to_do():
    snapshots = iter([[node("head1")], [node("head1"), node("node2")], [node("head1"), node("node2")],
                      [node("head1"), node("node2", False, "health check failed due to missing too many heartbeats")]])
    deaths = []
    watch(0.001, lambda: next(snapshots), lambda: True, on_death=deaths.append)
    assert len(deaths) == 1
    message = deaths[0]
    assert "node node2 (10.0.0.2): health check failed" in message and "resumes from the newest complete" in message


def test_watch_waits_for_ray_and_stops_quietly_when_the_driver_shuts_it_down():
    ready = iter([False, False, True, True, False])
    calls, deaths = [], []

    def nodes():
        calls.append(1)
        return [node("head1")]

    watch(0.001, nodes, lambda: next(ready, False), on_death=deaths.append)
    assert deaths == [] and len(calls) >= 1


def test_an_unreachable_gcs_is_not_a_death():
    def nodes():
        raise ConnectionError("GCS busy")

    stop, deaths = threading.Event(), []
    thread = threading.Thread(target=watch, args=(0.001, nodes, lambda: True), kwargs={"on_death": deaths.append,
                                                                                       "stop": stop})
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and deaths == []


def test_off_when_the_period_is_zero():
    assert start({"CARE_NODE_WATCHDOG_S": "0"}) is None
    assert death_message([node("node2", False, "")]).startswith("care: Ray node died during the run: node node2")
