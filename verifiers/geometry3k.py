"""Geometry3K: the gold is a value (``48``, ``2\\sqrt{3}``, ``\\frac{40}{3}``), not a letter.

Symbolic equivalence as mathruler's ``grade_answer`` (the ecosystem's reference) means it: units and
degrees stripped, ``\\frac`` / ``\\sqrt`` handled. We do not call ``grade_answer`` itself because it
runs ``sympy.parse_expr`` (Python ``eval``) on the prediction; :func:`verifiers.math_equal.math_equal`
uses mathruler's string normaliser plus math-verify's grammar parser in a bounded worker, and adds
the documented rounding tolerance, which closes the known gaps ``17°`` vs ``17`` and ``3.46`` vs
``2\\sqrt3``.

A letter prediction (``B``, ``(B)``) is mapped through ``extra_info["choices"]`` when the row
carries the choices (newer revisions of the dataset); a letter gold likewise.
"""

from __future__ import annotations

from verifiers.math_equal import DEFAULT_ROUNDING_REL_TOL, math_equal
from verifiers.normalize import choice_letter

NAME = "geometry3k"
_LETTERS = "ABCDEFGH"


def _choices(extra_info) -> list[str] | None:
    choices = extra_info.get("choices") if isinstance(extra_info, dict) else None
    if choices is None or isinstance(choices, str):
        return None
    try:
        choices = [str(c) for c in list(choices)]
    except TypeError:
        return None
    return choices or None


def verify_answer(pred: str, ground_truth: str, extra_info=None, *, timeout_s: float | None = None,
                  rounding_tolerance: bool = True, rounding_rel_tol: float = DEFAULT_ROUNDING_REL_TOL,
                  decimal_comma: bool = True, **_) -> tuple[bool, str]:
    gold = ground_truth
    choices = _choices(extra_info)
    if choices is not None:
        letters = _LETTERS[: len(choices)]
        gold_letter = choice_letter(gold, letters) if len(gold.strip()) <= 3 else None
        if gold_letter is not None:
            gold = choices[letters.index(gold_letter)]
        pred_letter = choice_letter(pred, letters)
        if pred_letter is not None:
            pred = choices[letters.index(pred_letter)]
    return math_equal(gold, pred, timeout_s=timeout_s, rounding_tolerance=rounding_tolerance,
                      rounding_rel_tol=rounding_rel_tol, decimal_comma=decimal_comma)
