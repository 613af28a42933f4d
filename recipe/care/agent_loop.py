"""RGR inside verl's rollout step: a thin adapter from verl 0.9.1's v1 agent loop to :mod:`recipe.care.rgr`.

Select it with (``recipe/care/config/rgr.yaml`` sets both)::

    actor_rollout_ref.rollout.agent.agent_loop_manager_class=recipe.care.agent_loop.CareAgentLoopManager
    care.rgr.enable=true

Why here: ``AgentLoopWorkerTQ._run_prompt`` is the only place where all n rollouts of a prompt
exist while the inference engine still holds the current weights (the sync trainer puts the
engine to sleep right after sampling).

How it hooks in without copying verl code (every override written against verl 0.9.1,
``verl/trainer/ppo/v1/agent_loop_tq.py`` and ``verl/experimental/agent_loop/agent_loop.py``):

* ``_run_prompt`` (training prompts only) puts a per-prompt :class:`_Group` in a context
  variable. verl's ``_run_prompt`` starts the n sessions with ``asyncio.create_task``, which
  copies the context, so every session of that prompt, and only those, sees the same group.
* ``_agent_loop_postprocess`` (called once per session, before verl writes the session to
  TransferQueue) scores the session with verl's own ``_compute_score`` and waits at the group's
  barrier. The last session to arrive runs :func:`recipe.care.rgr.reflect_group`, then every
  session continues into verl's own ``_agent_loop_postprocess`` with its (possibly repaired)
  output, which skips re-scoring (the score is already set) and writes it under the session's
  usual key. verl writes the prompt's ``finished`` status only after all sessions settle, so the
  repaired rollout is in TransferQueue before the trainer can sample the group.
* ``_run_agent_loop`` marks a session that fails before reaching the barrier, so the barrier
  always opens: RGR never blocks the prompt's completion (a group with a failed session is left
  untouched; verl marks it ``failure`` and the replay buffer drops it).
* ``care.rgr.start=early``: a session whose arrival gives the group a verified positive and a
  repairable failure starts the repair as a task on the sessions arrived so far; the last session
  to arrive waits for it instead of running RGR itself.
* ``care.rgr.routing=sticky``: ``llm_client`` (set by verl's ``__init__``) is wrapped so that each
  session's ``generate`` request ids are recorded; the repair is sent under its failure's last id,
  on which verl's router (``GlobalRequestLoadBalancer``, sticky on request id) picks the replica
  that decoded the failure and holds its prefix in the prefix cache.

Every training rollout (RGR on or off) also gets its think/answer span record
(``extra_fields["care_spans"]``, :mod:`recipe.care.span_records`), computed here once so that the
trainer's driver never decodes responses.

What reaches the trainer, per row, in ``extra_fields``: ``reflected`` (True on the repaired row,
False on its siblings) and ``rgr`` (the group's outcome record, the same on every row of the
group; :func:`recipe.care.rgr.rgr_step_metrics` turns a batch's records into ``rgr/*`` metrics).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from typing import Any
from uuid import uuid4

import ray
import torch

from recipe.care.config_loader import care_config_of
from recipe.care.fault_points import reached
from recipe.care.registrations import require_recipe_registrations
from recipe.care.rgr import (
    RECORD_KEY,
    REFLECTED_KEY,
    GroupMember,
    RepairedRollout,
    RepairRequest,
    RGROutcome,
    RepairTokens,
    ScoreResult,
    ready_to_repair,
    reflect_group,
    repair_candidates,
    select_failure,
)
from recipe.care.span_records import SPANS_KEY, span_records
from recipe.care.verl_compat import require_verl_attr

logger = logging.getLogger(__name__)

# verl 0.9.1: verl/trainer/ppo/v1/agent_loop_tq.py (AgentLoopWorkerTQ is a @ray.remote actor class,
# AgentLoopManagerTQ the v1 task runner's default manager).
AgentLoopWorkerTQ, AgentLoopManagerTQ = require_verl_attr(
    "verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ", "AgentLoopManagerTQ"
)

__all__ = ["CareAgentLoopWorker", "CareAgentLoopWorkerTQ", "CareAgentLoopManager"]


class _Group:
    """Barrier for the n sessions of one training prompt, and what RGR needs from them."""

    def __init__(self, uid: str, n: int, step: int | None = None):
        self.uid, self.n, self.step = uid, int(n), step  # step: the trainer's global step
        self.outputs: dict[Any, list] = {}  # session_id -> the session's outputs (scored)
        self.kwargs: dict[Any, dict] = {}
        self.failed: set = set()
        self.sampling_params: dict | None = None
        # session_id -> the request ids of its generate calls, in order (the router's sticky keys)
        self.request_ids: dict[Any, list] = {}
        self.repair: asyncio.Future | None = None  # start=early: the repair started before the group completed
        self.ready = asyncio.Event()

    def _complete(self) -> bool:
        return len(self.outputs) + len(self.failed) >= self.n

    def arrive(self, session_id, outputs: list, kwargs: dict) -> bool:
        """Deposit a scored session; True when this arrival completes the group."""
        self.outputs[session_id], self.kwargs[session_id] = outputs, kwargs
        return self._complete()

    def fail(self, session_id) -> None:
        """A session ended without arriving (error or cancellation): open the barrier if it was the last."""
        if session_id in self.outputs or session_id in self.failed:
            return
        self.failed.add(session_id)
        if self._complete():
            if self.repair is not None:  # verl drops an incomplete group: its repair is wasted work
                self.repair.cancel()
            self.ready.set()

    def sticky_request_id(self, session_id) -> str | None:
        """The id of the session's last decode: verl's router maps it to the replica that served it,
        whose prefix cache holds the prompt, images and the response so far."""
        ids = self.request_ids.get(session_id)
        return ids[-1] if ids else None


_GROUP: contextvars.ContextVar[_Group | None] = contextvars.ContextVar("care_rgr_group", default=None)
# The current session's request-id list (a list in _Group.request_ids); None outside training sessions.
_REQUEST_IDS: contextvars.ContextVar[list | None] = contextvars.ContextVar("care_rgr_request_ids", default=None)


class _RequestIdRecorder:
    """The worker's LLM client (verl's ``LLMServerClient``), recording each ``generate`` call's
    ``request_id`` in the calling session's list, so a repair can reuse its failure's id.

    The agent loops make their request ids inside verl (``uuid4().hex`` in ``SingleTurnAgentLoop``)
    and return no replica, so the client call is the one place the id is visible. Everything but
    ``generate`` goes to the wrapped client.
    """

    def __init__(self, client):
        object.__setattr__(self, "_client", client)

    def __getattr__(self, name):
        return getattr(self._client, name)

    def __setattr__(self, name, value):  # verl sets e.g. ``llm_client.tokenizer`` for its traces
        setattr(self._client, name, value)

    async def generate(self, request_id, **kwargs):
        ids = _REQUEST_IDS.get()
        if ids is not None:
            ids.append(request_id)
        return await self._client.generate(request_id, **kwargs)


class CareAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """verl 0.9.1 ``AgentLoopWorkerTQ`` plus RGR on every training group (see the module docstring)."""

    def __init__(self, config, *args, **kwargs):
        require_recipe_registrations("CareAgentLoopWorker")
        super().__init__(config, *args, **kwargs)
        care = care_config_of(config)
        self.rgr_config = care.rgr
        self.rgr_tokens = RepairTokens.build(self.tokenizer, self.rgr_config)
        self.rgr_rng = random.Random(self.rgr_config.seed)
        # the lexical selector picks its anchor by section 2.1's rule, with the trainer's empty-span rule
        self.empty_span = care.empty_span
        if self.rgr_config.enable and self.rgr_config.selector == "logprob" and not self.rollout_config.calculate_log_probs:
            raise ValueError("care.rgr.selector=logprob needs actor_rollout_ref.rollout.calculate_log_probs=true")

    # verl 0.9.1 AgentLoopWorker.__init__ stores its client as ``self.llm_client`` and hands it to every
    # agent loop (``server_manager=self.llm_client``); a property wraps whatever client is set.
    @property
    def llm_client(self):
        return self._care_llm_client

    @llm_client.setter
    def llm_client(self, client):
        if client is not None and not isinstance(client, _RequestIdRecorder):
            client = _RequestIdRecorder(client)
        self._care_llm_client = client

    # verl 0.9.1 AgentLoopWorkerTQ._run_prompt(prompt, sampling_params, trajectory, trace)
    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        if not trajectory["validate"]:
            reached("rollout", trajectory.get("step"))
        if not self.rgr_config.enable or trajectory["validate"]:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace)
        # verl pops __rollout_n__ inside _run_prompt; read it the same way without consuming it.
        n = prompt.get("__rollout_n__", self.config.actor_rollout_ref.rollout.n)
        token = _GROUP.set(_Group(prompt["uid"], n, trajectory.get("step")))
        try:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace)
        finally:
            _GROUP.reset(token)

    # verl 0.9.1 AgentLoopWorker._run_agent_loop(sampling_params, trajectory, *, agent_name, trace, **kwargs)
    async def _run_agent_loop(self, sampling_params, trajectory, *, agent_name, trace=True, **kwargs):
        group = _GROUP.get()
        if group is None:
            return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace,
                                                 **kwargs)
        group.sampling_params = sampling_params
        # This runs in the session's own task (verl's create_task), so the value is the session's alone.
        _REQUEST_IDS.set(group.request_ids.setdefault(kwargs.get("session_id"), []))
        try:
            return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace,
                                                 **kwargs)
        finally:
            group.fail(kwargs.get("session_id"))  # no-op for a session that reached the barrier

    # verl 0.9.1 AgentLoopWorkerTQ._agent_loop_postprocess(output, validate, **kwargs)
    async def _agent_loop_postprocess(self, output, validate, **kwargs) -> None:
        group = _GROUP.get()
        if group is None or validate:
            if not validate:
                self._record_spans(output)
            return await super()._agent_loop_postprocess(output, validate, **kwargs)
        outputs = list(output) if isinstance(output, list) else [output]
        if outputs:
            # verl's own scoring; its postprocess skips it later because reward_score is then set.
            await self._compute_score(outputs, kwargs=kwargs)
        session_id = kwargs["session_id"]
        if group.arrive(session_id, outputs, kwargs):
            try:
                await self._finish(group)
            except Exception:  # RGR must never cost the group: keep the originals, count it
                logger.exception("RGR failed on prompt %s; keeping the original rollouts", group.uid)
                self._stamp(group, RGROutcome(reason="internal_error"), None)
            finally:
                group.ready.set()
        else:
            if self.rgr_config.start == "early" and group.repair is None and self._ready_early(group):
                group.repair = asyncio.ensure_future(self._repair(group, sorted(group.outputs)))
            await group.ready.wait()
        final = group.outputs[session_id]
        self._record_spans(final)
        return await super()._agent_loop_postprocess(final if isinstance(output, list) else final[0], validate,
                                                     **kwargs)

    def _record_spans(self, output) -> None:
        """Each final rollout's think/answer span record (``extra_fields["care_spans"]``), computed here,
        once per rollout and spread over the agent-loop workers, so the trainer's driver decodes nothing."""
        for out in output if isinstance(output, list) else [output]:
            ids = torch.tensor([list(out.response_ids)], dtype=torch.long)
            mask = torch.tensor([list(out.response_mask)], dtype=torch.long)
            out.extra_fields[SPANS_KEY] = span_records(self.tokenizer, ids, mask, empty_span=self.empty_span)[0]

    # ------------------------------------------------------------------------------------------

    def _members(self, finals: list) -> list[GroupMember]:
        return [
            GroupMember(
                prompt_ids=o.prompt_ids,
                response_ids=o.response_ids,
                response_mask=o.response_mask,
                response_logprobs=o.response_logprobs,
                acc=(o.extra_fields.get("reward_extra_info") or {}).get("acc"),
                multi_modal_data=o.multi_modal_data,
            )
            for o in finals
        ]

    @staticmethod
    def _skip_reason(group: _Group) -> str | None:
        """Why the group's rollouts cannot be judged (counted as rgr/skipped/<reason>); None = they can."""
        if group.failed:
            return "incomplete_group"
        if any(len(outputs) != 1 for outputs in group.outputs.values()):
            return "multi_output"  # multi-output agent loops: not a single rollout to repair
        if any(outputs[0].reward_score is None for outputs in group.outputs.values()):
            return "no_reward"  # rewards computed later (colocated reward model): cannot gate
        return None

    def _ready_early(self, group: _Group) -> bool:
        """start=early: do the sessions arrived so far hold a verified positive and a repairable failure?"""
        if self._skip_reason(group) is not None:
            return False
        finals = [group.outputs[s][0] for s in sorted(group.outputs)]
        return ready_to_repair(self._members(finals), self.tokenizer, self.rgr_tokens.trailing_ids)

    async def _finish(self, group: _Group) -> None:
        """The group is complete: take the early repair or run RGR now, then put the result in place."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sessions = sorted(group.outputs)
        reason = self._skip_reason(group)
        if group.repair is not None:
            outcome, chosen = await group.repair
            if reason is None and chosen is not None:
                outcome.choice_differs = self._choice_differs(group, sessions, chosen)
        elif reason is None:
            outcome, chosen = await self._repair(group, sessions)
        else:
            outcome, chosen = RGROutcome(reason=reason), None
        if reason is not None:  # never keep a repair of a group that cannot be judged as a whole
            outcome, chosen = RGROutcome(reason=reason), None
        outcome.rollout_tokens = sum(len(o.response_ids) for s in sessions for o in group.outputs[s])
        outcome.source = None if chosen is None else sessions.index(chosen)  # index in the whole group
        repaired_session = chosen if outcome.repaired is not None else None
        if repaired_session is not None:
            group.outputs[repaired_session] = [outcome.score.payload]
        outcome.wall_s = loop.time() - started
        self._stamp(group, outcome, repaired_session)

    def _choice_differs(self, group: _Group, sessions: list, early_session) -> int:
        """1 when RGR run on the whole group would have chosen another failure than ``early_session``."""
        if self.rgr_config.selector == "random":
            return -1  # a fresh draw differs by chance, not by the start time
        members = self._members([group.outputs[s][0] for s in sessions])
        candidates = repair_candidates(members, self.tokenizer, self.rgr_tokens.trailing_ids)
        chosen = select_failure(members, sorted(candidates), self.rgr_config.selector, tokenizer=self.tokenizer,
                                ngram=self.rgr_config.ngram, empty_span=self.empty_span)
        return int(sessions[chosen] != early_session)

    async def _repair(self, group: _Group, sessions: list) -> tuple[RGROutcome, Any]:
        """RGR on the given sessions of the group (all of them, or the ones finished so far):
        the outcome and the chosen failure's session (None = none chosen; ``outcome.repaired`` says
        whether its repair is usable)."""
        _REQUEST_IDS.set(None)  # the repair's own decode is no session's request
        finals = [group.outputs[s][0] for s in sessions]
        members = self._members(finals)

        async def generate(request: RepairRequest):
            reached("rgr_repair", group.step)
            source = finals[request.source]
            mm = source.multi_modal_data or {}
            params = {**(group.sampling_params or {}), **dict(self.rgr_config.sampling), "max_tokens": request.max_tokens}
            request_id = group.sticky_request_id(sessions[request.source]) if self.rgr_config.routing == "sticky" else None
            return await self.llm_client.generate(
                request_id=request_id or uuid4().hex,
                prompt_ids=request.prompt_ids,
                sampling_params=params,
                image_data=mm.get("images"),
                video_data=mm.get("videos"),
                audio_data=mm.get("audios"),
                mm_processor_output=getattr(source, "mm_processor_output", None),
                mm_processor_kwargs=source.mm_processor_kwargs,
            )

        async def score(repaired: RepairedRollout) -> ScoreResult:
            candidate = self._repaired_output(finals[repaired.source], repaired)
            await self._compute_score([candidate], kwargs=group.kwargs[sessions[repaired.source]])
            if candidate.reward_score is None:
                raise RuntimeError("the reward loop returned no score for the repaired rollout")
            return ScoreResult(candidate.reward_score, candidate.extra_fields.get("reward_extra_info") or {}, candidate)

        result = await reflect_group(
            members, generate, score, tokenizer=self.tokenizer, config=self.rgr_config, tokens=self.rgr_tokens,
            response_length=self.rollout_config.response_length, rng=self.rgr_rng, empty_span=self.empty_span,
        )
        return result.outcome, None if result.outcome.source is None else sessions[result.outcome.source]

    @staticmethod
    def _repaired_output(original, repaired: RepairedRollout):
        """A new AgentLoopOutput: the original's fields, the repaired tokens, no score yet, flagged."""
        generation = repaired.generation
        gen_extra = dict(getattr(generation, "extra_fields", None) or {})
        extra = {k: v for k, v in original.extra_fields.items() if k != "reward_extra_info"}
        # The trajectory now spans the weights of both decodes (verl's staleness tags read these).
        for key, pick in (("min_global_steps", min), ("max_global_steps", max)):
            values = [v for v in (extra.get(key), gen_extra.get(key)) if v is not None]
            if values:
                extra[key] = pick(values)
        extra[REFLECTED_KEY] = True
        routed = getattr(generation, "routed_experts", None)
        if original.routed_experts is not None and routed is None:
            raise ValueError("the repair decode returned no routed experts but the rollout records them")
        # Only fields the original set (as_dict dumps with exclude_unset) plus the replaced ones.
        data = {name: getattr(original, name) for name in original.model_fields_set}
        data.update(
            response_ids=repaired.response_ids,
            response_mask=repaired.response_mask,
            response_logprobs=repaired.response_logprobs,
            routed_experts=None if original.routed_experts is None
            else routed[: len(repaired.prompt_ids) + len(repaired.response_ids)],
            reward_score=None,
            metrics=original.metrics.model_copy(),
            extra_fields=extra,
        )
        if data["response_logprobs"] is None:
            data.pop("response_logprobs")
        return type(original)(**data)

    @staticmethod
    def _stamp(group: _Group, outcome: RGROutcome, repaired_session) -> None:
        record = outcome.record(group.uid)
        for session_id, outputs in group.outputs.items():
            for out in outputs:
                out.extra_fields[RECORD_KEY] = dict(record)
                out.extra_fields[REFLECTED_KEY] = session_id == repaired_session and outcome.repaired is not None


# Ray actor class, as verl's own AgentLoopWorkerTQ (verl/trainer/ppo/v1/agent_loop_tq.py).
CareAgentLoopWorkerTQ = ray.remote(CareAgentLoopWorker)


class CareAgentLoopManager(AgentLoopManagerTQ):
    """verl 0.9.1 ``AgentLoopManagerTQ`` whose workers are :class:`CareAgentLoopWorker`.

    Named by ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``; verl's v1 task runner
    builds it with ``create(config=..., llm_client=..., teacher_client=..., reward_loop_worker_handles=...)``.
    """

    def __init__(self, config, *args, **kwargs):
        care_config_of(config)  # a bad care block fails here, on the driver, not in every worker
        super().__init__(config, *args, **kwargs)
        # AgentLoopManagerTQ.__init__ sets its own worker class before calling up; override after.
        self.agent_loop_workers_class = CareAgentLoopWorkerTQ
