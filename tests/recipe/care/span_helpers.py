"""Shared by the span tests: responses laid out as verl does, and each token's place in the text."""

from __future__ import annotations

import torch


def encode_batch(tokenizer, texts, pad_right=3):
    """Right-padded response ids and mask, as verl lays out responses."""
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded)) + pad_right
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def token_offsets(tokenizer, ids):
    """(text, offsets): the concatenation of the tokens' own texts and each token's (start, end) in it."""
    pieces = tokenizer.batch_decode([[int(i)] for i in ids], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return "".join(pieces), offsets
