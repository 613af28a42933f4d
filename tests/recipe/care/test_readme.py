"""recipe/care/README.md documents the folder: its Files table names every file of the recipe, and only those.

A file added to (or removed from) ``recipe/care/`` without a row saying why it is there fails here,
so the table stays the folder's index for whoever copies the recipe into a verl fork.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipe" / "care"
README = RECIPE / "README.md"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.M)


def recipe_files() -> set[str]:
    """Tracked and new (not ignored) files under recipe/care, relative to it."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "recipe/care"],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    return {str(Path(p).relative_to("recipe/care")) for p in out if (REPO / p).is_file()}


def table_files(text: str) -> list[str]:
    section = text.split("\n## Files", 1)[1]
    return ROW.findall(section)


def test_every_recipe_file_has_a_row():
    missing = sorted(recipe_files() - set(table_files(README.read_text())))
    assert not missing, f"recipe/care/README.md's Files table has no row for {missing}"


def test_every_row_names_a_recipe_file_once():
    rows = table_files(README.read_text())
    assert len(rows) == len(set(rows)), "a file has two rows"
    stale = sorted(set(rows) - recipe_files())
    assert not stale, f"rows for files that are not in recipe/care: {stale}"


def test_readme_says_what_to_copy_install_and_run():
    text = README.read_text()
    for needed in ("recipe/care/", "verifiers/", "pip install -r recipe/care/requirements.txt",
                   "python -m recipe.care.main_care --dry-run", "VERL_USE_EXTERNAL_MODULES"):
        assert needed in text, needed


def test_table_rows_are_read_from_the_files_section_only():
    text = "# x\n| `not.py` | above |\n## Files\n| file | why |\n| --- | --- |\n| `a.py` | a |\n| `config/b.yaml` | b |\n"
    assert table_files(text) == ["a.py", "config/b.yaml"]
