"""recipe/care/requirements.txt names what the recipe and the verifiers import, with care-verl's pins.

A verl fork gets ``recipe/care/`` and ``verifiers/`` copied in and installs
``recipe/care/requirements.txt``; care-verl itself installs ``setup.py``'s ``install_requires``.
The two must not drift: every distribution named in both carries the same version specifier, and
every third-party top-level import of ``recipe/care/**`` and ``verifiers/**`` belongs to a
distribution the requirements name (torch aside: it is installed first, per machine, as in verl).
This is the static check; it reads source files and installed metadata only.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from recipe.care.verl_compat import VERL_VERSION

REPO = Path(__file__).resolve().parents[3]
REQUIREMENTS = REPO / "recipe" / "care" / "requirements.txt"
# Packages of the copied folders themselves, and torch (chosen per machine, never pinned here).
NOT_REQUIREMENTS = {"recipe", "verifiers", "torch"}


def read_requirements(path: Path = REQUIREMENTS) -> dict[str, Requirement]:
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name not in reqs, f"{req.name} is listed twice in {path.name}"
            reqs[name] = req
    return reqs


def setup_install_requires(path: Path = REPO / "setup.py") -> dict[str, Requirement]:
    """``install_requires`` of setup.py, evaluated from its module-level assignments (setup() is not run)."""
    tree = ast.parse(path.read_text())
    assigns = [node for node in tree.body if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id in ("VERL", "install_requires") for t in node.targets)]
    scope: dict = {}
    exec(compile(ast.Module(body=assigns, type_ignores=[]), str(path), "exec"), scope)  # noqa: S102
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in scope["install_requires"]}


def third_party_imports(*folders: str) -> dict[str, set[str]]:
    """Top-level module -> files importing it, for absolute imports outside the standard library."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_requirements_parse_and_pin_verl_to_the_recipes_version():
    reqs = read_requirements()
    verl = reqs["verl"]
    assert str(verl.specifier) == f"=={VERL_VERSION}", verl
    assert "verl-core" in verl.extras


def test_requirements_and_setup_agree_on_every_shared_pin():
    reqs, setup = read_requirements(), setup_install_requires()
    shared = sorted(set(reqs) & set(setup))
    assert {"verl", "math-verify", "mathruler", "transformers"} <= set(shared), shared
    differ = [f"{name}: requirements.txt {reqs[name]} / setup.py {setup[name]}" for name in shared
              if reqs[name].specifier != setup[name].specifier or reqs[name].extras != setup[name].extras]
    assert not differ, "pins differ:\n" + "\n".join(differ)


def test_every_third_party_import_of_the_recipe_and_verifiers_is_required():
    reqs = read_requirements()
    owners = importlib.metadata.packages_distributions()
    imports = third_party_imports("recipe/care", "verifiers")
    assert "verl" in imports and "math_verify" in imports  # the scan sees both folders
    unlisted = []
    for module, files in sorted(imports.items()):
        if module in NOT_REQUIREMENTS:
            continue
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        if not dists & set(reqs):
            unlisted.append(f"{module} (distribution {sorted(dists) or 'not installed'}), imported by {sorted(files)}")
    assert not unlisted, "imports whose distribution recipe/care/requirements.txt does not name:\n" + "\n".join(unlisted)


def test_every_listed_distribution_is_installed_here():
    """A typo in a name would otherwise pass the import check unnoticed."""
    missing = []
    for name, req in read_requirements().items():
        try:
            importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req.name)
    assert not missing, missing


def test_the_scan_finds_imports_and_skips_the_standard_library(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import os, json\nimport numpy as np\nfrom sympy.core import S\nfrom . import b\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert third_party_imports("pkg") == {"numpy": {"pkg/a.py"}, "sympy": {"pkg/a.py"}}
