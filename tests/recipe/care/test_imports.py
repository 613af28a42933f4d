"""Every module of the recipe imports on its own: no import cycle, no module that only works after
another recipe module was imported first.

One interpreter imports the third-party modules the recipe uses (torch, verl, ...: most of the
cost), without any recipe module, then forks one child per recipe module: each child starts with
no ``recipe.care`` module loaded and imports just its own.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipe" / "care"

pytestmark = pytest.mark.timeout(300)

_VERL_ATTR = re.compile(r"require_verl_attr\(\s*\"([\w.]+)\"")

# Runs in a fresh interpreter: argv[1] = JSON {"preload": [...], "modules": [...]}; prints one JSON
# line per recipe module: [module, error or null].
_CHILD = r"""
import importlib, json, os, sys, traceback, warnings
warnings.simplefilter("ignore")
spec = json.loads(sys.argv[1])
for name in spec["preload"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # optional dependencies; the child's own import reports what matters
assert not [m for m in sys.modules if m == "recipe.care" or m.startswith("recipe.care.")], "preload imported the recipe"
for module in spec["modules"]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            error = None
        except BaseException:
            error = traceback.format_exc(limit=-3)
        os.write(write, json.dumps(error).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        error = json.loads(pipe.read() or '"the child died without a word"')
    os.waitpid(pid, 0)
    print(json.dumps([module, error]), flush=True)
"""


def recipe_modules() -> list[str]:
    """Every module under recipe/care, found by walking the folder."""
    modules = []
    for path in sorted(RECIPE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def third_party_imports() -> list[str]:
    """What the recipe's sources import from outside the recipe: import statements (top level or
    not) and the verl modules named in ``require_verl_attr`` calls."""
    names = []
    for path in sorted(RECIPE.rglob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
        names += _VERL_ATTR.findall(text)
    return list(dict.fromkeys(n for n in names if n != "recipe" and not n.startswith("recipe.")))


def test_the_walk_finds_the_modules():
    modules = recipe_modules()
    assert {"recipe.care", "recipe.care.core_algos", "recipe.care.trainer", "recipe.care.config_loader"} <= set(modules)
    assert {"torch", "verl.trainer.ppo.v1.trainer_sync"} <= set(third_party_imports())


def test_every_recipe_module_imports_alone():
    modules = recipe_modules()
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}  # verl would import the recipe
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    spec = json.dumps({"preload": third_party_imports(), "modules": modules})
    proc = subprocess.run([sys.executable, "-c", _CHILD, spec], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
    assert sorted(results) == sorted(modules), proc.stderr[-3000:]
    failed = {module: error for module, error in results.items() if error}
    assert not failed, "modules that do not import alone:\n" + "\n".join(f"{m}:\n{e}" for m, e in failed.items())


def recipe_import_graph() -> dict[str, set[str]]:
    """module -> the recipe modules its source imports anywhere (top level or inside a function)."""
    modules = set(recipe_modules())
    graph = {}
    for module in modules:
        path = REPO / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            edges |= {t for t in targets if t in modules and t != module}
        graph[module] = edges
    return graph


def test_no_import_cycle_even_through_deferred_imports():
    """An import inside a function hides a cycle from the import-alone test (trainer importing the
    launcher that imports the trainer at launch): the graph of every import has no cycle."""
    graph = recipe_import_graph()
    assert "recipe.care.config_loader" in graph["recipe.care.trainer"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [module, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
