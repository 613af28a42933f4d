"""ViRL39K: gold answers are ``\\boxed{...}``; multiple choice, math, or words.

- Multiple choice (gold a single letter A-K): correct when the prediction names that letter,
  optionally in parentheses or followed by its option text (``B``, ``(B)``, ``B. 12``).
- Word answers: normalised string match, never symbolic (math-verify says ``stop == pots``).
- Otherwise math-verify equivalence (the reference of ViRL39K's authors; it accepts ``17`` for
  ``17^\\circ``), eval-free and time-bounded, see :mod:`verifiers.math_equal`.
"""

from __future__ import annotations

import re

from verifiers.format import boxed_contents, join_answers, last_boxed
from verifiers.math_equal import DEFAULT_ROUNDING_REL_TOL, math_equal
from verifiers.normalize import choice_letter, clean_math, looks_textual, normalize_text, unwrap_text

NAME = "virl39k"
_BOXES = re.compile(r"\\boxed\s*\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}")  # three brace levels suffice for golds
_AND_WORDS = re.compile(r"\band\b|\\q?quad", re.IGNORECASE)
_WORDS = re.compile(r"[A-Za-z]")


def gold_answer(ground_truth: str) -> str:
    """The gold inside ``\\boxed{}``. Several boxes separated only by punctuation or "and"
    (``\\boxed{1}, \\boxed{2}``) are one list ``1, 2``; boxes with other text between them are
    a worked solution, whose last box is the answer."""
    contents, _ = boxed_contents(ground_truth)
    if len(contents) > 1:
        between = _BOXES.sub(" ", ground_truth)
        if not _WORDS.search(_AND_WORDS.sub(" ", unwrap_text(between))):
            return join_answers(contents)
    content, _ = last_boxed(ground_truth)
    return ground_truth.strip() if content is None else content


def gold_choice(gold: str) -> str | None:
    """The letter of a multiple-choice gold (``B``, ``(B)``, ``\\text{B}``), else ``None``."""
    s = unwrap_text(gold).strip().strip("()").strip()
    return s if len(s) == 1 and "A" <= s <= "K" else None


def verify_answer(pred: str, ground_truth: str, extra_info=None, *, timeout_s: float | None = None,
                  rounding_tolerance: bool = True, rounding_rel_tol: float = DEFAULT_ROUNDING_REL_TOL,
                  decimal_comma: bool = True, **_) -> tuple[bool, str]:
    gold = gold_answer(ground_truth)
    letter = gold_choice(gold)
    if letter is not None:
        named = choice_letter(pred)
        if named is None:
            return False, "no_choice_letter"
        return named == letter, "choice" if named == letter else "choice_mismatch"
    if looks_textual(clean_math(gold)):  # cleaned: `S_{ABC}:S = 7:32` and `1 and 2` are math
        ok = normalize_text(gold) == normalize_text(pred)
        return ok, "text" if ok else "text_mismatch"
    return math_equal(gold, pred, timeout_s=timeout_s, rounding_tolerance=rounding_tolerance,
                      rounding_rel_tol=rounding_rel_tol, decimal_comma=decimal_comma)
