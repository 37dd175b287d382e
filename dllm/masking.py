"""The forward (noising) process of a masked diffusion LM and its ELBO training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dllm.errors import DLLMError


def forward_process(tokens: torch.Tensor, maskable: torch.Tensor, t: torch.Tensor, mask_token_id: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each maskable token independently with probability ``t`` (one ``t`` per row).

    Returns ``(noisy_tokens, masked)`` where ``masked`` marks the positions replaced by
    ``mask_token_id``. At ``t = 1`` every maskable token is masked.
    """
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    masked = (u < t.view(-1, 1)) & maskable
    return torch.where(masked, torch.full_like(tokens, mask_token_id), tokens), masked


def elbo_loss(model, tokens: torch.Tensor, maskable: torch.Tensor, attention_mask: torch.Tensor | None = None,
              generator: torch.Generator | None = None, t_min: float = 1e-3) -> torch.Tensor:
    """Masked-diffusion ELBO bound, ``E_t[(1/t) * sum_{masked k} -log p(x_k | x_t)] / len``.

    ``t ~ U(t_min, 1)`` per row; ``len`` is the number of maskable tokens of the batch, so
    the loss is a per-token average that does not depend on how many were masked.
    """
    if not bool(maskable.any()):
        raise DLLMError("elbo_loss: no maskable tokens in the batch")
    t = t_min + (1 - t_min) * torch.rand(tokens.shape[0], generator=generator, device=tokens.device)
    noisy, masked = forward_process(tokens, maskable, t, model.mask_token_id, generator)
    logits = model(noisy, attention_mask)
    nll = F.cross_entropy(logits[masked].float(), tokens[masked], reduction="none")
    weights = (1.0 / t).view(-1, 1).expand_as(tokens)[masked]
    return (nll * weights).sum() / maskable.sum()
