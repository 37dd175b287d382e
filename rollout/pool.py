"""A pool of rollout actors with dynamic load balancing, versioned weight pushes and resizing.

Work is cut into chunks of a few prompts; each actor takes the next chunk when it is
free, so a slow or restarted actor delays only its own chunk. Actors are restarted by Ray
when their process dies (``kill -9``) and the chunk is retried; a restarted actor starts
from the base checkpoint, notices it serves an old version and loads the latest weights
before generating.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

import ray

from rollout.config import RolloutConfig, SamplingConfig
from rollout.record import GenerationStats, Prompt, Rollout
from rollout.worker import RolloutWorker

RolloutActor = ray.remote(max_restarts=4, max_task_retries=3)(RolloutWorker)


@dataclass
class RolloutPool:
    model_path: str
    num_actors: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict = field(default_factory=dict)
    threads: int = 1
    chunk_prompts: int = 1
    actors: list = field(default_factory=list)
    version: int = 0
    _holder: list | None = None
    _ids: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self):
        self.resize(self.num_actors)

    def _spawn(self):
        worker_id = f"rollout-{next(self._ids)}"
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "name": None}
        if self.resources:
            options["resources"] = dict(self.resources)
        actor = RolloutActor.options(**{k: v for k, v in options.items() if v is not None}).remote(
            self.model_path, threads=self.threads, worker_id=worker_id)
        if self._holder is not None:
            actor.set_weights.remote(self.version, self._holder)
        return actor

    def resize(self, n: int) -> None:
        """Grow or shrink to ``n`` actors while the job runs; new actors get the latest weights."""
        if n < 1:
            raise ValueError("a rollout pool needs at least one actor")
        while len(self.actors) < n:
            self.actors.append(self._spawn())
        while len(self.actors) > n:
            ray.kill(self.actors.pop())
        self.num_actors = n

    @classmethod
    def from_config(cls, model_path: str, config: RolloutConfig) -> RolloutPool:
        return cls(model_path, config.actors, num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                   resources=dict(config.resources), threads=config.threads)

    def push_weights(self, version: int, weights_ref) -> list[int]:
        """Every actor reads ``weights_ref`` (put once in the object store); returns their versions."""
        self.version = version
        self._holder = [weights_ref]
        return ray.get([a.set_weights.remote(version, self._holder) for a in self.actors])

    def generate(self, prompts: list[Prompt], *, num_generations: int, sampling: SamplingConfig, seed: int,
                 ) -> tuple[list[Rollout], GenerationStats]:
        """All completions of ``prompts``, in prompt order, plus what they cost."""
        chunks = deque((i, prompts[i:i + self.chunk_prompts]) for i in range(0, len(prompts), self.chunk_prompts))
        results: dict[int, list[Rollout]] = {}
        stats = GenerationStats(actors=len(self.actors))
        free = deque(self.actors)
        inflight: dict = {}
        start = time.perf_counter()
        while chunks or inflight:
            while chunks and free:
                actor = free.popleft()
                index, chunk = chunks.popleft()
                ref = actor.generate.remote(chunk, num_generations=num_generations, sampling=sampling,
                                            seed=seed * 100_003 + index, min_version=self.version,
                                            holder=self._holder)
                inflight[ref] = (actor, index, chunk)
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                actor, index, chunk = inflight.pop(ref)
                try:
                    reply = ray.get(ref)
                except ray.exceptions.RayActorError:
                    # The actor was removed by a scale-down (Ray retries crashes itself):
                    # give its chunk to another actor.
                    if actor in self.actors:
                        raise
                    chunks.appendleft((index, chunk))
                    if not free and not inflight:
                        free.extend(self.actors)
                    continue
                rollouts, cost = reply
                results[index] = rollouts
                stats.busy_s += cost.busy_s
                stats.tokens += cost.tokens
                free.append(actor)
        stats.wall_s = time.perf_counter() - start
        return [r for i in sorted(results) for r in results[i]], stats

    def infos(self) -> list[dict]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors.clear()
