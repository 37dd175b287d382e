"""Coupled-GRPO as pure functions: the config, group advantages and the clipped token loss.

DESIGN.md §3 is the spec. For a group of ``G`` completions of one prompt with rewards
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

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from learner.errors import LearnerError

ESTIMATORS = ("coupled", "decoupled", "d1")


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err.get("loc", ())) or "config"
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (check its spelling against docs/learner.md)"
        parts.append(f"grpo.{field}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


class GRPOConfig(BaseModel):
    """Every knob of the coupled-GRPO learner, with the ml-diffucoder recipe's defaults.

    It is the job config's ``grpo:`` section, 1:1. Bad values raise :class:`LearnerError`
    naming the field. docs/learner.md lists each field with its meaning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the log-prob estimator (DESIGN.md §3) ------------------------------------------
    estimator: Literal["coupled", "decoupled", "d1"] = Field(
        "coupled", description="per-token log-prob estimator: 'coupled' (λ pairs of complementary masks, the "
                               "method), 'decoupled' (2λ independent masks, same cost), 'd1' (one fully masked pass)")
    num_pairs: int = Field(1, ge=1, description="λ: mask pairs per estimate (decoupled uses 2λ independent masks)")
    t_range: tuple[float, float] = Field(
        (0.2, 0.8), description="mask ratio t ~ U(low, high), one draw per pair: ratio of completion tokens masked "
                                "in the first pass of the pair; the second masks exactly the complement (1-t)")
    full_pass_included: bool = Field(
        True, description="add the pass with the whole completion masked (weight 1): estimate = (full + weighted "
                          "masked read) / 2, the reference 3-pass recipe")
    p_mask_prompt: float = Field(0.0, ge=0.0, lt=1.0,
                                 description="probability of masking each prompt token in coupled/decoupled passes")
    d1_p_mask_prompt: float = Field(0.15, ge=0.0, lt=1.0,
                                    description="prompt masking probability of the d1 baseline's passes")
    d1_num_passes: int = Field(1, ge=1, description="fully masked passes d1 averages, each with its own prompt "
                                                    "mask (1 in d1; more only to compare estimators at equal cost)")
    random_masking: bool = Field(
        True, description="a fresh mask seed per inner iteration (true) or the fixed mask_seed every time (false); "
                          "within one iteration policy, old policy and reference always share the seed")
    mask_seed: int = Field(42, ge=0, description="the mask seed used when random_masking is false")
    logp_max_batch: int | None = Field(
        None, ge=1, description="max rows per model call when stacking the estimator's passes (None: all at once)")

    # --- GRPO ---------------------------------------------------------------------------
    num_generations: int = Field(10, ge=2, description="G: completions sampled per prompt (one advantage group)")
    num_iterations: int = Field(2, ge=1, description="μ: optimiser steps per rollout batch; old log-probs are "
                                                    "computed once per batch, before the first of them")
    beta: float = Field(0.01, ge=0.0, description="β: weight of the k3 KL penalty to the reference model "
                                                  "(0 disables it and no reference model is kept)")
    kl_clamp: float | None = Field(
        10.0, gt=0.0, description="upper bound of each token's k3 KL term (None: unbounded). The estimate's 1/t "
                                  "weights amplify log-ratios and k3 grows exponentially in them: one collapsed "
                                  "token can reach 1e4 and its gradient drown the policy gradient of the whole "
                                  "step. The bound only bites on such tokens (verl clamps the same way)")
    ref_sync_every: int = Field(64, ge=0, description="copy the policy into the reference model every this many "
                                                      "optimiser steps (0: never, the reference stays the start model)")
    epsilon: float = Field(0.5, gt=0.0, lt=1.0, description="ε: the ratio is clipped to [1-ε, 1+ε]")
    scale_rewards: bool = Field(False, description="divide advantages by the group's reward std (+ advantage_eps); "
                                                   "false: advantage = reward - group mean")
    advantage_eps: float = Field(1e-4, gt=0.0, description="added to the group std when scale_rewards is true")
    loss_normalisation: Literal["tokens", "sequence"] = Field(
        "tokens", description="'tokens': sum over all completion tokens of the batch / their count (reference); "
                              "'sequence': mean per completion, then mean over completions")

    # --- optimiser and schedule ---------------------------------------------------------
    lr: float = Field(1e-6, gt=0.0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = Field(0, ge=0, description="optimiser steps of linear warm-up from 0 to lr")
    total_steps: int = Field(1000, ge=1, description="train steps (rollout batches) the cosine schedule spans; "
                                                     "it decays over total_steps * num_iterations optimiser steps")
    max_grad_norm: float = Field(0.2, gt=0.0, description="global gradient-norm clip")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW (β1, β2)")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW ε")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW decoupled weight decay (not applied to biases "
                                                         "and norm weights)")

    # --- engine -------------------------------------------------------------------------
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage: 1 shards optimiser state, 2 also "
                                                       "gradients, 3 also parameters (0: plain data parallel)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per rank per optimiser step; each "
                                                                  "rank's shard is split into this many")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="training dtype: 'auto' = bf16 on GPU, "
                                                                       "fp32 on CPU")
    seed: int = Field(0, ge=0, description="base seed of the learner's RNGs and of the per-step mask seeds")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LearnerError(_format_validation_error(exc)) from None

    @classmethod
    def from_dict(cls, data: dict | None) -> GRPOConfig:
        """Build from a YAML/JSON mapping (the job's ``grpo:`` section)."""
        if data is not None and not isinstance(data, dict):
            raise LearnerError(f"grpo: expected a mapping of fields, got {type(data).__name__}")
        return cls(**(data or {}))

    @model_validator(mode="after")
    def _check_pairs(self) -> GRPOConfig:
        lo, hi = self.t_range
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"t_range must satisfy 0 < low <= high < 1 (got {self.t_range})")
        b1, b2 = self.adam_betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"adam_betas must both be in [0, 1) (got {self.adam_betas})")
        return self

    def estimator_kwargs(self) -> dict:
        """Keyword arguments of the chosen ``dllm.estimators`` function."""
        if self.estimator == "d1":
            return {"p_mask_prompt": self.d1_p_mask_prompt, "num_passes": self.d1_num_passes,
                    "max_batch": self.logp_max_batch}
        return {"num_pairs": self.num_pairs, "t_range": tuple(self.t_range),
                "full_pass_included": self.full_pass_included, "p_mask_prompt": self.p_mask_prompt,
                "max_batch": self.logp_max_batch}


# ---------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, num_generations: int | None = None, *, scale_rewards: bool = False,
                     eps: float = 1e-4) -> torch.Tensor:
    """``A_i = r_i - mean_group(r)`` (``/ (std_group(r) + eps)`` when ``scale_rewards``).

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


def lr_factor(step: int, *, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr after ``step`` optimiser steps: linear warm-up from 0, then
    cosine from 1 down to ``min_lr_ratio`` at ``total_steps`` (held there afterwards)."""
    import math

    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
