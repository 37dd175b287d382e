"""Batched masked-diffusion sampling (Dream/DiffuCoder style) that records decoding order.

Start from ``prompt + N x [MASK]``; for ``S`` steps run the model once, score each masked
position's confidence under the sampling distribution (temperature, top-k, top-p) and
commit the most confident ones (``N/S`` per step, or every position above a confidence
threshold), drawing their tokens from that distribution. Confidence ``alg``: ``origin``
(random order), ``maskgit_plus`` (probability of the sampled token), ``topk_margin`` (top-1
minus top-2 probability), ``entropy`` (negative entropy; DiffuCoder's default). ``alg_temp > 0`` samples the positions to commit from
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


def _sorted_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p by a full sort of every row (exact; the fallback of :func:`_filter_top_p`)."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= top_p  # keep the token crossing top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _filter_top_p(logits: torch.Tensor, top_p: float, probe: int = 64) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``.

    Sorting every row of ``[M, V]`` logits cost more than the model's forward pass, yet the
    kept set of almost every row lies within its ``probe`` most likely tokens: find the
    cut-off from a ``topk`` of those, and sort only the rows whose cut-off lies further down.
    """
    k = min(probe, logits.shape[-1])
    top = torch.topk(logits, k, dim=-1).values  # descending
    probs = (top - torch.logsumexp(logits, -1, keepdim=True)).exp()
    kept = (probs.cumsum(-1) - probs < top_p).sum(-1)  # the crossing token included
    cutoff = top.gather(-1, (kept - 1).clamp(min=0)[:, None])
    out = logits.masked_fill(logits < cutoff, float("-inf"))
    unresolved = (kept >= k).nonzero().squeeze(-1)
    if unresolved.numel() and k < logits.shape[-1]:
        out[unresolved] = _sorted_top_p(logits[unresolved], top_p)
    return out


def _filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` largest and the smallest set with probability mass ``top_p``."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = _filter_top_p(logits, top_p)
    return logits


def _probs(logits: torch.Tensor, temperature: float, top_p, top_k, mask_token_id: int) -> torch.Tensor:
    """The sampling distribution ``[M, V]`` of the masked positions' logits (never [MASK])."""
    logits = logits.float()
    logits[:, mask_token_id] = float("-inf")
    if temperature > 0:
        logits = logits / temperature
    return _filter_logits(logits, top_p, top_k).softmax(-1)


def _draw(probs: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature > 0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return probs.argmax(-1)


def _confidence(probs: torch.Tensor, alg: str, tokens: torch.Tensor | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """How sure the model is at each position; only ``maskgit_plus`` needs the drawn tokens."""
    if alg == "maskgit_plus":
        return probs.gather(-1, tokens[:, None]).squeeze(-1)
    if alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[:, 0] - top2[:, 1]
    if alg == "entropy":
        return (probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
    return torch.rand(probs.shape[:1], generator=generator, device=probs.device)  # origin: a random order


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
        probs = _probs(logits[masked], temperature, top_p, top_k, model.mask_token_id)
        # Only maskgit_plus scores positions by their drawn token; the other rules draw
        # tokens just for the positions they commit (drawing all of them cost as much as
        # the forward pass).
        drawn = _draw(probs, temperature, generator) if alg == "maskgit_plus" else None
        conf = torch.full((batch, n), float("-inf"), device=device)
        conf[masked] = _confidence(probs, alg, drawn, generator).float()
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
        chosen = commit[masked]  # rows of `probs` committed now (both in row-major order)
        completion = x[:, plen:]
        completion[commit] = drawn[chosen] if drawn is not None else _draw(probs[chosen], temperature, generator)
        order[commit] = step
    completions = []
    stop_ids = {model.eos_token_id, model.pad_token_id} - {None}
    for row in x[:, plen:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        completions.append(row[:cut])
    return Generation(x, attn, plen, order, completions, steps_run)
