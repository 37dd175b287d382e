"""A pool of sandbox workers as Ray actors, sized independently of rollout and learner.

Each :class:`SandboxWorker` actor owns one warm backend (jail executor or container) and
scores batches of (task, completion) pairs. :class:`SandboxPool` splits a request into
batches, keeps at most ``max_inflight_per_worker`` batches queued on each actor
(back-pressure: the caller blocks, memory stays bounded, a dead worker loses little),
and keeps per-job accounting. A worker that dies (process killed, node lost) is replaced
by a fresh actor and its in-flight items are retried once; items that fail twice come
back as errors (reward 0, reason ``"sandbox worker died"``), never silently scored.

    pool = SandboxPool(num_workers=4, backend="auto", limits=Limits(wall_s=5))
    rewards = pool.score([(task, completion), ...], job_id="job-1")   # order preserved
    pool.stats("job-1")   # programs, statuses, execs/s, retries, worker restarts
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.limits import Limits
from sandbox.result import ExecResult
from sandbox.rewards import RewardConfig, RewardResult, combine, score_completion


@dataclass(frozen=True)
class TaskView:
    """The three task fields scoring needs; shipped to workers instead of the Task class."""

    prompt: str
    entry_point: str
    test: str


class SandboxWorker:
    """Ray actor body: one warm backend, scoring batches (wrapped with ray.remote below)."""

    def __init__(self, backend: str, limits: Limits, config: RewardConfig):
        from sandbox.backends import make_backend

        self.limits = limits
        self.config = config
        self.backend = make_backend(backend)
        self.hello = self.backend.start(limits)

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": socket.gethostname(), "backend": self.backend.name,
                "note": self.backend.note, "executor": self.hello, "restarts": self.backend.restarts}

    def score(self, items: list[tuple[Any, str]]) -> list[RewardResult]:
        return [self._one(lambda: score_completion(task, completion, config=self.config,
                                                   limits=self.limits, backend=self.backend),
                          scoring=True) for task, completion in items]

    def run_batch(self, programs: list[tuple[str, str | None]]) -> list[ExecResult]:
        return [self._one(lambda: self.backend.run(p, t, limits=self.limits), scoring=False)
                for p, t in programs]

    def _one(self, run, scoring: bool):
        """One item of a batch: whatever goes wrong with it (a task whose tests do not
        parse, a sandbox fault) is that item's error, never its batch-mates'."""
        try:
            return run()
        except Exception as exc:
            result = ExecResult(status="error", backend=self.backend.name,
                                detail=f"sandbox failure: {type(exc).__name__}: {exc}"[:2000])
            if not scoring:
                return result
            out = combine(result, False, self.config)
            out.reward, out.reason = 0.0, "error"
            return out

    def shutdown(self) -> None:
        self.backend.close()


@dataclass
class JobStats:
    programs: int = 0
    batches: int = 0
    busy_s: float = 0.0  # summed program durations inside the sandbox
    wall_s: float = 0.0  # summed wall time of score() calls
    statuses: Counter = field(default_factory=Counter)
    retried: int = 0
    worker_errors: int = 0  # items reported as errors because their worker died twice
    reward_sum: float = 0.0

    def as_dict(self) -> dict:
        return {"programs": self.programs, "batches": self.batches,
                "busy_s": round(self.busy_s, 3), "wall_s": round(self.wall_s, 3),
                "execs_per_s": round(self.programs / self.wall_s, 2) if self.wall_s else 0.0,
                "statuses": dict(self.statuses), "retried": self.retried,
                "worker_errors": self.worker_errors,
                "reward_mean": round(self.reward_sum / self.programs, 4) if self.programs else 0.0}


def worker_died(reason: str, tests_total: int = 0) -> RewardResult:
    result = ExecResult(status="error", tests_total=tests_total, backend="none",
                        detail=f"sandbox worker died twice while running this program ({reason})",
                        outcomes=["not run"] * tests_total)
    out = combine(result, False, RewardConfig())
    out.reward, out.reason = 0.0, "sandbox worker died"
    return out


class SandboxPool:
    """Ray actor pool of sandbox workers (see module docstring)."""

    def __init__(self, num_workers: int, backend: str = "auto", limits: Limits | None = None, *,
                 reward_config: RewardConfig | None = None, batch_size: int = 8,
                 max_inflight_per_worker: int = 2, num_cpus_per_worker: float = 1.0,
                 resources: dict[str, float] | None = None, start_timeout_s: float = 120.0):
        if num_workers < 1:
            raise SandboxError(f"sandbox num_workers={num_workers} must be at least 1")
        if batch_size < 1 or max_inflight_per_worker < 1:
            raise SandboxError("sandbox batch_size and max_inflight_per_worker must be >= 1")
        if not ray.is_initialized():
            raise SandboxError("Ray is not initialised; call ray.init() (or start the job "
                               "through `cgrpo submit`) before creating a SandboxPool")
        from sandbox.backends import resolve

        # Resolved here for the job's log; each worker resolves ``auto`` again on its own
        # node (one node may have a Docker engine, another not): info() shows each.
        self.requested_backend = backend
        self.backend_name, self.backend_note = resolve(backend)
        self.limits = limits or Limits()
        self.config = reward_config or RewardConfig()
        self.batch_size = batch_size
        self.max_inflight = max_inflight_per_worker
        # resources: e.g. {"sandbox": 1} pins workers to nodes that advertise it (deploy/)
        self._actor_cls = ray.remote(num_cpus=num_cpus_per_worker, resources=resources or {},
                                     max_restarts=0, max_concurrency=1)(SandboxWorker)
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self._jobs: dict[str, JobStats] = {}
        self.workers = [self._spawn() for _ in range(num_workers)]
        self._infos = ray.get([w.info.remote() for w in self.workers], timeout=start_timeout_s)
        used = sorted({i["backend"] for i in self._infos})
        if used != [self.backend_name]:
            self.backend_name = "+".join(used)
            self.backend_note += f" (workers chose: {', '.join(i['backend'] for i in self._infos)})"

    @classmethod
    def from_config(cls, config: SandboxConfig) -> SandboxPool:
        return cls(config.workers, config.backend, config.limits, reward_config=config.rewards,
                   num_cpus_per_worker=config.num_cpus, resources=dict(config.resources))

    def _spawn(self):
        return self._actor_cls.remote(self.requested_backend, self.limits, self.config)

    def _replace(self, index: int) -> None:
        try:
            ray.kill(self.workers[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.workers[index] = self._spawn()
        self.restarts += 1

    # -- public ------------------------------------------------------------------------------
    def info(self) -> list[dict]:
        """Per worker: pid, backend and why it was chosen, executor hello, restarts."""
        self._infos = ray.get([w.info.remote() for w in self.workers], timeout=self.start_timeout_s)
        return self._infos

    def worker_pids(self) -> list[int]:
        return [i["pid"] for i in self.info()]

    def score(self, items: list[tuple[Any, str]], job_id: str = "default") -> list[RewardResult]:
        """Score (task, completion) pairs; blocks until all are done; order preserved."""
        views = [(TaskView(t.prompt, t.entry_point, t.test), c) for t, c in items]
        return self._execute(views, "score", job_id)

    def run(self, programs: list[tuple[str, str | None]], job_id: str = "default") -> list[ExecResult]:
        """Run raw (program, tests) pairs; same batching and retries as :meth:`score`."""
        return self._execute(list(programs), "run_batch", job_id)

    def stats(self, job_id: str | None = None) -> dict:
        """Accounting of one job (or every job, keyed by id) plus pool-wide restarts."""
        if job_id is not None:
            return dict(self._jobs.get(job_id, JobStats()).as_dict(), worker_restarts=self.restarts)
        return {"jobs": {k: v.as_dict() for k, v in self._jobs.items()},
                "worker_restarts": self.restarts, "workers": len(self.workers)}

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.shutdown.remote(), timeout=10)
            except Exception:
                pass
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []

    # -- the scheduler ---------------------------------------------------------------------------
    def _execute(self, payload: list, method: str, job_id: str) -> list:
        start = time.monotonic()
        stats = self._jobs.setdefault(job_id, JobStats())
        n = len(payload)
        results: list = [None] * n
        attempts = [0] * n
        queue = deque(list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size))
        inflight: dict[Any, tuple[int, list[int]]] = {}
        load = [0] * len(self.workers)
        generation = [0] * len(self.workers)
        while queue or inflight:
            while queue:  # dispatch to the least loaded worker with room
                w = min(range(len(self.workers)), key=lambda k: load[k])
                if load[w] >= self.max_inflight:
                    break
                batch = queue.popleft()
                for i in batch:
                    attempts[i] += 1
                ref = getattr(self.workers[w], method).remote([payload[i] for i in batch])
                inflight[ref] = (w, batch, generation[w])
                load[w] += 1
                stats.batches += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                w, batch, gen = inflight.pop(ref)
                load[w] -= 1
                try:
                    out = ray.get(ref)
                except (RayActorError, RayTaskError, GetTimeoutError) as exc:
                    if isinstance(exc, RayActorError) and gen == generation[w]:
                        generation[w] += 1
                        self._replace(w)
                    reason = type(exc).__name__
                    retry = []
                    for i in batch:
                        if attempts[i] < 2:
                            retry.append(i)
                            stats.retried += 1
                        else:
                            results[i] = self._failed(method, payload[i], reason)
                            stats.worker_errors += 1
                    if retry:
                        queue.appendleft(retry)
                    continue
                for i, r in zip(batch, out):
                    results[i] = r
        for r in results:
            stats.programs += 1
            res = r.result if isinstance(r, RewardResult) else r
            if isinstance(r, RewardResult):
                stats.reward_sum += r.reward
                stats.statuses[r.reason] += 1
            else:
                stats.statuses[r.status] += 1
            if res is not None:
                stats.busy_s += res.duration_s
        stats.wall_s += time.monotonic() - start
        return results

    @staticmethod
    def _failed(method: str, item, reason: str):
        if method == "score":
            return worker_died(reason)
        return ExecResult(status="error", backend="none",
                          detail=f"sandbox failure: worker died twice while running this program ({reason})")
