"""Batched masked-diffusion sampling (Dream/DiffuCoder style) that records decoding order.

Start from ``prompt + N x [MASK]``; for ``S`` steps run the model once, sample a token for
every masked position (temperature, top-k, top-p), score each position's confidence and
commit the most confident ones (``N/S`` per step, or every position above a confidence
threshold). Confidence ``alg``: ``origin`` (random order), ``maskgit_plus`` (probability of
the sampled token), ``topk_margin`` (top-1 minus top-2 probability), ``entropy`` (negative
entropy; DiffuCoder's default). ``alg_temp > 0`` samples the positions to commit from
``softmax(confidence / alg_temp)`` (Gumbel top-k) instead of taking the top ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.errors import DLLMError

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")


@dataclass
class Generation:
    """Result of :func:`generate`.

    ``sequences`` are left-padded prompts followed by the ``N`` generated positions;
    ``order[b, j]`` is the step (0-based) at which completion position ``j`` was committed;
    ``completions[b]`` are the generated ids up to, not including, the first EOS/pad.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    order: torch.Tensor
    completions: list[list[int]]
    steps_run: int


def _check_args(prompt_ids, max_new_tokens: int, steps: int, alg: str, temperature: float,
                top_p: float | None, top_k: int | None, threshold: float | None) -> None:
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise DLLMError("generate: every prompt needs at least one token")
    if max_new_tokens <= 0:
        raise DLLMError(f"generate: max_new_tokens must be > 0 (got {max_new_tokens})")
    if steps <= 0:
        raise DLLMError(f"generate: steps must be > 0 (got {steps})")
    if steps > max_new_tokens:
        raise DLLMError(f"generate: steps ({steps}) cannot exceed the tokens to generate ({max_new_tokens}); "
                        "each step commits at least one token")
    if alg not in ALGORITHMS:
        raise DLLMError(f"generate: unknown alg {alg!r}; choose one of {', '.join(ALGORITHMS)}")
    if temperature < 0:
        raise DLLMError(f"generate: temperature must be >= 0 (got {temperature})")
    if top_p is not None and not 0 < top_p <= 1:
        raise DLLMError(f"generate: top_p must be in (0, 1] (got {top_p})")
    if top_k is not None and top_k <= 0:
        raise DLLMError(f"generate: top_k must be > 0 (got {top_k})")
    if threshold is not None and not 0 < threshold < 1:
        raise DLLMError(f"generate: threshold must be in (0, 1) (got {threshold})")


def _filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` largest and the smallest set with probability mass ``top_p``."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= top_p  # keep the token crossing top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _sample(logits: torch.Tensor, temperature: float, top_p, top_k, alg: str,
            generator: torch.Generator | None, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and confidences for ``[M, V]`` logits of the masked positions (never [MASK])."""
    logits = logits.float()
    logits[:, mask_token_id] = float("-inf")
    if temperature > 0:
        logits = logits / temperature
    logits = _filter_logits(logits, top_p, top_k)
    probs = logits.softmax(-1)
    if temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        tokens = probs.argmax(-1)
    if alg == "maskgit_plus":
        confidence = probs.gather(-1, tokens[:, None]).squeeze(-1)
    elif alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
    else:  # origin: a random order
        confidence = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    return tokens, confidence


def _left_pad(prompt_ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompt_ids):
        ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
        attn[b, width - len(p):] = 1
    return ids, attn


def tokens_per_step(n: int, steps: int) -> list[int]:
    """How many positions each step commits: ``n`` spread as evenly as possible."""
    base, extra = divmod(n, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@torch.no_grad()
def generate(model, prompt_ids: list[list[int]], *, max_new_tokens: int, steps: int,
             temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
             alg: str = "entropy", alg_temp: float = 0.0, threshold: float | None = None,
             seed: int | None = None) -> Generation:
    """Generate ``max_new_tokens`` positions for each prompt in ``steps`` denoising steps.

    With ``threshold`` set, a step commits every masked position whose confidence (as a
    probability: needs ``maskgit_plus`` or ``topk_margin``) exceeds it, at least the
    scheduled number; generation then often ends in fewer steps than ``steps``.
    """
    _check_args(prompt_ids, max_new_tokens, steps, alg, temperature, top_p, top_k, threshold)
    if threshold is not None and alg not in ("maskgit_plus", "topk_margin"):
        raise DLLMError("generate: threshold decoding needs alg 'maskgit_plus' or 'topk_margin' "
                        "(a confidence that is a probability)")
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    pad_id = model.pad_token_id if model.pad_token_id is not None else model.mask_token_id
    prompt, prompt_attn = _left_pad(prompt_ids, pad_id, device)
    batch, plen = prompt.shape
    n = max_new_tokens
    x = torch.cat([prompt, torch.full((batch, n), model.mask_token_id, dtype=torch.long, device=device)], 1)
    attn = torch.cat([prompt_attn, torch.ones((batch, n), dtype=torch.long, device=device)], 1)
    attn_arg = None if bool(prompt_attn.all()) else attn
    order = torch.full((batch, n), -1, dtype=torch.long, device=device)
    schedule = tokens_per_step(n, steps)
    steps_run = 0
    for step, quota in enumerate(schedule):
        masked = order < 0  # [B, N]
        if not bool(masked.any()):
            break
        steps_run += 1
        logits = model(x, attn_arg)[:, plen:]
        tokens, confidence = _sample(logits[masked], temperature, top_p, top_k, alg, generator,
                                    model.mask_token_id)
        conf = torch.full((batch, n), float("-inf"), device=device)
        conf[masked] = confidence.float()
        proposal = torch.zeros((batch, n), dtype=torch.long, device=device)
        proposal[masked] = tokens
        last = step == len(schedule) - 1
        if last:
            commit = masked
        else:
            choose_by = conf
            if alg_temp > 0:
                gumbel = -torch.log(-torch.log(
                    torch.rand(conf.shape, generator=generator, device=device).clamp(1e-10, 1 - 1e-10)))
                choose_by = conf / alg_temp + gumbel
            k = min(quota, int(masked.sum(1).min()))
            top = choose_by.topk(k, dim=1).indices
            commit = torch.zeros_like(masked).scatter(1, top, True) & masked
            if threshold is not None:
                commit |= masked & (conf > threshold)
        x[:, plen:] = torch.where(commit, proposal, x[:, plen:])
        order[commit] = step
    completions = []
    stop_ids = {model.eos_token_id, model.pad_token_id} - {None}
    for row in x[:, plen:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        completions.append(row[:cut])
    return Generation(x, attn, plen, order, completions, steps_run)
