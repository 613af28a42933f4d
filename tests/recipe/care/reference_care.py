"""A deliberately plain, loop-per-group reading of docs/algorithm.md sections 1-3.

It shares no code with ``recipe.care.core_algos`` (which is vectorised across groups) or
``recipe.care.spans``; the tests check that both agree on random batches. Selectors covered:
cosine, nearest, farthest, mixed.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

# The verifier's tag spellings (verifiers/format.py): up to 8 blanks inside, any case.
_TAG = re.compile(r"<\s{0,8}(/?)\s{0,8}(think|answer)\s{0,8}>", re.IGNORECASE)


def reference_span_lengths(text, offsets, response_len, empty_span="missing"):
    """Section 1, read plainly: (T_think, T_ans) of one response.

    text: the response text; offsets: (start, end) of each response token in it.
    Answer: the verifier's span, the last <answer> directly followed (among the tags) by </answer>.
    Think: first <think> to the next </think>; unclosed: to the first <answer> after it, else the end;
    minus the answer and its tags. A token counts when it lies inside, or straddles the border with
    non-blank text inside. Missing span: the response length; empty (blank) span: the response length
    (``missing``) or 0 (``zero``).
    """
    tags = [(m.group(1) + m.group(2).lower(), m.start(), m.end()) for m in _TAG.finditer(text)]
    answer = None
    for i in range(len(tags) - 1):
        if tags[i][0] == "answer" and tags[i + 1][0] == "/answer":
            answer = (tags[i], tags[i + 1])  # keep the last such pair
    think = None
    for i, tag in enumerate(tags):
        if tag[0] == "think":
            end = len(text)
            for later in tags[i + 1:]:
                if later[0] == "/think":
                    end = later[1]
                    break
            else:
                for later in tags[i + 1:]:
                    if later[0] == "answer":
                        end = later[1]
                        break
            think = (tag[2], end)
            break

    def count(lo, hi, excluded=()):
        n = 0
        for k, (s, e) in enumerate(offsets):
            inside = text[max(s, lo):min(e, hi)]
            if inside and ((lo <= s and e <= hi) or inside.strip()) and k not in excluded:
                n += 1
        return n

    def tokens_of(lo, hi):
        return {k for k, (s, e) in enumerate(offsets)
                if text[max(s, lo):min(e, hi)] and ((lo <= s and e <= hi) or text[max(s, lo):min(e, hi)].strip())}

    def length(span, content, excluded=()):
        if span is None:
            return response_len
        if not content.strip():
            return response_len if empty_span == "missing" else 0
        return count(*span, excluded=excluded)

    answer_span = (answer[0][2], answer[1][1]) if answer else None
    excluded, think_text = set(), text[think[0]:think[1]] if think else ""
    if answer and think and think[0] <= answer[0][1] < think[1]:
        excluded = tokens_of(*answer_span) | {k for k, (s, e) in enumerate(offsets)
                                              if s >= answer[0][1] and e <= answer[1][2]}
        think_text = text[think[0]:answer[0][1]] + text[answer[1][2]:think[1]]
    answer_text = text[answer_span[0]:answer_span[1]] if answer else ""
    return length(think, think_text, excluded), length(answer_span, answer_text)

import numpy as np


def _dist(h, i, j):
    return 1.0 - float(np.dot(h[i], h[j]))


def reference_care(rewards, acc, index, think_len, answer_len, emb, logp_sum, response_len, reflected, cfg):
    batch = len(rewards)
    h = np.asarray(emb, dtype=np.float64)
    h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    groups: "OrderedDict[object, list[int]]" = OrderedDict()
    for row, key in enumerate(index):
        groups.setdefault(key, []).append(row)
    adv = [0.0] * batch
    role = ["none"] * batch
    kprime = [0] * batch
    s_refl = cfg.neg_scale / 2 if cfg.refl_scale is None else cfg.refl_scale
    for rows in groups.values():
        pos = {row: n for n, row in enumerate(rows)}
        positives = [i for i in rows if acc[i] == 1 and not reflected[i]]
        failures = [i for i in rows if acc[i] == 0 and not reflected[i]]
        refl = [i for i in rows if reflected[i]]
        if positives and (failures or refl):
            anchor = min(positives, key=lambda i: (think_len[i], answer_len[i], pos[i]))
            k_prime = max(len(refl), min(cfg.k, len(refl) + len(failures)))
            d = {i: _dist(h, i, anchor) for i in failures}
            by_near = sorted(failures, key=lambda i: (d[i], pos[i]))
            by_far = sorted(failures, key=lambda i: (-d[i], pos[i]))
            n_open = k_prime - len(refl)
            picked = list(refl)
            if cfg.selector == "cosine":
                pool = by_near[: min(cfg.m, len(failures))]
                if not refl and n_open > 0:
                    picked.append(pool[0])
                while len(picked) < k_prime:
                    free = [i for i in pool if i not in picked]
                    if not free:
                        break
                    picked.append(max(free, key=lambda i: (min(_dist(h, i, j) for j in picked), -pos[i])))
            elif cfg.selector == "nearest":
                picked += by_near[:n_open]
            elif cfg.selector == "farthest":
                picked += by_far[:n_open]
            elif cfg.selector == "mixed":
                near = by_near[: (n_open + 1) // 2]
                far = [i for i in by_far if i not in near][: n_open - len(near)]
                picked += near + far
            else:
                raise NotImplementedError(cfg.selector)
            subgroup = [anchor] + picked
            values = {i: float(rewards[i]) for i in subgroup}
            failing = {i for i in picked if acc[i] == 0}
            roles = {anchor: "anchor", **{i: ("reflected" if reflected[i] else "negative") for i in picked}}
            rescue = False
        elif all(acc[i] == 0 for i in rows) and cfg.rescue.enable and len(rows) >= 2:
            score = {i: logp_sum[i] if cfg.rescue.logp == "sum" else logp_sum[i] / max(response_len[i], 1) for i in rows}
            candidates = [i for i in rows if not reflected[i]] or rows
            anchor = max(candidates, key=lambda i: (score[i], -pos[i]))
            others = [i for i in rows if i != anchor]
            k_prime = min(cfg.k, len(others))
            picked = [max(others, key=lambda i: (_dist(h, i, anchor), -pos[i]))]
            while len(picked) < k_prime:
                free = [i for i in others if i not in picked]
                picked.append(max(free, key=lambda i: (min(_dist(h, i, j) for j in picked), -pos[i])))
            subgroup = [anchor] + picked
            values = {anchor: cfg.rescue.gamma, **{i: -cfg.rescue.gamma / k_prime for i in picked}}
            failing = set(picked)
            roles = {anchor: "rescue_anchor", **{i: "rescue_negative" for i in picked}}
            rescue = True
        else:
            continue
        mean = sum(values.values()) / len(subgroup)
        std = math.sqrt(sum((v - mean) ** 2 for v in values.values()) / len(subgroup))
        for i in subgroup:
            role[i] = roles[i]
            kprime[i] = k_prime
            if rescue and not cfg.rescue.normalize:
                adv[i] = values[i]
                continue
            raw = (values[i] - mean) / (std + cfg.eps)
            a = -(s_refl if reflected[i] else cfg.neg_scale) * abs(raw) if i in failing else raw
            if cfg.equalize:
                a *= math.sqrt(cfg.k / k_prime)
            adv[i] = a
        for i in rows:
            kprime[i] = k_prime
    return np.asarray(adv), role, kprime
