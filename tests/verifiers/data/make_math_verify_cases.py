"""Regenerate ``math_verify_cases.jsonl`` from a checkout of huggingface/Math-Verify (data only).

    python tests/verifiers/data/make_math_verify_cases.py /path/to/Math-Verify [commit]

Reads the ``@pytest.mark.parametrize`` tables of Math-Verify's tests with ``ast`` (no import of
their code) and writes one JSON line per (gold, prediction, expected) case, with the source file,
the line of the case, the test function and the options that test passes to math-verify
(``match_types``, ``precision``, ``strict``, ``allow_set_relation_comp``). Values that are not
literals (one f-string computing ``sqrt(17)``) are evaluated with only ``math`` in scope.

Files without gold/prediction pairs are skipped (see ``SKIPPED_FILES``).
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

PAIR_FILES = ["tests/test_all.py", "tests/test_boxed.py", "tests/test_strict.py", "tests/test_yujianll.py",
              "tests/test_numina_cases.py", "tests/test_open_thoughts.py"]
SKIPPED_FILES = {
    "tests/test_configs.py": "parser configuration (boxed priority, NormalizationConfig), no gold/prediction pairs",
    "tests/test_string_extraction.py": "StringExtractionConfig letter extraction from prose, no gold to compare",
    "tests/test_raise_on_error.py": "exception propagation of math_verify.verify, no pairs",
    "tests/test_timeout.py": "math-verify's signal timeouts (we bound time with worker processes instead)",
}
OUT = Path(__file__).with_name("math_verify_cases.jsonl")


def _value(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return eval(compile(ast.Expression(node), "<case>", "eval"), {"math": math})  # noqa: S307 (their literal)


def _call_options(func: ast.FunctionDef) -> dict:
    """Keyword arguments of the compare call in the test body (match_types, precision...)."""
    options = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("compare_strings", "verify"):
            for kw in node.keywords:
                try:
                    options[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    options[kw.arg] = f"<param:{ast.unparse(kw.value)}>"
            if getattr(node.func, "id", None) == "verify":
                options.setdefault("match_types", "<parse defaults>")
    return options


def cases(root: Path):
    """Every case with an ``id``: ``file:line``, plus ``.k`` for the k-th of several on one line."""
    rows = list(_cases(root))
    per_line = {}
    for row in rows:
        per_line.setdefault((row["file"], row["line"]), []).append(row)
    for (file, line), group in per_line.items():
        for k, row in enumerate(group, 1):
            row["id"] = f"{file}:{line}" + (f".{k}" if len(group) > 1 else "")
    return [{"id": r.pop("id"), **r} for r in rows]


def _cases(root: Path):
    for rel in PAIR_FILES:
        tree = ast.parse((root / rel).read_text())
        for func in tree.body:
            if not isinstance(func, ast.FunctionDef):
                continue
            for dec in func.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize")):
                    continue
                names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
                options = _call_options(func)
                for element in dec.args[1].elts:
                    row = dict(zip(names, (_value(e) for e in element.elts)))
                    expected = row.pop("expected", row.pop("result", None))
                    case_options = {}
                    for key, val in options.items():
                        if isinstance(val, str) and val.startswith("<param:"):
                            val = row.get(val[7:-1], val)
                        case_options[key] = val
                    for key in ("precision", "strict", "allow_set_relation_comp"):
                        if key in row:
                            case_options[key] = row.pop(key)
                    yield {"file": rel, "line": element.lineno, "test": func.name, "gold": row["gold"],
                           "pred": row["pred"], "expected": int(expected), "options": case_options}


def main() -> None:
    root = Path(sys.argv[1])
    commit = sys.argv[2] if len(sys.argv) > 2 else subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = cases(root)
    with OUT.open("w") as f:
        f.write(json.dumps({"source": "https://github.com/huggingface/Math-Verify", "commit": commit,
                            "license": "MIT (Copyright (c) 2024 The HuggingFace Team)",
                            "skipped_files": SKIPPED_FILES}) + "\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} cases -> {OUT}")


if __name__ == "__main__":
    main()
