"""The rollout pool's config: how many replicas, where they run, and how they sample.

``rollout:`` in a job YAML is :class:`RolloutConfig`, 1:1; its ``sampling:`` block is
:class:`SamplingConfig`, whose fields are exactly the keyword arguments of
``dllm.generate`` (so a setting has one name from the YAML to the sampler). Defaults follow
DiffuCoder's RL recipe: T=1.2, top-p 0.95, ``entropy`` order, one token per step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SamplingConfig(BaseModel):
    """Keyword arguments of ``dllm.generate`` (besides the prompts, model and seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(256, ge=1, description="completion length N (masked positions to fill)")
    steps: int = Field(256, ge=1, description="denoising steps (N/steps tokens committed per step)")
    temperature: float = Field(1.2, ge=0, description="sampling temperature (DiffuCoder: 1.2 best for RL rollouts)")
    top_p: float | None = Field(0.95, gt=0, le=1, description="nucleus sampling mass (null: off)")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely tokens (null: all)")
    alg: Literal["origin", "maskgit_plus", "topk_margin", "entropy"] = Field(
        "entropy", description="which positions to commit first: origin (random), maskgit_plus (top-1 "
                               "probability), topk_margin (top-1 minus top-2), entropy (DiffuCoder's default)")
    alg_temp: float = Field(0.0, ge=0, description="> 0: sample the positions to commit (Gumbel) instead of "
                                                   "taking the most confident")
    block_size: int | None = Field(None, ge=1, description="decode the completion in blocks of this many "
                                                           "positions, left to right (null: one block); must "
                                                           "divide max_new_tokens")
    cache: Literal["none", "prefix", "dual"] = Field(
        "none", description="Fast-dLLM's approximate KV cache, refreshed at each block's first step: prefix "
                            "(reuse the prompt's and finished blocks' keys/values) or dual (also the masked "
                            "suffix's)")
    threshold: float | None = Field(None, gt=0, lt=1, description="also commit every masked position of the "
                                                                  "block whose confidence exceeds this (parallel "
                                                                  "decoding; alg maskgit_plus or topk_margin)")
    factor: float | None = Field(None, gt=0, description="Fast-dLLM's factor rule for parallel commits instead of "
                                                         "a threshold (alg maskgit_plus or topk_margin)")

    @model_validator(mode="after")
    def _steps_fit(self) -> SamplingConfig:
        if self.steps > self.max_new_tokens:
            raise ValueError(f"steps ({self.steps}) cannot exceed max_new_tokens ({self.max_new_tokens}): "
                             "every step commits at least one token")
        if self.block_size is not None:
            blocks, rest = divmod(self.max_new_tokens, self.block_size)
            if rest:
                raise ValueError(f"block_size ({self.block_size}) must divide max_new_tokens ({self.max_new_tokens})")
            if self.steps < blocks:
                raise ValueError(f"steps ({self.steps}) must be at least the number of blocks ({blocks})")
        if self.threshold is not None and self.factor is not None:
            raise ValueError("set threshold or factor, not both")
        if (self.threshold is not None or self.factor is not None) and self.alg not in ("maskgit_plus", "topk_margin"):
            raise ValueError("threshold and factor need alg maskgit_plus or topk_margin (a confidence that is a "
                             "probability)")
        return self

    def at(self, *, temperature: float | None = None, steps: int | None = None) -> SamplingConfig:
        """The same sampler at another temperature or step count (evaluation, half steps)."""
        update = {k: v for k, v in (("temperature", temperature), ("steps", steps)) if v is not None}
        return self.model_copy(update=update)

    def half_steps(self) -> SamplingConfig:
        """Half the denoising steps: twice the tokens per step (the paper's speed/quality probe)."""
        blocks = self.max_new_tokens // self.block_size if self.block_size else 1
        return self.at(steps=max(blocks, self.steps // 2))


class RolloutConfig(BaseModel):
    """The rollout pool: model replicas as Ray actors, sized independently of the learner."""

    model_config = ConfigDict(extra="forbid")

    actors: int = Field(2, ge=1, le=1024, description="rollout actors (model replicas); `cgrpo scale` resizes "
                                                      "a running job's pool")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per rollout actor (0 = CPU)")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per rollout actor")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per actor "
                                                                          "(e.g. {rollout_node: 1})")
    threads: int = Field(1, ge=1, description="torch threads per actor on CPU")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how completions are sampled")
