"""Every relative link in the repository's documents resolves inside the repository.

A clone has only this repository: a link to ``../`` (a folder beside the checkout) or to a missing
file is broken for every reader. A link that starts with ``/`` is read from the repository root, as
GitHub reads it (so ``docs/*.md`` can link code without ``../``). In-page anchors (``#section``)
must name a heading of the target file, spelled as GitHub spells heading ids.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target), not inside code spans or fenced blocks (stripped first).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def documents() -> list[Path]:
    found = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "recipe").rglob("README.md"))]
    return [path for path in found if path.is_file()]


def prose(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def heading_ids(path: Path) -> set[str]:
    """GitHub's ids: lower case, punctuation but '-' and '_' dropped, each space a '-'; repeats get -1, -2."""
    ids, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def resolve(doc: Path, file_part: str) -> Path:
    """The file a link names: ``/x`` from the repository root, ``x`` from the document's folder."""
    if not file_part:
        return doc
    base = REPO if file_part.startswith("/") else doc.parent
    return (base / file_part.lstrip("/")).resolve()


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None  # https:, mailto:, ...


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_to_files_in_the_repository(doc):
    broken = []
    for target in links(doc):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = resolve(doc, file_part)
        if REPO not in resolved.parents and resolved != REPO:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_ids(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_document_points_outside_the_repository(doc):
    """Not even in code spans or as plain text: ``../shared/docs/...`` is not in a clone."""
    outside = sorted(set(re.findall(r"(?<![\w.])\.\./[\w./-]+", doc.read_text())))
    assert not outside, f"{doc.relative_to(REPO)} names paths outside the repository: {outside}"


def test_the_link_pattern_finds_links_and_skips_code():
    sample = "See [a](docs/a.md#x) and ![img](docs/b.png \"t\").\n`[c](no.md)`\n```\n[d](no2.md)\n```\n"
    assert LINK.findall(prose(sample)) == ["docs/a.md#x", "docs/b.png"]


def test_heading_ids_as_github_spells_them(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# care-verl\n### Seeing a run: `python -m report`\n## Notes\n## Notes\n"
                   "```\n# not a heading\n```\n")
    assert heading_ids(doc) == {"care-verl", "seeing-a-run-python--m-report", "notes", "notes-1"}


def test_root_links_resolve_from_the_repository_root():
    doc = REPO / "docs" / "algorithm.md"
    assert resolve(doc, "/recipe/care/core_algos.py") == REPO / "recipe" / "care" / "core_algos.py"
    assert resolve(doc, "evaluation.md") == REPO / "docs" / "evaluation.md"
    assert resolve(doc, "") == doc
