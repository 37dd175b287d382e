"""A pool of rollout actors with dynamic load balancing, versioned weight pushes and resizing.

Work is cut into chunks of a few prompts; each actor takes the next chunk when it is
free, so a slow or restarted actor delays only its own chunk. Actors are restarted by Ray
when their process dies (``kill -9``) or their node is lost, and the chunk is retried; a
restarted actor starts from the base checkpoint, notices it serves an old version and
loads the latest weights before generating. While an actor is unreachable (its node gone
and not yet declared dead, or the actor being restarted elsewhere), its chunks go to the
others, a weight push skips it, and it is tried again every few seconds.
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
    retry_s: float = 2.0  # an unreachable actor is tried again after this
    max_lost: int = 100   # failed chunks per generate call before giving up (about retry_s each)
    actors: list = field(default_factory=list)
    worker_ids: dict = field(default_factory=dict)  # actor -> its worker id
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
        self.worker_ids[actor] = worker_id
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
            actor = self.actors.pop()
            self.worker_ids.pop(actor, None)
            ray.kill(actor)
        self.num_actors = n

    @classmethod
    def from_config(cls, model_path: str, config: RolloutConfig) -> RolloutPool:
        return cls(model_path, config.actors, num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                   resources=dict(config.resources), threads=config.threads)

    def push_weights(self, version: int, weights_ref, rewind: bool = False) -> list[int | None]:
        """Every actor reads ``weights_ref`` (put once in the object store); returns their
        versions, None for an actor that is unreachable now (it loads these weights before
        it next generates, unless it still serves a newer one after a ``rewind``). ``rewind``:
        actors serving a newer version go back to this one (see RolloutWorker.set_weights)."""
        self.version = version
        self._holder = [weights_ref]
        out: list[int | None] = []
        for ref in [a.set_weights.remote(version, self._holder, rewind) for a in self.actors]:
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                out.append(None)
        return out

    def generate(self, prompts: list[Prompt], *, num_generations: int, sampling: SamplingConfig, seed: int,
                 ) -> tuple[list[Rollout], GenerationStats]:
        """All completions of ``prompts``, in prompt order, plus what they cost."""
        chunks = deque((i, prompts[i:i + self.chunk_prompts]) for i in range(0, len(prompts), self.chunk_prompts))
        results: dict[int, list[Rollout]] = {}
        stats = GenerationStats(actors=len(self.actors))
        free = deque(self.actors)
        inflight: dict = {}
        resting: dict = {}  # unreachable actor -> when to try it again
        lost = 0
        start = time.perf_counter()
        while chunks or inflight:
            now = time.monotonic()
            for actor in [a for a, at in resting.items() if at <= now]:
                del resting[actor]
                free.append(actor)
            while chunks and free:
                actor = free.popleft()
                index, chunk = chunks.popleft()
                ref = actor.generate.remote(chunk, num_generations=num_generations, sampling=sampling,
                                            seed=seed * 100_003 + index, min_version=self.version,
                                            holder=self._holder)
                inflight[ref] = (actor, index, chunk)
            if not inflight:  # every actor is resting: wait for the first to be tried again
                time.sleep(max(0.0, min(resting.values(), default=now) - time.monotonic()))
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=self.retry_s)
            for ref in done:
                actor, index, chunk = inflight.pop(ref)
                try:
                    reply = ray.get(ref)
                except ray.exceptions.RayActorError:
                    # Removed by a scale-down, or unreachable (Ray restarts it, but a lost
                    # node can use up the task's retries first): another actor takes the chunk.
                    chunks.appendleft((index, chunk))
                    if actor in self.actors:
                        lost += 1
                        if lost > self.max_lost:
                            raise
                        resting[actor] = time.monotonic() + self.retry_s
                    elif not free and not inflight and not resting:
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
        """Each actor's info; an unreachable one answers ``state: unreachable`` for now."""
        out = []
        for actor, ref in [(a, a.info.remote()) for a in self.actors]:
            try:
                out.append(ray.get(ref, timeout=30))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                out.append({"worker_id": self.worker_ids[actor], "state": "unreachable"})
        return out

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors.clear()
        self.worker_ids.clear()
