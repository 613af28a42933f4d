"""The ``care:`` block of a composed config -> :class:`recipe.care.care_config.CareConfig`, the way
verl builds its own config sections: each block's ``_target_`` names its dataclass and verl's
``omega_conf_to_dataclass`` instantiates them (``care_trainer.yaml``, ``rgr.yaml``).

Before that, every block is checked against its dataclass, so a bad block is one
:class:`CareConfigError` naming the key: an unknown key lists the known ones (hydra's instantiate
would only report an unexpected keyword argument), a bad value keeps the dataclass's own message.
A block without ``_target_`` (a user's override file written without them) gets its dataclass's;
a null block means its defaults.

The trainer, the agent loop and the launcher's validation all read the block through
:func:`care_config_of` (or :func:`build_config` for one block).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from recipe.care.care_config import CareConfig, CareConfigError
from recipe.care.verl_compat import require_verl_attr

__all__ = ["CareConfigError", "build_config", "care_config_of"]

omega_conf_to_dataclass = require_verl_attr("verl.utils.config", "omega_conf_to_dataclass")

T = TypeVar("T")
TARGET = "_target_"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _nested_blocks(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are blocks of their own: field name -> dataclass."""
    nested = {}
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else None
        if is_dataclass(default):
            nested[f.name] = type(default)
    return nested


def _target_class(data: Mapping, cls: type, key: str) -> type:
    """The class a block's ``_target_`` names: ``cls`` itself, or a subclass of it."""
    if TARGET not in data:
        return cls
    from hydra.utils import get_class

    try:
        target = get_class(str(data[TARGET]))
    except Exception as exc:  # hydra wraps the import error; its text names the path
        raise CareConfigError(f"{key}.{TARGET}={data[TARGET]!r} is not a class: {exc}") from None
    if not (isinstance(target, type) and issubclass(target, cls)):
        raise CareConfigError(f"{key}.{TARGET}={data[TARGET]!r} must name {_class_path(cls)} (or a subclass)")
    return target


def _with_targets(data: Any, cls: type, key: str) -> dict:
    """``data`` (a plain mapping or None) with every block's ``_target_`` filled in and unknown keys refused."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise CareConfigError(f"{key} must be a block of keys, got {data!r}")
    target = _target_class(data, cls, key)
    known = {f.name: f for f in fields(target)}
    nested = _nested_blocks(target)
    out = {TARGET: _class_path(target)}
    for name, value in data.items():
        if name == TARGET:
            continue
        if name not in known:
            raise CareConfigError(f"unknown key {key}.{name}; known: {', '.join(known)}")
        if name in nested:
            out[name] = _with_targets(value, nested[name], f"{key}.{name}")
        elif value is not None or known[name].default_factory is MISSING:
            out[name] = value  # a null mapping field (care.rgr.sampling) means its default, {}
    return out


def _plain(block: Any) -> Any:
    if isinstance(block, DictConfig):
        return OmegaConf.to_container(block, resolve=True)
    return dict(block) if isinstance(block, Mapping) else block


def build_config(block: Any, cls: type[T] = CareConfig, key: str = "care") -> T:
    """One config block (a DictConfig, a mapping or None) as the dataclass ``cls``; ``key`` is its
    path in the config, for the messages. Raises :class:`CareConfigError` naming the bad key."""
    data = _with_targets(_plain(block), cls, key)
    try:
        return omega_conf_to_dataclass(OmegaConf.create(data))
    except Exception as exc:  # hydra wraps what the dataclass raised; report the dataclass's message
        cause = exc
        while cause.__cause__ is not None and type(cause).__module__.startswith(("hydra.", "omegaconf.")):
            cause = cause.__cause__
        raise CareConfigError(f"invalid {key} block: {cause}") from exc


def care_config_of(config: Any) -> CareConfig:
    """The ``care`` block of a full trainer config (defaults when it has none)."""
    care = config.get("care", None) if hasattr(config, "get") else None
    return build_config(care)
