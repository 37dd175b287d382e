"""The learning-rate schedule and weight-decay grouping every trainer here uses: the RL
learner, ``cgrpo pretrain`` and ``cgrpo adapt`` (one definition, so they cannot drift)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, progress: float, *, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr: ``min(1, (step+1)/warmup_steps) * (r + (1-r) * (1 + cos(pi p)) / 2)``
    with ``r = min_lr_ratio`` and ``p = min(progress, 1)``.

    A linear warm-up over the first ``warmup_steps`` optimiser steps, times a cosine that
    falls from 1 to ``min_lr_ratio`` as ``progress`` (the share of the budget used: steps or
    wall time) goes from 0 to 1, and stays there after.
    """
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


def decay_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay matrices and embeddings, never biases or norm weights
    (they set scales and offsets, which decay would pull to zero; HF Trainer / nanoGPT rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
