"""The care block -> CareConfig through _target_ and verl's omega_conf_to_dataclass (recipe.care.config_loader)."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields

import pytest
from omegaconf import OmegaConf

from recipe.care import care_config
from recipe.care.care_config import CareConfig, CareConfigError, GroupRecordsConfig, RescueConfig, RGRConfig
from recipe.care.config_loader import build_config, care_config_of
from tests.recipe.care.conftest import CONFIG_DIR

BLOCKS = {"care": CareConfig, "care.rescue": RescueConfig, "care.rgr": RGRConfig, "care.records": GroupRecordsConfig}


def yaml_care_block():
    """The care block as the two yaml files write it (care_trainer.yaml, plus rgr.yaml's care.rgr)."""
    care = OmegaConf.load(CONFIG_DIR / "care_trainer.yaml").care
    care.rgr = OmegaConf.load(CONFIG_DIR / "rgr.yaml").care.rgr
    return care


def test_every_yaml_block_names_its_dataclass_and_lists_every_field_at_its_default():
    care = yaml_care_block()
    for key, cls in BLOCKS.items():
        block = OmegaConf.select(OmegaConf.create({"care": care}), key)
        assert block["_target_"] == f"recipe.care.care_config.{cls.__name__}", key
        assert set(block) - {"_target_"} == {f.name for f in fields(cls)}, key
    assert build_config(care) == CareConfig()


def test_every_field_has_a_docstring():
    """Each field is followed by a string literal (the docstring a reader of the yaml key looks up)."""
    tree = ast.parse(inspect.getsource(care_config))
    checked = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in {cls.__name__ for cls in BLOCKS.values()}:
            checked.add(node.name)
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    documented = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) \
                        and isinstance(nxt.value.value, str)
                    assert documented, f"{node.name}.{stmt.target.id} has no docstring"
    assert checked == {cls.__name__ for cls in BLOCKS.values()}


def test_nested_blocks_and_overrides():
    care = build_config({"k": 3, "rescue": {"gamma": 0.2, "logp": "mean"}, "rgr": {"selector": "random"},
                         "records": {"enable": True}})
    assert (care.k, care.rescue, care.rgr.selector, care.records.enable) == (
        3, RescueConfig(gamma=0.2, logp="mean"), "random", True)
    assert build_config(None) == CareConfig()  # no block: the defaults
    assert care_config_of(OmegaConf.create({"trainer": {}})) == CareConfig()
    assert build_config({"rgr": {"sampling": None}}).rgr.sampling == {}  # a null mapping: its default


def test_a_user_file_without_target_still_converts(tmp_path):
    """An override file written without _target_ (as before the yaml named its dataclasses)."""
    path = tmp_path / "my_care.yaml"
    path.write_text("care:\n  k: 2\n  m: 3\n  rescue:\n    enable: false\n  rgr:\n    mode: answer_only\n"
                    "  records:\n    enable: true\n    dir: /tmp/r\n")
    user = OmegaConf.load(path)
    care = care_config_of(user)
    assert (care.k, care.m, care.rescue.enable, care.rgr.mode, care.records.dir) == (2, 3, False, "answer_only", "/tmp/r")
    # merged over the recipe's yaml (which has _target_ everywhere), the user's values win
    merged = OmegaConf.merge({"care": yaml_care_block()}, user)
    assert care_config_of(merged) == care


@pytest.mark.parametrize("block, key", [
    ({"kk": 3}, "care.kk"),
    ({"rescue": {"gama": 0.2}}, "care.rescue.gama"),
    ({"rgr": {"selecter": "lexical"}}, "care.rgr.selecter"),
    ({"records": {"enabled": True}}, "care.records.enabled"),
])
def test_unknown_key_names_it_and_lists_the_known_ones(block, key):
    parent = key.rsplit(".", 1)[0]
    known = ", ".join(f.name for f in fields(BLOCKS[parent]))
    with pytest.raises(CareConfigError, match=f"unknown key {key}; known: {known}$"):
        build_config(block)


@pytest.mark.parametrize("block, message", [
    ({"k": 0}, "care.k must be a positive integer"),
    ({"m": 2}, "care.m must be an integer >= care.k"),
    ({"rescue": {"logp": "max"}}, "care.rescue.logp must be one of"),
    ({"rgr": {"template": "authors"}}, "care.rgr.template='authors'"),
    ({"_target_": "recipe.care.care_config.RescueConfig"}, "care._target_=.* must name recipe.care.care_config.CareConfig"),
    ({"rescue": {"_target_": "no.such.Class"}}, "care.rescue._target_='no.such.Class' is not a class"),
])
def test_bad_value_keeps_the_dataclass_message(block, message):
    with pytest.raises(CareConfigError, match=message) as err:
        build_config(block)
    assert "Error in call to target" not in str(err.value)  # hydra's wrapper, not the dataclass's words
