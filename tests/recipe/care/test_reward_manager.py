"""The CARE reward manager driven through verl 0.9.1's real reward loop.

Real: the hydra config tree (``ppo_trainer``), ``migrate_legacy_reward_impl``, the reward-manager
registry and ``resolve_reward_manager_cls`` / ``load_reward_manager``, ``RewardLoopWorker`` (the
class Ray would host), ``RewardLoopManager.compute_rm_score``'s assembly, ``extract_reward``,
``DataProto`` and the Qwen2.5 tokenizer. Faked: only the Ray hop (``ray.get`` on a handle).
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import verifiers
from recipe.care import reward_manager as care_rm
from smoke.tiny_models import load_qwen25_tokenizer, qwen25_tokenizer_dir

REPO = Path(__file__).resolve().parents[3]
MANAGER_FILE = REPO / "recipe" / "care" / "reward_manager.py"


def _think(answer):
    return f"<think>Reading the chart and computing.</think>\n<answer>{answer}</answer>"


# (data_source, response text, ground truth, extra_info, expected acc, expected format)
ROWS = [
    ("chartqa", _think("1,000"), ["1000", "one thousand"], {}, 1, 1),
    ("HuggingFaceM4/ChartQA", _think("No"), ["Yes"], {}, 0, 1),
    ("geometry3k", _think("\\boxed{2\\sqrt{3}}"), "2\\sqrt{3}", {}, 1, 1),
    ("hiyouga/geometry3k", "The answer is \\boxed{3.46}", "2\\sqrt{3}", {}, 1, 0),
    ("geometry3k", _think("B"), "12", {"choices": ["6", "12", "18", "24"]}, 1, 1),
    ("virl39k", _think("(B) 12 cm"), "\\boxed{B}", {}, 1, 1),
    ("TIGER-Lab/ViRL39K", _think("pots"), "\\boxed{stop}", {}, 0, 1),
    ("virl39k", _think("9^9^9^9"), "\\boxed{5}", {}, 0, 1),
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_qwen25_tokenizer()


def make_batch(tokenizer, rows, prompt_len=24, response_len=48) -> "DataProto":
    """A rollout batch laid out as verl's agent loop leaves it: left-padded prompts,
    right-padded responses ending in the eos token, one attention mask over both."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    prompts, responses, masks = [], [], []
    for source, text, *_ in rows:
        p = tokenizer(f"<|im_start|>user\nQuestion about {source}?<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        r = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        p, r = p[-prompt_len:], r[:response_len]
        prompts.append([pad] * (prompt_len - len(p)) + p)
        responses.append(r + [pad] * (response_len - len(r)))
        masks.append([0] * (prompt_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (response_len - len(r)))
    prompts, responses, masks = (torch.tensor(x, dtype=torch.long) for x in (prompts, responses, masks))
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": masks,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={
            "data_source": np.array([row[0] for row in rows], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": row[2]} for row in rows], dtype=object),
            "extra_info": np.array([row[3] for row in rows], dtype=object),
        },
    )


@pytest.fixture(scope="module")
def base_config():
    """verl's own ppo_trainer config tree (composed once; ~1.5 s per compose)."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={qwen25_tokenizer_dir()}", "reward.num_workers=1"])


@pytest.fixture
def ppo_config(base_config):
    """``ppo_config("key=value", "+new.key=value")``: the tree with command-line style overrides, after
    main_ppo's legacy migration."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_loop import migrate_legacy_reward_impl

    def make(*overrides):
        config = copy.deepcopy(base_config)
        for override in overrides:
            key, value = override.lstrip("+").split("=", 1)
            OmegaConf.update(config, key, yaml.safe_load(value), force_add=override.startswith("+"))
        return migrate_legacy_reward_impl(config)

    return make


def run_reward_loop(config, batch, monkeypatch, tokenizer=None):
    """RewardLoopWorker + RewardLoopManager.compute_rm_score, with the Ray hop done in-process.

    ``tokenizer`` given: the worker gets it instead of loading the same files again (~1 s).
    """
    from verl.experimental.reward_loop import reward_loop
    from verl.trainer.ppo.reward import extract_reward, resolve_reward_manager_cls

    if tokenizer is not None:
        monkeypatch.setattr(reward_loop, "hf_tokenizer", lambda *args, **kwargs: tokenizer)
    worker = reward_loop.RewardLoopWorker(config)

    class Handle:  # what ray.remote(RewardLoopWorker) would hand back
        class compute_score_batch:
            @staticmethod
            def remote(chunk):
                return worker.compute_score_batch(chunk)

    # verl's managers await futures of the loop they captured at construction: run on that loop.
    monkeypatch.setattr(reward_loop.ray, "get", lambda coros: [worker.loop.run_until_complete(c) for c in coros])
    manager = object.__new__(reward_loop.RewardLoopManager)
    manager.config, manager.reward_model_manager = config, None
    manager.reward_loop_workers = [Handle()]
    manager.reward_manager_cls = resolve_reward_manager_cls(config)
    return worker, extract_reward(manager.compute_rm_score(batch))


def test_registered_under_care_in_verls_registry(ppo_config):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    assert get_reward_manager_cls("care") is care_rm.CareRewardManager
    assert issubclass(care_rm.CareRewardManager, RewardManagerBase)
    # What verl's RewardLoopManager does with reward.reward_manager.{source=register,name=care}.
    assert resolve_reward_manager_cls(ppo_config("reward.reward_manager.name=care")) is care_rm.CareRewardManager


def test_reward_loop_end_to_end_with_real_tokenizer(tokenizer, ppo_config, monkeypatch):
    config = ppo_config("reward.reward_manager.name=care")
    batch = make_batch(tokenizer, ROWS)
    worker, (rm_scores, extra) = run_reward_loop(config, batch, monkeypatch)
    assert type(worker.reward_manager) is care_rm.CareRewardManager

    expected_acc = [row[4] for row in ROWS]
    expected_fmt = [row[5] for row in ROWS]
    assert extra["acc"].tolist() == expected_acc
    assert extra["format"].tolist() == expected_fmt
    assert set(extra) == {*verifiers.RESULT_KEYS, care_rm.FAILED_KEY}
    assert extra[care_rm.FAILED_KEY].tolist() == [0] * len(ROWS)
    assert extra["verifier"].tolist() == [verifiers.resolve_source(row[0]) for row in ROWS]
    assert extra["pred"].tolist()[:3] == ["1,000", "No", "2\\sqrt{3}"]
    assert extra["reason"].tolist()[-1] == "power_tower"

    # One scalar per response, on its last valid token; score = 0.9 acc + 0.1 format.
    response_mask = batch.batch["attention_mask"][:, batch.batch["prompts"].shape[1]:]
    last = response_mask.sum(-1) - 1
    expected_score = torch.tensor([0.9 * a + 0.1 * f for a, f in zip(expected_acc, expected_fmt)])
    torch.testing.assert_close(rm_scores[torch.arange(len(ROWS)), last], expected_score)
    assert torch.count_nonzero(rm_scores).item() == torch.count_nonzero(expected_score).item()
    # The scores equal verify() on the decoded text: decoding dropped the eos token.
    for i, (source, text, gold, extra_info, *_) in enumerate(ROWS):
        assert extra["score"][i] == pytest.approx(verifiers.verify(source, text, gold, extra_info)["score"])


def test_reward_kwargs_configure_the_verifier(tokenizer, ppo_config, monkeypatch):
    config = ppo_config("reward.reward_manager.name=care", "+reward.reward_kwargs.format_weight=0.5",
                        "+reward.reward_kwargs.strict_years=false")
    rows = [("chartqa", _think("2015"), ["2010"], {}), ("chartqa", "\\boxed{7}", ["7"], {})]
    _, (rm_scores, extra) = run_reward_loop(config, make_batch(tokenizer, rows), monkeypatch, tokenizer)
    assert extra["acc"].tolist() == [1, 1]  # the year rule is off
    assert extra["score"].tolist() == [1.0, 0.5]  # w = 0.5, second row unformatted
    assert rm_scores.sum(-1).tolist() == [1.0, 0.5]


def test_unknown_reward_option_fails_at_construction(tokenizer, ppo_config):
    from verl.trainer.ppo.reward import load_reward_manager

    config = ppo_config("reward.reward_manager.name=care", "+reward.reward_kwargs.format_wieght=0.5")
    with pytest.raises(ValueError, match="format_wieght"):
        load_reward_manager(config, tokenizer)


def test_unknown_data_source_fails_that_sample_and_names_it(tokenizer, ppo_config, printed):
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(ppo_config("reward.reward_manager.name=care"), tokenizer)
    batch = make_batch(tokenizer, [("openai/gsm8k", _think("4"), "4", {"id": "gsm-7"})])
    result = asyncio.run(manager.run_single(batch[0:1]))
    info = result["reward_extra_info"]
    assert info[care_rm.FAILED_KEY] == 1 and info["reason"] == "reward_error:UnknownDataSourceError"
    assert result["reward_score"] == 0.0
    assert "id=gsm-7 source=openai/gsm8k" in printed.text and "chartqa, geometry3k" in printed.text


def test_a_sample_that_cannot_be_scored_fails_alone_in_the_reward_loop(tokenizer, ppo_config, monkeypatch, printed):
    """Unknown source, no gold, reward_model None and a verifier that raises on one answer: those rows get
    failed=1 with their own reason; every other row of the same batch is graded as usual."""
    import verifiers.chartqa as chartqa

    real = chartqa.verify_answer

    def buggy(pred, gold, *args, **kwargs):  # a verifier bug on one prediction
        if pred == "boom":
            raise ZeroDivisionError("bug")
        return real(pred, gold, *args, **kwargs)

    monkeypatch.setattr(chartqa, "verify_answer", buggy)
    rows = [("chartqa", _think("5"), ["5"], {"id": "ok-1"}), ("nope", _think("5"), "5", {"id": "bad-src"}),
            ("geometry3k", _think("5"), "", {"index": 11}), ("chartqa", _think("boom"), ["5"], {"id": "bug-1"}),
            ("geometry3k", _think("5"), "5", {"id": "ok-2"}), ("geometry3k", _think("x+1"), "\\frac{{{", {"id": "g"})]
    batch = make_batch(tokenizer, rows)
    batch.non_tensor_batch["reward_model"][4] = None  # reward_model None on an otherwise good row
    _, (rm_scores, extra) = run_reward_loop(ppo_config("reward.reward_manager.name=care"), batch, monkeypatch,
                                            tokenizer)
    assert extra[care_rm.FAILED_KEY].tolist() == [0, 1, 1, 1, 1, 1]
    assert extra["reason"].tolist()[1:] == ["reward_error:UnknownDataSourceError", "reward_error:ValueError",
                                           "internal_error:ZeroDivisionError", "reward_error:ValueError",
                                           "gold_unparseable"]
    assert extra["acc"].tolist()[0] == 1 and rm_scores.sum(-1).tolist()[1:] == [0.0] * 5
    for name in ("id=bad-src", "id=11", "id=bug-1", "id=ok-2", "id=g "):
        assert name in printed.text
    assert "id=ok-1" not in printed.text


def test_gold_unparseable_is_its_own_reason_and_fails_the_sample():
    bad_gold = care_rm.safe_verify("geometry3k", _think("x+1"), "\\frac{{{")
    bad_pred = care_rm.safe_verify("geometry3k", _think("\\frac{{{"), "x+1")
    assert bad_gold["reason"] == verifiers.GOLD_UNPARSEABLE and bad_gold[care_rm.FAILED_KEY] == 1
    assert bad_gold["score"] == 0.0
    assert bad_pred["reason"] == "unparseable" and bad_pred[care_rm.FAILED_KEY] == 0


def test_importlib_source_by_file_path_gives_the_registered_class(ppo_config):
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    config = ppo_config("reward.reward_manager.source=importlib", "reward.reward_manager.name=CareRewardManager",
                        f"reward.reward_manager.module.path={MANAGER_FILE}")
    assert resolve_reward_manager_cls(config) is care_rm.CareRewardManager


def test_compute_score_as_custom_reward_function(tokenizer, ppo_config, monkeypatch):
    """verl's naive manager with reward.custom_reward_function pointing at this file."""
    config = ppo_config(f"reward.custom_reward_function.path={MANAGER_FILE}",
                        "reward.custom_reward_function.name=compute_score",
                        "+reward.custom_reward_function.reward_kwargs.format_weight=0.2")
    worker, (rm_scores, extra) = run_reward_loop(config, make_batch(tokenizer, ROWS[:3]), monkeypatch, tokenizer)
    assert type(worker.reward_manager).__name__ == "NaiveRewardManager"
    assert extra["acc"].tolist() == [1, 0, 1]
    assert extra["score"].tolist() == pytest.approx([1.0, 0.2, 1.0])


def test_compute_score_rejects_unknown_options_and_ignores_verl_call_kwargs():
    result = care_rm.compute_score("chartqa", _think("5"), ["5"], None, reward_router_address=None)
    assert result["acc"] == 1
    with pytest.raises(ValueError, match="unknown CARE reward option"):
        care_rm.compute_score("chartqa", _think("5"), ["5"], None, format_wieght=0.3)


def test_loadable_by_file_path_in_a_fresh_process_outside_the_repo(tmp_path):
    """A Ray worker loads the file by path, from another cwd. Without an (editable) install of the
    project, the file must put the repo on sys.path itself."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        installed = importlib.util.find_spec("recipe.care") is not None
        from verl.utils.import_utils import load_extern_object
        cls = load_extern_object({str(MANAGER_FILE)!r}, "CareRewardManager")
        score = load_extern_object({str(MANAGER_FILE)!r}, "compute_score")
        from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
        assert get_reward_manager_cls("care") is cls
        print("installed", installed, "fallback", {str(REPO)!r} in sys.path)
        print("by-path", score("virl39k", "<think>t</think><answer>B</answer>", "(B)")["acc"])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VERL_USE_EXTERNAL_MODULES")}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "by-path 1" in out.stdout
    if "installed False" in out.stdout:
        assert "fallback True" in out.stdout, out.stdout


def test_verl_external_modules_hook_registers_care(monkeypatch):
    """VERL_USE_EXTERNAL_MODULES=recipe.care.reward_manager makes `import verl` call
    import_external_libs in every process (Ray workers included): that import alone must register
    "care". Simulated on a clean registry and module cache (both restored afterwards)."""
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls, registry
    from verl.utils.import_utils import import_external_libs

    import recipe.care

    monkeypatch.delitem(registry.REWARD_MANAGER, "care")
    monkeypatch.delitem(sys.modules, "recipe.care.reward_manager")
    monkeypatch.setattr(recipe.care, "reward_manager", care_rm)  # the import below rebinds it
    with pytest.raises(ValueError, match="Unknown reward manager"):
        get_reward_manager_cls("care")
    import_external_libs(["recipe.care.reward_manager"])
    fresh = sys.modules["recipe.care.reward_manager"]
    assert fresh is not care_rm and get_reward_manager_cls("care") is fresh.CareRewardManager
