"""``recipe/care/`` and ``verifiers/`` copied into a verl fork's root run there, without the rest of care-verl.

Users copy those two folders into their own verl fork and launch ``python -m recipe.care.main_care``
from its root. Two checks that nothing in them reaches for care-verl's tooling (data_prep,
evaluation, smoke, report, verl_cpu, ...) or an undeclared package:

- static: every import of every module (function-level ones, ``importlib.import_module`` /
  ``require_verl_attr`` module literals) and every module string in ``recipe/care/config/*.yaml``
  is the standard library, verl, ``recipe.care``, ``verifiers`` or a distribution named in
  ``recipe/care/requirements.txt``;
- the real copy: the folders are copied into an empty ``fork/`` and run from there, in processes
  (Ray workers and vLLM's engine included) that cannot see the installed care-verl: a dry run, then
  one CARE training step through verl's trainer and vLLM rollout.
"""

from __future__ import annotations

import ast
import importlib.metadata
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
COPIED = ("recipe/care", "verifiers")  # what a user copies into the fork's root
REQUIREMENTS = REPO / "recipe" / "care" / "requirements.txt"
# care-verl's tooling: not copied, so never imported by what is.
TOOLING = ("data_prep", "evaluation", "benchmarks", "tests", "smoke", "report", "verl_cpu")
# Installed before verl and the requirements, in the build that fits the machine (CUDA or CPU), as
# verl itself asks; requirements.txt says so rather than pinning it.
INSTALLED_FIRST = ("torch",)
# Calls whose first argument, a string literal, is a module imported at run time.
IMPORTING_CALLS = ("import_module", "__import__", "require_verl_attr")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
MODULE_LIST_KEYS = ("VERL_USE_EXTERNAL_MODULES",)  # config keys whose value is a comma-separated module list


# ---------------------------------------------------------------------------------------------
# static check
# ---------------------------------------------------------------------------------------------
def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_imports(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file: statements at any depth, relative ones resolved,
    and the string literal given to importlib.import_module / __import__ / require_verl_attr."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in IMPORTING_CALLS:
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def config_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) for every module or class path a config names (``_target_``, agent-loop
    classes, the comma-separated ``VERL_USE_EXTERNAL_MODULES``): any string scalar made of dotted
    identifiers, and every entry of a module list (``VERL_USE_EXTERNAL_MODULES``: ``verl_cpu`` too)."""
    found, stack = [], [(None, yaml.compose(path.read_text(encoding="utf-8")))]
    while stack:
        key, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack += [(k.value, value) for k, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(key, value) for value in node.value]
        elif isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
            pattern = _MODULE if key in MODULE_LIST_KEYS else _DOTTED
            found += [(node.start_mark.line + 1, part.strip()) for part in node.value.split(",")
                      if pattern.match(part.strip())]
    return sorted(found)


def declared_distributions(requirements: Path = REQUIREMENTS) -> set[str]:
    lines = [line.split("#")[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    return {canonicalize_name(Requirement(line).name) for line in lines if line}


def _in_tree(root: Path, dotted: str, attribute: bool) -> bool:
    """Whether ``dotted`` is a module file under ``root``; with ``attribute``, or a name in one (a class path)."""
    parts = dotted.split(".")
    for n in (len(parts), len(parts) - 1) if attribute else (len(parts),):
        base = root.joinpath(*parts[:n])
        if n and (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
            return True
    return False


def import_problem(module: str, root: Path, declared: set[str], owners: dict[str, list[str]],
                   attribute: bool = False) -> str | None:
    """Why a copied module may not import ``module`` in a fork, or None when it may. ``attribute``: the
    name may end in an attribute of the module (a config's class path)."""
    top = module.split(".")[0]
    if top in TOOLING:
        return "care-verl tooling, not copied into a fork"
    if top in sys.stdlib_module_names or top == "__future__" or top == "verl":
        return None
    if top in ("recipe", "verifiers"):
        if top == "recipe" and module != "recipe.care" and not module.startswith("recipe.care."):
            return "only recipe.care is copied"
        return None if _in_tree(root, module, attribute) else "no such module in the copied folders"
    if top in INSTALLED_FIRST:
        return None
    dists = {canonicalize_name(d) for d in owners.get(top, [])}
    if not dists:
        return f"no installed distribution provides {top!r}; add it to {REQUIREMENTS.relative_to(REPO)}"
    if not dists & declared:
        return f"distribution {'/'.join(sorted(dists))} is not named in {REQUIREMENTS.relative_to(REPO)}"
    return None


def copy_problems(root: Path = REPO, requirements: Path = REQUIREMENTS) -> list[str]:
    """``file:line: import X (why not)`` for every import of the copied folders a fork cannot satisfy."""
    declared, owners = declared_distributions(requirements), importlib.metadata.packages_distributions()
    problems = []
    for folder in COPIED:
        for path in sorted((root / folder).rglob("*.py")):
            problems += [f"{path.relative_to(root)}:{line}: import {module} ({why})"
                         for line, module in python_imports(root, path)
                         if (why := import_problem(module, root, declared, owners))]
        for path in sorted((root / folder).rglob("*.yaml")):
            problems += [f"{path.relative_to(root)}:{line}: {module} ({why})" for line, module in config_modules(path)
                         if (why := import_problem(module, root, declared, owners, attribute=True))]
    return problems


def test_the_copied_folders_import_only_what_a_fork_has():
    assert REQUIREMENTS.is_file(), f"{REQUIREMENTS} is missing"
    problems = copy_problems()
    assert not problems, "imports a verl fork with recipe/care and verifiers copied in cannot satisfy:\n" \
                         + "\n".join(problems)


def test_the_static_check_finds_tooling_imports_wherever_they_hide(tmp_path):
    """Each way a module can be reached is caught and named with its file and line."""
    recipe = tmp_path / "recipe" / "care"
    (recipe / "config").mkdir(parents=True)
    (tmp_path / "verifiers").mkdir()
    (tmp_path / "verifiers" / "__init__.py").write_text("import math\nfrom .missing import helpers\n")
    (recipe / "__init__.py").write_text("")
    (recipe / "ok.py").write_text("import os\nimport verl.trainer\nfrom recipe.care import ok\nimport yaml\n")
    (recipe / "bad.py").write_text(
        "import numpy\n"
        "def f():\n"
        "    from smoke.driver import job_env\n"
        "    importlib.import_module('data_prep.cli')\n"
        "    from .missing import x\n"
        "    import recipe.other\n"
        "    require_verl_attr('evaluation.results', 'collect')\n"
        "    import not_declared_anywhere_xyz\n")
    (recipe / "config" / "c.yaml").write_text("a:\n  _target_: report.build.build_report\n"
                                              "  VERL_USE_EXTERNAL_MODULES: recipe.care.ok,verl_cpu\n  cls: recipe.care.ok.Thing\n  path: Qwen/Qwen2.5-VL-7B\n"
                                              "  gone: recipe.care.gone.Thing\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=2  # pinned\npyyaml\n")
    problems = copy_problems(tmp_path, requirements)
    text = "\n".join(problems)
    for expected in ("recipe/care/bad.py:3: import smoke.driver (care-verl tooling",
                     "recipe/care/bad.py:4: import data_prep.cli (care-verl tooling",
                     "recipe/care/bad.py:5: import recipe.care.missing (no such module",
                     "recipe/care/bad.py:6: import recipe.other (only recipe.care",
                     "recipe/care/bad.py:7: import evaluation.results (care-verl tooling",
                     "recipe/care/bad.py:8: import not_declared_anywhere_xyz (no installed distribution",
                     "recipe/care/config/c.yaml:2: report.build.build_report (care-verl tooling",
                     "recipe/care/config/c.yaml:3: verl_cpu (care-verl tooling",
                     "recipe/care/config/c.yaml:6: recipe.care.gone.Thing (no such module",
                     "verifiers/__init__.py:2: import verifiers.missing (no such module"):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert len(problems) == 10, text  # ok.py, numpy and yaml (declared), the class path in ok.py pass
    requirements.write_text("pyyaml\n")
    assert any("bad.py:1: import numpy (distribution numpy is not named" in p
               for p in copy_problems(tmp_path, requirements))


# ---------------------------------------------------------------------------------------------
# the real copy
# ---------------------------------------------------------------------------------------------
# verl's CPU platform and vLLM CPU shims live outside the recipe (a GPU user needs neither); the test
# copies them next to it as its stand-in for an accelerator.
CPU_STAND_IN = "verl_cpu"
# Modules a fork process must not reach even if something catches the ImportError.
BLOCKED_TOP_LEVEL = ("data_prep", "evaluation", "benchmarks", "smoke", "report")
DRY_RUN_LIMIT_S, TRAIN_LIMIT_S = 240, 600
FORK_BATCH = 2  # prompts in the one training step

SITECUSTOMIZE = '''"""Written by tests/recipe/care/test_copy_into_fork.py: this interpreter (every one started with this
PYTHONPATH: Ray workers and vLLM engines inherit it) sees a verl fork, not the installed care-verl."""
import os
import sys

_BLOCKED_ROOTS = {blocked_roots!r}
_BLOCKED_TOP_LEVEL = {blocked_top_level!r}
_AUDIT = os.environ.get("CARE_FORK_AUDIT")


def _care_verl(obj):  # care-verl's editable-install finder and its path hook
    return getattr(obj, "__module__", "").startswith("__editable___care_verl")


def _note(name, line):
    if _AUDIT:
        with open(os.path.join(_AUDIT, name), "a") as fh:
            fh.write(line + "\\n")


class _Blocked:
    """Records an import of care-verl tooling (the import still fails: nothing provides it)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.split(".")[0] in _BLOCKED_TOP_LEVEL:
            _note("blocked.txt", f"{{os.getpid()}} {{fullname}}")
        return None


sys.meta_path[:] = [_Blocked, *(f for f in sys.meta_path if not _care_verl(f))]
sys.path_hooks[:] = [h for h in sys.path_hooks if not _care_verl(h)]
sys.path[:] = [p for p in sys.path
               if "__editable__.care_verl" not in p and os.path.realpath(p or os.curdir) not in _BLOCKED_ROOTS]
sys.path_importer_cache.clear()
_note("processes.txt", f"{{os.getpid()}} {{' '.join(sys.argv)[:200]}}")
'''


def care_verl_roots() -> set[str]:
    """The folders care-verl is imported from here: this checkout and the editable install's target."""
    roots = {os.path.realpath(REPO)}
    for name, module in list(sys.modules.items()):
        if name.startswith("__editable___care_verl"):
            for package, folder in getattr(module, "MAPPING", {}).items():
                roots.add(os.path.realpath(Path(folder).parents[package.count(".")]))
    return roots


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> dict:
    """``fork/`` with recipe/care, verifiers and the CPU stand-in copied in; the environment of its processes."""
    from smoke.cpu_run import job_env

    base = tmp_path_factory.mktemp("copy")
    root, blocker, audit = base / "fork", base / "blocker", base / "audit"
    for folder in (*COPIED, CPU_STAND_IN):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    blocker.mkdir()
    audit.mkdir()
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE.format(
        blocked_roots=sorted(care_verl_roots()), blocked_top_level=BLOCKED_TOP_LEVEL))
    env = {k: v for k, v in job_env().items() if k != "VERL_FILE_LOGGER_PATH"}
    env.update({"PYTHONPATH": f"{blocker}{os.pathsep}{root}", "CARE_FORK_AUDIT": str(audit)})
    return {"root": root, "env": env, "audit": audit, "base": base}


def run_in_fork(fork: dict, args: list[str], log: Path, timeout: float) -> tuple[int, str]:
    with open(log, "w") as fh:
        try:
            proc = subprocess.run([sys.executable, *args], cwd=fork["root"], env=fork["env"], stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(args[:3])} in the fork exceeded {timeout}s; log tail:\n{log.read_text()[-4000:]}")
    return proc.returncode, log.read_text(errors="replace")


def training_overrides(workdir: Path) -> tuple[list[str], Path]:
    """One CARE step at the smoke's CPU scale on the random tiny model and the tiny mix (built here,
    in the harness, which may use care-verl's tooling); returns (overrides, the run's folder)."""
    from smoke.cpu_run import CARE_M, job_overrides, rgr_overrides
    from smoke.tiny_data import build_data
    from smoke.tiny_models import tiny_qwen25_vl_dir

    model = tiny_qwen25_vl_dir()
    *train_files, val_file = build_data(workdir, model, sys.executable)
    run_dir = workdir / "run"
    # a small step for CI time: 2 prompts, an anchor and care.m negatives each
    overrides = job_overrides("care", model, train_files, val_file, run_dir, steps=1, save_step=-1,
                              batch=FORK_BATCH, rollout_n=1 + CARE_M)
    return [*overrides, *rgr_overrides()], run_dir


def finite(record: dict, key: str) -> float:
    value = record["data"].get(key)
    assert value is not None and math.isfinite(float(value)), f"step {record['step']}: {key}={value!r}"
    return float(value)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(DRY_RUN_LIMIT_S + TRAIN_LIMIT_S + 300)
def test_the_copied_recipe_trains_a_care_step_in_a_fork_without_care_verl(fork):
    from report.load import read_metrics

    started = time.monotonic()
    root, base = fork["root"], fork["base"]
    probe = ("import importlib, sys\n"
             f"for name in {BLOCKED_TOP_LEVEL!r}:\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except ModuleNotFoundError:\n"
             "        continue\n"
             "    sys.exit(f'{name} is importable in the fork')\n"
             "import recipe.care, verifiers, verl_cpu\n"
             "print('imported from:', recipe.care.__file__, verifiers.__file__, verl_cpu.__file__)\n")
    rc, out = run_in_fork(fork, ["-c", probe], base / "probe.log", 120)
    assert rc == 0, out
    imported = next(line for line in out.splitlines() if line.startswith("imported from: ")).split()[2:]
    assert imported == [str(root / "recipe/care/__init__.py"), str(root / "verifiers/__init__.py"),
                        str(root / "verl_cpu/__init__.py")], out
    # the probe's own attempts were recorded (the audit works); later processes must add none
    blocked = fork["audit"] / "blocked.txt"
    assert sorted(line.split()[1] for line in blocked.read_text().splitlines()) == sorted(BLOCKED_TOP_LEVEL)
    blocked.unlink()

    overrides, run_dir = training_overrides(base)
    rc, out = run_in_fork(fork, ["-m", "recipe.care.main_care", "--model", "none", "--dry-run", "--skip-preflight", *overrides],
                          base / "dry-run.log", DRY_RUN_LIMIT_S)
    assert rc == 0, f"dry run failed (rc={rc}):\n{out[-6000:]}"
    assert "config accepted by verl's validate_config" in out

    rc, out = run_in_fork(fork, ["-m", "recipe.care.main_care", "--model", "none", *overrides], base / "train.log", TRAIN_LIMIT_S)
    assert rc == 0, f"training step failed (rc={rc}); log: {base / 'train.log'}\n{out[-8000:]}"
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1], records
    record = records[0]
    for key in ("actor/pg_loss", "actor/grad_norm", "critic/advantages/mean", "care/acc", "care/subgroup_frac",
                "care/groups/mixed_frac", "care/groups/all_wrong_frac", "rgr/eligible", "timing_s/update_weights"):
        finite(record, key)
    assert finite(record, "care/groups/count") == FORK_BATCH
    # sampled by verl's vLLM server on vLLM's CPU build, weights synced to it after the update
    assert "CpuVLLMHttpServer pid=" in out and "(EngineCore pid=" in out
    assert finite(record, "training/rollout_probs_diff_max") < 1e-2

    # every process ran with care-verl hidden (Ray workers included) and none reached for its tooling
    processes = (fork["audit"] / "processes.txt").read_text()
    assert "default_worker.py" in processes, "the Ray workers did not run with the fork's environment"
    assert not blocked.exists(), f"fork processes tried care-verl tooling:\n{blocked.read_text()}"
    print(f"copy-into-fork: probe, dry run and one CARE step in {time.monotonic() - started:.0f}s")
