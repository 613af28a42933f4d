"""Equivalence of a predicted math answer and a gold value (Geometry3K, ViRL39K).

Order, cheapest first: normalised string equality (mathruler's MATH normaliser, string-only),
plain numbers compared in Python by the numeric rule below, then math-verify's symbolic comparison
in the bounded worker pool (:mod:`verifiers.bounded`). Word answers never reach the symbolic step: math-verify
parses ``stop`` and ``pots`` as the same product of symbols.

**Numeric equality**, the one rule (:func:`numbers_match`; every math path of Geometry3K, ViRL39K and
the benchmarks' free-form answers goes through it; ChartQA keeps its own 5 % relaxed rule and
MathVista's ``precision`` field its own rounding, both the benchmarks' rules):

1. *Same value.* Exact values (integers, decimals, fractions and scientific notation read by
   :func:`verifiers.normalize.parse_number` are exact rationals) are equal only when equal exactly.
   A value that was computed (sympy's 30-digit evaluation of an expression, returned as a float)
   may differ from the gold by ``REL_TOL`` = 1e-9 of the gold's magnitude, for evaluation noise
   (a float carries ~1e-16 relative error). No absolute floor: a gold of 0 needs exactly 0, and
   ``0`` is not ``1.6 \\times 10^{-19}``, ``1e-20`` is not ``2e-20``.
2. *Rounding* (below): a stated decimal may round the exact value, again within 1 % of the gold.

Both parts scale with the gold, so the rule reads the same from 1e-30 to 1e30 and for either sign.
math-verify compares floats by rounding both sides to 6 decimals (``float_rounding=6``): an absolute
tolerance that makes every |gold| < 5e-7 equal to 0, and for exact expressions it falls back to
``(a - b).evalf(chop=True) == 0``, which chops below ~1e-14 absolute. So whenever both answers
have a single real value, this rule decides from the two values the worker evaluates: a pair with
a float in it by the rule alone, an exact pair by math-verify's exact verdict *and* the values
agreeing (floats cannot tell ``2^{60}+1`` from ``2^{60}``). math-verify alone decides only what
has no single value (variables, tuples, sets, matrices, relations), where its absolute float
rounding still applies to numeric entries.

**Rounding tolerance** (Decision, switch ``rounding_tolerance``): a decimal literal counts as
a correct rounding of an exact value. When one side is a decimal with ``d`` digits after the
point, the answers match if they differ by at most half a unit in the ``d``-th place (the coarser
side decides) and by at most ``rounding_rel_tol`` (1 %) relative to the gold value. Scientific
notation states its last digit's place too (``2.97e3``: tens; ``1.6e-19``: 1e-20). So ``3.46``
matches ``2\\sqrt{3}`` (3.4641...), ``17.3`` matches ``10\\sqrt{3}``, ``0.33`` matches ``1/3``, but
``3.5`` does not match ``2\\sqrt{3}`` (1.04 % off), ``3`` does not (integers are exact) and ``48.3``
does not match ``48``. Plain math-verify compares at a fixed 6 decimals and rejects all of them.

**Relations** are never reduced to a side: ``<=``, ``\\le``, ``≤`` (and the ``>=``, ``!=`` families)
are first rewritten to one spelling, then two answers whose inequality operators differ (a value
against ``x >= 2``, ``x != 3`` against ``3``, ``<`` against ``\\leq``) are unequal before any
parser runs; the remaining relations (``x \\leq 2`` vs ``2 \\geq x``, ``2x+4y-3=0`` vs
``y=-\\frac12x+\\frac34``, equal up to a nonzero factor) are compared by math-verify. mathruler's
string normaliser is skipped for anything with a relation: it drops a left side of at most two
characters, which turned ``x <= 2`` into ``2`` and ``7 = 11a+c`` into ``11a+c``.

**Decimal comma** (switch ``decimal_comma``): see :func:`verifiers.normalize.parse_number`.
"""

from __future__ import annotations

import math
from fractions import Fraction

from mathruler.math_normalize import normalize_answer

from verifiers.bounded import MAX_EXPR_CHARS, prescreen, symbolic_compare
from verifiers.normalize import (clean_math, has_relation, inequality_signature, looks_like_interval, looks_textual,
                                 normalize_text, parse_number)

# The gold (data, not model output) is refused by the prescreen or by the parser: the sample cannot be
# graded, which is not a wrong answer (an unparseable *prediction* is ``unparseable``).
GOLD_UNPARSEABLE = "gold_unparseable"

DEFAULT_ROUNDING_REL_TOL = 0.01
# Evaluation noise allowed between a computed value and the gold, relative to the gold. sympy
# evaluates to 30 digits and the float it returns is correctly rounded (~1e-16 relative), so 1e-9
# only absorbs noise; it is far below any rounding a writer states (a 1 % bound, see above).
REL_TOL = 1e-9


def same_number(gold: float | Fraction, pred: float | Fraction) -> bool:
    """Part 1 of the rule: exact values exactly; a computed (float) value within ``REL_TOL`` of the gold."""
    if isinstance(gold, Fraction) and isinstance(pred, Fraction):
        return gold == pred
    g, p = float(gold), float(pred)
    return abs(p - g) <= REL_TOL * abs(g)  # gold 0: only p == 0 passes


def numbers_match(gold: float | Fraction, gold_decimals: int | None, pred: float | Fraction,
                  pred_decimals: int | None, rounding_tolerance: bool = True,
                  rounding_rel_tol: float = DEFAULT_ROUNDING_REL_TOL) -> bool:
    """The numeric rule of the module docstring: the same value, or a correct rounding of it."""
    if same_number(gold, pred):
        return True
    if not rounding_tolerance:
        return False
    diff = abs(Fraction(pred) - Fraction(gold)) if isinstance(gold, Fraction) and isinstance(pred, Fraction) \
        else abs(float(pred) - float(gold))
    stated = [d for d in (gold_decimals, pred_decimals) if d is not None]
    if not stated:
        return False
    half_unit = 0.5 * 10.0 ** (-min(stated))
    diff = float(diff)
    return diff <= half_unit * (1 + 1e-9) and diff <= rounding_rel_tol * abs(float(gold))


def _safe_normalize(s: str) -> str | None:
    # mathruler's normaliser is string-only (no eval) but not written for adversarial input.
    try:
        return normalize_answer(s)
    except Exception:
        return None


def math_equal(gold: str, pred: str, *, timeout_s: float | None = None, rounding_tolerance: bool = True,
               rounding_rel_tol: float = DEFAULT_ROUNDING_REL_TOL, decimal_comma: bool = True) -> tuple[bool, str]:
    """``(correct, reason)`` for one gold value and one extracted prediction. Never raises."""
    if len(pred) > MAX_EXPR_CHARS:
        return False, "answer_too_long"
    g, p = clean_math(gold), clean_math(pred)
    if not p:
        return False, "empty_answer"
    if g == p:
        return True, "exact"

    gn = parse_number(g)
    pn = parse_number(p, decimal_comma=decimal_comma and gn is not None)
    if gn is not None and pn is not None:
        ok = numbers_match(gn[0], gn[1], pn[0], pn[1], rounding_tolerance, rounding_rel_tol)
        return ok, "numeric" if ok else "numeric_mismatch"

    if looks_textual(g) or looks_textual(p):
        # Word answers: string equality only, never symbolic (stop != pots).
        ok = normalize_text(g) == normalize_text(p)
        return ok, "text" if ok else ("text_mismatch" if looks_textual(g) else "text_answer_for_math_gold")

    g_sig, p_sig = inequality_signature(g), inequality_signature(p)
    if g_sig != p_sig:
        # The one exception: a chained inequality against its interval (``0 < y < 1`` vs ``(0, 1)``),
        # which math-verify compares as sets (and still tells ``x < 2`` from ``(2, \infty)``).
        as_set = (p if not p_sig else g if not g_sig else None)
        if as_set is None or not looks_like_interval(as_set) or "\\neq" in g_sig + p_sig:
            return False, "relation_mismatch"
    if not (has_relation(g) or has_relation(p)):
        ng, np_ = _safe_normalize(g), _safe_normalize(p)
        if ng is not None and ng == np_:
            return True, "normalized"

    if prescreen(g) is not None:  # the gold itself must not reach the parser: a data error, not a wrong answer
        return False, GOLD_UNPARSEABLE
    reason = prescreen(p)
    if reason is not None:
        return False, reason

    reply = symbolic_compare(g, p, timeout_s)
    if "error" in reply:
        return False, reply["error"]
    if not reply["parsed"]:
        return False, "unparseable" if reply.get("gold_parsed", True) else GOLD_UNPARSEABLE
    gv, pv = reply["gold_value"], reply["pred_value"]
    if gv is not None and pv is not None and math.isfinite(gv) and math.isfinite(pv):
        if not reply.get("inexact"):
            # Exact pair: math-verify's exact verdict (2^{60}+1 is not 2^{60}, which floats cannot
            # tell) and the values (its numeric fallback chops below ~1e-14 absolute, so it calls
            # sqrt(2)e-20 and sqrt(3)e-20 equal).
            ok = bool(reply["equal"]) and same_number(gv, pv)
            return ok, "symbolic" if ok else "mismatch"
        # A float on either side: the numeric rule decides, not math-verify's 6-decimal rounding.
        g_dec = gn[1] if gn is not None else None
        p_dec = pn[1] if pn is not None else None
        if same_number(gv, pv):
            return True, "symbolic"
        if numbers_match(gv, g_dec, pv, p_dec, rounding_tolerance, rounding_rel_tol):
            return True, "rounded"
        return False, "numeric_mismatch"
    if reply["equal"]:
        return True, "symbolic"
    return False, "mismatch"
