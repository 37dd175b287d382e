"""Per-token log-probability estimators for a masked diffusion LM (coupled-GRPO's core).

A dLLM has no exact ``log p(o_k | c)``; it is read from masked forward passes. Every
estimator here builds a set of *passes* (a noisy copy of the batch, the completion
positions read from it, and the ELBO weight of its mask ratio), runs all passes in as
few model calls as possible, and combines the reads:

    estimate_k = ( full_k + (1/λ) * Σ_passes [k masked in pass] * w_pass * logp_pass,k ) / 2

``full_k`` is the read with the whole completion masked (weight 1). ``coupled`` draws λ
pairs of *complementary* masks at ratios ``t`` and ``1-t`` (weights ``1/t``, ``1/(1-t)``):
every token is read exactly once per pair. ``decoupled`` draws ``2λ`` independent masks
at their own ratios: same number of passes, same expectation, but some tokens are read
zero times and others twice. ``d1`` is one fully masked pass (with random prompt masking),
the cheap biased baseline. With λ = 1 the coupled estimate is the ml-diffucoder recipe:
(logp_full + weighted logp from the pass where the token was masked) / 2.

Masks come from a ``torch.Generator`` seeded by ``seed``: the same seed gives the same
masks for the policy, the old policy and the reference model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.errors import DLLMError


@dataclass
class Pass:
    """One masked copy of the batch: which completion positions are masked (and read) and
    the ELBO weight applied to their log-probs (``[B]``)."""

    completion_masked: torch.Tensor  # [B, N] bool
    prompt_masked: torch.Tensor      # [B, P] bool
    weight: torch.Tensor             # [B] float


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def _ratio(t_range: tuple[float, float], generator: torch.Generator) -> float:
    lo, hi = t_range
    if not 0 < lo <= hi < 1:
        raise DLLMError(f"mask ratio range must satisfy 0 < low <= high < 1 (got {t_range})")
    return lo + (hi - lo) * float(torch.rand((), generator=generator, device=generator.device))


def complementary_masks(shape: tuple[int, int], t: float, generator: torch.Generator,
                        region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random mask at ratio ``t`` over ``region`` and exactly its complement within it."""
    region = torch.ones(shape, dtype=torch.bool, device=generator.device) if region is None else region
    first = (torch.rand(shape, generator=generator, device=generator.device) < t) & region
    return first, region & ~first


def _prompt_masks(batch: int, prompt_len: int, p_mask_prompt: float, generator, prompt_attn) -> torch.Tensor:
    if p_mask_prompt <= 0:
        return torch.zeros((batch, prompt_len), dtype=torch.bool, device=generator.device)
    u = torch.rand((batch, prompt_len), generator=generator, device=generator.device)
    masked = u < p_mask_prompt
    return masked & prompt_attn.bool() if prompt_attn is not None else masked


def full_pass(batch: int, n: int, prompt_len: int, device) -> Pass:
    return Pass(torch.ones((batch, n), dtype=torch.bool, device=device),
                torch.zeros((batch, prompt_len), dtype=torch.bool, device=device),
                torch.ones(batch, device=device))


def shared_within_groups(passes: list[Pass], group_size: int) -> list[Pass]:
    """Passes drawn for one row per group, each row repeated for the group's ``group_size`` rows.

    Common random numbers for GRPO: the completions of one prompt are read through the same
    masks, so where they agree (same token, same position) their reads agree too and the
    zero-sum group advantages cancel them; the gradient is left to where they differ. Each
    row's marginal mask distribution, hence its estimate's expectation, is unchanged.
    """
    def grow(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(group_size, dim=0)

    return [Pass(grow(p.completion_masked), grow(p.prompt_masked), grow(p.weight)) for p in passes]


def coupled_passes(batch: int, n: int, prompt_len: int, *, num_pairs: int = 1,
                   t_range: tuple[float, float] = (0.2, 0.8), p_mask_prompt: float = 0.0,
                   seed: int = 42, device="cpu", prompt_attn=None) -> list[Pass]:
    """λ pairs of complementary passes (one ratio draw per pair)."""
    if num_pairs < 1:
        raise DLLMError(f"coupled estimator: num_pairs must be >= 1 (got {num_pairs})")
    gen = _generator(seed, device)
    passes = []
    for _ in range(num_pairs):
        t = _ratio(t_range, gen)
        first, second = complementary_masks((batch, n), t, gen)
        for masked, ratio in ((first, t), (second, 1 - t)):
            passes.append(Pass(masked, _prompt_masks(batch, prompt_len, p_mask_prompt, gen, prompt_attn),
                               torch.full((batch,), 1.0 / ratio, device=device)))
    return passes


def decoupled_passes(batch: int, n: int, prompt_len: int, *, num_pairs: int = 1,
                     t_range: tuple[float, float] = (0.2, 0.8), p_mask_prompt: float = 0.0,
                     seed: int = 42, device="cpu", prompt_attn=None) -> list[Pass]:
    """2λ independent passes, each with its own ratio draw."""
    if num_pairs < 1:
        raise DLLMError(f"decoupled estimator: num_pairs must be >= 1 (got {num_pairs})")
    gen = _generator(seed, device)
    passes = []
    for _ in range(2 * num_pairs):
        t = _ratio(t_range, gen)
        masked = torch.rand((batch, n), generator=gen, device=device) < t
        passes.append(Pass(masked, _prompt_masks(batch, prompt_len, p_mask_prompt, gen, prompt_attn),
                           torch.full((batch,), 1.0 / t, device=device)))
    return passes


def pass_logps(model, sequences: torch.Tensor, prompt_len: int, passes: list[Pass],
               attention_mask: torch.Tensor | None = None, max_batch: int | None = None) -> torch.Tensor:
    """``log p(token)`` at every completion position of every pass: ``[len(passes), B, N]``.

    All passes are stacked into one batch (split into chunks of ``max_batch`` rows).
    """
    batch, length = sequences.shape
    n = length - prompt_len
    noisy = []
    for p in passes:
        masked = torch.cat([p.prompt_masked, p.completion_masked], 1)
        noisy.append(torch.where(masked, torch.full_like(sequences, model.mask_token_id), sequences))
    stacked = torch.cat(noisy, 0)
    attn = None if attention_mask is None else attention_mask.repeat(len(passes), 1)
    rows = stacked.shape[0]
    chunk = rows if not max_batch else max_batch
    targets = sequences[:, prompt_len:].repeat(len(passes), 1)
    out = []
    for start in range(0, rows, chunk):
        sl = slice(start, start + chunk)
        logits = model(stacked[sl], None if attn is None else attn[sl])[:, prompt_len:].float()
        out.append(torch.gather(logits.log_softmax(-1), -1, targets[sl, :, None]).squeeze(-1))
    return torch.cat(out, 0).view(len(passes), batch, n)


def combine(reads: torch.Tensor, passes: list[Pass], num_pairs: int, with_full: bool) -> torch.Tensor:
    """The estimate from reads ``[1 + len(passes), B, N]`` (full pass first when ``with_full``)."""
    masked_reads = reads[1:] if with_full else reads
    masked = torch.stack([p.completion_masked for p in passes]).to(reads.dtype)
    weights = torch.stack([p.weight for p in passes]).to(reads.dtype)[:, :, None]
    masked_part = (masked * weights * masked_reads).sum(0) / num_pairs
    return (reads[0] + masked_part) / 2 if with_full else masked_part / 2


def _masked_estimate(make_passes, model, sequences, prompt_len, attention_mask, num_pairs, t_range,
                     full_pass_included, p_mask_prompt, seed, max_batch) -> torch.Tensor:
    """Run ``make_passes``' passes (plus the full pass) and :func:`combine` their reads."""
    batch, length = sequences.shape
    n = length - prompt_len
    prompt_attn = None if attention_mask is None else attention_mask[:, :prompt_len]
    passes = make_passes(batch, n, prompt_len, num_pairs=num_pairs, t_range=t_range, p_mask_prompt=p_mask_prompt,
                         seed=seed, device=sequences.device, prompt_attn=prompt_attn)
    all_passes = ([full_pass(batch, n, prompt_len, sequences.device)] if full_pass_included else []) + passes
    reads = pass_logps(model, sequences, prompt_len, all_passes, attention_mask, max_batch)
    return combine(reads, passes, num_pairs, full_pass_included)


def coupled_logps(model, sequences: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor | None = None, *,
                  num_pairs: int = 1, t_range: tuple[float, float] = (0.2, 0.8), full_pass_included: bool = True,
                  p_mask_prompt: float = 0.0, seed: int = 42, max_batch: int | None = None) -> torch.Tensor:
    """Coupled estimate ``[B, N]`` of ``log p(o_k | c)`` for completion positions ``prompt_len:``."""
    return _masked_estimate(coupled_passes, model, sequences, prompt_len, attention_mask, num_pairs, t_range,
                            full_pass_included, p_mask_prompt, seed, max_batch)


def decoupled_logps(model, sequences: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor | None = None, *,
                    num_pairs: int = 1, t_range: tuple[float, float] = (0.2, 0.8), full_pass_included: bool = True,
                    p_mask_prompt: float = 0.0, seed: int = 42, max_batch: int | None = None) -> torch.Tensor:
    """Decoupled estimate ``[B, N]``: the coupled formula over ``2λ`` independent masks."""
    return _masked_estimate(decoupled_passes, model, sequences, prompt_len, attention_mask, num_pairs, t_range,
                            full_pass_included, p_mask_prompt, seed, max_batch)


def d1_logps(model, sequences: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor | None = None, *,
             num_passes: int = 1, p_mask_prompt: float = 0.15, seed: int = 42,
             max_batch: int | None = None) -> torch.Tensor:
    """d1 baseline ``[B, N]``: completion fully masked, prompt masked at ``p_mask_prompt``;
    averaged over ``num_passes`` prompt masks (1 in d1)."""
    if num_passes < 1:
        raise DLLMError(f"d1 estimator: num_passes must be >= 1 (got {num_passes})")
    batch, length = sequences.shape
    n = length - prompt_len
    gen = _generator(seed, sequences.device)
    prompt_attn = None if attention_mask is None else attention_mask[:, :prompt_len]
    passes = [Pass(torch.ones((batch, n), dtype=torch.bool, device=sequences.device),
                   _prompt_masks(batch, prompt_len, p_mask_prompt, gen, prompt_attn),
                   torch.ones(batch, device=sequences.device)) for _ in range(num_passes)]
    return pass_logps(model, sequences, prompt_len, passes, attention_mask, max_batch).mean(0)


ESTIMATORS = {"coupled": coupled_logps, "decoupled": decoupled_logps, "d1": d1_logps}


def estimate_logps(name: str, model, sequences, prompt_len, attention_mask=None, **kwargs) -> torch.Tensor:
    """Dispatch by estimator name (the job config's ``grpo.estimator``)."""
    if name not in ESTIMATORS:
        raise DLLMError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if name == "d1":
        kwargs.pop("num_pairs", None)
        kwargs.pop("t_range", None)
        kwargs.pop("full_pass_included", None)
    return ESTIMATORS[name](model, sequences, prompt_len, attention_mask, **kwargs)


def passes_per_estimate(name: str, num_pairs: int = 1, full_pass_included: bool = True, num_passes: int = 1) -> int:
    """Forward passes one estimate costs, to compare estimators at equal budgets."""
    if name == "d1":
        return num_passes
    return 2 * num_pairs + (1 if full_pass_included else 0)
