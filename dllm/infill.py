"""The probability a model puts on known tokens at masked positions, everything else visible.

A direct read of what a dLLM "knows" about one slot of a sequence, without sampling: the copy
probe (``cgrpo probe``, tasks/slots.py) uses it to ask whether the model copies a docstring's
constant into the body when the rest of the body is given. One forward pass per batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


@torch.no_grad()
def infill_probability(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                       batch_size: int = 64) -> list[float]:
    """For each ``(ids, positions)``: mask ``positions`` of ``ids`` and return the product of the
    model's probabilities of the true tokens there (one pass, all of them masked at once).

    Rows are left-padded to the batch's longest with an attention mask, the sampler's layout.
    The model is put in eval mode for the call and restored after.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            longest = max(len(ids) for ids, _ in chunk)
            tokens = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
            attention = torch.zeros_like(tokens)
            r, c, targets = [], [], []
            for row, (ids, positions) in enumerate(chunk):
                offset = longest - len(ids)
                tokens[row, offset:] = torch.tensor(list(ids))
                attention[row, offset:] = 1
                for pos in positions:
                    r.append(row)
                    c.append(offset + pos)
                    targets.append(ids[pos])
            tokens[r, c] = model.mask_token_id
            logp = torch.log_softmax(model(tokens.to(device), attention.to(device)).float(), dim=-1)
            picked = logp[r, c, targets].cpu()
            sums = torch.zeros(len(chunk)).index_add_(0, torch.tensor(r), picked)
            out.extend(math.exp(v) for v in sums.tolist())
    finally:
        model.train(was_training)
    return out
