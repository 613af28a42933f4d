"""Prompt text and ground truths: the CARE instruction, ``<image>`` placeholders, answers, choices."""

from __future__ import annotations

import re

# CARE scores the reasoning span and the answer span separately, so the prompt asks for both tags.
CARE_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags and the final answer "
    "MUST BE enclosed within <answer> </answer> tags, i.e. "
    "<think> reasoning </think><answer> final answer </answer>."
)

IMAGE_PLACEHOLDER = "<image>"
# verl's RLHFDataset splits the user text on all three; a stray <video>/<audio> breaks its count asserts.
_OTHER_PLACEHOLDERS = ("<video>", "<audio>")


def fix_placeholders(text: str, n_images: int) -> str | None:
    """Return ``text`` with exactly ``n_images`` ``<image>`` placeholders, or None if it cannot be fixed.

    A text with none gets them prepended (ChartQA never has one; ViRL39K lost ~2%). A text whose
    count is wrong but non-zero is ambiguous (which image goes where?) and is not guessed at.
    """
    if any(tag in text for tag in _OTHER_PLACEHOLDERS):
        return None
    count = text.count(IMAGE_PLACEHOLDER)
    if count == n_images:
        return text
    if count == 0:
        return IMAGE_PLACEHOLDER * n_images + "\n" + text.lstrip()
    return None


def user_content(question: str) -> str:
    return f"{question}\n\n{CARE_INSTRUCTION}"


def build_prompt(question: str) -> list[dict]:
    """verl's ``prompt`` column: one user message, question (with placeholders) then the instruction."""
    return [{"role": "user", "content": user_content(question)}]


def strip_boxed(answer: str) -> str:
    r"""``\boxed{x}`` -> ``x`` (nested braces kept); several boxes -> their contents joined by ", ".

    mathruler's extractor takes the last box only and returns the string "None" when there is none,
    so the presence check and the loop over boxes are ours.
    """
    # Imported here: mathruler.grader pulls in sympy (~100 MiB), which the pool workers never need.
    from mathruler.grader import extract_boxed_content

    parts = []
    rest = answer
    while r"\boxed{" in rest:
        start = rest.rfind(r"\boxed{")
        content = extract_boxed_content(rest[start:])
        if content == "None" and not rest[start:].startswith(r"\boxed{None}"):
            break  # unbalanced braces: keep what is left as it is
        parts.append(content)
        rest = rest[:start]
    if not parts:
        return answer.strip()
    return ", ".join(reversed(parts))


def clean_labels(value) -> list[str] | None:
    """Ground truth as a list of non-empty strings; None when the field is missing (null)."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


_PAREN_OPTION = re.compile(r"\(([A-K])\)\s*")
_LINE_OPTION = re.compile(r"^[ \t]*\(?([A-K])[\.\):：][ \t]*(.*?)\s*$", re.MULTILINE)


def _consecutive_from_a(letters: list[str]) -> bool:
    return len(letters) >= 2 and letters == [chr(ord("A") + i) for i in range(len(letters))]


def parse_choices(question: str) -> list[str]:
    """Option texts of a multiple-choice question (``(A) 3 (B) 4`` or ``A. 3`` lines), else []."""
    marks = list(_PAREN_OPTION.finditer(question))
    if _consecutive_from_a([m.group(1) for m in marks]):
        ends = [m.start() for m in marks[1:]] + [len(question)]
        options = []
        for mark, end in zip(marks, ends):
            options.append(question[mark.end():end].split("\n", 1)[0].strip().rstrip(",;").strip())
        return options
    lines = list(_LINE_OPTION.finditer(question))
    if _consecutive_from_a([m.group(1) for m in lines]):
        return [m.group(2) for m in lines]
    return []
