"""The six evaluation benchmarks: where they live, their columns, and one raw row -> :class:`Record`.

Column names are the ones lmms-eval's task code reads (EvolvingLMMs-Lab/lmms-eval, ``lmms_eval/tasks``):

- MathVista (``AI4Math/MathVista``, split ``testmini``; ``mathvista/utils.py``): ``pid``, ``question``,
  ``decoded_image`` (HF Image), ``choices`` (option texts or null), ``answer`` (the option TEXT for
  multiple choice), ``question_type`` (multi_choice | free_form), ``answer_type`` (integer | float |
  text | list), ``precision`` (decimals, float or null), ``unit``.
- MathVerse (``CaraJ/MathVerse-lmmseval``, config and split ``testmini``;
  ``mathverse/reasoning/mathverse_testmini.yaml``, ``utils.py``): ``sample_index``, ``problem_version``,
  ``question`` (options inside the text as ``A:...`` lines), ``image`` (empty for Text Only rows),
  ``answer`` (the letter for multi-choice), ``question_type`` (multi-choice | free-form).
- MATH-Vision (``MathLLMs/MathVision``, split ``test`` or ``testmini``; ``mathvision/reasoning/utils.py``):
  ``id``, ``question`` (may hold an ``<image1>`` marker), ``options`` (list, empty for free form),
  ``decoded_image``, ``answer`` (the letter for multiple choice).
- MMMU (``lmms-lab/MMMU``, split ``validation``; ``mmmu/reasoning/mmmu_val_reasoning.yaml``, which in
  lmms-eval 0.7.3 reads the copy ``lmms-lab-encoder/MMMU`` with the same columns): ``id``,
  ``question`` with ``<image N>`` markers, ``options`` (a Python list literal as a string),
  ``image_1`` .. ``image_7``, ``answer`` (letter, or for ``open`` questions a value or a list literal),
  ``question_type`` (multiple-choice | open).
- MMMU-Pro (``MMMU/MMMU_Pro``, split ``test``; ``mmmu_pro/reasoning/*.yaml``, ``utils.py``): config
  ``standard (10 options)`` as MMMU (all multiple choice, ``subject``); config ``vision``: ``id``,
  ``image`` (a screenshot holding question and options), ``options``, ``answer``.

Every row becomes one prompt in the training format (question, then ``Choices:`` as ``(A) text``
lines, then :data:`~data_prep.prompts.CARE_INSTRUCTION`), with ``ground_truth`` the option letter for
multiple choice whatever the source stores.
"""

from __future__ import annotations

import ast
import re

from data_prep.rows import Record, _hf_image_ref, _missing
from data_prep.schema import (ANSWER_NOT_IN_CHOICES, BAD_CHOICES, MATHVERSE, MATHVISION, MATHVISTA, MISSING_FIELD,
                              MISSING_IMAGE, MMMU, MMMU_PRO_STANDARD, MMMU_PRO_VISION)
from data_prep.prompts import IMAGE_PLACEHOLDER, parse_choices

MULTI_CHOICE, FREE_FORM = "multi_choice", "free_form"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, 8))

# name -> (hub id, hub config, default split); the splits are the paper's evaluation splits.
DEFAULT_SOURCES = {
    MATHVISTA: ("AI4Math/MathVista", None, "testmini"),
    MATHVERSE: ("CaraJ/MathVerse-lmmseval", "testmini", "testmini"),
    MATHVISION: ("MathLLMs/MathVision", None, "test"),
    MMMU: ("lmms-lab/MMMU", None, "validation"),
    MMMU_PRO_STANDARD: ("MMMU/MMMU_Pro", "standard (10 options)", "test"),
    MMMU_PRO_VISION: ("MMMU/MMMU_Pro", "vision", "test"),
}
REQUIRED_COLUMNS = {
    MATHVISTA: ("question", "decoded_image", "answer", "question_type"),
    MATHVERSE: ("question", "image", "answer", "question_type"),
    MATHVISION: ("question", "decoded_image", "options", "answer"),
    MMMU: ("question", "options", "answer", "question_type", "image_1"),
    MMMU_PRO_STANDARD: ("question", "options", "answer", "image_1"),
    MMMU_PRO_VISION: ("image", "options", "answer"),
}
OPTIONAL_COLUMNS = {
    MATHVISTA: ("pid", "choices", "answer_type", "precision", "unit"),
    MATHVERSE: ("sample_index", "problem_version"),
    MATHVISION: ("id", "subject", "level"),
    MMMU: ("id", "subfield") + MMMU_IMAGE_COLUMNS[1:],
    MMMU_PRO_STANDARD: ("id", "subject") + MMMU_IMAGE_COLUMNS[1:],
    MMMU_PRO_VISION: ("id", "subject"),
}

# MMMU writes <image 1>, MATH-Vision <image1>; verl wants one bare <image> per entry of `images`.
_MARKER = re.compile(r"<image\s*(\d+)>")
VISION_QUESTION = "Answer the question shown in the image."  # lmms-eval's mmmu_pro vision post-prompt


def format_choices(question: str, choices: list[str]) -> str:
    """The question followed by its options as ``(A) text`` lines (ViRL39K's style, which
    :func:`data_prep.prompts.parse_choices` reads back)."""
    lines = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return f"{question.rstrip()}\nChoices:\n{lines}" if question.strip() else f"Choices:\n{lines}"


def interleave_markers(text: str, images: dict[int, object]) -> tuple[str, list] | None:
    """``<image N>`` markers -> ``<image>`` with the images in the order they are first referenced.

    A repeated marker becomes the words ``image N`` (verl needs exactly one placeholder per image);
    images no marker names are left out, as lmms-eval's ``mmmu_doc_to_visual`` does. None when a
    marker names an image the row does not have.
    """
    order: list[int] = []

    def repl(match):
        n = int(match.group(1))
        if n in order:
            return f"image {n}"
        order.append(n)
        return IMAGE_PLACEHOLDER

    out = _MARKER.sub(repl, text)
    if any(images.get(n) is None for n in order):
        return None
    return out, [images[n] for n in order]


def _literal_list(value) -> list[str] | None:
    """MMMU's ``options`` / list answers: a Python list literal in a string (``ast.literal_eval``
    reads literals only, never code)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(parsed, (list, tuple)):
        return [str(v) for v in parsed]
    return None


def _letter_gold(rec: Record, answer: str, n_choices: int) -> str | None:
    letter = str(answer).strip().strip("()").strip()
    if len(letter) == 1 and letter in LETTERS[:n_choices]:
        return letter
    rec.drop = (ANSWER_NOT_IN_CHOICES, f"answer {str(answer)[:40]!r} is not one of the {n_choices} option letters")
    return None


def _finish(rec: Record, question: str, choices: list[str], gold: str, *, question_type: str,
            answer_type: str = "text", precision=None, unit: str = "", answers: list[str] | None = None) -> Record:
    rec.question = format_choices(question, choices) if choices else question
    rec.choices = list(choices)
    rec.labels = [gold]
    rec.meta = {"question_type": question_type, "answer_type": answer_type,
                "precision": None if precision is None else int(precision), "unit": unit or "",
                "answers": answers or [gold]}
    return rec


def _multi_choice(rec: Record, question: str, choices: list[str] | None, answer, images=None) -> Record:
    """Options given as a list and the answer as a letter (MATH-Vision, MMMU, MMMU-Pro)."""
    if not choices or any(not c.strip() for c in choices) or len(choices) > len(LETTERS):
        rec.drop = (BAD_CHOICES, f"options missing, empty or unreadable: {str(choices)[:80]!r}")
        return rec
    gold = _letter_gold(rec, answer, len(choices))
    if gold is None:
        return rec
    return _finish(rec, question, choices, gold, question_type=MULTI_CHOICE)


def mathvista_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MATHVISTA, str(row.get("pid") or f"{split}/{index}"), split, origin="mathvista")
    question, answer, image = row.get("question"), row.get("answer"), _hf_image_ref(row.get("decoded_image"))
    absent = [n for n, v in (("question", question), ("answer", answer), ("decoded_image", image)) if v is None]
    if absent:
        return _missing(rec, *absent)
    rec.images = [image]
    answer = str(answer).strip()
    precision = row.get("precision")
    meta = dict(answer_type=str(row.get("answer_type") or "text"), unit=str(row.get("unit") or ""),
                precision=None if precision is None or precision != precision else precision)
    if row.get("question_type") == MULTI_CHOICE:
        choices = [str(c) for c in (row.get("choices") or [])]
        if not choices or any(not c.strip() for c in choices):
            rec.drop = (BAD_CHOICES, f"options missing or empty: {choices!r}")
            return rec
        # MathVista stores the option text as the answer: the letter is its position.
        stripped = [c.strip() for c in choices]
        if answer not in stripped:
            rec.drop = (ANSWER_NOT_IN_CHOICES, f"answer {answer[:40]!r} is not among the options")
            return rec
        gold = LETTERS[stripped.index(answer)]
        return _finish(rec, question, choices, gold, question_type=MULTI_CHOICE, answers=[gold, answer], **meta)
    return _finish(rec, question, [], answer, question_type=FREE_FORM, **meta)


def mathverse_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MATHVERSE, str(row.get("sample_index") or f"{split}/{index}"), split,
                 origin=str(row.get("problem_version") or ""))
    question, answer = row.get("question"), row.get("answer")
    if question is None or answer is None:
        return _missing(rec, *[n for n, v in (("question", question), ("answer", answer)) if v is None])
    image = _hf_image_ref(row.get("image"))
    rec.images = [image] if image is not None else []  # Text Only rows have no image (lmms-eval: str(image) == "")
    question = question.strip() or VISION_QUESTION  # Vision Only rows: the question is in the image
    if str(row.get("question_type")) in ("multi-choice", MULTI_CHOICE):
        # The options are already in the question text (``A:...`` lines) or only in the image.
        choices = parse_choices(question)
        gold = _letter_gold(rec, answer, len(choices) or len(LETTERS))
        if gold is None:
            return rec
        return _finish(rec, question, [], gold, question_type=MULTI_CHOICE, answers=[gold]) if not choices else \
            _finish_inline(rec, question, choices, gold)
    return _finish(rec, question, [], str(answer).strip(), question_type=FREE_FORM)


def _finish_inline(rec: Record, question: str, choices: list[str], gold: str) -> Record:
    """Options already written in the question: keep the text, record the parsed options."""
    _finish(rec, question, [], gold, question_type=MULTI_CHOICE)
    rec.choices = choices
    return rec


def mathvision_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MATHVISION, str(row.get("id") or f"{split}/{index}"), split, category=str(row.get("subject") or ""))
    question, answer, image = row.get("question"), row.get("answer"), _hf_image_ref(row.get("decoded_image"))
    absent = [n for n, v in (("question", question), ("answer", answer), ("decoded_image", image)) if v is None]
    if absent:
        return _missing(rec, *absent)
    options = [str(o) for o in (row.get("options") or [])]
    marked = interleave_markers(question, {1: image})
    if marked is None:
        rec.drop = (MISSING_IMAGE, "the question names an image other than <image1>")
        return rec
    question, refs = marked
    rec.images = refs or [image]
    if options:
        return _multi_choice(rec, question, options, answer)
    return _finish(rec, question, [], str(answer).strip(), question_type=FREE_FORM)


def _mmmu_like(rec: Record, row: dict, open_allowed: bool) -> Record:
    question, answer = row.get("question"), row.get("answer")
    if question is None or answer is None:
        return _missing(rec, *[n for n, v in (("question", question), ("answer", answer)) if v is None])
    images = {i: _hf_image_ref(row.get(f"image_{i}")) for i in range(1, 8)}
    is_open = open_allowed and str(row.get("question_type")) == "open"
    options = [] if is_open else _literal_list(row.get("options"))
    # Options may reference images too (<image 2> as an option): interleave question and options together.
    text = question if is_open or not options else format_choices(question, options)
    marked = interleave_markers(text, images)
    if marked is None:
        rec.drop = (MISSING_IMAGE, "a <image N> marker names an image column that is empty")
        return rec
    text, rec.images = marked
    if is_open:
        answers = _literal_list(answer) if str(answer).lstrip().startswith("[") else [str(answer)]
        answers = [a.strip() for a in (answers or []) if a.strip()]
        if not answers:
            rec.drop = (MISSING_FIELD, f"open answer unreadable: {str(answer)[:40]!r}")
            return rec
        return _finish(rec, text, [], answers[0], question_type=FREE_FORM, answers=answers)
    if options is None or not options or any(not o.strip() for o in options):
        rec.drop = (BAD_CHOICES, f"options missing, empty or unreadable: {str(row.get('options'))[:80]!r}")
        return rec
    gold = _letter_gold(rec, answer, len(options))
    if gold is None:
        return rec
    _finish(rec, text, [], gold, question_type=MULTI_CHOICE)
    rec.choices = _MARKER.sub(lambda m: f"image {m.group(1)}", "\x00".join(options)).split("\x00")
    return rec


def mmmu_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MMMU, str(row.get("id") or f"{split}/{index}"), split, category=str(row.get("subfield") or ""))
    return _mmmu_like(rec, row, open_allowed=True)


def mmmu_pro_standard_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MMMU_PRO_STANDARD, str(row.get("id") or f"{split}/{index}"), split,
                 category=str(row.get("subject") or ""))
    return _mmmu_like(rec, row, open_allowed=False)


def mmmu_pro_vision_record(row: dict, split: str, index: int) -> Record:
    rec = Record(MMMU_PRO_VISION, str(row.get("id") or f"{split}/{index}"), split,
                 category=str(row.get("subject") or ""))
    image, answer = _hf_image_ref(row.get("image")), row.get("answer")
    if image is None or answer is None:
        return _missing(rec, *[n for n, v in (("image", image), ("answer", answer)) if v is None])
    rec.images = [image]
    # As lmms-eval's reasoning task: the screenshot, the options as text, "answer the question in the image".
    return _multi_choice(rec, VISION_QUESTION, _literal_list(row.get("options")), answer)


RECORD_BUILDERS = {
    MATHVISTA: mathvista_record, MATHVERSE: mathverse_record, MATHVISION: mathvision_record, MMMU: mmmu_record,
    MMMU_PRO_STANDARD: mmmu_pro_standard_record, MMMU_PRO_VISION: mmmu_pro_vision_record,
}
