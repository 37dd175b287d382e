"""Batched masked-diffusion sampling (Dream/DiffuCoder style) that records decoding order.

Start from ``prompt + N x [MASK]``; for ``S`` steps run the model once, score each masked
position's confidence under the sampling distribution (temperature, top-k, top-p) and
commit the most confident ones (``N/S`` per step, plus every position a threshold or
factor rule accepts), drawing their tokens from that distribution. Confidence ``alg``:
``origin`` (random order), ``maskgit_plus`` (probability of the sampled token),
``topk_margin`` (top-1 minus top-2 probability), ``entropy`` (negative entropy;
DiffuCoder's default). ``alg_temp > 0`` samples the positions to commit from
``softmax(confidence / alg_temp)`` (Gumbel top-k) instead of taking the top ones.

Fast-dLLM's accelerations are options, off by default: block-wise semi-autoregressive
decoding, a prefix or dual KV cache reused across the steps of a block, and parallel
commits (docs/sampler.md explains them and what they cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.errors import DLLMError
from dllm.model import KVCache

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")
CACHES = ("none", "prefix", "dual")


@dataclass
class Generation:
    """Result of :func:`generate`.

    ``sequences`` are left-padded prompts followed by the ``N`` generated positions;
    ``order[b, j]`` is the step (0-based) at which completion position ``j`` was committed;
    ``completions[b]`` are the generated ids up to, not including, the first EOS/pad;
    ``steps_run`` counts the model passes (full or cached); ``parallel_fraction[b]`` is the
    fraction of row ``b``'s answer (its completion) committed in a step that committed other
    positions of the row too, i.e. not conditioned on each other (0 when one token per step).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    order: torch.Tensor
    completions: list[list[int]]
    steps_run: int
    parallel_fraction: torch.Tensor


def _check_args(prompt_ids, max_new_tokens: int, steps: int, alg: str, temperature: float,
                top_p: float | None, top_k: int | None, threshold: float | None, factor: float | None,
                block_size: int | None, cache: str, given: list[list[int]] | None = None) -> None:
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
    if factor is not None and factor <= 0:
        raise DLLMError(f"generate: factor must be > 0 (got {factor})")
    if threshold is not None and factor is not None:
        raise DLLMError("generate: set threshold or factor, not both (two rules for the same parallel commits)")
    if (threshold is not None or factor is not None) and alg not in ("maskgit_plus", "topk_margin"):
        raise DLLMError("generate: threshold and factor decoding need alg 'maskgit_plus' or 'topk_margin' "
                        "(a confidence that is a probability)")
    if given is not None:
        if len(given) != len(prompt_ids):
            raise DLLMError(f"generate: given has {len(given)} rows for {len(prompt_ids)} prompts")
        if any(len(row) > max_new_tokens for row in given):
            raise DLLMError(f"generate: a row of given is longer than max_new_tokens ({max_new_tokens})")
    if cache not in CACHES:
        raise DLLMError(f"generate: unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
    if block_size is not None:
        if block_size <= 0 or max_new_tokens % block_size:
            raise DLLMError(f"generate: block_size ({block_size}) must be > 0 and divide max_new_tokens "
                            f"({max_new_tokens})")
        if steps < max_new_tokens // block_size:
            raise DLLMError(f"generate: steps ({steps}) must be at least the number of blocks "
                            f"({max_new_tokens // block_size} = max_new_tokens / block_size); each block needs a step")


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


def factor_rule(conf: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM's factor rule: which positions ``[B, W]`` to commit together.

    With confidences sorted ``c_1 >= c_2 >= ...``, commit the ``n`` most confident where
    ``c_i >= 1 - factor / (i + 1)`` for every ``i <= n`` (and always the first): the more
    tokens a step commits, the surer of each the model must be, which bounds the chance
    that decoding them independently differs from decoding them one by one. ``conf`` is
    ``-inf`` at positions that are not candidates.
    """
    sorted_conf, index = conf.sort(dim=1, descending=True)
    rank = torch.arange(1, conf.shape[1] + 1, device=conf.device)
    passes = sorted_conf >= 1 - factor / (rank + 1)
    count = passes.int().cumprod(1).sum(1).clamp(min=1)
    return torch.zeros_like(passes).scatter(1, index, rank[None] <= count[:, None]) & torch.isfinite(conf)


@dataclass(frozen=True)
class _Rule:
    """How one denoising step turns logits into commits (the sampling settings of a call)."""

    temperature: float
    top_p: float | None
    top_k: int | None
    alg: str
    alg_temp: float
    threshold: float | None
    factor: float | None
    mask_token_id: int


def _choose(conf: torch.Tensor, masked: torch.Tensor, quota: int, last: bool, rule: _Rule,
            generator: torch.Generator | None) -> torch.Tensor:
    """Positions ``[B, W]`` to commit: the ``quota`` most confident (all on a block's last step),
    plus every one the threshold or factor rule accepts."""
    if last:
        return masked.clone()
    choose_by = conf
    if rule.alg_temp > 0:
        gumbel = -torch.log(-torch.log(
            torch.rand(conf.shape, generator=generator, device=conf.device).clamp(1e-10, 1 - 1e-10)))
        choose_by = conf / rule.alg_temp + gumbel
    k = min(quota, int(masked.sum(1).max()))  # a row with fewer masked positions takes them all
    top = choose_by.topk(k, dim=1).indices
    commit = torch.zeros_like(masked).scatter(1, top, True) & masked
    if rule.threshold is not None:
        commit |= masked & (conf > rule.threshold)
    if rule.factor is not None:
        commit |= masked & factor_rule(conf, rule.factor)
    return commit


def _denoise_step(logits: torch.Tensor, masked: torch.Tensor, quota: int, last: bool, rule: _Rule,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step over a block: ``logits [B, W, V]`` of its positions, ``masked [B, W]`` those
    still [MASK]. Returns the positions committed and their tokens (row-major order)."""
    probs = _probs(logits[masked], rule.temperature, rule.top_p, rule.top_k, rule.mask_token_id)
    # Only maskgit_plus scores positions by their drawn token; the other rules draw tokens
    # just for the positions they commit (drawing all of them cost as much as the forward pass).
    drawn = _draw(probs, rule.temperature, generator) if rule.alg == "maskgit_plus" else None
    conf = torch.full(masked.shape, float("-inf"), device=masked.device)
    conf[masked] = _confidence(probs, rule.alg, drawn, generator).float()
    commit = _choose(conf, masked, quota, last, rule, generator)
    chosen = commit[masked]  # rows of `probs` committed now (both in row-major order)
    tokens = drawn[chosen] if drawn is not None else _draw(probs[chosen], rule.temperature, generator)
    return commit, tokens


def _block_logits(model, x: torch.Tensor, attn: torch.Tensor | None, kv: KVCache | None, cache: str,
                  start: int, end: int, refresh: bool) -> torch.Tensor:
    """Logits ``[B, end - start, V]`` for the block at sequence positions ``start .. end-1``.

    Without a cache, the full pass of today's sampler. With one, the block's first step is a
    full pass that refreshes the cache; later steps compute only the block (dual cache) or
    the block and everything after it (prefix cache) and read the rest from the cache.
    """
    if kv is None:
        return model(x, attn)[:, start:end]
    return model.block_logits(x, attn, kv, start, end, reuse=not refresh,
                              window_end=end if cache == "dual" else x.shape[1])


def _all_stopped(tokens: torch.Tensor, stop_ids: set[int]) -> bool:
    """Whether every row of ``tokens [B, W]`` holds an EOS/pad (its answer ended)."""
    stops = torch.tensor(sorted(stop_ids), device=tokens.device)
    return bool(torch.isin(tokens, stops).any(1).all())


@torch.no_grad()
def generate(model, prompt_ids: list[list[int]], *, max_new_tokens: int, steps: int,
             temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
             alg: str = "entropy", alg_temp: float = 0.0, threshold: float | None = None,
             factor: float | None = None, block_size: int | None = None, cache: str = "none",
             seed: int | None = None, given: list[list[int]] | None = None) -> Generation:
    """Generate ``max_new_tokens`` positions for each prompt in at most ``steps`` denoising steps.

    ``block_size`` (default: the whole completion) decodes the completion in blocks, left
    to right, each finished before the next starts; ``steps`` are spread evenly over the
    blocks. Once every row has an EOS in a finished block, the remaining blocks are filled
    with EOS without running the model (the completion is cut there anyway).

    ``cache`` ``"prefix"`` or ``"dual"`` (Fast-dLLM's approximate KV cache): the first step
    of each block is a full pass that stores every position's keys and values; later steps
    of the block compute only the block and everything after it (``prefix``) or only the
    block (``dual``), reusing the stored keys and values elsewhere.

    ``threshold`` commits, besides the scheduled number, every masked position of the block
    whose confidence exceeds it; ``factor`` instead commits the positions Fast-dLLM's factor
    rule accepts (:func:`factor_rule`). Both need a confidence that is a probability
    (``maskgit_plus`` or ``topk_margin``); with ``steps = max_new_tokens`` the scheduled
    number is one per step, as in Fast-dLLM. Generation then often ends in fewer steps.

    ``given`` (inpainting, IGPO's hints): per row, tokens fixed at the first completion
    positions before decoding starts, ``-1`` where the model decodes; a given position is
    never masked, counts as committed at step 0, and conditions every step of its row.
    """
    _check_args(prompt_ids, max_new_tokens, steps, alg, temperature, top_p, top_k, threshold, factor, block_size,
                cache, given)
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    rule = _Rule(temperature, top_p, top_k, alg, alg_temp, threshold, factor, model.mask_token_id)
    pad_id = model.pad_token_id if model.pad_token_id is not None else model.mask_token_id
    stop_ids = {model.eos_token_id, model.pad_token_id} - {None}
    prompt, prompt_attn = _left_pad(prompt_ids, pad_id, device)
    batch, plen = prompt.shape
    n = max_new_tokens
    x = torch.cat([prompt, torch.full((batch, n), model.mask_token_id, dtype=torch.long, device=device)], 1)
    attn = torch.cat([prompt_attn, torch.ones((batch, n), dtype=torch.long, device=device)], 1)
    attn_arg = None if bool(prompt_attn.all()) else attn
    order = torch.full((batch, n), -1, dtype=torch.long, device=device)
    for b, row in enumerate(given or []):
        fixed = torch.tensor(row, dtype=torch.long, device=device)
        where = (fixed >= 0).nonzero().squeeze(-1)
        x[b, plen + where] = fixed[where]
        order[b, where] = 0
    together = torch.zeros((batch, n), dtype=torch.bool, device=device)  # committed with others of its row
    kv = KVCache() if cache != "none" else None
    size = block_size or n
    step = 0
    for start, block_steps in zip(range(0, n, size), tokens_per_step(steps, n // size)):
        end = start + size
        if start and stop_ids and _all_stopped(x[:, plen:plen + start], stop_ids):
            x[:, plen + start:] = model.eos_token_id if model.eos_token_id is not None else pad_id
            order[:, start:] = step - 1
            break
        schedule = tokens_per_step(size, block_steps)
        for i, quota in enumerate(schedule):
            masked = order[:, start:end] < 0  # [B, W]
            if not bool(masked.any()):
                break
            logits = _block_logits(model, x, attn_arg, kv, cache, plen + start, plen + end, refresh=i == 0)
            commit, tokens = _denoise_step(logits, masked, quota, i == len(schedule) - 1, rule, generator)
            x[:, plen + start:plen + end][commit] = tokens
            order[:, start:end][commit] = step
            together[:, start:end] |= commit & (commit.sum(1, keepdim=True) > 1)
            step += 1
    completions = []
    for row in x[:, plen:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        completions.append(row[:cut])
    parallel = torch.tensor([together[b, :len(c)].float().mean().item() if c else 0.0
                             for b, c in enumerate(completions)])
    return Generation(x, attn, plen, order, completions, step, parallel)
