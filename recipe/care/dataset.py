"""``CareRLDataset``: verl 0.9.1's ``RLHFDataset`` that skips a bad training row, logs it, and counts it.

Selected in ``config/care_trainer.yaml`` with ``data.custom_cls: {path: pkg://recipe.care.dataset, name:
CareRLDataset}`` (verl's ``get_dataset_class`` imports ``pkg://`` paths as modules, so it works from the
fork's root wherever the recipe was copied).

In verl 0.9.1 one bad row stops the run: ``RLHFDataset.__getitem__`` raises (an undecodable image, a
``prompt`` that is not a list of messages, more ``<image>`` placeholders than images) inside
``next(train_dataloader)``, and a resumed run meets the same row at the same step again. Other bad rows
pass silently: ``<image>`` with no images stays literal text, a text prompt over
``data.max_prompt_length`` is left-truncated by the agent loop, a missing gold or unknown
``data_source`` only fails later in the reward step. Here each row is checked after ``super()`` builds it
(:func:`row_problem`); a row that raises or fails a check is replaced by the next index (at most
:data:`MAX_SUBSTITUTIONS` tries), with one log line

    care: skipped row <index> id=<extra_info id or index> source=<data_source>: <reason>: <detail>

and the substitute carries the skipped rows in ``extra_info["care_skipped"]`` (a list of
``{"row", "id", "source", "reason"}``), so the count travels with the batch through dataloader worker
processes to the trainer (``data/skipped_rows``, recipe/care/trainer.py). The substitution depends only on
the index, so a resumed run replays the same substitutes.
"""

from __future__ import annotations

import re

from recipe.care.notices import notice
from recipe.care.verl_compat import require_verl_attr
from verifiers import parse_ground_truths

# Written against verl 0.9.1: verl/utils/dataset/rl_dataset.py (RLHFDataset.__getitem__, _build_messages).
RLHFDataset = require_verl_attr("verl.utils.dataset.rl_dataset", "RLHFDataset")


SKIPPED_KEY = "care_skipped"
MAX_SUBSTITUTIONS = 16  # consecutive bad rows before the dataset gives up with an error
MAX_DETAIL_CHARS = 200
IMAGE_PLACEHOLDER = "<image>"


def row_id(extra_info) -> object:
    """A row's id for logs: ``extra_info["id"]``, else ``extra_info["index"]``, else ``None``."""
    if not isinstance(extra_info, dict):
        return None
    return extra_info.get("id", extra_info.get("index"))


def prompt_text(messages) -> str:
    """All text of a built prompt (``raw_prompt``): string contents and ``text`` parts."""
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "".join(parts)


def row_problem(row: dict, max_prompt_length: int, count_tokens) -> tuple[str, str] | None:
    """``(reason, detail)`` when a row built by ``RLHFDataset.__getitem__`` cannot be trained on, else None.

    Checks, cheapest first: ``raw_prompt`` is a non-empty list of messages with a content; no literal
    ``<image>`` is left (verl leaves placeholders as text when the row has no images); a gold answer
    and a ``data_source`` the verifiers know (:func:`verifiers.parse_ground_truths`); the prompt's text
    fits ``max_prompt_length`` tokens (``count_tokens(text)`` runs only when the text has more
    characters than that, since a token spans at least one character); every image decodes.
    """
    messages = row.get("raw_prompt")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and "content" in m for m in messages):
        return "prompt_not_messages", f"prompt is {type(messages).__name__}"
    text = prompt_text(messages)
    if IMAGE_PLACEHOLDER in text:
        return "image_placeholder_mismatch", f"{text.count(IMAGE_PLACEHOLDER)} <image> placeholder(s) without an image"
    reward_model = row.get("reward_model")
    gold = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    try:
        parse_ground_truths(gold, row.get("data_source"))
    except ValueError as exc:  # includes verifiers.UnknownDataSourceError
        reason = "unknown_data_source" if type(exc).__name__ == "UnknownDataSourceError" else "gold_missing"
        return reason, str(exc)
    if len(text) > max_prompt_length:
        n_tokens = count_tokens(text)
        if n_tokens > max_prompt_length:
            return "prompt_too_long", f"{n_tokens} text tokens > max_prompt_length {max_prompt_length}"
    for message in messages:
        for part in message["content"] if isinstance(message["content"], list) else ():
            image = part.get("image") if isinstance(part, dict) and part.get("type") == "image" else None
            if hasattr(image, "load"):
                # PIL opens lazily: a truncated file fails here, not later in the agent loop. The
                # decode is not extra work: pickling the row to the trainer decodes it anyway.
                image.load()
    return None


def _reason_of(exc: BaseException) -> str:
    if type(exc).__name__ in ("UnidentifiedImageError", "DecompressionBombError") or (
            isinstance(exc, OSError) and "image" in str(exc).lower()):
        return "image_undecodable"
    return f"error:{type(exc).__name__}"


class CareRLDataset(RLHFDataset):
    """``RLHFDataset`` whose ``__getitem__`` substitutes the next good row for a bad one (see the module docstring)."""

    def _checked_item(self, index: int) -> tuple[dict | None, tuple[str, str] | None]:
        try:
            row = super().__getitem__(index)
            problem = row_problem(row, self.max_prompt_length, self._count_tokens)
        except Exception as exc:  # any failure to build this row is this row's problem (bounded by MAX_SUBSTITUTIONS)
            return None, (_reason_of(exc), f"{type(exc).__name__}: {exc}")
        return (row, None) if problem is None else (None, problem)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _skip_record(self, index: int, reason: str, detail: str) -> dict:
        try:
            raw = self.dataframe[index]
            extra_info, source = raw.get("extra_info"), raw.get("data_source")
        except Exception:  # the row cannot even be read: name it by position only
            extra_info, source = None, None
        record = {"row": int(index), "id": row_id(extra_info), "source": source, "reason": reason}
        detail = re.sub(r"\s+", " ", detail)[:MAX_DETAIL_CHARS]
        notice("care: skipped row %d id=%s source=%s: %s: %s", index, record["id"], source, reason, detail)
        return record

    def __getitem__(self, item):
        skipped = []
        for attempt in range(MAX_SUBSTITUTIONS + 1):
            index = (int(item) + attempt) % len(self)
            row, problem = self._checked_item(index)
            if row is not None:
                break
            skipped.append(self._skip_record(index, *problem))
        else:
            raise RuntimeError(
                f"care: rows {int(item)}..{index} of the training data are all bad (last: {problem[0]}: "
                f"{problem[1][:MAX_DETAIL_CHARS]}); fix the data"
            )
        if skipped:
            # a fresh dict: the substitute's own extra_info object may be shared with other rows
            row["extra_info"] = {**(row.get("extra_info") or {}), SKIPPED_KEY: skipped}
        return row


__all__ = ["CareRLDataset", "SKIPPED_KEY", "MAX_SUBSTITUTIONS", "row_id", "row_problem", "prompt_text"]
