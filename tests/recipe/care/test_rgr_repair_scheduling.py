"""Where and when a repair is decoded: care.rgr.routing and care.rgr.start, through verl 0.9.1's real code.

Real: the worker's v1 agent loop (as in test_agent_loop_adapter.py), verl's ``LLMServerClient``
and its ``GlobalRequestLoadBalancer`` (sticky on request id, else least in-flight). Stand-ins: the
replicas' ``server.generate.remote`` (no vLLM on CPU) and TransferQueue's puts.
"""

import asyncio
import random

import pytest

from recipe.care.rgr import rgr_step_metrics
from tests.recipe.care.test_agent_loop import QUESTION, RIGHT, WRONG, WRONG_FAR, FIX, drive

SLOW_WRONG = WRONG.replace("<think>", "<think>Slowly: ")  # the lexically nearest failure when it arrives


class InProcess:
    """``handle.method.remote(...)`` on a plain object, awaitable as a Ray ObjectRef."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        method = getattr(self._target, name)

        async def call(*args, **kwargs):
            result = method(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result

        return type("Method", (), {"remote": staticmethod(lambda *a, **k: asyncio.ensure_future(call(*a, **k)))})()


class Replicas:
    """Stub vLLM server actors sharing one script: replies by question marker, in call order, each
    ``(text, seconds)``; every call is logged with its replica and its start/end times."""

    def __init__(self, tokenizer, cue_ids, scripts, count=4, repair_text=FIX):
        from verl.workers.rollout.replica import TokenOutput

        self.TokenOutput, self.tokenizer, self.cue_ids = TokenOutput, tokenizer, list(cue_ids)
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.repair_text, self.log = repair_text, []
        self.servers = {f"replica-{i}": self._server(f"replica-{i}") for i in range(count)}

    def _server(self, name):
        replicas = self

        class Server:
            async def generate(self, request_id, prompt_ids, sampling_params, image_data=None, video_data=None,
                               **kwargs):
                return await replicas.reply(name, list(prompt_ids))

        return Server()

    async def reply(self, name, prompt_ids):
        loop = asyncio.get_running_loop()
        entry = {"replica": name, "prompt_ids": prompt_ids, "start": loop.time()}
        entry["repair"] = prompt_ids[-len(self.cue_ids):] == self.cue_ids
        if entry["repair"]:
            text, delay = self.repair_text, 0.01
        else:
            prompt = self.tokenizer.decode(prompt_ids)
            text, delay = self.scripts[next(m for m in self.scripts if m in prompt)].pop(0)
        await asyncio.sleep(delay)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        entry.update(end=loop.time(), response_ids=ids, text=text)
        self.log.append(entry)
        return self.TokenOutput(token_ids=ids, log_probs=[-0.05] * len(ids), stop_reason="completed",
                                extra_fields={"global_steps": 1})

    def client(self, config):
        """verl's own client and router over these replicas (built inside the running loop's test)."""
        from verl.workers.rollout.llm_server import LLMServerClient
        from verl.workers.rollout.router import GlobalRequestLoadBalancer

        balancer = GlobalRequestLoadBalancer({k: InProcess(v) for k, v in self.servers.items()})
        return LLMServerClient(config, load_balancer_handle=InProcess(balancer))

    def source_of(self, repair):
        """The rollout call whose prompt + response begins with the repair's context (minus the cue)."""
        context = repair["prompt_ids"][:-len(self.cue_ids)]
        found = [e for e in self.log if not e["repair"] and (e["prompt_ids"] + e["response_ids"])[:len(context)] == context]
        assert len(found) == 1, "exactly one rollout must hold the repair's context"
        return found[0]

    def repairs(self):
        return [e for e in self.log if e["repair"]]


def _routed(worker, tokenizer, monkeypatch, routing):
    questions = [QUESTION + f" (q{i})" for i in range(6)]
    replicas = Replicas(tokenizer, worker.rgr_tokens.cue_ids,
                        {f"(q{i})": [(RIGHT, 0.01), (WRONG, 0.01), (RIGHT, 0.01), (WRONG_FAR, 0.01)] for i in range(6)})
    random.seed(0)  # the router's least-loaded tie-break draws from the global random module
    tq = drive(worker, replicas.client(worker.config), questions, monkeypatch, routing=routing)
    assert all(len(tq.rows(f"uid-{i}")) == 4 and tq.order(f"uid-{i}")[-1] == "finished" for i in range(6))
    repairs = replicas.repairs()
    assert len(repairs) == 6  # one per group, all mixed
    return [(replicas.source_of(r)["replica"], r["replica"]) for r in repairs]


def test_sticky_repair_goes_to_the_replica_that_decoded_its_failure(worker_parts, tokenizer, monkeypatch):
    pairs = _routed(worker_parts, tokenizer, monkeypatch, "sticky")
    assert all(source == repair for source, repair in pairs), pairs
    assert len({source for source, _ in pairs}) > 1  # the failures themselves were spread over replicas


def test_fresh_request_ids_leave_repairs_to_the_least_loaded_replica(worker_parts, tokenizer, monkeypatch):
    # The control for the test above: without the failure's id the router picks any idle replica
    # (1 in 4 here), so some repair lands away from its prefix cache.
    pairs = _routed(worker_parts, tokenizer, monkeypatch, "fresh")
    assert any(source != repair for source, repair in pairs), pairs


def _timed(worker, tokenizer, monkeypatch, start):
    # session order = call order: a quick positive, a quick far failure, the near failure, a slow positive
    replicas = Replicas(tokenizer, worker.rgr_tokens.cue_ids,
                        {"2+2": [(RIGHT, 0.01), (WRONG_FAR, 0.01), (SLOW_WRONG, 0.3), (RIGHT, 0.6)]})
    tq = drive(worker, replicas.client(worker.config), [QUESTION], monkeypatch, start=start)
    rows = tq.rows("uid-0")
    assert len(rows) == 4 and tq.order("uid-0") == ["row"] * 4 + ["finished"]
    (repair,) = replicas.repairs()
    slowest = max(e["end"] for e in replicas.log if not e["repair"])
    records = [f["extra_fields"]["rgr"] for f in rows.values()]
    assert all(r == records[0] for r in records) and sum(bool(f["extra_fields"]["reflected"]) for f in rows.values()) == 1
    return repair, slowest, replicas.source_of(repair)["text"], rgr_step_metrics(records)


def test_early_start_repairs_before_the_slowest_rollout_among_the_failures_finished(worker_parts, tokenizer,
                                                                                     monkeypatch):
    repair, slowest, source, metrics = _timed(worker_parts, tokenizer, monkeypatch, "early")
    assert repair["start"] < slowest  # off the group's tail
    assert source == WRONG_FAR  # the only failure finished when the first positive and failure were in
    assert metrics["rgr/replaced"] == 1 and metrics["rgr/success"] == 1
    # the whole group would have given the nearer SLOW_WRONG: counted
    assert metrics["rgr/early_choice_differs_rate"] == 1.0


def test_after_group_start_waits_for_the_whole_group_and_picks_from_it(worker_parts, tokenizer, monkeypatch):
    repair, slowest, source, metrics = _timed(worker_parts, tokenizer, monkeypatch, "after_group")
    assert repair["start"] >= slowest
    assert source == SLOW_WRONG
    assert "rgr/early_choice_differs_rate" not in metrics  # nothing to compare in the paper's order


def test_early_repair_of_a_group_that_then_loses_a_session_is_dropped(worker_parts, tokenizer, monkeypatch):
    worker = worker_parts
    replicas = Replicas(tokenizer, worker.rgr_tokens.cue_ids,
                        {"2+2": [(RIGHT, 0.01), (WRONG, 0.01), (RIGHT, 0.01), ("CRASH", 0.3)]})
    real_reply = replicas.reply

    async def reply(name, prompt_ids):
        entry = await real_reply(name, prompt_ids)
        if replicas.log[-1]["text"] == "CRASH":
            raise RuntimeError("engine error on an ordinary rollout")
        return entry

    replicas.reply = reply
    tq = drive(worker, replicas.client(worker.config), [QUESTION], monkeypatch, start="early", timeout=30)
    assert len(replicas.repairs()) == 1  # started early, before the crash
    assert tq.order("uid-0")[-1] == "failure"  # verl's verdict; the replay buffer drops the group
    rows = tq.rows("uid-0")
    assert len(rows) == 3 and not any(f["extra_fields"].get("reflected") for f in rows.values())


@pytest.mark.parametrize("start", ["after_group", "early"])
def test_a_group_without_a_positive_is_never_repaired(worker_parts, tokenizer, monkeypatch, start):
    worker = worker_parts
    replicas = Replicas(tokenizer, worker.rgr_tokens.cue_ids,
                        {"2+2": [(WRONG, 0.01), (WRONG_FAR, 0.01), (WRONG, 0.2), (WRONG_FAR, 0.3)]})
    tq = drive(worker, replicas.client(worker.config), [QUESTION], monkeypatch, start=start)
    assert replicas.repairs() == [] and len(tq.rows("uid-0")) == 4
