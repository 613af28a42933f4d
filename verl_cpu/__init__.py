"""CPU platform for verl 0.9.1: device ``cpu``, collectives on gloo, sdpa attention, vLLM's CPU build.

verl 0.9.1 registers only NVIDIA, Ascend and AMD platforms and registers its FSDP engines for
cuda/npu only, so its real trainer cannot run on a machine without an accelerator. This plugin adds
what is missing, through verl's own plugin mechanism, and only when asked for:

    VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=verl_cpu python -m recipe.care.main_care ...

``VERL_USE_EXTERNAL_MODULES`` makes every verl process import this module while ``import verl``
runs (verl/__init__.py:49), before anything resolves the platform; for Ray workers both variables
must also be in ``ray_kwargs.ray_init.runtime_env.env_vars`` (``smoke.cpu_run.job_overrides`` sets them).
Importing it without ``VERL_PLATFORM=cpu`` registers the platform class and does nothing else.
In-process tests can call :func:`install` directly before anything imports ``verl.workers``.

What :func:`install` changes (written against verl 0.9.1):
- ``PlatformRegistry.register(platform="cpu")``: device ``cpu``, backend ``gloo``, Ray resource
  ``CPU``, and :class:`_NoAccelerator` standing in for ``torch.cuda`` (no-op memory/seed calls);
- ``EngineRegistry.register(language_model/value_model, fsdp/fsdp2, device="cpu")`` for verl's own
  FSDP engine classes (registered once: a second registration asserts inside verl);
- ``initialize_global_process_group_ray`` builds ``cpu:gloo,<device>:<backend>``
  (verl/utils/distributed.py:89), a duplicate ``cpu`` entry on this platform: wrapped to use ``gloo``;
  so is ``initialize_global_process_group`` (line 62), the torchrun entry of verl's SFT trainer;
- forward-only FSDP2 engines (the reference policy) get ``CPUOffloadPolicy(pin_memory=True)``
  (transformer_impl.py:462); pinning needs a CUDA driver, so the policy is made unpinned;
- ``ResourcePoolManager._check_resource_available`` counts only GPU/NPU node resources
  (single_controller/ray/base.py:227) although the pools ask for the platform's resource: counts CPUs;
- ``rollout.name=vllm``: verl's own vLLM server and ``ServerAdapter`` on vLLM's CPU build, through a
  replica that needs no GPU ids and binds loopback (:mod:`verl_cpu.vllm_cpu`; its rollout
  overrides are :data:`verl_cpu.vllm_cpu.VLLM_CPU_OVERRIDES`);
- attention: verl's HF model config defaults to flash-attention 2
  (verl/workers/config/model.py:185); :data:`CPU_CONFIG_OVERRIDES` gives the override to pass.
"""


from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch

from recipe.care.verl_compat import require_verl_attr

PLATFORM_NAME = "cpu"

# Hydra overrides a CPU run needs besides the platform (attention kernel, no fused/flash paths).
CPU_CONFIG_OVERRIDES = (
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.model.use_fused_kernels=false",
    "trainer.device=cpu",
)

PlatformBase, PlatformRegistry = require_verl_attr(
    "verl.plugin.platform.platform_manager", "PlatformBase", "PlatformRegistry"
)


class _NoAccelerator(SimpleNamespace):
    """Stands in for ``torch.cuda``: memory, seed and sync calls are no-ops, memory reads 0."""

    def __getattr__(self, name: str) -> Any:  # any call verl makes on the device module
        if name.startswith("__"):  # keep Python protocols (abc's __isabstractmethod__, ...) honest
            raise AttributeError(name)
        return lambda *args, **kwargs: 0

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def get_device_name(*args, **kwargs) -> str:
        # verl's flops counter looks this up in its table (unknown -> inf promised FLOPS, MFU 0).
        return "CPU"

    @staticmethod
    def mem_get_info(*args, **kwargs):
        return (0, 0)


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for CPU-only machines (tests and the CPU smoke run)."""

    _stand_in = _NoAccelerator()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return self._stand_in

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: only VERL_PLATFORM=cpu selects it.
        return False

    def current_device(self):
        # verl moves micro-batches with ``.to(get_device_id())``: an int would mean cuda:<id>.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CARE_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


_INSTALLED = False


def _gloo_process_group(original):
    # verl 0.9.1 verl/utils/distributed.py:83: the default backend string names `cpu` twice here.
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray.__wrapped__ = original
    return initialize_global_process_group_ray


def _gloo_global_process_group(original):
    # verl 0.9.1 verl/utils/distributed.py:62 (the torchrun entry of its SFT trainer) builds the same
    # `cpu:gloo,<device>:<backend>` string, which torch refuses when both devices are `cpu`. Same
    # steps as verl's function with the backend set to gloo.
    def initialize_global_process_group(timeout_second=36000):
        from datetime import timedelta

        torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_second),
                                             init_method=os.environ.get("DIST_INIT_METHOD", None))
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group.__wrapped__ = original
    return initialize_global_process_group


def _unpinned(policy_cls):
    class UnpinnedCPUOffloadPolicy(policy_cls):
        _care_unpinned = True

        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    return UnpinnedCPUOffloadPolicy


def _check_cpus_available(original):
    def _check_resource_available(self):
        import ray

        available = sum(node.get("CPU", 0) for node in ray._private.state.available_resources_per_node().values())
        wanted = sum(n for process_on_nodes in self.resource_pool_spec.values() for n in process_on_nodes)
        if available < wanted:
            raise ValueError(f"Ray has {available} logical CPUs available, fewer than the {wanted} workers asked for")

    _check_resource_available.__wrapped__ = original
    return _check_resource_available


def install() -> None:
    """Make this process run verl on CPU: platform, engine registration, gloo process groups.

    Idempotent. Must run before anything imports ``verl.workers.engine`` (verl reads the device
    name at import time, verl/workers/engine/fsdp/transformer_impl.py:89).
    """
    global _INSTALLED
    if _INSTALLED:
        return
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    get_platform, set_platform = require_verl_attr("verl.plugin.platform.platform_manager", "get_platform", "set_platform")
    if get_platform().device_name != "cpu":
        set_platform(PlatformCPU())

    EngineRegistry = require_verl_attr("verl.workers.engine", "EngineRegistry")
    lm_engine, value_engine = require_verl_attr(
        "verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead", "FSDPEngineWithValueHead"
    )
    for model_type, engine in (("language_model", lm_engine), ("value_model", value_engine)):
        registered = EngineRegistry._engines.get(model_type, {})
        if all("cpu" in registered.get(backend, {}) for backend in ("fsdp", "fsdp2")):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device="cpu")(engine)

    # Patch the function where verl's workers look it up (imported by name into engine_workers).
    for module_name in ("verl.utils.distributed", "verl.workers.engine_workers"):
        module = __import__(module_name, fromlist=["initialize_global_process_group_ray"])
        current = module.initialize_global_process_group_ray
        if not hasattr(current, "__wrapped__"):
            module.initialize_global_process_group_ray = _gloo_process_group(current)
    # The SFT trainer (verl.trainer.sft_trainer.run_sft) imports it from verl.utils.distributed at call time.
    distributed = __import__("verl.utils.distributed", fromlist=["initialize_global_process_group"])
    if not hasattr(distributed.initialize_global_process_group, "__wrapped__"):
        distributed.initialize_global_process_group = _gloo_global_process_group(
            distributed.initialize_global_process_group)

    # verl 0.9.1 transformer_impl.py:462 gives forward-only engines (the reference policy)
    # CPUOffloadPolicy(pin_memory=True); pinning needs a CUDA driver. On CPU nothing is pinned.
    impl = __import__("verl.workers.engine.fsdp.transformer_impl", fromlist=["CPUOffloadPolicy"])
    if impl.CPUOffloadPolicy is not None and not getattr(impl.CPUOffloadPolicy, "_care_unpinned", False):
        impl.CPUOffloadPolicy = _unpinned(impl.CPUOffloadPolicy)

    # verl 0.9.1 single_controller/ray/base.py:227 counts only "GPU"/"NPU" node resources before it
    # places the pools (whose bundles ask for this platform's resource, "CPU"): count CPUs here.
    ResourcePoolManager = require_verl_attr("verl.single_controller.ray.base", "ResourcePoolManager")
    if not hasattr(ResourcePoolManager._check_resource_available, "__wrapped__"):
        ResourcePoolManager._check_resource_available = _check_cpus_available(
            ResourcePoolManager._check_resource_available
        )

    # rollout.name=vllm: verl's vLLM server on vLLM's CPU build (no GPU ids, loopback, oneDNN off).
    from verl_cpu.vllm_cpu import register as register_vllm_on_cpu

    register_vllm_on_cpu()
    _INSTALLED = True


if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
    # Asked for: VERL_USE_EXTERNAL_MODULES imports this module near the end of `import verl`
    # (verl/__init__.py:49), in every verl process.
    install()
