"""What the rollout pool hands the recipe: one :class:`Rollout` per completion, and what
generating them cost (:class:`GenerationStats`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """A prompt to complete ``G`` times; ``group`` numbers it within the step's batch.

    ``hint`` (inpainting, ``run.inpaint``): a reference completion whose tokens are each given
    to the sampler with probability ``hint_ratio``, a fresh draw for every completion, so the
    model decodes the rest around them.
    """

    task_id: str
    text: str
    group: int = 0
    hint: str = ""
    hint_ratio: float = 0.0


@dataclass(frozen=True)
class Rollout:
    """One sampled completion and how it was decoded.

    ``completion_ids`` are all ``N`` generated positions (EOS padding included: the learner
    scores them all); ``completion_len`` counts the answer's tokens plus its first EOS;
    ``order[j]`` is the denoising step that committed position ``j`` (the decoding order
    behind AR-ness and the dashboard's rollout viewer); ``version`` is the weight version
    that generated it; ``parallel_fraction`` is the share of the answer's tokens committed in
    the same step as others of the row (parallel decoding, 0 with one token per step);
    ``hinted`` counts the positions given by an inpainting hint rather than decoded.
    """

    task_id: str
    group: int
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_len: int
    text: str
    order: list[int]
    arness_local: float
    arness_global: float
    version: int
    worker_id: str
    parallel_fraction: float = 0.0
    hinted: int = 0


@dataclass
class GenerationStats:
    """The cost of one ``generate`` call: wall time, summed busy time of the actors that
    served it, generated positions and actor count (for throughput and idle metrics)."""

    wall_s: float = 0.0
    busy_s: float = 0.0
    tokens: int = 0
    actors: int = 1

    @property
    def idle_fraction(self) -> float:
        capacity = self.wall_s * max(self.actors, 1)
        return max(0.0, 1.0 - self.busy_s / capacity) if capacity > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0
