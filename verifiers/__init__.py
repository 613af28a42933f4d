"""Answer verifiers for the CARE training mix (ChartQA, Geometry3K, ViRL39K), the six evaluation
benchmarks (:mod:`verifiers.benchmarks`: MathVista, MathVerse, MATH-Vision, MMMU, MMMU-Pro standard
and vision, as ``data_prep/build_bench.py`` names them) plus the format check.

    from verifiers import verify
    result = verify("geometry3k", response, "2\\sqrt{3}")
    # {"score": 0.9..1.0, "acc": 0|1, "format": 0|1, "pred": "...", "verifier": "geometry3k", "reason": "..."}

``response`` is the full model output (think and answer). ``acc`` is exactly 0 or 1 and is what
CARE gates on; ``score = (1 - w) * acc + w * format``. Every result has the same keys (verl builds
its per-key arrays from the first sample's keys). Model output never raises: malformed, huge or
pathological answers give ``acc = 0`` and say why in ``reason``. Configuration errors do raise: an
unknown ``data_source`` (:class:`UnknownDataSourceError`), a missing ground truth, a bad weight.
No verl import here.
"""

from __future__ import annotations

import logging
import re
from types import ModuleType

from verifiers import benchmarks, chartqa, geometry3k, virl39k
from verifiers.bounded import has_control_chars
from verifiers.format import check_format, extract_answer, find_tags
from verifiers.math_equal import GOLD_UNPARSEABLE

logger = logging.getLogger(__name__)

DEFAULT_FORMAT_WEIGHT = 0.1
MAX_ANSWER_CHARS = 1000  # an extracted answer longer than this is not graded (reason answer_too_long)
MAX_LOGGED_PRED_CHARS = 200  # what goes into reward_extra_info / logs

VERIFIERS: dict[str, ModuleType] = {m.NAME: m for m in (chartqa, geometry3k, virl39k, *benchmarks.VERIFIERS)}
# Hub ids and other spellings -> canonical name (what data_prep/build_mix.py writes).
ALIASES: dict[str, str] = {
    "huggingfacem4/chartqa": "chartqa",
    "hiyouga/geometry3k": "geometry3k",
    "tiger-lab/virl39k": "virl39k",
    "ai4math/mathvista": "mathvista",
    "carej/mathverse-lmmseval": "mathverse",
    "mathllms/mathvision": "mathvision",
    "lmms-lab/mmmu": "mmmu",
}
RESULT_KEYS = ("score", "acc", "format", "pred", "verifier", "reason")
INTERNAL_ERROR = "internal_error"  # reason prefix: the verifier itself raised (``internal_error:<Exc>``)


class UnknownDataSourceError(ValueError):
    pass


def known_sources() -> list[str]:
    return sorted(VERIFIERS) + sorted(ALIASES)


def resolve_source(data_source) -> str:
    """Canonical verifier name for a ``data_source`` value (case-insensitive); raises if unknown."""
    key = str(data_source).strip().lower()
    name = ALIASES.get(key, key)
    if name not in VERIFIERS:
        raise UnknownDataSourceError(
            f"no verifier for data_source={data_source!r}; known: {', '.join(known_sources())}"
        )
    return name


def _ground_truths(ground_truth, name: str) -> list[str]:
    """A list of non-empty gold strings; ChartQA labels may be a list (or numpy array) of them."""
    if isinstance(ground_truth, (bytes, bytearray)):
        ground_truth = ground_truth.decode("utf-8", "replace")
    if hasattr(ground_truth, "tolist") and not isinstance(ground_truth, str):
        ground_truth = ground_truth.tolist()
    items = [ground_truth] if isinstance(ground_truth, (str, int, float)) else ground_truth
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"{name}: ground_truth must be a string or a non-empty list of strings, got {ground_truth!r}")
    golds = [str(g) for g in items if g is not None and str(g).strip()]
    if not golds:
        raise ValueError(f"{name}: empty ground_truth {ground_truth!r}")
    if len(golds) > 1 and name != "chartqa":
        raise ValueError(f"{name}: expected one ground truth, got {len(golds)}: {golds!r}")
    return golds


def parse_ground_truths(ground_truth, data_source) -> list[str]:
    """The non-empty gold strings of a row (see :func:`verify`); raises ``ValueError`` (or
    :class:`UnknownDataSourceError`) for a row that cannot be graded at all."""
    return _ground_truths(ground_truth, resolve_source(data_source))


def is_ungraded(reason: str) -> bool:
    """Whether ``reason`` says the sample could not be graded (bad gold, verifier bug): its ``acc = 0``
    is no verdict on the answer and must not be learned from as a wrong one."""
    return reason == GOLD_UNPARSEABLE or str(reason).startswith(INTERNAL_ERROR)


def _loggable(pred: str | None) -> str:
    if pred is None:
        return ""
    pred = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "\ufffd", pred[:MAX_LOGGED_PRED_CHARS])
    return pred


def verify(data_source, response, ground_truth, extra_info=None, format_weight: float = DEFAULT_FORMAT_WEIGHT,
           *, strict_format: bool = True, boxed_fallback: bool = True, timeout_s: float | None = None,
           relaxed_tolerance: float = chartqa.RELAXED_TOLERANCE, strict_years: bool = True,
           rounding_tolerance: bool = True, rounding_rel_tol: float = 0.01, decimal_comma: bool = True) -> dict:
    """Grade one response. See the module docstring for the result; options:

    - ``format_weight`` ``w``: ``score = (1 - w) * acc + w * format``;
    - ``strict_format``: see :func:`verifiers.format.check_format`;
    - ``boxed_fallback``: grade the last ``\\boxed{}`` when there is no ``<answer>`` span;
    - ``timeout_s``: CPU-time limit of the symbolic step, in its own worker process (default 1 s,
      ``CARE_VERIFIER_TIMEOUT_S``; wall time is capped at 4x, see :mod:`verifiers.bounded`);
    - ``relaxed_tolerance``, ``strict_years``: ChartQA (:mod:`verifiers.chartqa`);
    - ``rounding_tolerance``, ``rounding_rel_tol``: Geometry3K / ViRL39K (:mod:`verifiers.math_equal`);
    - ``decimal_comma``: read ``2,74`` as 2.74 in a prediction when the gold is one number and the
      comma cannot be a thousands separator (:func:`verifiers.normalize.parse_number`); all sources.
    """
    name = resolve_source(data_source)
    golds = _ground_truths(ground_truth, name)
    if not 0.0 <= float(format_weight) <= 1.0:
        raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
    module = VERIFIERS[name]

    text = response if isinstance(response, str) else ""
    pred, reason, acc, fmt = None, "" if isinstance(response, str) else "response_not_text", 0, 0
    try:
        tags = find_tags(text)
        fmt = int(check_format(text, strict=strict_format, tags=tags))
        if not reason:
            pred, reason = extract_answer(text, boxed_fallback=boxed_fallback, tags=tags)
        if pred is None:
            pass
        elif len(pred) > MAX_ANSWER_CHARS:
            reason = "answer_too_long"
        elif has_control_chars(pred):
            reason = "control_characters"
        else:
            gold = golds if name == "chartqa" else golds[0]
            ok, reason = module.verify_answer(
                pred, gold, extra_info, timeout_s=timeout_s, relaxed_tolerance=relaxed_tolerance,
                strict_years=strict_years, rounding_tolerance=rounding_tolerance, rounding_rel_tol=rounding_rel_tol,
                decimal_comma=decimal_comma,
            )
            acc = int(bool(ok))
    except Exception as exc:  # a verifier bug must not zero a batch silently: count it in `reason`, log it
        logger.exception("care verifiers: %s verifier failed on %r", name, (pred or text)[:200])
        acc, reason = 0, f"{INTERNAL_ERROR}:{type(exc).__name__}"

    w = float(format_weight)
    return {
        "score": (1.0 - w) * acc + w * fmt,
        "acc": acc,
        "format": fmt,
        "pred": _loggable(pred),
        "verifier": name,
        "reason": reason,
    }


__all__ = ["verify", "resolve_source", "known_sources", "UnknownDataSourceError", "VERIFIERS", "ALIASES",
           "RESULT_KEYS", "GOLD_UNPARSEABLE", "INTERNAL_ERROR", "is_ungraded", "parse_ground_truths",
           "DEFAULT_FORMAT_WEIGHT", "check_format", "extract_answer"]
