"""The vLLM worker extension of CPU runs: verl's, with vLLM's oneDNN Linear dispatch turned off.

vLLM's CPU backend hands each unquantized Linear weight to oneDNN once the model has loaded and
empties the parameter (vllm/model_executor/layers/utils.py ``dispatch_cpu_unquantized_gemm``,
``remove_weight=True``), so verl's weight sync would have nothing to load into. With oneDNN off,
vLLM keeps plain ``F.linear`` on live parameters. Named by :class:`verl_cpu.vllm_cpu`'s server
and imported only inside vLLM's engine process. Written against verl 0.9.1 and vLLM 0.24.0.
"""

from __future__ import annotations

from recipe.care.verl_compat import require_verl_attr

vLLMColocateWorkerExtension = require_verl_attr(
    "verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension"
)


class CpuWorkerExtension(vLLMColocateWorkerExtension):
    def __new__(cls, **kwargs):
        import vllm._custom_ops as vllm_ops

        # Read by dispatch_cpu_unquantized_gemm when the model's Linear layers finish loading, which
        # happens after the worker (this extension's host class) is constructed.
        vllm_ops._supports_onednn = False
        return super().__new__(cls, **kwargs)
