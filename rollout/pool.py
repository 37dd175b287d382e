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

from rollout.worker import RolloutWorker

RolloutActor = ray.remote(max_restarts=4, max_task_retries=3)(RolloutWorker)


@dataclass
class PoolStats:
    """What one :meth:`RolloutPool.generate` call cost: for throughput and idle metrics."""

    wall_s: float = 0.0
    busy_s: float = 0.0
    tokens: int = 0
    actors: int = 0

    @property
    def idle_fraction(self) -> float:
        capacity = self.wall_s * max(self.actors, 1)
        return max(0.0, 1.0 - self.busy_s / capacity) if capacity > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


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

    def push_weights(self, version: int, weights_ref) -> list[int]:
        """Every actor reads ``weights_ref`` (put once in the object store); returns their versions."""
        self.version = version
        self._holder = [weights_ref]
        return ray.get([a.set_weights.remote(version, self._holder) for a in self.actors])

    def generate(self, requests: list[dict], *, num_generations: int, sampling: dict, seed: int,
                 ) -> tuple[list[dict], PoolStats]:
        """All completions for ``requests``, in request order, plus what it cost."""
        chunks = deque((i, requests[i:i + self.chunk_prompts]) for i in range(0, len(requests), self.chunk_prompts))
        results: dict[int, list[dict]] = {}
        stats = PoolStats(actors=len(self.actors))
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
                results[index] = reply["rollouts"]
                stats.busy_s += reply["busy_s"]
                stats.tokens += reply["tokens"]
                free.append(actor)
        stats.wall_s = time.perf_counter() - start
        return [r for i in sorted(results) for r in results[i]], stats

    def infos(self) -> list[dict]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors.clear()
