import asyncio
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
CONFIG_DIR = REPO / "recipe" / "care" / "config"


@pytest.fixture(scope="session")
def tokenizer():
    from smoke.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


def run(coro, timeout: float = 60):
    """Run a coroutine with a hard in-loop limit, so a stuck barrier fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Gen:
    """What a deterministic generator returns (the fields of verl's TokenOutput that RGR reads)."""

    token_ids: list
    log_probs: list | None = None
    stop_reason: str | None = "completed"
    routed_experts: object = None
    extra_fields: dict = field(default_factory=dict)


class ScriptedGenerate:
    """A deterministic ``generate``: records every request and answers with a fixed continuation text
    (or raises / returns nothing / returns too much / is slow, as scripted)."""

    def __init__(self, tokenizer, text: str = "", *, error: Exception | None = None, delay: float = 0.0,
                 overshoot: int = 0, logprobs: bool = True, stop_reason: str = "completed", raw_ids=None):
        self.tokenizer, self.text, self.error, self.delay = tokenizer, text, error, delay
        self.overshoot, self.logprobs, self.stop_reason, self.raw_ids = overshoot, logprobs, stop_reason, raw_ids
        self.requests = []

    async def __call__(self, request):
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        ids = list(self.raw_ids) if self.raw_ids is not None else self.tokenizer.encode(self.text, add_special_tokens=False)
        if self.overshoot:  # an engine that ignores max_tokens
            ids = (ids * (request.max_tokens + self.overshoot))[: request.max_tokens + self.overshoot]
        lps = [-0.01 * (k + 1) for k in range(len(ids))] if self.logprobs else None
        return Gen(ids, lps, self.stop_reason)


def answer_of(text: str) -> str | None:
    import re

    found = re.search(r"<answer>(.*?)</answer>", text, re.S)
    return found.group(1).strip() if found else None


class AnswerScore:
    """``score``: decodes the repaired response and checks its <answer> against ``truth``."""

    def __init__(self, tokenizer, truth: str = "4", error: Exception | None = None, extra: dict | None = None):
        self.tokenizer, self.truth, self.error, self.extra = tokenizer, truth, error, extra
        self.calls = []

    async def __call__(self, repaired):
        from recipe.care.rgr import ScoreResult

        self.calls.append(repaired)
        if self.error is not None:
            raise self.error
        text = self.tokenizer.decode(repaired.response_ids, skip_special_tokens=True)
        acc = int(answer_of(text) == self.truth)
        info = {"acc": acc} if self.extra is None else self.extra
        return ScoreResult(float(acc), info, payload=text)


def member(tokenizer, text: str, acc, *, prompt: str = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
           logprob: float | None = -0.5, eos: bool = True, mm=None):
    """A GroupMember whose response is ``text`` (+ EOS), mask 1, constant log-probs."""
    from recipe.care.rgr import GroupMember

    ids = tokenizer.encode(text, add_special_tokens=False)
    if eos:
        ids = ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return GroupMember(
        prompt_ids=tokenizer.encode(prompt, add_special_tokens=False),
        response_ids=ids,
        response_mask=[1] * len(ids),
        response_logprobs=None if logprob is None else [logprob] * len(ids),
        acc=acc,
        multi_modal_data=mm,
    )


@pytest.fixture
def make_member(tokenizer):
    return lambda text, acc, **kw: member(tokenizer, text, acc, **kw)


@pytest.fixture
def rgr_env(tokenizer):
    """(config, tokens) for a given care.rgr block."""
    from recipe.care.care_config import RGRConfig
    from recipe.care.config_loader import build_config
    from recipe.care.rgr import RepairTokens

    def build(**block):
        config = build_config(block, RGRConfig, "care.rgr")
        return config, RepairTokens.build(tokenizer, config)

    return build


@pytest.fixture
def reflect(tokenizer, rgr_env):
    """Run reflect_group on a group with a given generator/scorer and care.rgr block."""
    from recipe.care.rgr import reflect_group

    def call(members, generate, score, response_length=256, rng=None, **block):
        config, tokens = rgr_env(**block)
        return run(reflect_group(members, generate, score, tokenizer=tokenizer, config=config, tokens=tokens,
                                 response_length=response_length, rng=rng or random.Random(0)))

    return call


def compose_with_rgr(overrides=()):
    """verl's ppo_trainer (its packaged hydra tree) + recipe/care/config/rgr.yaml, included the way the
    recipe yaml includes it: ``defaults: [ppo_trainer, rgr, _self_]``."""
    import tempfile

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    primary = Path(tempfile.mkdtemp(prefix="rgr-cfg-"))
    (primary / "rgr_probe.yaml").write_text(
        "hydra:\n  searchpath:\n    - pkg://verl.trainer.config\n"
        f"    - file://{CONFIG_DIR}\n"
        "defaults:\n  - ppo_trainer\n  - rgr\n  - _self_\n"
    )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base=None):
            return compose(config_name="rgr_probe", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def verl_config():
    """One composition for the whole folder (~8 s on 2 cores): what the adapter tests run on."""
    from smoke.tiny_models import tiny_qwen25_vl_dir

    return compose_with_rgr([
        f"actor_rollout_ref.model.path={tiny_qwen25_vl_dir()}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=4",
        "data.max_prompt_length=256",
        "data.max_response_length=80",
        "+care.rgr.sampling.temperature=0.5",
        f"reward.custom_reward_function.path={REPO / 'tests' / 'recipe' / 'care' / 'stub_reward.py'}",
        "reward.custom_reward_function.name=compute_score",
    ])


@pytest.fixture(scope="session")
def worker_parts(verl_config):
    """One CareAgentLoopWorker (tokenizer, processor, configs) for every adapter test; each test
    swaps its client and care.rgr block with monkeypatch."""
    from recipe.care.agent_loop import CareAgentLoopWorker
    import verl.trainer.ppo.v1.agent_loop_tq as tq_module

    tq_module.tq.init  # noqa: B018  (the module attribute the stand-in replaces must exist)
    saved = tq_module.tq.init
    tq_module.tq.init = lambda *a, **k: None
    try:
        worker = CareAgentLoopWorker(verl_config, None, None, None)
    finally:
        tq_module.tq.init = saved
    return worker


@pytest.fixture(scope="session")
def run_probe():
    """Run tests/recipe/care/engine_probe.py in its own process under a hard time limit; return its JSON."""

    def run(*args, timeout=240):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(
            [PYTHON, str(REPO / "tests/recipe/care/engine_probe.py"), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"probe failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    return run


@pytest.fixture
def printed(capsys):
    """What the recipe printed for a person (recipe/care/notices.py) so far: ``printed.text``."""

    class Printed:
        seen = ""

        @property
        def text(self) -> str:
            self.seen += capsys.readouterr().out
            return self.seen

        def clear(self) -> None:
            capsys.readouterr()
            self.seen = ""

    return Printed()
