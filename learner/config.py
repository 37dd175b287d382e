"""The learner's two configs: :class:`GRPOConfig` (the algorithm: estimator and loss) and
:class:`LearnerConfig` (the machinery: Ray placement, DeepSpeed engine, optimiser, schedule).

``grpo:`` and ``learner:`` in a job YAML are these models, 1:1, and the learner workers
receive them as they are: ``learner.lr`` goes from the YAML to this model to the DeepSpeed
config dict (:func:`learner.worker.deepspeed_config`) and nowhere else. Defaults follow the
public ml-diffucoder recipe (docs/design.md lists them with their sources).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ESTIMATORS = ("coupled", "decoupled", "d1")


class GRPOConfig(BaseModel):
    """Coupled-GRPO: how ``log p(o_k | c)`` is estimated and how the clipped loss is formed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the log-prob estimator ----------------------------------------------------------
    estimator: Literal["coupled", "decoupled", "d1"] = Field(
        "coupled", description="per-token log-prob estimator: coupled (λ pairs of complementary masks, the "
                               "method), decoupled (2λ independent masks, same cost), d1 (fully masked passes)")
    num_pairs: int = Field(1, ge=1, description="λ: mask pairs per estimate (decoupled draws 2λ independent masks)")
    t_range: tuple[float, float] = Field(
        (0.2, 0.8), description="mask ratio t ~ U(low, high), one draw per pair: the first pass masks a share t "
                                "of the completion, the second exactly the complement (1-t)")
    full_pass_included: bool = Field(
        True, description="add the pass with the whole completion masked (weight 1): estimate = (full + weighted "
                          "masked read) / 2, the 3-pass reference recipe")
    p_mask_prompt: float = Field(0.0, ge=0.0, lt=1.0,
                                 description="probability of masking each prompt token in coupled/decoupled passes")
    d1_p_mask_prompt: float = Field(0.15, ge=0.0, lt=1.0, description="prompt masking probability of d1's passes")
    d1_num_passes: int = Field(1, ge=1, description="fully masked passes d1 averages (1 in d1; 3 matches the "
                                                    "coupled estimator's cost)")
    random_masking: bool = Field(
        True, description="a fresh mask seed per inner iteration (true) or mask_seed every time (false); policy, "
                          "old policy and reference always share the seed within an iteration")
    mask_seed: int = Field(42, ge=0, description="the mask seed when random_masking is false")
    group_masks: bool = Field(
        False, description="read the G completions of a prompt through the same masks (coupled/decoupled): "
                           "where they agree their reads cancel under the zero-sum advantages, leaving less noise "
                           "in the gradient; each estimate's expectation is unchanged")
    logp_max_batch: int | None = Field(
        None, ge=1, description="max rows per model call when stacking the estimator's passes (null: all at once)")

    # --- GRPO ------------------------------------------------------------------------------
    num_generations: int = Field(10, ge=2, description="G: completions sampled per prompt (one advantage group)")
    num_iterations: int = Field(2, ge=1, description="μ: optimiser steps per rollout batch; old log-probs are "
                                                    "computed once per batch")
    beta: float = Field(0.01, ge=0.0, description="β: weight of the k3 KL penalty to the reference model (0: no "
                                                  "reference model is kept)")
    kl_clamp: float | None = Field(
        10.0, gt=0.0, description="upper bound of each token's k3 KL term (null: none). The estimate's 1/t weights "
                                  "amplify log-ratios and k3 is exponential in them: one collapsed token could "
                                  "otherwise drown a step's policy gradient")
    ref_sync_every: int = Field(64, ge=0, description="copy the policy into the reference model every this many "
                                                      "optimiser steps (0: never)")
    epsilon: float = Field(0.5, gt=0.0, lt=1.0, description="ε: the ratio is clipped to [1-ε, 1+ε]")
    scale_rewards: bool = Field(False, description="divide advantages by the group's reward std (+ advantage_eps); "
                                                   "false: advantage = reward - group mean")
    advantage_eps: float = Field(1e-4, gt=0.0, description="added to the group std when scale_rewards is true")
    negative_weight: float = Field(1.0, ge=0.0, le=1.0, description="scale of the below-mean advantages (1: GRPO; 0: "
                                                                    "only completions that beat their group are "
                                                                    "reinforced, none pushed down)")
    loss_normalisation: Literal["tokens", "sequence"] = Field(
        "tokens", description="tokens: sum over all completion tokens of the batch / their count (reference); "
                              "sequence: mean per completion, then over completions")

    @model_validator(mode="after")
    def _t_range(self) -> GRPOConfig:
        lo, hi = self.t_range
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"t_range must satisfy 0 < low <= high < 1 (got {list(self.t_range)})")
        return self

    def estimator_kwargs(self) -> dict:
        """Keyword arguments of the chosen ``dllm.estimators`` function."""
        if self.estimator == "d1":
            return {"p_mask_prompt": self.d1_p_mask_prompt, "num_passes": self.d1_num_passes,
                    "max_batch": self.logp_max_batch}
        return {"num_pairs": self.num_pairs, "t_range": tuple(self.t_range),
                "full_pass_included": self.full_pass_included, "p_mask_prompt": self.p_mask_prompt,
                "max_batch": self.logp_max_batch}


class LearnerConfig(BaseModel):
    """The learner group: data-parallel DeepSpeed ranks as Ray actors, and their optimiser."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- placement ---------------------------------------------------------------------------
    workers: int = Field(1, ge=1, le=1024, description="data-parallel learner ranks (Ray actors)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per learner rank (0 = CPU, gloo)")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per learner rank")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per rank "
                                                                          "(e.g. {learner_node: 1})")
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="placement-group strategy of the ranks' bundles")

    # --- engine ------------------------------------------------------------------------------
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage: 1 shards optimiser state, 2 also "
                                                           "gradients, 3 also parameters (0: plain data parallel)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per rank per optimiser step")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="training dtype: auto = bf16 on GPU, "
                                                                       "fp32 on CPU")

    # --- optimiser and schedule ----------------------------------------------------------
    lr: float = Field(1e-6, gt=0.0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = Field(0, ge=0, description="optimiser steps of linear warm-up from 0 to lr")
    max_grad_norm: float = Field(0.2, gt=0.0, description="global gradient-norm clip")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW (β1, β2)")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW ε")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW decoupled weight decay (not on biases and norms)")

    @model_validator(mode="after")
    def _betas(self) -> LearnerConfig:
        b1, b2 = self.adam_betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"adam_betas must both be in [0, 1) (got {list(self.adam_betas)})")
        return self
