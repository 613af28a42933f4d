"""The response format ``<think> ... </think><answer> ... </answer>`` and answer extraction.

Tags are found with one linear scan (``finditer``) and checked by position, not with one big
``<think>(.*?)</think>...`` regex, whose backtracking is quadratic on a million-character response
full of tags. Tag spelling is normalised first: Qwen2.5-VL sometimes writes ``< think >`` or
``</ answer>``.
"""

from __future__ import annotations

import re

_TAG = re.compile(r"<\s{0,8}(/?)\s{0,8}(think|answer)\s{0,8}>", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox)\s{0,8}\{")
_BRACE = re.compile(r"[{}]")
_BOX_OR_BRACE = re.compile(r"\\(?:boxed|fbox)\s{0,8}\{|[{}]")
ANSWER_SEPARATOR = ", "


def find_tags(text: str) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` per tag, kind one of ``think``, ``/think``, ``answer``, ``/answer``.

    Pass the list to the functions below to scan a response only once.
    """
    return [(m.group(1) + m.group(2).lower(), m.start(), m.end()) for m in _TAG.finditer(text)]


def check_format(text: str, strict: bool = True, tags: list | None = None) -> bool:
    """Strict: exactly ``<think>T</think><answer>A</answer>`` with only whitespace around the
    tags and non-empty ``T`` and ``A``. Lenient (``strict=False``): a non-empty think span is
    followed by a non-empty answer span; other text and extra tags are tolerated.
    """
    tags = find_tags(text) if tags is None else tags
    kinds = [k for k, _, _ in tags]
    if strict:
        if kinds != ["think", "/think", "answer", "/answer"]:
            return False
        (_, _, t0), (_, t1, t2), (_, a0, a1), (_, a2, a3) = tags
        return (not text[: tags[0][1]].strip() and not text[t2:a0].strip() and not text[a3:].strip()
                and bool(text[t0:t1].strip()) and bool(text[a1:a2].strip()))
    # Lenient: first <think>, the next </think>, then the first <answer> after it and its </answer>.
    try:
        i = kinds.index("think")
        j = kinds.index("/think", i + 1)
        k = kinds.index("answer", j + 1)
        m = kinds.index("/answer", k + 1)
    except ValueError:
        return False
    return bool(text[tags[i][2] : tags[j][1]].strip()) and bool(text[tags[k][2] : tags[m][1]].strip())


def answer_span(text: str, tags: list | None = None) -> str | None:
    """Text of the last closed ``<answer>...</answer>`` span, or ``None``."""
    tags = find_tags(text) if tags is None else tags
    for idx in range(len(tags) - 1, 0, -1):
        if tags[idx][0] == "/answer" and tags[idx - 1][0] == "answer":
            return text[tags[idx - 1][2] : tags[idx][1]]
    return None


def last_boxed(text: str) -> tuple[str | None, bool]:
    """``(content, found)`` of the last ``\\boxed{...}`` / ``\\fbox{...}``, nested braces handled.

    ``(None, True)`` means the last box never closes. Ours rather than mathruler's
    ``extract_boxed_content``: that returns the string ``"None"`` both when there is no box and
    when it is unclosed (and for ``\\boxed{None}``), so the reason could not be reported, and it
    misses ``\\boxed {``.
    """
    last = None
    for last in _BOX.finditer(text):
        pass
    if last is None:
        return None, False
    depth = 1
    start = last.end()
    for brace in _BRACE.finditer(text, start):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[start : brace.start()].strip(), True
    return None, True


def boxed_contents(text: str) -> tuple[list[str], bool]:
    """``(contents, unclosed)``: every outermost ``\\boxed{...}`` in order, in one linear scan.

    ``unclosed`` is True when the last box opened never closes (its content is not returned).
    A box inside a box belongs to the outer one.
    """
    contents: list[str] = []
    depth = 0
    box_start, box_depth = -1, 0  # the open outermost box: where its content starts, its brace depth
    for token in _BOX_OR_BRACE.finditer(text):
        if token.group() == "}":
            depth = max(depth - 1, 0)
            if box_start >= 0 and depth == box_depth - 1:
                contents.append(text[box_start : token.start()].strip())
                box_start = -1
        else:
            depth += 1
            if token.group() != "{" and box_start < 0:
                box_start, box_depth = token.end(), depth
    return contents, box_start >= 0


def join_answers(parts: list[str]) -> str:
    """Several boxed answers are one list answer: ``\\boxed{1} and \\boxed{2}`` -> ``1, 2``.

    Repeats collapse (``\\boxed{5} ... \\boxed{5}`` is ``5``), so restating an answer costs nothing,
    while hedging with two different answers is graded as the list of both (wrong against one).
    """
    unwrapped = []
    for part in parts:
        for _ in range(3):  # \boxed{\boxed{3}} is 3 (bounded: each round is a linear scan)
            inner, unclosed = boxed_contents(part)
            if len(inner) != 1 or unclosed or not _BOX.match(part):
                break
            part = inner[0]
        unwrapped.append(part)
    unique = list(dict.fromkeys(p for p in unwrapped if p))
    return ANSWER_SEPARATOR.join(unique)


def extract_answer(text: str, boxed_fallback: bool = True, tags: list | None = None) -> tuple[str | None, str]:
    """``(prediction, reason)``; the prediction is ``None`` when there is none to grade.

    Order: the last ``<answer>`` span; inside it the ``\\boxed{}``
    if any, else the trimmed span. Several different boxes inside the answer span are several
    answers, returned as one list (:func:`join_answers`); an unclosed last box is reported. Without
    an answer span, the last ``\\boxed{}`` of the whole response when ``boxed_fallback``
    (Decision: keeps ``acc`` meaningful for a model that drops the tags; the format term still
    penalises it; only the last box there, since earlier ones belong to the reasoning).
    """
    span = answer_span(text, tags)
    source = "answer_span"
    if span is None:
        if not boxed_fallback:
            return None, "no_answer_span"
        span, source = text, "boxed_fallback"
    else:
        contents, unclosed = boxed_contents(span)
        if unclosed:
            return None, "unclosed_boxed"
        if contents:
            joined = join_answers(contents)
            return (joined, source) if joined else (None, "empty_answer")
    content, found = last_boxed(span)
    if found and content is None:
        return None, "unclosed_boxed"
    if content is not None:
        return content, source
    if source == "boxed_fallback":
        return None, "no_answer"
    span = span.strip()
    return (span, source) if span else (None, "empty_answer")
