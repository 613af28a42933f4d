"""The verl pin: a different verl fails at import with a message that says what to install."""

from __future__ import annotations

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


def test_import_of_the_recipe_checks_the_version():
    """A fresh interpreter with a faked metadata version refuses `import recipe.care`."""
    code = (
        "import importlib.metadata as md; real = md.version\n"
        "md.version = lambda n: '0.8.0' if n == 'verl' else real(n)\n"
        "import recipe.care\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "written against verl==0.9.1" in proc.stderr and "found verl==0.8.0" in proc.stderr


def test_require_verl_attr_names_what_is_missing():
    assert callable(verl_compat.require_verl_attr("verl.trainer.ppo.core_algos", "register_adv_est"))
    with pytest.raises(verl_compat.VerlVersionError, match="no_such_thing"):
        verl_compat.require_verl_attr("verl.trainer.ppo.core_algos", "no_such_thing")
    with pytest.raises(verl_compat.VerlVersionError, match="verl.no_such_module"):
        verl_compat.require_verl_attr("verl.no_such_module", "x")
