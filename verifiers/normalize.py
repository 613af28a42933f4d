"""String clean-up shared by the verifiers: numbers, units, LaTeX wrappers, choice letters, text.

All functions are regex passes over text already capped at ``MAX_ANSWER_CHARS`` by
:func:`verifiers.verify`; none of them evaluates anything.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Plain numbers as the three datasets write them: 48, -3.5, .5, 1,000, 12,345.67
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_SIMPLE_FRACTION = re.compile(r"([+-]?)\\frac\{(\d+)\}\{(\d+)\}|([+-]?\d+)\s*/\s*(\d+)")

_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
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


def clean_math(s: str) -> str:
    """Remove what never changes a math answer's value: delimiters, spacing, degrees, units, ``x =``."""
    s = unwrap_text(s)
    s = _MATH_DELIMS.sub("", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-")
    s = s.replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = s.strip().rstrip(".").strip()
    # `x = 5`, `m\angle ABC = 48`, `AB \approx 3.46`: keep the value. Lists (`x=1, y=2`) stay.
    if "," not in s:
        for sep in ("\\approx", "="):
            if s.count(sep) == 1:
                lhs, rhs = s.split(sep)
                if rhs.strip() and not re.search(r"\d", lhs):
                    s = rhs.strip()
                break
    m = _TRAILING_UNIT.search(s)
    if m and re.search(r"\d", s[: m.start()]):
        s = s[: m.start()].strip()
    return s


def parse_number(s: str) -> tuple[Fraction, int | None] | None:
    """``(exact value, decimals)`` for a plain number or an integer fraction, else ``None``.

    ``decimals`` is the number of digits after the point of a decimal literal (it bounds how
    precisely the writer stated the value) and ``None`` for integers and fractions (exact).
    """
    s = s.strip()
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
    s = _LATEX_COMMAND.sub(" ", s)
    return any(w.lower() not in _MATH_FUNCTION_WORDS for w in _WORD.findall(s))


def normalize_text(s: str) -> str:
    """Case-folded, whitespace-collapsed, without wrappers, quotes and trailing punctuation."""
    s = _MATH_DELIMS.sub("", unwrap_text(s))
    s = " ".join(s.split()).casefold()
    return s.strip(" .;:!'\"`")
