"""The ``care:`` block of the trainer config as dataclasses (``recipe/care/config/care_trainer.yaml``).

``care`` -> :class:`CareConfig`, with ``care.rescue`` -> :class:`RescueConfig`, ``care.rgr`` ->
:class:`RGRConfig` (read by :mod:`recipe.care.rgr`) and ``care.records`` -> :class:`GroupRecordsConfig`.
Each yaml block names its class with ``_target_``, as verl's own config sections do; the adapter
:mod:`recipe.care.config_loader` builds them with verl's ``omega_conf_to_dataclass``.

Standard library only: :mod:`recipe.care.core_algos` takes a :class:`CareConfig` and tests without
verl, and the launcher reads :class:`CareConfigError` without importing torch. Every value is
checked in ``__post_init__``, with a message naming the yaml key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CareConfig",
    "CareConfigError",
    "GroupRecordsConfig",
    "RescueConfig",
    "RGRConfig",
    "RGRConfigError",
    "NEGATIVE_SELECTORS",
    "REPAIR_SELECTORS",
    "MODES",
    "ROUTINGS",
    "STARTS",
    "TEMPLATES",
    "DEFAULT_CUE",
    "STRUCTURED_CUE",
    "DEFAULT_ANSWER_OPEN",
    "TOKEN_WEIGHTINGS",
    "RESCUE_LOGP",
    "EMPTY_SPAN_RULES",
    "DEFAULT_RECORDS_SUBDIR",
]

# care.selector: how the hard negatives of an anchored group are picked (docs/algorithm.md section 2.2).
NEGATIVE_SELECTORS = ("cosine", "nearest", "farthest", "mixed", "random")
TOKEN_WEIGHTINGS = ("region_weighted", "answer_only", "uniform")
RESCUE_LOGP = ("sum", "mean")
# care.empty_span: the length an empty think/answer span gets (section 1; applied in recipe.care.spans).
EMPTY_SPAN_RULES = ("missing", "zero")
# care.records.dir's default, under the run folder
DEFAULT_RECORDS_SUBDIR = "care_records"


class CareConfigError(ValueError):
    """The care block (or the config around it) is invalid; the launcher prints it as one line."""


# care.rgr.selector: which failure of a group is repaired (see RGRConfig).
REPAIR_SELECTORS = ("lexical", "logprob", "random")
MODES = ("rederive", "answer_only")
# care.rgr.routing: which replica decodes a repair (see RGRConfig).
ROUTINGS = ("sticky", "fresh")
# care.rgr.start: when a group's repair starts (see RGRConfig).
STARTS = ("after_group", "early")

# docs/algorithm.md section 4.2: the paper's wording as published in its summaries.
DEFAULT_CUE = "\nYour previous reasoning had an error. Find the mistake, correct it, and re-derive. Keep it concise.\n"
# The authors' code's cue (yongxinwang-ai/CARE verl/hooks/rgr.py, _build_repair_cue), cut there to
# max_critique_tokens tokens and inserted before </think>, followed by "</think>\n<answer>".
STRUCTURED_CUE = "\n<repair>\n- Mistake:\n- Fix:\n- Corrected final answer:\n</repair>\n"
# care.rgr.template -> its cue.
TEMPLATES = {"paper": DEFAULT_CUE, "structured": STRUCTURED_CUE}
DEFAULT_ANSWER_OPEN = "</think>\n<answer>"
# The budget is computed per repair; these keys would defeat it.
_FORBIDDEN_SAMPLING_KEYS = frozenset({"max_tokens", "max_new_tokens", "n", "best_of"})


class RGRConfigError(CareConfigError):
    """A ``care.rgr`` value is invalid (raised when the config is read, not in the middle of a rollout)."""


@dataclass(frozen=True)
class RGRConfig:
    """``care.rgr``: reflection-guided resampling in the rollout step (defaults in ``recipe/care/config/rgr.yaml``)."""

    enable: bool = True
    """Run RGR in the rollout step (training only; validation is never touched)."""

    selector: str = "lexical"
    """Which failure to repair: ``lexical`` (nearest to the anchor by cosine of token n-gram count
    vectors of the think spans), ``logprob`` (highest mean rollout log-prob), ``random``."""

    ngram: int = 2
    """n of the ``lexical`` selector's token n-grams."""

    mode: str = "rederive"
    """``rederive`` (continue inside ``<think>`` after the cue, then answer) or ``answer_only``
    (insert ``answer_open`` after the cue and decode only the answer, as the authors' code)."""

    template: str = "paper"
    """The cue preset: ``paper`` (:data:`DEFAULT_CUE`, the paper's wording) or ``structured``
    (:data:`STRUCTURED_CUE`, the authors' code's cue; with ``mode: answer_only`` this is the
    authors' repair)."""

    max_critique_tokens: int = 64
    """The cue's tokens are cut to this many (the authors' code cuts its cue the same way; the
    paper cue is shorter than the default 64)."""

    cue: str | None = None
    """A custom cue text replacing the ``paper`` template's (null = the template's cue); its tokens
    get response mask 0 and log-prob 0. :attr:`cue_text` is the cue in effect."""

    answer_open: str = DEFAULT_ANSWER_OPEN
    """The text inserted after the cue in ``answer_only`` mode (mask 0, log-prob 0)."""

    sampling: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of the rollout's own sampling parameters for the repair decode (e.g.
    ``{temperature: 0.7}``); the token budget is always computed, never configured."""

    min_budget: int = 1
    """Fewest continuation tokens worth decoding; less is counted as ``no_budget``."""

    max_new_tokens: int | None = 512
    """Cap on the repair decode's tokens (512, as the authors' code); null = only the
    response-length budget. With ``start=after_group`` a repair starts after its group's slowest
    rollout, at the rollout's tail, so its length adds directly to the step's rollout time
    (benchmarks/bench_rgr_rollout.py)."""

    timeout_s: float | None = None
    """Give up on a repair decode after this many seconds (``timeout``); null = no limit."""

    seed: int = 0
    """Seeds the ``random`` selector (per agent-loop worker)."""

    routing: str = "sticky"
    """``sticky`` sends the repair decode with the request id of the failure's own decode, so
    verl's router (sticky on request id) puts it on the replica whose prefix cache holds the
    failure's prompt, images and think prefix; ``fresh`` gives it a new id (least-loaded replica,
    the prefix is prefilled again)."""

    start: str = "after_group"
    """``after_group`` (the paper's order) chooses and repairs once all n rollouts are scored;
    ``early`` starts as soon as the group has a verified positive and a finished failure with a
    think span, choosing among the rollouts finished by then (the anchor and the failure may
    differ from the after-group choice; ``rgr/early_choice_differs_rate`` counts how often)."""

    def __post_init__(self):
        if self.selector not in REPAIR_SELECTORS:
            raise RGRConfigError(f"care.rgr.selector={self.selector!r}; choose one of {', '.join(REPAIR_SELECTORS)}")
        if self.mode not in MODES:
            raise RGRConfigError(f"care.rgr.mode={self.mode!r}; choose one of {', '.join(MODES)}")
        if self.routing not in ROUTINGS:
            raise RGRConfigError(f"care.rgr.routing={self.routing!r}; choose one of {', '.join(ROUTINGS)}")
        if self.start not in STARTS:
            raise RGRConfigError(f"care.rgr.start={self.start!r}; choose one of {', '.join(STARTS)}")
        if self.template not in TEMPLATES:
            raise RGRConfigError(f"care.rgr.template={self.template!r}; choose one of {', '.join(TEMPLATES)}")
        if isinstance(self.max_critique_tokens, bool) or not isinstance(self.max_critique_tokens, int) \
                or self.max_critique_tokens < 1:
            raise RGRConfigError(f"care.rgr.max_critique_tokens must be an integer >= 1, got {self.max_critique_tokens!r}")
        if self.cue is not None and (not isinstance(self.cue, str) or not self.cue.strip()):
            raise RGRConfigError("care.rgr.cue must be null (the template's cue) or a non-empty string")
        if self.cue is not None and self.template != "paper":
            raise RGRConfigError(f"care.rgr.cue and care.rgr.template={self.template} both set the cue; "
                                 "set care.rgr.cue=null to use the template, or template=paper for a custom cue")
        if self.mode == "answer_only" and (not isinstance(self.answer_open, str) or not self.answer_open.strip()):
            raise RGRConfigError("care.rgr.answer_open must be a non-empty string in answer_only mode")
        if not isinstance(self.ngram, int) or self.ngram < 1:
            raise RGRConfigError(f"care.rgr.ngram must be an integer >= 1, got {self.ngram!r}")
        if not isinstance(self.min_budget, int) or self.min_budget < 1:
            raise RGRConfigError(f"care.rgr.min_budget must be an integer >= 1, got {self.min_budget!r}")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise RGRConfigError(f"care.rgr.max_new_tokens must be an integer >= 1 or null, got {self.max_new_tokens!r}")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise RGRConfigError(f"care.rgr.timeout_s must be a positive number or null, got {self.timeout_s!r}")
        if not isinstance(self.sampling, Mapping):
            raise RGRConfigError(f"care.rgr.sampling must be a mapping, got {type(self.sampling).__name__}")
        bad = sorted(_FORBIDDEN_SAMPLING_KEYS & set(self.sampling))
        if bad:
            raise RGRConfigError(f"care.rgr.sampling may not set {bad}: the repair budget is computed per rollout")

    @property
    def cue_text(self) -> str:
        """The cue in effect: ``cue`` if set, else the template's (before the token cut)."""
        return TEMPLATES[self.template] if self.cue is None else self.cue


def _non_negative(key: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class RescueConfig:
    """``care.rescue``: the all-negative rescue (docs/algorithm.md section 3)."""

    enable: bool = True
    """Use all-wrong groups through a pseudo-anchor (false: their rollouts get advantage 0)."""

    gamma: float = 0.1
    """γ, the pseudo-reward size: +γ for the pseudo-anchor, −γ/K' for each pseudo-negative."""

    normalize: bool = True
    """z-score the pseudo-rewards like section 2 (false: the pseudo-rewards are the advantages)."""

    logp: str = "sum"
    """The pseudo-anchor's score: ``sum`` or ``mean`` of the old log-probs over the response."""

    def __post_init__(self) -> None:
        if self.logp not in RESCUE_LOGP:
            raise ValueError(f"care.rescue.logp must be one of {RESCUE_LOGP}, got {self.logp!r}")
        _non_negative("care.rescue.gamma", self.gamma)


@dataclass(frozen=True)
class GroupRecordsConfig:
    """``care.records``: the per-group and per-repair JSON lines (:mod:`recipe.care.group_records`)."""

    enable: bool = False
    """Write the records (off by default; the smoke turns them on)."""

    dir: str | None = None
    """Where; null = ``<trainer.default_local_dir>/care_records`` (the run folder verl checkpoints
    into, so a resumed run appends to the same files)."""

    def directory(self, run_dir: str | os.PathLike) -> Path:
        return Path(self.dir) if self.dir else Path(run_dir) / DEFAULT_RECORDS_SUBDIR


@dataclass(frozen=True)
class CareConfig:
    """``care``: every switch of docs/algorithm.md (its section 10); the defaults are CARE as published."""

    k: int = 4
    """K, hard negatives per group: the subgroup S is the anchor and K' <= K negatives."""

    m: int = 6
    """M, size of the cosine selector's candidate pool of failures (M >= K)."""

    neg_scale: float = 0.5
    """s: failures in S keep A = −s·|A_raw|."""

    refl_scale: float | None = None
    """s_refl for a reflected rollout that still failed; null = s/2."""

    eps: float = 1e-6
    """ε in the z-score denominator."""

    equalize: bool = True
    """Multiply S by √(K/K') so the anchor's update does not depend on K'."""

    selector: str = "cosine"
    """How hard negatives are picked (section 2.2): one of :data:`NEGATIVE_SELECTORS`."""

    tau_think: float = 0.005
    """τ+, the token weight of think tokens of correct rollouts (section 5)."""

    token_weighting: str = "region_weighted"
    """``region_weighted`` | ``answer_only`` (τ+ = 0) | ``uniform`` (GRPO-style broadcast)."""

    seed: int = 0
    """Seeds the ``random`` selector (per group, independent of batch order)."""

    empty_span: str = "missing"
    """The length of an empty ``<think></think>`` or answer span for the anchor choice: ``missing``
    (the response length, as a rollout without the span; the authors' code) | ``zero``. Applied by
    :func:`recipe.care.spans.compute_response_spans` (section 1)."""

    rescue: RescueConfig = field(default_factory=RescueConfig)
    """The all-negative rescue (section 3)."""

    rgr: RGRConfig = field(default_factory=RGRConfig)
    """Reflection-guided resampling in the rollout step (section 4; ``recipe/care/config/rgr.yaml``)."""

    records: GroupRecordsConfig = field(default_factory=GroupRecordsConfig)
    """Per-group and per-repair JSON lines (section 8)."""

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"care.k must be a positive integer, got {self.k!r}")
        if int(self.m) != self.m or self.m < self.k:
            raise ValueError(f"care.m must be an integer >= care.k (M >= K), got m={self.m!r}, k={self.k!r}")
        if self.selector not in NEGATIVE_SELECTORS:
            raise ValueError(f"care.selector must be one of {NEGATIVE_SELECTORS}, got {self.selector!r}")
        if self.token_weighting not in TOKEN_WEIGHTINGS:
            raise ValueError(f"care.token_weighting must be one of {TOKEN_WEIGHTINGS}, got {self.token_weighting!r}")
        if self.empty_span not in EMPTY_SPAN_RULES:
            raise ValueError(f"care.empty_span must be one of {EMPTY_SPAN_RULES}, got {self.empty_span!r}")
        for name in ("neg_scale", "eps", "tau_think"):
            _non_negative(f"care.{name}", getattr(self, name))
        if self.refl_scale is not None and not (math.isfinite(self.refl_scale) and self.refl_scale >= 0):
            raise ValueError(f"care.refl_scale must be null or a finite number >= 0, got {self.refl_scale!r}")
        for name, kind in (("rescue", RescueConfig), ("rgr", RGRConfig), ("records", GroupRecordsConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"care.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__} "
                                "(recipe.care.config_loader builds the nested blocks from a mapping)")

    @property
    def reflected_neg_scale(self) -> float:
        """s_refl: the configured value, or s/2 (the paper's 0.25 for s = 0.5)."""
        return self.neg_scale / 2 if self.refl_scale is None else float(self.refl_scale)
