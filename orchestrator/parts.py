"""The three parts the recipe drives, as interfaces, and the two ways to build them.

The recipe (:mod:`orchestrator.recipe`) only calls the methods declared here. Both the Ray
pools (:func:`ray_parts`: rollout actors, sandbox workers, a DeepSpeed learner group) and the
plain workers in this process (:func:`local_parts`: one of each, for scouting settings in
minutes) satisfy them, so a cluster job, ``bench/rl_scout.py`` and the experiment run the
same loop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Protocol

from errors import ConfigError
from learner.batch import RolloutBatch
from orchestrator.config import JobConfig
from rollout.config import SamplingConfig
from rollout.record import GenerationStats, Prompt, Rollout
from sandbox.rewards import RewardResult


class Rollouts(Protocol):
    """Model replicas serving one weight version at a time."""

    def generate(self, prompts: list[Prompt], *, num_generations: int, sampling: SamplingConfig,
                 seed: int) -> tuple[list[Rollout], GenerationStats]: ...

    def push_weights(self, version: int, weights: Any, rewind: bool = False) -> Any: ...


class Scorer(Protocol):
    """Runs each completion's tests in the sandbox; results in input order."""

    def score(self, items: list[tuple[Any, str]]) -> list[RewardResult]: ...


class Learner(Protocol):
    """Coupled-GRPO updates, and the weights and checkpoints they produce."""

    def train_step(self, batch: RolloutBatch) -> dict[str, float]: ...

    def publish_weights(self, version: int) -> Any: ...

    def save(self, path: str, extra: dict | None = None) -> Any: ...

    def load(self, path: str) -> dict: ...

    def export_hf(self, path: str) -> Any: ...


@dataclass
class Parts:
    rollout: Rollouts
    scorer: Scorer
    learner: Learner
    tokenizer: Any

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def push_weights(self, version: int, rewind: bool = False) -> None:
        """The learner publishes the weights once; every rollout replica loads them (with
        ``rewind``, also a replica that serves a newer version: after a learner recovery)."""
        self.rollout.push_weights(version, self.learner.publish_weights(version), rewind)

    def shutdown(self) -> None:
        for part in (self.rollout, self.scorer, self.learner):
            try:
                getattr(part, "shutdown", lambda: None)()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def local_parts(cfg: JobConfig, threads: int = 2) -> Parts:
    """One rollout worker, one sandbox worker (programs still run in the sandbox) and a
    one-rank DeepSpeed learner, all in this process."""
    import torch

    from learner.worker import LearnerWorker
    from rollout.worker import RolloutWorker
    from sandbox.pool import SandboxWorker

    torch.set_num_threads(threads)
    rollout = RolloutWorker(cfg.model.path, threads=threads, device="cpu")
    scorer = SandboxWorker(cfg.sandbox.backend, cfg.sandbox.limits, cfg.sandbox.rewards)
    learner = LearnerWorker(cfg.model.path, cfg.grpo, cfg.learner, total_steps=cfg.run.steps, seed=cfg.run.seed,
                            keep_versions=cfg.run.versions_in_flight())
    return Parts(rollout, scorer, learner, rollout.tokenizer)


def make_learner_group(cfg: JobConfig):
    from learner.group import LearnerGroup

    return LearnerGroup(cfg.model.path, cfg.grpo, cfg.learner, total_steps=cfg.run.steps, seed=cfg.run.seed,
                        keep_versions=cfg.run.versions_in_flight())


def ray_parts(cfg: JobConfig) -> Parts:
    """Every part as Ray actors on the connected cluster (a local one is started when none
    is given); rollout, sandbox and learner sizes are independent."""
    import ray

    from dllm import load_tokenizer
    from rollout.pool import RolloutPool
    from sandbox.pool import SandboxPool

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address="auto", log_to_driver=False)
        else:  # a local cluster: logical CPUs for every actor the job asks for
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(resources_needed(cfg)["CPU"])),
                     include_dashboard=False, log_to_driver=False)
    check_capacity(cfg, ray.cluster_resources())
    rollout = RolloutPool.from_config(cfg.model.path, cfg.rollout)
    scorer = SandboxPool.from_config(cfg.sandbox)
    return Parts(rollout, scorer, make_learner_group(cfg), load_tokenizer(cfg.model.path))


def resources_needed(cfg: JobConfig) -> dict[str, float]:
    """Ray resources the job's actors reserve, all together."""
    r, s, lr = cfg.rollout, cfg.sandbox, cfg.learner
    needs = {"CPU": r.actors * r.num_cpus + s.workers * s.num_cpus + lr.workers * lr.num_cpus,
             "GPU": r.actors * r.num_gpus + lr.workers * lr.num_gpus}
    for count, extra in ((r.actors, r.resources), (s.workers, s.resources), (lr.workers, lr.resources)):
        for name, amount in extra.items():
            needs[name] = needs.get(name, 0) + count * amount
    return {k: v for k, v in needs.items() if v}


def check_capacity(cfg: JobConfig, have: dict[str, float]) -> None:
    """Refuse at once, naming the resource, a job the cluster cannot hold (instead of actors
    waiting forever to be scheduled)."""
    for name, amount in resources_needed(cfg).items():
        if have.get(name, 0) + 1e-9 < amount:
            raise ConfigError(
                f"the job needs {amount:g} {name} in all (rollout.actors, sandbox.workers, learner.workers and "
                f"their num_cpus/num_gpus/resources) but the Ray cluster has {have.get(name, 0):g}; "
                "shrink the job or add nodes")
