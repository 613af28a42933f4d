"""The care.rgr block: rgr.yaml composed on verl's real hydra tree, verl's dataclasses, the manager class."""

import pytest

from recipe.care.care_config import DEFAULT_CUE, CareConfigError, RGRConfig, RGRConfigError

# docs/algorithm.md section 4.2, verbatim
SPEC_CUE = "\nYour previous reasoning had an error. Find the mistake, correct it, and re-derive. Keep it concise.\n"


def test_rgr_yaml_composes_and_converts_to_verl_dataclasses(verl_config):
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.import_utils import load_class_from_fqn
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

    from recipe.care.agent_loop import CareAgentLoopManager, CareAgentLoopWorkerTQ
    from recipe.care.config_loader import care_config_of

    rollout = omega_conf_to_dataclass(verl_config.actor_rollout_ref.rollout)
    fqn = rollout.agent.agent_loop_manager_class
    assert fqn == "recipe.care.agent_loop.CareAgentLoopManager"
    manager_cls = load_class_from_fqn(fqn, "AgentLoopManager")  # what verl's TaskRunnerV1 does
    assert manager_cls is CareAgentLoopManager and issubclass(manager_cls, AgentLoopManagerTQ)
    assert issubclass(CareAgentLoopWorkerTQ.__ray_actor_class__, AgentLoopWorkerTQ.__ray_actor_class__)
    rgr = care_config_of(verl_config).rgr
    assert rgr.enable and rgr.selector == "lexical" and rgr.mode == "rederive"
    assert rgr.template == "paper" and rgr.cue is None and rgr.max_critique_tokens == 64
    assert rgr.routing == "sticky" and rgr.start == "after_group"  # the paper's order, the failure's replica
    assert rgr.cue_text == SPEC_CUE == DEFAULT_CUE
    assert dict(rgr.sampling) == {"temperature": 0.5}  # the hydra override reached the block


def test_yaml_defaults_equal_the_dataclass_defaults():
    from omegaconf import OmegaConf

    from tests.recipe.care.conftest import CONFIG_DIR

    from recipe.care.config_loader import build_config

    block = OmegaConf.load(CONFIG_DIR / "rgr.yaml").care.rgr
    assert block["_target_"] == "recipe.care.care_config.RGRConfig"
    assert build_config(block, RGRConfig, "care.rgr") == RGRConfig()
    assert build_config(None, RGRConfig, "care.rgr") == RGRConfig()


@pytest.mark.parametrize(
    "block, needle",
    [
        ({"selector": "cosine"}, "care.rgr.selector"),
        ({"mode": "both"}, "care.rgr.mode"),
        ({"cue": "  "}, "care.rgr.cue"),
        ({"template": "authors"}, "care.rgr.template"),
        ({"template": "structured", "cue": "Try again."}, "care.rgr.cue"),
        ({"max_critique_tokens": 0}, "care.rgr.max_critique_tokens"),
        ({"max_critique_tokens": "64"}, "care.rgr.max_critique_tokens"),
        ({"max_critique_tokens": True}, "care.rgr.max_critique_tokens"),
        ({"ngram": 0}, "care.rgr.ngram"),
        ({"min_budget": 0}, "care.rgr.min_budget"),
        ({"timeout_s": -1}, "care.rgr.timeout_s"),
        ({"max_new_tokens": 0}, "care.rgr.max_new_tokens"),
        ({"sampling": {"max_tokens": 10}}, "max_tokens"),
        ({"selecter": "lexical"}, "care.rgr.selecter"),
        ({"routing": "random"}, "care.rgr.routing"),
        ({"start": "eager"}, "care.rgr.start"),
    ],
)
def test_bad_blocks_are_clear_errors(block, needle):
    from recipe.care.config_loader import build_config

    with pytest.raises(CareConfigError, match=needle.replace(".", r"\.")):
        build_config(block, RGRConfig, "care.rgr")
    if "selecter" not in block:  # a bad value: the dataclass itself refuses it
        with pytest.raises(RGRConfigError, match=needle.replace(".", r"\.")):
            RGRConfig(**block)


def test_manager_checks_the_block_on_the_driver_and_installs_the_worker(verl_config):
    from omegaconf import OmegaConf

    from recipe.care.agent_loop import CareAgentLoopManager, CareAgentLoopWorkerTQ

    manager = CareAgentLoopManager(verl_config, llm_client=None)  # __init__ starts no worker
    assert manager.agent_loop_workers_class is CareAgentLoopWorkerTQ
    bad = OmegaConf.merge(verl_config, {"care": {"rgr": {"selector": "nearest"}}})
    with pytest.raises(CareConfigError, match="care.rgr.selector"):
        CareAgentLoopManager(bad, llm_client=None)


def test_empty_span_rule_reaches_the_rgr_worker(verl_config):
    from omegaconf import OmegaConf

    from recipe.care.config_loader import care_config_of

    assert care_config_of(verl_config).empty_span == "missing"  # absent: the default rule
    assert care_config_of(OmegaConf.create({"care": {"rgr": {}, "empty_span": "zero"}})).empty_span == "zero"
    with pytest.raises(CareConfigError, match="care.empty_span"):
        care_config_of(OmegaConf.create({"care": {"empty_span": "none"}}))
