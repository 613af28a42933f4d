"""Vision-R1-cold -> CARE's cold-start SFT rows: turn mapping, reasoning/answer split, the SFT row.

Vision-R1-cold (``Osilly/Vision-R1-cold``, CC BY-NC-SA 4.0) ships two sharegpt-style JSON files
(Vision-R1's README, the LLaMA-Factory ``dataset_info.json`` entries it gives):

- ``vision_r1_llava_cot_full.json``: ``conversations`` with ``from: human|gpt`` turns and ``image``
  (one path); images from LLaVA-CoT-100k, unpacked under ``llava_cot_images/``;
- ``vision_r1_mulberry_sft_full.json``: ``conversations`` with ``from: user|assistant`` turns and
  ``images`` (a list of paths); images from Mulberry-SFT, under ``mulberry_images/``.

Image paths are relative to the dataset folder (LLaMA-Factory's ``dataset_dir``). The assistant turn
is DeepSeek-R1 style: the reasoning inside ``<think>...</think>``, then the final answer, often
prefixed ``Final Answer:`` (a third-party conversion of the same files strips that prefix). Both are
parsed leniently here and rewritten into CARE's exact ``<think>R</think><answer>A</answer>``; a row
whose reasoning or answer cannot be located is dropped as ``answer_not_found``, never guessed at.
"""

from __future__ import annotations

import os
import re

from data_prep.process import Result, WorkerConfig, _text_tokens, load_row, prompt_tokens
from data_prep.prompts import build_prompt, user_content
from data_prep.rows import Record
from data_prep.schema import ANSWER_NOT_FOUND, MISSING_FIELD, OVER_BUDGET
from data_prep.sources import VISION_R1_IMAGE_DIRS
from verifiers.format import answer_span, check_format, find_tags

USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}
# "Final Answer:", "**Final Answer:**", "### Answer:", "The final answer is:" (a colon is required,
# so an answer that merely starts with the word "answer" keeps it).
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*)?\s*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*",
    re.IGNORECASE)
# Tokens around the assistant turn (role tags, end of turn) on top of the prompt's overhead.
RESPONSE_OVERHEAD_TOKENS = 8


class AnswerNotFound(ValueError):
    pass


def split_response(text: str) -> tuple[str, str]:
    """A Vision-R1 assistant turn -> (reasoning, final answer); raises :class:`AnswerNotFound`.

    The reasoning is the ``<think>`` span (or everything before a lone ``</think>``); the answer is
    the last ``<answer>`` span after it if there is one, else the text after ``</think>`` without a
    leading ``Final Answer:``-style label.
    """
    if not isinstance(text, str):
        raise AnswerNotFound("assistant turn is not text")
    tags = find_tags(text)
    kinds = [k for k, _, _ in tags]
    if "/think" not in kinds:
        raise AnswerNotFound("no </think>: the reasoning cannot be separated from the answer")
    close = kinds.index("/think")
    opened = [i for i in range(close) if kinds[i] == "think"]
    start = tags[opened[-1]][2] if opened else 0
    reasoning = text[start:tags[close][1]].strip()
    rest = text[tags[close][2]:]
    rest_kinds = [k for k, _, _ in find_tags(rest)]
    if rest_kinds not in ([], ["answer", "/answer"]):
        raise AnswerNotFound(f"unexpected tags after </think>: {rest_kinds}")
    span = answer_span(rest)
    answer = span if span is not None else _ANSWER_PREFIX.sub("", rest.strip(), count=1)
    answer = answer.strip()
    if not reasoning:
        raise AnswerNotFound("empty reasoning")
    if not answer:
        raise AnswerNotFound("nothing after </think>: no final answer")
    if find_tags(reasoning) or find_tags(answer):
        raise AnswerNotFound("think/answer tags nested inside the reasoning or the answer")
    return reasoning, answer


def care_response(reasoning: str, answer: str) -> str:
    """CARE's format, as the RL instruction asks for it (data_prep.prompts.CARE_INSTRUCTION)."""
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


def _image_ref(path, image_root: str, subset: str):
    """A path from the file -> ("file", absolute path); tried under the root, then its subset folder."""
    if not isinstance(path, str) or not path:
        return None
    if os.path.isabs(path):
        return ("file", path)
    direct = os.path.join(image_root, path)
    if not os.path.exists(direct):
        nested = os.path.join(image_root, VISION_R1_IMAGE_DIRS.get(subset, ""), path)
        if os.path.exists(nested):
            return ("file", nested)
    return ("file", direct)  # missing: the worker reports it as missing_image with this path


def cold_start_record(subset: str, image_root: str, row: dict, split: str, index: int) -> Record:
    raw_id = row.get("id")
    rec = Record(subset, str(raw_id) if raw_id not in (None, "") else f"row{index}", split, origin=subset)
    turns = [t for t in (row.get("conversations") or []) if isinstance(t, dict)
             and str(t.get("from", t.get("role", ""))).lower() != "system"]
    roles = [str(t.get("from", t.get("role", ""))).lower() for t in turns]
    if len(turns) != 2 or roles[0] not in USER_ROLES or roles[1] not in ASSISTANT_ROLES:
        rec.drop = (MISSING_FIELD, f"expected one user turn then one assistant turn, got roles {roles}")
        return rec
    values = [t.get("value", t.get("content")) for t in turns]
    rec.question = values[0]
    try:
        rec.reasoning, answer = split_response(values[1])
    except AnswerNotFound as exc:
        rec.drop = (ANSWER_NOT_FOUND, str(exc))
        return rec
    rec.labels = [answer]
    paths = row.get("images") if row.get("images") is not None else row.get("image")
    if isinstance(paths, str):
        paths = [paths]
    rec.images = [_image_ref(p, image_root, subset) for p in (paths or [])]
    if any(ref is None for ref in rec.images):
        rec.drop = (MISSING_FIELD, "an empty image path")
    return rec


def process_sft_record(rec: Record, cfg: WorkerConfig) -> Result:
    res = Result(rec.source, rec.id)
    loaded = load_row(rec, cfg, res)
    if loaded is None or cfg.index_only:
        return res
    response = care_response(rec.reasoning, rec.labels[0])
    if not check_format(response, strict=True):  # the RL format reward's own check, as a last gate
        res.reason, res.detail = ANSWER_NOT_FOUND, "the rewritten response fails the format check"
        return res
    if cfg.max_sequence_tokens > 0:
        tokens = (prompt_tokens(user_content(loaded.question), loaded.sizes, cfg)
                  + _text_tokens(response, cfg.tokenizer) + RESPONSE_OVERHEAD_TOKENS)
        if tokens > cfg.max_sequence_tokens:
            # verl's MultiTurnSFTDataset raises on an over-long row (truncation=error) mid-epoch.
            res.reason, res.detail = OVER_BUDGET, f"~{tokens} tokens > {cfg.max_sequence_tokens}"
            return res
    res.row = {
        "data_source": rec.source,
        "messages": [*build_prompt(loaded.question), {"role": "assistant", "content": response}],
        "images": [{"bytes": data} for data in loaded.encoded],
        "extra_info": {"index": -1, "source": rec.source, "id": rec.id, "question": loaded.question,
                       "answer": rec.labels[0]},
    }
    return res


def process_sft_batch(records: list[Record], cfg: WorkerConfig) -> list[Result]:
    return [process_sft_record(rec, cfg) for rec in records]
