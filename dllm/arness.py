"""AR-ness of a decoding order (DiffuCoder §3): how left-to-right a dLLM generated.

A decoding order is a ``[N]`` (or ``[B, N]``) tensor/list holding, for each completion
position, the sampler step at which it was committed. Unmasking events are the committed
positions sorted by (step, position); positions committed in the same step count as
consecutive events, left to right. The prompt counts as already decoded, so a pure
left-to-right order scores 1.0 on both metrics for every ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _events(order: Sequence[int] | torch.Tensor) -> list[int]:
    steps = order.tolist() if isinstance(order, torch.Tensor) else list(order)
    committed = [(s, p) for p, s in enumerate(steps) if s >= 0]
    return [p for _, p in sorted(committed)]


def _rows(order) -> list:
    if isinstance(order, torch.Tensor):
        return [order] if order.dim() == 1 else list(order)
    if order and isinstance(order[0], (list, tuple, torch.Tensor)):
        return list(order)
    return [order]


def local_arness(order, k: int = 1) -> float:
    """Fraction of events whose position continues a run of ``k`` consecutive next tokens.

    Event ``i`` at position ``p_i`` counts when ``p_{i-j+1} = p_{i-j} + 1`` for ``j = 1..k``
    (positions before the first event are the prompt: ``p_{-1} = -1, p_{-2} = -2, ...``).
    Averaged over sequences of a batch.
    """
    if k < 1:
        raise ValueError("local_arness: k must be >= 1")
    scores = []
    for row in _rows(order):
        events = _events(row)
        if not events:
            continue
        positions = list(range(-k, 0)) + events
        hits = sum(
            all(positions[i - j + 1] == positions[i - j] + 1 for j in range(1, k + 1))
            for i in range(k, len(positions))
        )
        scores.append(hits / len(events))
    return sum(scores) / len(scores) if scores else 0.0


def global_arness(order, k: int = 1) -> float:
    """Fraction of events whose position is among the ``k`` left-most still-masked positions.

    Averaged over sequences of a batch.
    """
    if k < 1:
        raise ValueError("global_arness: k must be >= 1")
    scores = []
    for row in _rows(order):
        events = _events(row)
        if not events:
            continue
        still_masked = sorted(events)
        hits = 0
        for p in events:
            hits += still_masked.index(p) < k
            still_masked.remove(p)
        scores.append(hits / len(events))
    return sum(scores) / len(scores) if scores else 0.0
