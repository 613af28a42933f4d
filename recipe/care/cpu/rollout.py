"""CPU rollout backend for verl 0.9.1: transformers' ``generate`` behind vLLM's token-in/token-out seam.

verl's v1 trainer generates through rollout *replicas* (``RolloutReplicaRegistry``) whose server
actors answer ``generate(prompt_ids, sampling_params, request_id, image_data=...) -> TokenOutput``
(verl/workers/rollout/replica.py, vllm_rollout/vllm_async_server.py:558), and syncs weights through
a ``BaseRollout`` adapter that lives inside the hybrid actor worker (verl/workers/rollout/base.py,
engine_workers.py:729 ``update_weights``). Only vllm/sglang/trtllm exist; this module adds
``rollout.name=hf_cpu`` with the narrowest pieces that interface needs:

- :class:`CpuGenerationServer` (Ray actor): a transformers model that samples one request at a time
  (Qwen2.5-VL images through the model's own processor), returns token ids, per-token log-probs
  and a stop reason like vLLM's server, and answers the sleep / wake / weight-update / abort calls
  verl's ``CheckpointEngineManager`` and ``LLMServerManager`` make. ``sleep`` drops the weights
  (like vLLM's level-2 sleep) and ``generate`` refuses to run until the trainer has pushed new
  ones, so the policy that samples is always the policy being trained.
- :class:`CpuRolloutReplica` (``RolloutReplica``): launches one server per replica.
- :class:`CpuServerAdapter` (``BaseRollout``): inside the actor worker; forwards
  ``resume``/``release`` to the server and ships the full tensors of ``get_per_tensor_param``.

Written against verl 0.9.1; registered by :func:`register` (called from ``recipe.care.cpu``).
Speed is not a goal: it exists so verl's real trainer can run end to end on a CPU-only machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Optional

import ray
import torch

from recipe.care.verl_compat import require_verl_attr

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf_cpu"
SERVER_PREFIX = f"{ROLLOUT_NAME}_server_"

# verl 0.9.1 symbols.
RolloutReplica, RolloutReplicaRegistry, TokenOutput = require_verl_attr(
    "verl.workers.rollout.replica", "RolloutReplica", "RolloutReplicaRegistry", "TokenOutput"
)
BaseRollout = require_verl_attr("verl.workers.rollout.base", "BaseRollout")
omega_conf_to_dataclass = require_verl_attr("verl.utils.config", "omega_conf_to_dataclass")
convert_weight_keys = require_verl_attr("verl.utils.model", "convert_weight_keys")


class RolloutAsleepError(RuntimeError):
    pass


def server_name(replica_rank: int) -> str:
    return f"{SERVER_PREFIX}{replica_rank}_0"


def model_local_path(model_config) -> str:
    get = model_config.get if hasattr(model_config, "get") else lambda k, d=None: getattr(model_config, k, d)
    return str(get("local_path", None) or get("path"))


def load_generation_model(path: str):
    """The HF model (fp32, sdpa) and, for a VLM, its processor; eval mode, no grad."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(path)
    is_vlm = hasattr(config, "vision_config")
    cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(path) if is_vlm else None
    return model, processor


def stop_token_ids(model) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None) or getattr(model.config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    pad = getattr(model.config, "pad_token_id", None) or getattr(getattr(model.config, "text_config", None), "pad_token_id", None)
    # <|endoftext|> ends a Qwen2.5 turn as well as <|im_end|> (vLLM stops on both too).
    return sorted({*ids, *([pad] if pad is not None else [])})


class CpuGenerationServer:
    """Token-in/token-out generation with transformers; the methods verl's managers call.

    One request runs at a time (a lock around ``model.generate`` in a thread); the actor itself is
    async, so control calls (sleep, weight update) interleave between requests like vLLM's.
    """

    def __init__(self, config, model_config, replica_rank: int = 0, num_threads: int = 1):
        self.config = omega_conf_to_dataclass(config)
        self.model_path = model_local_path(model_config)
        self.replica_rank = replica_rank
        torch.set_num_threads(max(1, num_threads))
        self.model, self.processor = load_generation_model(self.model_path)
        self.stop_ids = stop_token_ids(self.model)
        self.global_steps: Optional[int] = None
        self.weight_version = 0  # bumped by every update_weights
        self.asleep = False
        self.weights_loaded = True  # from the checkpoint on disk at start
        self._lock = threading.Lock()
        self._inflight = 0
        self._aborting = False
        seed = getattr(self.config, "seed", 0) or 0
        self._generator = torch.Generator().manual_seed(int(seed) + replica_rank)
        # Names the actor's engine sends (verl's convert_weight_keys on the same model class) -> ours.
        own = self.model.state_dict()
        converted = convert_weight_keys({k: k for k in own}, self.model)
        self._name_map = {sent: original for sent, original in converted.items()}
        self._shapes = {k: tuple(v.shape) for k, v in own.items()}

    # ---- generation -------------------------------------------------------------------------
    def _max_tokens(self, prompt_len: int, sampling_params: dict) -> int:
        cfg = self.config
        max_model_len = cfg.max_model_len or (cfg.prompt_length + cfg.response_length)
        room = max_model_len - prompt_len
        if room < 1:
            raise ValueError(f"Prompt length ({prompt_len}) leaves no room to generate within {max_model_len} tokens")
        if "max_tokens" in sampling_params:
            wanted = sampling_params.pop("max_tokens")
        elif "max_new_tokens" in sampling_params:
            wanted = sampling_params.pop("max_new_tokens")
        else:  # vLLM server's default (vllm_async_server.py:605)
            wanted = min(cfg.response_length, cfg.prompt_length + cfg.response_length - prompt_len)
        return max(1, min(int(wanted), room))

    def _vision_inputs(self, prompt_ids: list[int], image_data) -> dict:
        if not image_data:
            return {}
        if self.processor is None:
            raise ValueError(f"{self.model_path} is a text-only model but the request carries {len(image_data)} image(s)")
        out = self.processor.image_processor(images=list(image_data), return_tensors="pt")
        grid = out["image_grid_thw"]
        merge = getattr(self.processor.image_processor, "merge_size", 2)
        expected = int((grid.prod(-1) // (merge * merge)).sum())
        image_token = self.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        got = sum(1 for t in prompt_ids if t == image_token)
        if got != expected:
            raise ValueError(f"prompt has {got} image tokens but its {len(image_data)} image(s) need {expected}")
        # transformers 5.9 derives Qwen2-VL-family M-RoPE positions from mm_token_type_ids; without
        # them image tokens are positioned like text, unlike verl's actor (an off-policy sampler).
        mm_token_type_ids = torch.tensor(self.processor.create_mm_token_type_ids([prompt_ids]), dtype=torch.long)
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid, "mm_token_type_ids": mm_token_type_ids}

    @torch.no_grad()
    def _generate_sync(self, prompt_ids: list[int], sampling_params: dict, image_data) -> TokenOutput:
        sampling_params = dict(sampling_params)
        max_tokens = self._max_tokens(len(prompt_ids), sampling_params)
        temperature = float(sampling_params.get("temperature", 1.0))
        top_p = float(sampling_params.get("top_p", 1.0))
        top_k = int(sampling_params.get("top_k", -1))
        want_logprobs = bool(sampling_params.get("logprobs", False))
        do_sample = temperature > 0
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            do_sample=do_sample,
            eos_token_id=self.stop_ids,
            pad_token_id=self.stop_ids[0] if self.stop_ids else None,
            return_dict_in_generate=True,
            output_logits=True,
            repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0)),
            **self._vision_inputs(prompt_ids, image_data),
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else 0)
        # transformers samples from the global RNG: fork it so our seed does not touch the caller's.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator)))
            out = self.model.generate(**kwargs)
        new = out.sequences[0, input_ids.shape[1]:].tolist()
        stopped = False
        for i, tok in enumerate(new):
            if tok in self.stop_ids:
                new, stopped = new[: i + 1], True
                break
        log_probs = None
        if want_logprobs:
            # Raw logits / temperature, as verl's actor computes them (vLLM's default logprobs are
            # also pre-top-k/top-p); with temperature 0 the raw distribution.
            logits = torch.stack([step[0] for step in out.logits[: len(new)]]).float()
            if do_sample:
                logits = logits / temperature
            lp = torch.log_softmax(logits, dim=-1)
            log_probs = lp.gather(-1, torch.tensor(new).unsqueeze(-1)).squeeze(-1).tolist()
        # vLLM maps finish reasons "stop" and "length" both to "completed" (vllm_async_server.py:702).
        return TokenOutput(
            token_ids=new,
            log_probs=log_probs,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps, "num_cached_tokens": 0, "stopped_on_eos": stopped},
        )

    def _generate_locked(self, prompt_ids, sampling_params, image_data) -> TokenOutput:
        with self._lock:
            if self._aborting:
                return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted",
                                   extra_fields={"global_steps": self.global_steps})
            if self.asleep or not self.weights_loaded:
                raise RolloutAsleepError(
                    "generate() was called while the CPU rollout is asleep or holds no weights; verl's sync "
                    "trainer must wake it and push the actor's weights first (update_weights)"
                )
            return self._generate_sync(prompt_ids, sampling_params, image_data)

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs,
    ) -> TokenOutput:
        if video_data or audio_data:
            raise NotImplementedError("the CPU rollout serves text and images only")
        prompt_ids = [int(t) for t in prompt_ids]
        self._inflight += 1
        try:
            return await asyncio.to_thread(self._generate_locked, prompt_ids, sampling_params, image_data)
        finally:
            self._inflight -= 1

    # ---- weights, sleep and wake ----------------------------------------------------------------
    def _drop_weights(self) -> None:
        # Like vLLM's level-2 sleep: the weights are discarded and must come back by update_weights.
        for param in self.model.parameters():
            param.data = torch.empty(0, dtype=param.dtype)
        self.weights_loaded = False

    def _load_weights(self, state: dict[str, torch.Tensor]) -> int:
        params = dict(self.model.named_parameters(remove_duplicate=False))
        buffers = dict(self.model.named_buffers())
        loaded = set()
        for sent, tensor in state.items():
            name = self._name_map.get(sent, sent)
            target = params.get(name) if name in params else buffers.get(name)
            if target is None:
                raise KeyError(f"update_weights sent {sent!r}, which the CPU rollout model has no parameter for")
            if tuple(tensor.shape) != self._shapes[name]:
                raise ValueError(f"update_weights: {sent!r} has shape {tuple(tensor.shape)}, expected {self._shapes[name]}")
            target.data = tensor.to(dtype=target.dtype if target.is_floating_point() else tensor.dtype).clone()
            loaded.add(name)
        if getattr(self.model.config, "tie_word_embeddings", False) or getattr(
            getattr(self.model.config, "text_config", None), "tie_word_embeddings", False
        ):
            self.model.tie_weights()
            loaded.update(n for n, p in params.items() if p.numel() > 0)
        missing = [n for n, p in params.items() if n not in loaded and p.numel() == 0]
        if missing:
            raise KeyError(f"update_weights left {len(missing)} parameter(s) without weights, e.g. {missing[:3]}")
        return len(loaded)

    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        def run():
            with self._lock:
                n = self._load_weights(state)
                self.weights_loaded = True
                self.weight_version += 1
                if global_steps is not None:
                    self.global_steps = global_steps
                return n

        return await asyncio.to_thread(run)

    async def wake_up(self, tags: Optional[list[str]] = None):
        # "weights": memory for the incoming weights (nothing to allocate on CPU); "kv_cache": ready.
        if tags is None or "kv_cache" in tags:
            self.asleep = False

    async def sleep(self):
        if not self.config.free_cache_engine:
            return
        await self.wait_for_requests_to_drain()
        with self._lock:
            self.asleep = True
            self._drop_weights()

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def wait_for_requests_to_drain(self):
        while self._inflight:
            await asyncio.sleep(0.05)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        # A request already inside generate() runs to completion (transformers cannot stop it);
        # queued ones come back "aborted" until resume_generation.
        self._aborting = True
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        self._aborting = False

    async def resume_engine_generation(self):
        self._aborting = False

    async def open_submission_gate(self):
        self._aborting = False

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None

    async def state(self) -> dict:
        """For tests and logs: what the server holds now."""
        return {"asleep": self.asleep, "weights_loaded": self.weights_loaded,
                "weight_version": self.weight_version, "global_steps": self.global_steps}


class CpuRolloutReplica(RolloutReplica):
    """One :class:`CpuGenerationServer` per replica (``rollout.name=hf_cpu``)."""

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self):
        if self.nnodes != 1:
            raise NotImplementedError("the CPU rollout runs one process per replica (tensor/data/pipeline parallel 1)")
        options: dict[str, Any] = dict(name=server_name(self.replica_rank), max_concurrency=self.max_concurrency,
                                       num_cpus=0)
        if self.workers:  # next to the actor worker that sends it weights
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(CpuGenerationServer).options(**options).remote(
            config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
        )
        await server.state.remote()  # surfaces a model-loading error here, not at the first request
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}-replica-{self.replica_rank}"

    async def sleep(self):
        await asyncio.gather(*[server.sleep.remote() for server in self.servers])


class CpuServerAdapter(BaseRollout):
    """The actor worker's side of the CPU rollout: weight pushes and sleep/wake, like vLLM's ServerAdapter."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                 * self.config.pipeline_model_parallel_size)
        if world != 1:
            raise NotImplementedError(
                f"rollout.name={ROLLOUT_NAME} runs one generation process per replica; set "
                f"tensor_model_parallel_size, data_parallel_size and pipeline_model_parallel_size to 1 (got {world})"
            )
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank if replica_rank == -1 else replica_rank
        self.server_handle = None

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        if self.config.free_cache_engine:
            await self._server().wake_up.remote(tags=tags)

    async def release(self):
        if self.config.free_cache_engine:
            await self._server().sleep.remote()

    @torch.no_grad()
    async def update_weights(self, weights, global_steps: int = None, wire_format: str = "named_tensors",
                             peft_config=None, **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the CPU rollout takes full named tensors, not {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError("the CPU rollout does not serve LoRA adapters; use model.lora.merge=true")
        # Every rank must drain the generator (full_tensor() is a collective under FSDP).
        state = {name: tensor.detach().to("cpu").clone() for name, tensor in weights}
        await self._server().update_weights.remote(state, global_steps)


def register() -> None:
    """Make ``rollout.name=hf_cpu`` resolvable in this process (both of verl's rollout registries)."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: CpuRolloutReplica)
    registry = require_verl_attr("verl.workers.rollout.base", "_ROLLOUT_REGISTRY")
    registry[(ROLLOUT_NAME, "async")] = f"{__name__}.CpuServerAdapter"
