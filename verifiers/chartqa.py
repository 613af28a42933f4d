"""ChartQA: relaxed accuracy, the benchmark's own rule (as in lmms-eval), with training fixes.

Rule: when prediction and target both parse as numbers and the target is not 0, correct when
``|p - t| / |t| <= 5 %``; otherwise case-insensitive exact match after trimming. The label is a
list of accepted strings: any element counts. Written here rather than taken from lmms-eval
(not a dependency, and its ``relaxed_correctness`` fails the cases below).

Training fixes over the plain rule (documented quirks of it):
- ``$``, thousands separators, trailing periods and a trailing ``%`` are removed from both sides,
  so ``1,000`` matches ``1000`` and ``45%`` matches ``45``;
- a number followed by a unit word (``14 years``) is read as the number;
- scientific notation (``1e3``, ``5e-4``, ``1.5 \\times 10^{3}``) and percent words (``28 percent``)
  are numbers; a decimal comma (``2,74``) is read as in :func:`verifiers.normalize.parse_number`
  (switch ``decimal_comma``, prediction side only);
- **Decision** (switch ``strict_years``): when the target is a year (an integer 1800-2100) and the
  prediction an integer, they must be equal; the plain rule accepts 2015 for 2010 (0.25 % off).
"""

from __future__ import annotations

import re

from verifiers.normalize import clean_math, normalize_text, parse_number

NAME = "chartqa"
RELAXED_TOLERANCE = 0.05


def _as_number(s: str, decimal_comma: bool = False):
    if len(s) > 100:
        return None
    parsed = parse_number(clean_math(s), decimal_comma=decimal_comma)
    return None if parsed is None else parsed[0]


def _is_year(s: str) -> bool:
    s = s.strip().rstrip(".")
    return bool(re.fullmatch(r"\d{4}", s)) and 1800 <= int(s) <= 2100


def relaxed_match(pred: str, target: str, tolerance: float = RELAXED_TOLERANCE,
                  strict_years: bool = True, decimal_comma: bool = True) -> tuple[bool, str]:
    t = _as_number(target)
    p = _as_number(pred, decimal_comma=decimal_comma and t is not None)
    if p is not None and t is not None:
        if strict_years and _is_year(target) and p.denominator == 1:
            return p == t, "year"
        if t == 0:
            return p == 0, "numeric"
        return abs(p - t) / abs(t) <= tolerance, "relaxed_numeric"
    return normalize_text(pred) == normalize_text(target), "text"


def verify_answer(pred: str, ground_truth: list[str], extra_info=None, *, relaxed_tolerance: float = RELAXED_TOLERANCE,
                  strict_years: bool = True, decimal_comma: bool = True, **_) -> tuple[bool, str]:
    for target in ground_truth:
        ok, how = relaxed_match(pred, target, relaxed_tolerance, strict_years, decimal_comma)
        if ok:
            return True, how
    return False, "mismatch"
