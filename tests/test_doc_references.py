"""What code comments and docstrings cite exists in this repository, and they give reasons, not history.

- A ``<name>.md`` named in a comment or docstring is a file of the repository (by its path from the
  root, or by its file name), or a file the code itself writes (a ``.md`` string literal in code,
  e.g. ``results.md``). A clone has nothing else to read.
- "docs/algorithm.md section N" (or N.M, "sections 2, 3 and 5", "1-3") names a numbered heading of
  docs/algorithm.md; so does a bare "section N" in ``recipe/care``, whose modules cite that page.
- No comment or docstring points at an issue number or narrates what code replaced: the reason
  belongs there, the history belongs in git.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALGORITHM = REPO / "docs" / "algorithm.md"
# Where code cites documents: the packages, their tests, the launch script.
SCANNED_DIRS = ("recipe", "verifiers", "data_prep", "evaluation", "report", "smoke", "verl_cpu", "benchmarks",
                "scripts", "tests")
SCANNED_FILES = ("run_care.sh",)
SUFFIXES = (".py", ".yaml", ".yml", ".sh")

MD_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
SECTION = re.compile(r"\bsections?[ -](\d+(?:\.\d+)?(?:\s*(?:,|and|-|–)\s*\d+(?:\.\d+)?)*)", re.I)
ALGORITHM_CITE = re.compile(r"algorithm\.md,?\s+(?:its\s+)?" + SECTION.pattern[2:], re.I)
HEADING_NUMBER = re.compile(r"^#{2,3}\s+(\d+(?:\.\d+)?)\.?\s", re.M)
# Spelled with classes so that this file's own text does not match.
HISTORY = re.compile(r"\(\s*[i]ssue\s+#?\d+|\b[i]ssue\s+#?\d+\s*\)|\b[i]ssue\s+#\d+|[r]eplaces the former", re.I)


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--", *SCANNED_DIRS, *SCANNED_FILES], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    return [REPO / p for p in out if p.endswith(SUFFIXES) and (REPO / p).is_file()]


def python_prose(source: str) -> tuple[list[str], list[str]]:
    """(comments and docstrings, other string literals) of a Python file."""
    prose, literals = [], []
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
                prose.append(first.value.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            literals.append(node.value)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            prose.append(tok.string)
    return prose, literals


def hash_comments(text: str) -> list[str]:
    """The ``# ...`` comments of a yaml or shell file (a ``#`` after a blank or at the line start)."""
    return [m.group(1) for m in re.finditer(r"(?:^|\s)(#.*)$", text, re.M)]


@functools.lru_cache(maxsize=None)
def prose_of(path: Path) -> tuple[list[str], list[str]]:
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        return python_prose(text)
    return hash_comments(text), []


def section_numbers(spec: str) -> set[str]:
    """'2, 3 and 5' -> {2, 3, 5}; '1-3' -> {1, 2, 3}; '3.1-3.2' -> {3.1, 3.2}."""
    found = set()
    for part in re.split(r"\s*(?:,|and)\s*", spec.strip()):
        ends = [p.strip() for p in re.split(r"\s*[-–]\s*", part) if p.strip()]
        if len(ends) == 2 and all(e.isdigit() for e in ends):
            found |= {str(n) for n in range(int(ends[0]), int(ends[1]) + 1)}
        else:
            found |= set(ends)
    return found


def algorithm_headings() -> set[str]:
    return set(HEADING_NUMBER.findall(ALGORITHM.read_text()))


def repo_markdown() -> tuple[set[str], set[str]]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    present = {p for p in out if (REPO / p).is_file()}
    return present, {Path(p).name for p in present}


FILES = tracked_files()


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_scan_sees_the_recipe_and_its_citations():
    names = {_id(p) for p in FILES}
    assert "recipe/care/core_algos.py" in names and "recipe/care/config/care_trainer.yaml" in names
    prose, _ = prose_of(REPO / "recipe" / "care" / "core_algos.py")
    assert any("docs/algorithm.md" in text for text in prose)


def test_cited_markdown_files_exist():
    present, present_names = repo_markdown()
    written = set()  # .md files the code itself writes (results.md, index.md, ...)
    for path in FILES:
        for literal in prose_of(path)[1]:
            written |= {Path(m).name for m in MD_NAME.findall(literal)}
    missing = []
    for path in FILES:
        if path == Path(__file__).resolve():
            continue
        for text in prose_of(path)[0]:
            for name in MD_NAME.findall(text):
                if name in present or ("/" not in name and (name in present_names or name in written)):
                    continue
                if "/" in name and Path(name).name in written:  # e.g. DIR/results.md
                    continue
                missing.append(f"{_id(path)}: {name}")
    assert not missing, "documents cited in comments or docstrings but not in the repository:\n" + "\n".join(missing)


def test_cited_algorithm_sections_are_headings():
    headings = algorithm_headings()
    assert {"1", "2", "2.1", "3", "4", "4.6", "5", "8", "10"} <= headings, headings
    wrong = []
    for path in FILES:
        in_recipe = _id(path).startswith("recipe/care/")
        for text in prose_of(path)[0]:
            specs = ALGORITHM_CITE.findall(text) + (SECTION.findall(text) if in_recipe else [])
            for spec in specs:
                for number in section_numbers(spec) - headings:
                    wrong.append(f"{_id(path)}: section {number}")
    assert not wrong, "sections of docs/algorithm.md that do not exist:\n" + "\n".join(sorted(set(wrong)))


def test_no_issue_numbers_or_history_in_comments():
    found = []
    for path in FILES:
        if path == Path(__file__).resolve():
            continue
        for text in prose_of(path)[0]:
            for match in HISTORY.finditer(text):
                found.append(f"{_id(path)}: {match.group(0)!r}")
    assert not found, "comments and docstrings state reasons, not issue numbers or history:\n" + "\n".join(found)


@pytest.mark.parametrize("text, bad", [
    ("# see (issue 22)", True), ("# fixed in issue 7)", True), ("# tracked as issue #12", True),
    ('"""This replaces the former builder."""', True), ("# an issue with packed sequences", False),
])
def test_history_pattern(text, bad):
    assert bool(HISTORY.search(text)) is bad


def test_section_parsing():
    assert section_numbers("2, 3 and 5") == {"2", "3", "5"}
    assert section_numbers("1-3") == {"1", "2", "3"}
    assert section_numbers("3.1-3.2") == {"3.1", "3.2"}
    assert ALGORITHM_CITE.findall("(docs/algorithm.md sections 6-7)") == ["6-7"]
    assert ALGORITHM_CITE.findall("docs/algorithm.md section 4.2: the cue") == ["4.2"]


def test_python_prose_separates_docstrings_comments_and_literals():
    prose, literals = python_prose('"""Doc a.md."""\nX = "out.md"  # see b.md\n')
    assert prose == ["Doc a.md.", "# see b.md"] and literals == ["out.md"]
