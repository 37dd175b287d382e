"""Coupled-GRPO as pure functions: group advantages, the per-token log-prob estimate on a
slice of a global batch, and the clipped token loss (docs/design.md derives them).

For a group of ``G`` completions of one prompt with rewards
``r_1..r_G``, the advantage is ``A_i = r_i - mean(r)`` (divided by ``std(r) + eps`` when
``scale_rewards``). With ``rho = exp(logp_new - logp_old)`` the loss of completion token
``k`` of completion ``i`` is

    -min(rho * A_i, clip(rho, 1 - eps, 1 + eps) * A_i) + beta * KL_k,
    KL_k = exp(ref - new) - (ref - new) - 1          (the k3 estimator of KL(pi_theta || pi_ref))

summed over the completion tokens of the whole batch and divided by their count (or, with
``normalisation="sequence"``, averaged per completion first and then over completions).
Prompt tokens never enter: every tensor here covers completion positions only, and
``completion_mask`` zeroes the positions after the first EOS.

Nothing here knows about DeepSpeed or Ray; :mod:`learner.worker` feeds these functions.
"""

from __future__ import annotations

import torch

from dllm.estimators import Pass, coupled_passes, decoupled_passes, full_pass, pass_logps, shared_within_groups
from dllm.estimators import combine as _combine
from learner.batch import RolloutBatch
from learner.config import GRPOConfig
from learner.errors import LearnerError


def group_advantages(rewards: torch.Tensor, num_generations: int | None = None, *, scale_rewards: bool = False,
                     eps: float = 1e-4, negative_weight: float = 1.0) -> torch.Tensor:
    """``A_i = r_i - mean_group(r)`` (``/ (std_group(r) + eps)`` when ``scale_rewards``).

    ``negative_weight`` scales the below-mean advantages only: 1 is GRPO, 0 reinforces only
    the completions that beat their group (no push-down of the others). Pushing down a failed
    completion also pushes down every token it shares with the passing ones, which is noise
    that a small model at a high learning rate may not survive.

    ``rewards`` is ``[num_prompts, G]``, or flat ``[num_prompts * G]`` grouped prompt-major
    (rows ``i*G .. i*G+G-1`` share a prompt) with ``num_generations = G``. The std is the
    unbiased one, as in TRL's GRPO trainer. The result has the input's shape.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() == 1:
        if num_generations is None or num_generations < 1:
            raise LearnerError("group_advantages: flat rewards need num_generations (the group size G)")
        if rewards.numel() % num_generations:
            raise LearnerError(f"group_advantages: {rewards.numel()} rewards do not split into groups of "
                               f"{num_generations}; send whole groups")
        grouped = rewards.view(-1, num_generations)
    elif rewards.dim() == 2:
        grouped = rewards
    else:
        raise LearnerError(f"group_advantages: rewards must be [B*G] or [B, G], got shape {tuple(rewards.shape)}")
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards:
        std = grouped.std(dim=1, keepdim=True) if grouped.shape[1] > 1 else torch.zeros_like(grouped[:, :1])
        adv = adv / (std + eps)
    if negative_weight != 1.0:
        adv = torch.where(adv < 0, adv * negative_weight, adv)
    return adv.reshape(rewards.shape)


def grpo_token_loss(new_logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
                    advantages: torch.Tensor, completion_mask: torch.Tensor, *, epsilon: float = 0.5,
                    beta: float = 0.01, normalisation: str = "tokens", denominator: float | None = None,
                    kl_clamp: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO loss with a k3 KL penalty, over completion positions ``[B, N]``.

    ``loss = sum_{i,k} m_ik * (-min(rho*A_i, clip(rho, 1-ε, 1+ε)*A_i) + β*KL_ik) / D`` where
    ``D`` is the number of completion tokens (``normalisation="tokens"``); with
    ``"sequence"`` each completion's token sum is divided by its own length and ``D`` is the
    number of non-empty completions. ``denominator`` overrides ``D`` so that data-parallel
    shards and micro-batches of one global batch can be normalised by the global count.
    ``kl_clamp`` bounds each token's KL term (no gradient beyond the bound).

    Metrics (floats, over the masked tokens): ``loss``, ``kl`` (mean k3), ``clip_frac``
    (fraction of tokens whose clipped term is active, so their gradient is zero),
    ``ratio_mean``/``ratio_min``/``ratio_max``, ``tokens``.
    """
    if normalisation not in ("tokens", "sequence"):
        raise LearnerError(f"grpo_token_loss: normalisation must be 'tokens' or 'sequence' (got {normalisation!r})")
    if new_logps.shape != old_logps.shape or new_logps.shape != completion_mask.shape:
        raise LearnerError(f"grpo_token_loss: new {tuple(new_logps.shape)}, old {tuple(old_logps.shape)} and "
                           f"mask {tuple(completion_mask.shape)} must have the same [B, N] shape")
    mask = completion_mask.to(torch.bool)
    zero = torch.zeros((), dtype=new_logps.dtype, device=new_logps.device)
    # Sanitise positions outside the mask first: a -inf there would make NaN gradients.
    new = torch.where(mask, new_logps, zero)
    old = torch.where(mask, old_logps.to(new.dtype), zero)
    adv = advantages.to(new.dtype).view(-1, 1)

    ratio = torch.exp(new - old)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if ref_logps is not None and beta != 0.0:
        diff = torch.where(mask, ref_logps.to(new.dtype), zero) - new
        kl = torch.exp(diff) - diff - 1.0
        if kl_clamp is not None:
            kl = kl.clamp(max=kl_clamp)
        per_token = per_token + beta * kl
    per_token = torch.where(mask, per_token, zero)

    maskf = mask.to(new.dtype)
    tokens = maskf.sum()
    if normalisation == "tokens":
        denom = tokens.clamp(min=1.0) if denominator is None else denominator
        loss = per_token.sum() / denom
    else:
        lengths = maskf.sum(1)
        per_seq = per_token.sum(1) / lengths.clamp(min=1.0)
        denom = (lengths > 0).sum().clamp(min=1) if denominator is None else denominator
        loss = per_seq.sum() / denom

    with torch.no_grad():
        n = float(tokens)
        is_clipped = ((ratio < 1.0 - epsilon) & (adv < 0)) | ((ratio > 1.0 + epsilon) & (adv > 0))
        if n > 0:
            r = ratio[mask]
            metrics = {"kl": float((kl * maskf).sum() / n), "clip_frac": float((is_clipped & mask).sum() / n),
                       "ratio_mean": float(r.mean()), "ratio_min": float(r.min()), "ratio_max": float(r.max())}
        else:
            metrics = {"kl": 0.0, "clip_frac": 0.0, "ratio_mean": 1.0, "ratio_min": 1.0, "ratio_max": 1.0}
        metrics["loss"] = float(loss)
        metrics["tokens"] = n
    return loss, metrics

# --------------------------------------------------------------------------- the estimate on a batch slice
# ``dllm.estimators`` draws its masks for the batch it is given. A data-parallel rank (or one
# gradient-accumulation micro-batch) holds only some rows of the global batch, and drawing
# masks for those rows alone would give it other masks than a single worker gets for the same
# rows. So the passes are drawn for the *global* shape ``[global_size, N]`` with the step's
# seed, and each caller keeps its own rows: the result equals the rows of
# ``dllm.estimate_logps`` on the whole batch (tested), whatever the sharding.

def _d1_passes(global_size: int, n: int, prompt_len: int, *, p_mask_prompt: float, seed: int, device,
               num_passes: int = 1) -> list[Pass]:
    """d1's passes exactly as ``dllm.d1_logps`` draws them (completion fully masked, prompt
    masked at ``p_mask_prompt``); the attention mask is applied per rank afterwards."""
    gen = torch.Generator(device=device).manual_seed(int(seed))
    passes = []
    for _ in range(num_passes):
        if p_mask_prompt > 0:
            prompt = torch.rand((global_size, prompt_len), generator=gen, device=device) < p_mask_prompt
        else:
            prompt = torch.zeros((global_size, prompt_len), dtype=torch.bool, device=device)
        passes.append(Pass(torch.ones((global_size, n), dtype=torch.bool, device=device), prompt,
                           torch.ones(global_size, device=device)))
    return passes


def global_passes(config: GRPOConfig, global_size: int, n: int, prompt_len: int, seed: int, device) -> list[Pass]:
    """The estimator's masked passes for the whole global batch (full pass not included)."""
    if config.estimator == "d1":
        return _d1_passes(global_size, n, prompt_len, p_mask_prompt=config.d1_p_mask_prompt, seed=seed, device=device,
                          num_passes=config.d1_num_passes)
    build = coupled_passes if config.estimator == "coupled" else decoupled_passes
    group = config.num_generations if config.group_masks else 1
    if global_size % group:
        raise LearnerError(f"group_masks: a global batch of {global_size} rows is not whole groups of "
                           f"{group} completions")
    passes = build(global_size // group, n, prompt_len, num_pairs=config.num_pairs, t_range=tuple(config.t_range),
                   p_mask_prompt=config.p_mask_prompt, seed=seed, device=device)
    return shared_within_groups(passes, group) if group > 1 else passes


def _rows_of(p: Pass, start: int, stop: int, prompt_attn: torch.Tensor) -> Pass:
    return Pass(p.completion_masked[start:stop], p.prompt_masked[start:stop] & prompt_attn.bool(),
                p.weight[start:stop])


def batch_logps(model, batch: RolloutBatch, config: GRPOConfig, seed: int) -> torch.Tensor:
    """Estimated ``log p(o_k | c)`` ``[b, N]`` for the batch's rows, masks drawn for the global batch.

    ``model`` is anything with ``__call__(input_ids, attention_mask) -> logits`` and
    ``mask_token_id`` (a ``DiffusionLM`` or a DeepSpeed engine wrapping one). Gradients flow
    when called outside ``torch.no_grad``.
    """
    device = batch.sequences.device
    n, plen = batch.completion_len, batch.prompt_len
    global_size = batch.global_size or batch.size
    start, stop = batch.row_offset, batch.row_offset + batch.size
    prompt_attn = batch.attention_mask[:, :plen]
    passes = [_rows_of(p, start, stop, prompt_attn)
              for p in global_passes(config, global_size, n, plen, seed, device)]
    if config.estimator == "d1":
        reads = pass_logps(model, batch.sequences, plen, passes, batch.attention_mask, config.logp_max_batch)
        return reads.mean(0)
    with_full = config.full_pass_included
    all_passes = ([full_pass(batch.size, n, plen, device)] if with_full else []) + passes
    reads = pass_logps(model, batch.sequences, plen, all_passes, batch.attention_mask, config.logp_max_batch)
    return _combine(reads, passes, config.num_pairs, with_full)
