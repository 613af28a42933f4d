"""String clean-up shared by the verifiers: numbers, units, LaTeX wrappers, choice letters, text.

All functions are regex passes over text already capped at ``MAX_ANSWER_CHARS`` by
:func:`verifiers.verify`; none of them evaluates anything.

Why hand-written rather than math-verify's own normalisation: math-verify reads decimal commas,
scientific notation (``1e3``) and plain ``<=`` only in its plain-expression path
(``ExprExtractionConfig``), which runs ``sympy.parse_expr``, i.e. Python ``eval``, on the text; its
LaTeX path parses ``1e3`` as ``1·e·3``. Its LaTeX path is used, in the bounded worker
(:mod:`verifiers.bounded`), for everything symbolic; these passes only bring an answer into the
spelling that path reads, and serve the exact, numeric and text comparisons that run in-process
before it (most answers never need a worker).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Plain numbers as the three datasets write them: 48, -3.5, .5, 1,000, 12,345.67. A thousands
# group never starts with 0 (``0,111`` is a decimal comma, see :func:`parse_number`).
_NUMBER = re.compile(r"[+-]?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_DECIMAL_COMMA_NUMBER = re.compile(r"[+-]?\d+,\d+")
# Scientific notation, after clean_math rewrote ``1e3`` / ``1.5 \cdot 10^{3}`` to ``1.5\times10^{3}``.
MAX_SCI_EXPONENT = 300  # beyond this a literal is not an answer anyone writes; keeps Fractions small
_SCI = re.compile(r"([+-]?(?:\d+(?:\.\d+)?|\.\d+))\\times10\^\{([+-]?\d{1,4})\}")
_SIMPLE_FRACTION = re.compile(r"([+-]?)\\frac\{(\d+)\}\{(\d+)\}|([+-]?\d+)\s*/\s*(\d+)")

_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textnormal|textrm|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathnormal|mbox|hbox|"
    r"operatorname)\s*\{([^{}]*)\}"
)
_MATH_DELIMS = re.compile(r"\\\$|\\\(|\\\)|\\\[|\\\]|\$")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\\left|\\right|~")
_DEGREES = re.compile(
    r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree|\s*\b(?:degrees?|deg)\b\.?", re.IGNORECASE
)
# Units seen in Geometry3K / ViRL39K / ChartQA answers, stripped only at the end and only after a
# digit. Letters that are also algebra symbols (m, s, h, g, in) count as units only after a space.
_LONG_UNITS = (
    r"units?|cm|mm|km|inch(?:es)?|ft|feet|foot|yards?|meters?|metres?|centimeters?|millimeters?|"
    r"kilometers?|miles?|kg|grams?|lbs?|pounds?|seconds?|minutes?|hours?|hrs|days?|weeks?|months?|"
    r"years?|people|persons?|dollars?|usd|euros?|points?|times"
)
_SHORT_UNITS = r"m|s|h|g|in|mi|min|sec|yd|hr"
_TRAILING_UNIT = re.compile(
    rf"(?:(?<=[\d}}])\s*|\s+)(?:(?:square|sq\.?|cubic)\s+)?(?:{_LONG_UNITS})\s*(?:\^\s*\{{?[23]\}}?|[²³])?\.?$"
    rf"|\s+(?:{_SHORT_UNITS})\s*(?:\^\s*\{{?[23]\}}?|[²³])?\.?$",
    re.IGNORECASE,
)
# Relation operators in every spelling -> one LaTeX spelling each, so that ``x <= 2``, ``x \\le 2`` and
# ``x ≤ 2`` compare equal and no later step splits ``<=`` or ``!=`` on its ``=``. ``=>`` (implies)
# and ``<>`` are left alone: neither is a relation in an answer.
_RELATION_SPELLINGS = [
    (re.compile(r"<=|=<|≤|⩽|\\leqslant(?![A-Za-z])|\\leq(?![A-Za-z])|\\le(?![A-Za-z])"), r" \\leq "),
    (re.compile(r">=|≥|⩾|\\geqslant(?![A-Za-z])|\\geq(?![A-Za-z])|\\ge(?![A-Za-z])"), r" \\geq "),
    (re.compile(r"!=|≠|\\neq(?![A-Za-z])|\\ne(?![A-Za-z])|\\not\s*="), r" \\neq "),
    (re.compile(r"\\lt(?![A-Za-z])"), " < "),
    (re.compile(r"\\gt(?![A-Za-z])"), " > "),
]
_RELATION = re.compile(r"\\leq|\\geq|\\neq|[<>=]")
_INEQUALITY = re.compile(r"\\leq|\\geq|\\neq|[<>]")
_INTERVAL = re.compile(r"\\in(?![A-Za-z])|\\cup|[\[(][^()\[\]]*,[^()\[\]]*[\])]")
# Digit-group separators that are not commas: ``16,\\!386``, ``14{,}916``, ``1\\,000``, ``1\\!000``.
_DIGIT_GROUP = re.compile(r"(?<=\d)\s*(?:,\s*\\!|\{\s*,\s*\}|\\,|\\!)\s*(?=\d{3}(?!\d))")
_PERCENT_WORD = re.compile(r"(?<=\d)\s*(?:percent(?:age)?|pct)\b\.?", re.IGNORECASE)
_SCI_E = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?|\.\d+)[eE]([+-]?\d{1,4})(?![\w.])")
_SCI_TIMES = re.compile(r"(\d)\s*(?:\\times|\\cdot|×|\*)\s*10\s*\^\s*\{?\s*([+-]?\d{1,4})\s*\}?")
# Matrix environments: bmatrix/Bmatrix/matrix/smallmatrix and \left[\begin{array}...\right] -> pmatrix.
# vmatrix (a determinant) is a different object and is left alone.
_MATRIX_BEGIN = re.compile(r"\\left\s*[\[(]\s*\\begin\{array\}\{[^{}]*\}|\\begin\{(?:b|B|small)?matrix\}")
_MATRIX_END = re.compile(r"\\end\{array\}\s*\\right\s*[\])]|\\end\{(?:b|B|small)?matrix\}")
# "1 and 2", "(5, 8) \\quad \\text{and} \\quad (8, 5)": several answers joined by words -> a list.
_AND = re.compile(r"\s*,?\s*(?:\\q?quad\s*)*\band\b\s*(?:\\q?quad\s*)*", re.IGNORECASE)
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]*\}(?:\{[A-Za-z|]*\})?")
# A right-hand side is a value (so ``x =`` may be dropped) when no variable letters remain once
# LaTeX commands such as \frac, \sqrt, \pi are removed.
_LETTER = re.compile(r"[A-Za-z]")

_CHOICE = re.compile(r"^\(?([A-K])\)?(?:$|[.:)]|\s)")
_CHOICE_LOWER = re.compile(r"^\(?([a-k])\)?$")
_CHOICE_WORD = re.compile(r"^(?:option|choice|answer)\s*:?\s*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]{3,}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_MATH_FUNCTION_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln exp sqrt frac pi inf "
    "infty max min mod gcd lcm".split()
)
_TEXT_ONLY_WORDS = frozenset({"yes", "no", "true", "false", "none"})


def unwrap_text(s: str) -> str:
    """``\\text{cm}`` -> ``cm`` (innermost wrappers first, bounded by the input length)."""
    for _ in range(4):
        new = _WRAPPERS.sub(r"\1", s)
        if new == s:
            break
        s = new
    return s


def canonical_relations(s: str) -> str:
    """``<=``, ``=<``, ``\\le``, ``≤`` -> ``\\leq``; likewise ``\\geq``, ``\\neq``; ``\\lt``/``\\gt`` -> ``<``/``>``."""
    for pattern, replacement in _RELATION_SPELLINGS:
        s = pattern.sub(replacement, s)
    return s


def inequality_signature(s: str) -> tuple[str, ...]:
    """The inequality and ``\\neq`` operators of a cleaned answer, direction-free and sorted.

    ``x < 2`` and ``2 > x`` both give ``("<",)``; ``1 < x \\leq 3`` gives ``("<", "\\leq")``. Two
    answers with different signatures are different relations (or a relation and a value), whatever
    a parser makes of them: this is the guard against ``x >= 2`` passing for ``x = 2``.
    """
    ops = {">": "<", "\\geq": "\\leq"}
    return tuple(sorted(ops.get(op, op) for op in _INEQUALITY.findall(s)))


def looks_like_interval(s: str) -> bool:
    """``(1, 3)``, ``[0, \\infty)``, ``x \\in (0,1)``, ``A \\cup B``: the set form of an inequality."""
    return _INTERVAL.search(s) is not None


def has_relation(s: str) -> bool:
    return _RELATION.search(s) is not None


def _is_value(rhs: str) -> bool:
    return not _LETTER.search(_LATEX_COMMAND.sub(" ", rhs))


def _orient_relation(s: str) -> str:
    """Write a relation the way round math-verify compares it: ``3 > x > 1`` as ``1 < x < 3`` (a chain
    of ``>``/``\\geq`` only), ``3 \\neq x`` as ``x \\neq 3`` (a number on the left only). math-verify
    matches ``2 \\geq x`` with ``x \\leq 2`` but not these two forms."""
    ops = _RELATION.findall(s)
    if len(ops) >= 2 and set(ops) <= {">", "\\geq"}:
        parts = _RELATION.split(s)
        flip = {">": "<", "\\geq": "\\leq"}
        return " ".join(p.strip() + (f" {flip[op]} " if op else "")
                        for p, op in zip(reversed(parts), [*reversed(ops), None])).strip()
    if ops == ["\\neq"]:
        lhs, rhs = (side.strip() for side in s.split("\\neq"))
        if parse_number(lhs) is not None and parse_number(rhs) is None:
            return f"{rhs} \\neq {lhs}"
    return s


def clean_math(s: str) -> str:
    """Remove what never changes a math answer's value: delimiters, spacing, degrees, units, ``x =``."""
    s = unwrap_text(s)
    s = _MATH_DELIMS.sub("", s)
    s = _DIGIT_GROUP.sub(lambda m: "," if "," in m.group() else "", s)
    s = _MATRIX_BEGIN.sub(r"\\begin{pmatrix}", s)
    s = _MATRIX_END.sub(r"\\end{pmatrix}", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac").replace("−", "-")
    s = canonical_relations(s)
    s = _PERCENT_WORD.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = _SCI_E.sub(r"\1\\times10^{\2}", s)
    s = _SCI_TIMES.sub(r"\1\\times10^{\2}", s)
    if " and " in f" {s.lower()} ":
        joined = _AND.sub(", ", s).strip(" ,")
        if not looks_textual(joined):  # "1 and 2" is a list; "black and white" stays text
            s = joined
    s = " ".join(s.split()).strip().rstrip(".").strip()
    s = " ".join(_orient_relation(s).split())
    # `x = 5`, `m\angle ABC = 48`, `AB \approx 3.46`: keep the value. Lists (`x=1, y=2`) stay, and so
    # do equations: a left side with a digit (`7 = 11a+c`), a right side with variables
    # (`y = 2x+1`, a line), or any other relation (`x \leq 2` never loses its `x \leq`).
    if "," not in s and not _INEQUALITY.search(s):
        for sep in ("\\approx", "="):
            if s.count(sep) == 1:
                lhs, rhs = s.split(sep)
                if rhs.strip() and not re.search(r"\d", lhs) and _is_value(rhs):
                    s = rhs.strip()
                break
    m = _TRAILING_UNIT.search(s)
    if m and re.search(r"\d", s[: m.start()]):
        s = s[: m.start()].strip()
    return s


def parse_number(s: str, decimal_comma: bool = False) -> tuple[Fraction, int | None] | None:
    """``(exact value, decimals)`` for a plain number or an integer fraction, else ``None``.

    ``decimals`` is the number of digits after the point of a decimal literal (it bounds how
    precisely the writer stated the value) and ``None`` for integers and fractions (exact). In
    scientific notation the mantissa states it: ``1.6e-19`` has 20, ``2.97 \\times 10^{3}`` has -1
    (stated to tens), so a rounding reads the same at every magnitude.

    **Decimal comma** (Decision, switch ``decimal_comma``): a comma is a thousands separator when
    the number is validly grouped (``1,000``, ``12,345.6``: a first group of 1-3 digits not
    starting with 0, then groups of exactly 3). Otherwise, and only with ``decimal_comma=True``, a
    single comma between digits is a decimal comma (``2,74``, ``1000,99``, ``0,111``). ``1,234``
    stays one thousand two hundred thirty-four. The callers pass ``decimal_comma`` for the
    prediction only, and only against a gold that is one number: a gold ``1,2`` is the list 1, 2.
    """
    s = s.strip()
    m = _SCI.fullmatch(s)
    if m:
        exponent = int(m.group(2))
        mantissa = parse_number(m.group(1))
        if mantissa is None or abs(exponent) > MAX_SCI_EXPONENT:
            return None
        value = mantissa[0] * Fraction(10) ** exponent
        return value, (mantissa[1] or 0) - exponent
    if decimal_comma and not _NUMBER.fullmatch(s) and _DECIMAL_COMMA_NUMBER.fullmatch(s):
        s = s.replace(",", ".")
    if _NUMBER.fullmatch(s):
        body = s.replace(",", "")
        try:
            value = Fraction(Decimal(body))
        except (InvalidOperation, ValueError):
            return None
        decimals = len(body.split(".", 1)[1]) if "." in body else None
        return value, decimals
    m = _SIMPLE_FRACTION.fullmatch(s)
    if m:
        if m.group(2) is not None:
            sign, num, den = m.group(1), int(m.group(2)), int(m.group(3))
            num = -num if sign == "-" else num
        else:
            num, den = int(m.group(4)), int(m.group(5))
        if den == 0:
            return None
        return Fraction(num, den), None
    return None


def choice_letter(s: str, letters: str = "ABCDEFGHIJK") -> str | None:
    """The option letter a prediction names: ``B``, ``(B)``, ``B)``, ``B.``, ``B. 12 cm``, ``(b)``."""
    s = _MATH_DELIMS.sub("", unwrap_text(s)).strip()
    s = _CHOICE_WORD.sub("", s)
    m = _CHOICE.match(s) or _CHOICE_LOWER.match(s)
    if m is None:
        return None
    letter = m.group(1).upper()
    return letter if letter in letters else None


def looks_textual(s: str) -> bool:
    """True for word answers (``stop``, ``Yes``, ``\\text{increasing}``), False for math.

    A word is a run of three or more letters that is not a LaTeX command or a function name;
    one- and two-letter runs are symbols (``x``, ``xy``, ``AB``), except yes/no-style words.
    """
    s = unwrap_text(s)
    if s.strip().lower().rstrip(".") in _TEXT_ONLY_WORDS:
        return True
    s = _ENVIRONMENT.sub(" ", s)  # \begin{pmatrix}: an environment name is not a word
    s = _LATEX_COMMAND.sub(" ", s)
    return any(w.lower() not in _MATH_FUNCTION_WORDS for w in _WORD.findall(s))


def normalize_text(s: str) -> str:
    """Case-folded, whitespace-collapsed, without wrappers, quotes and trailing punctuation."""
    s = _MATH_DELIMS.sub("", unwrap_text(s))
    s = " ".join(s.split()).casefold()
    return s.strip(" .;:!'\"`")
