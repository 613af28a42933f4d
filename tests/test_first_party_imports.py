"""Every import of this repository's own packages names a module that exists, and every
``from <own module> import NAME`` a name that module defines (or a submodule).

A static check over every Python file, so that a moved module cannot leave an import behind in a
script or probe that only a slow test or a GPU run would execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("recipe", "verifiers", "data_prep", "evaluation", "report", "smoke", "verl_cpu", "benchmarks", "tests")
SKIP_DIRS = {".git", "__pycache__", ".cache"}


def python_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.py")
                  if not any(part in SKIP_DIRS or part.startswith(".venv") for part in p.relative_to(REPO).parts))


def module_path(module: str) -> Path | None:
    """The file (or namespace folder) of a first-party module, found on disk without importing it."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return base if base.is_dir() else None


def defined_names(path: Path) -> set[str] | None:
    """Top-level names a module defines; None when it cannot be known statically (a star import or
    a module-level ``__getattr__``)."""
    if path.is_dir():
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def bad_imports(path: Path) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [(node.module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in modules:
            if module.split(".")[0] not in FIRST_PARTY:
                continue
            found = module_path(module)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if found is None:
                problems.append(f"{where}: no module {module}")
                continue
            defined = defined_names(found)
            for name in names or ():
                if module_path(f"{module}.{name}") is None and defined is not None and name not in defined:
                    problems.append(f"{where}: {module} has no {name}")
    return problems


def test_every_first_party_import_resolves():
    problems = [p for path in python_files() for p in bad_imports(path)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_moved_module_and_a_missing_name():
    probe = REPO / "tests" / "_import_probe_tmp.py"
    try:
        probe.write_text("from recipe.care import cpu\nimport smoke.no_such_module\nfrom report.load import no_such_name\n")
        problems = bad_imports(probe)
    finally:
        probe.unlink()
    assert any("recipe.care has no cpu" in p for p in problems), problems
    assert any("no module smoke.no_such_module" in p for p in problems), problems
    assert any("report.load has no no_such_name" in p for p in problems), problems
