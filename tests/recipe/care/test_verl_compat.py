"""The verl pin: a different verl fails at import with a message that says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

from recipe.care import verl_compat


def test_installed_verl_is_the_pinned_one():
    assert verl_compat.check_verl_version() == verl_compat.VERL_VERSION == "0.9.1"


@pytest.mark.parametrize("installed", ["0.9.0", "0.10.0", None])
def test_other_versions_fail_clearly(monkeypatch, installed):
    def fake_version(name):
        if installed is None:
            raise metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(verl_compat.metadata, "version", fake_version)
    monkeypatch.delenv("CARE_VERL_ALLOW_ANY_VERL", raising=False)
    with pytest.raises(verl_compat.VerlVersionError, match=r"verl\[verl-core\]==0\.9\.1"):
        verl_compat.check_verl_version()


def test_override_turns_mismatch_into_warning(monkeypatch):
    monkeypatch.setattr(verl_compat.metadata, "version", lambda name: "0.10.0")
    monkeypatch.setenv("CARE_VERL_ALLOW_ANY_VERL", "1")
    with pytest.warns(UserWarning, match="0.10.0"):
        assert verl_compat.check_verl_version() == "0.10.0"


_FAKE_VERL_0_8 = (
    "import importlib.metadata as md; real = md.version\n"
    "md.version = lambda n: '0.8.0' if n == 'verl' else real(n)\n"
)


def _run_with_verl_0_8(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose verl metadata says 0.8.0 (no override set)."""
    env = {k: v for k, v in os.environ.items() if k != "CARE_VERL_ALLOW_ANY_VERL"}
    return subprocess.run([sys.executable, "-c", _FAKE_VERL_0_8 + code], capture_output=True, text=True, timeout=120,
                          env=env)


def test_pure_modules_import_whatever_verl_is_installed():
    """The mathematics and the config dataclasses need no verl: the version check does not fire."""
    proc = _run_with_verl_0_8("import recipe.care, recipe.care.core_algos, recipe.care.care_config, "
                              "recipe.care.spans, recipe.care.rgr, recipe.care.metrics\nprint('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_an_adapter_import_checks_the_version():
    """A fresh interpreter with a faked metadata version refuses the first module that takes verl."""
    proc = _run_with_verl_0_8(
        "from recipe.care.verl_compat import VerlVersionError\n"
        "try:\n    import recipe.care.adv_estimator\nexcept VerlVersionError as exc:\n    print('refused:', exc)\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("refused:")
    assert "written against verl==0.9.1" in proc.stdout and "found verl==0.8.0" in proc.stdout


def test_require_verl_attr_names_what_is_missing():
    assert callable(verl_compat.require_verl_attr("verl.trainer.ppo.core_algos", "register_adv_est"))
    with pytest.raises(verl_compat.VerlVersionError, match="no_such_thing"):
        verl_compat.require_verl_attr("verl.trainer.ppo.core_algos", "no_such_thing")
    with pytest.raises(verl_compat.VerlVersionError, match="verl.no_such_module"):
        verl_compat.require_verl_attr("verl.no_such_module", "x")
