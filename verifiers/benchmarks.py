"""The six evaluation benchmarks (rows from ``data_prep/build_bench.py``): one grading rule, six names.

``extra_info`` carries ``question_type`` (multi_choice | free_form), ``choices`` (option texts in
letter order), ``answers`` (every accepted answer), ``answer_type``, ``precision`` and ``unit``.

**Multiple choice** (the gold is the option letter): the prediction names a letter (``B``,
``(B)``, ``B.``, ``option B``), a letter followed by that option's own text (``B. 45°``), or is
exactly one option's text (normalised string match, or math equivalence for math options:
``\\frac{1}{2}`` picks the option ``0.5``). A letter followed by any other text (``B or C``,
``B. 60`` when 60 is option C, ``B because ...``) scores 0. Without a
``question_type`` (a bare call), a single capital-letter gold is read as multiple choice.

**Free form**: any accepted answer matches (MMMU's open questions list several). MathVista's
``float`` answers with a ``precision`` are compared after rounding the prediction to that many
decimals (the benchmark's own rule: ``1.54`` counts for ``1.5`` at precision 1); a stated ``unit``
after the prediction is ignored. Word answers: normalised string match, never symbolic. Everything
else: :func:`verifiers.math_equal.math_equal` (eval-free, time-bounded, the relation rules).

Stricter than the benchmarks' own scripts on purpose: MMMU's open-question rule accepts a gold that
appears anywhere in the response as a substring (``2`` inside ``12``), and lmms-eval's option parser
picks a letter out of free text; a reward that RL can exploit must not.
"""

from __future__ import annotations

import re

from verifiers.math_equal import DEFAULT_ROUNDING_REL_TOL, math_equal
from verifiers.normalize import choice_letter, clean_math, looks_textual, normalize_text, parse_number, unwrap_text

BENCHMARK_NAMES = ("mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_standard", "mmmu_pro_vision")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MULTI_CHOICE, FREE_FORM = "multi_choice", "free_form"
MAX_PRECISION = 10
_CHOICE_WORD = re.compile(r"^(?:option|choice|answer)\s*:?\s*", re.IGNORECASE)
_LETTER_PREFIX = re.compile(r"^\(?\s*[A-Za-z]\s*\)?\s*[.:)]?")
_BARE_LETTER = re.compile(r"\(?\s*([A-Za-z])\s*\)?\.?")  # B, (B), B., (b)


def _field(extra_info, key, default=None):
    if not isinstance(extra_info, dict):
        return default
    value = extra_info.get(key, default)
    return default if value is None else value


def _strings(value) -> list[str]:
    """A list column from verl's extra_info (a list, a tuple or a numpy array) as strings."""
    if value is None or isinstance(value, (str, bytes)):
        return []
    try:
        return [str(v) for v in list(value) if v is not None]
    except TypeError:
        return []


def _is_letter_gold(gold: str) -> bool:
    return len(gold.strip()) == 1 and gold.strip() in LETTERS


def option_by_text(pred: str, choices: list[str], **math_kwargs) -> tuple[str | None, str]:
    """The letter of the one option whose text the prediction is; (None, why) if none or several."""
    norm = normalize_text(pred)
    hits = [i for i, c in enumerate(choices) if normalize_text(c) == norm and norm]
    if not hits and not looks_textual(clean_math(pred)):
        hits = [i for i, c in enumerate(choices)
                if not looks_textual(clean_math(c)) and math_equal(c, pred, **math_kwargs)[0]]
    if len(hits) == 1:
        return LETTERS[hits[0]], "option_text"
    return None, "ambiguous_option_text" if hits else "no_choice_letter"


def grade_choice(pred: str, gold_letter: str, choices: list[str], **math_kwargs) -> tuple[bool, str]:
    letters = LETTERS[: len(choices)] if choices else LETTERS
    stripped = unwrap_text(pred).strip()
    bare = _BARE_LETTER.fullmatch(stripped)
    if bare is not None:
        named = bare.group(1).upper() if bare.group(1).upper() in letters else None
    elif choices and normalize_text(pred) in [normalize_text(c) for c in choices]:
        # The prediction is an option's text ("A cat" must not read as the letter A).
        named, reason = option_by_text(pred, choices, **math_kwargs)
        if named is None:
            return False, reason
        return named == gold_letter, "option_text" if named == gold_letter else "choice_mismatch"
    else:
        named = choice_letter(pred, letters)
    if named is not None and bare is None:
        # "B. text": the text must be option B's own ("B. 60" where 60 is option C, "B or C", "B because
        # ..." score 0); without the options (MathVerse Vision Only) only a bare letter counts.
        rest = _LETTER_PREFIX.sub("", _CHOICE_WORD.sub("", stripped), count=1).strip()
        if rest:
            by_text, _ = option_by_text(rest, choices, **math_kwargs) if choices else (None, "")
            if by_text != named:
                return False, "choice_conflict"
    if named is None and choices:
        named, reason = option_by_text(pred, choices, **math_kwargs)
        if named is None:
            return False, reason
        return named == gold_letter, reason if named == gold_letter else "choice_mismatch"
    if named is None:
        return False, "no_choice_letter"
    return named == gold_letter, "choice" if named == gold_letter else "choice_mismatch"


def _strip_unit(pred: str, unit: str) -> str:
    unit = unit.strip()
    if unit and pred.rstrip().endswith(unit) and pred.rstrip() != unit:
        return pred.rstrip()[: -len(unit)].rstrip()
    return pred


def _precision_match(gold: str, pred: str, precision: int, decimal_comma: bool) -> bool | None:
    """MathVista's float rule; None when either side is not a plain number (fall through)."""
    g, p = parse_number(clean_math(gold)), parse_number(clean_math(pred), decimal_comma=decimal_comma)
    if g is None or p is None:
        return None
    digits = max(0, min(int(precision), MAX_PRECISION))
    return round(float(p[0]), digits) == round(float(g[0]), digits)


def grade_free_form(pred: str, gold: str, answer_type: str = "", precision=None, unit: str = "", *,
                    decimal_comma: bool = True, **math_kwargs) -> tuple[bool, str]:
    pred = _strip_unit(pred, unit)
    if answer_type == "float" and precision is not None:
        ok = _precision_match(gold, pred, precision, decimal_comma)
        if ok is not None:
            return ok, "precision" if ok else "precision_mismatch"
    if looks_textual(clean_math(gold)):
        ok = normalize_text(gold) == normalize_text(pred)
        return ok, "text" if ok else "text_mismatch"
    return math_equal(gold, pred, decimal_comma=decimal_comma, **math_kwargs)


class BenchmarkVerifier:
    """What :data:`verifiers.VERIFIERS` holds for each benchmark: a ``NAME`` and ``verify_answer``."""

    def __init__(self, name: str):
        self.NAME = name

    def __repr__(self) -> str:
        return f"BenchmarkVerifier({self.NAME!r})"

    def verify_answer(self, pred: str, ground_truth: str, extra_info=None, *, timeout_s: float | None = None,
                      rounding_tolerance: bool = True, rounding_rel_tol: float = DEFAULT_ROUNDING_REL_TOL,
                      decimal_comma: bool = True, **_) -> tuple[bool, str]:
        math_kwargs = dict(timeout_s=timeout_s, rounding_tolerance=rounding_tolerance,
                           rounding_rel_tol=rounding_rel_tol)
        gold = str(ground_truth).strip()
        question_type = str(_field(extra_info, "question_type", ""))
        choices = _strings(_field(extra_info, "choices"))
        if question_type == MULTI_CHOICE or (not question_type and _is_letter_gold(gold)):
            if not _is_letter_gold(gold):
                return False, "gold_not_a_letter"
            return grade_choice(pred, gold.upper(), choices, decimal_comma=decimal_comma, **math_kwargs)
        golds = _strings(_field(extra_info, "answers")) or [gold]
        precision = _field(extra_info, "precision")
        answer_type, unit = str(_field(extra_info, "answer_type", "")), str(_field(extra_info, "unit", ""))
        reason = "no_match"
        for candidate in golds:
            ok, reason = grade_free_form(pred, candidate, answer_type, precision, unit, decimal_comma=decimal_comma,
                                         **math_kwargs)
            if ok:
                return True, reason
        return False, reason


VERIFIERS = tuple(BenchmarkVerifier(name) for name in BENCHMARK_NAMES)
