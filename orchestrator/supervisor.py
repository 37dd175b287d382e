"""Supervision of a cluster job, apart from the recipe: control commands from Redis (stop,
scale), worker heartbeats and restarts, learner recovery from the last checkpoint, and the
workers' final state when the job ends.

The recipe calls it at three points (:class:`orchestrator.recipe.Supervisor`); an in-process
run (``bench/rl_scout.py``) has none.
"""

from __future__ import annotations

import time
from pathlib import Path

from jobstate import JobLog
from orchestrator.config import JobConfig
from orchestrator.parts import Parts, make_learner_group
from orchestrator.recipe import latest_checkpoint


class JobSupervisor:
    def __init__(self, cfg: JobConfig, parts: Parts, state: JobLog):
        self.cfg, self.parts, self.state = cfg, parts, state
        self.learner_restarts = 0
        self.restarts: dict[str, int] = {}
        self._pids: dict[str, int | None] = {}
        self._seen: dict[str, float] = {}  # worker id -> when it last answered

    # --- between steps --------------------------------------------------------------------
    def should_stop(self, step: int) -> bool:
        """Apply the queued control commands; True when one asks the job to stop."""
        for command in self.state.pop_commands():
            kind = command.get("cmd")
            if kind == "stop":
                self.state.event("stop requested")
                self.state.set_status("stopped")
                return True
            if kind == "scale":
                self._scale(command.get("rollout_actors"))
            else:
                self.state.event(f"ignored unknown command {command!r}", level="warning")
        return False

    def _scale(self, n: object) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
            self.state.event(f"ignored scale command with rollout_actors={n!r} (need 1..1024)", level="warning")
            return
        pool = self.parts.rollout
        before = len(pool.actors)
        removed = [info["worker_id"] for info in pool.infos()][n:]
        pool.resize(n)
        for worker_id in removed:
            self.state.remove_worker(worker_id)
        self.state.event(f"rollout pool scaled {before} → {n} actors")

    def after_step(self, step: int) -> None:
        self.heartbeats()

    # --- workers ------------------------------------------------------------------------
    def heartbeats(self, state: str = "alive") -> None:
        """Workers report through their replies; a changed pid means Ray restarted the actor.
        A worker that does not answer (its node lost) is shown ``unreachable`` meanwhile."""
        import ray

        now = time.time()
        rows = [(info["worker_id"], "rollout", info) for info in self.parts.rollout.infos()]
        try:
            rows += [(f"sandbox-{i}", "sandbox", info) for i, info in enumerate(self.parts.scorer.info())]
        except ray.exceptions.RayError:  # a sandbox worker lost: the pool replaces it when it next scores
            pass
        rows += [(f"learner-{info['rank']}", "learner", info) for info in self.parts.learner.workers_info]
        for worker_id, role, info in rows:
            pid = info.get("pid")
            if pid is None:
                self.state.heartbeat(worker_id, role=role, state="unreachable",
                                     last_heartbeat=self._seen.get(worker_id, now))
                continue
            self._seen[worker_id] = now
            if worker_id in self._pids and self._pids[worker_id] != pid:
                self.restarts[worker_id] = self.restarts.get(worker_id, 0) + 1
                self.state.event(f"{worker_id} was restarted (pid {self._pids[worker_id]} → {pid})",
                                 level="warning")
            self._pids[worker_id] = pid
            self.state.heartbeat(worker_id, role=role, node=info.get("node", ""), device=info.get("device", "cpu"),
                                 pid=pid, weight_version=info.get("weight_version"), last_heartbeat=now,
                                 restarts=self.restarts.get(worker_id, info.get("restarts", 0)), state=state)

    def mark_stopped(self) -> None:
        """After the job: every worker row says it is stopped (no longer "alive" with a stale
        heartbeat)."""
        for worker_id in self._pids:
            self.state.heartbeat(worker_id, state="stopped", last_heartbeat=time.time())

    # --- learner failures ----------------------------------------------------------------
    def recover_learner(self, exc: Exception, out_dir: Path) -> tuple[int, int]:
        """A fresh learner group from the last complete checkpoint (or the start model);
        returns (step, cursor position) to go on from. Re-raises what is not a lost learner
        worker, and the failure after ``run.max_learner_restarts`` recoveries."""
        import ray

        if not isinstance(exc, ray.exceptions.RayError):
            raise exc
        self.learner_restarts += 1
        limit = self.cfg.run.max_learner_restarts
        if self.learner_restarts > limit:
            raise exc
        self.state.event(f"learner failed ({type(exc).__name__}); restarting from the last checkpoint "
                         f"(retry {self.learner_restarts}/{limit})", level="warning")
        old_nodes = self.parts.learner.node_ids()
        try:
            self.parts.learner.shutdown()
        except Exception:  # noqa: BLE001 - the group is broken already; we only free what is left
            pass
        settle_nodes(old_nodes)
        self.parts.learner = make_learner_group(self.cfg)
        checkpoint = latest_checkpoint(out_dir)
        step, cursor = 0, 0
        if checkpoint is not None:
            extra = self.parts.learner.load(str(checkpoint))
            step, cursor = int(extra["step"]), int(extra["cursor"])
        nodes = sorted({info["node"] for info in self.parts.learner.workers_info})
        self.state.event(f"learner group rebuilt on {', '.join(nodes)}; resumed from step {step}")
        return step, cursor


def settle_nodes(node_ids: list[str], timeout_s: float = 120.0) -> None:
    """Wait until Ray knows whether each node is alive: a node that vanished (its machine or
    container gone) still counts as alive until its health checks run out, some seconds
    later, and a learner group placed meanwhile would land on it and fail again. A probe
    pinned to each node answers at once from a live node, and fails when Ray declares the
    node dead."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(lambda: True)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
            for node in node_ids]
    deadline = time.monotonic() + timeout_s
    for ref in refs:
        try:
            ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - a dead node: what we waited to learn
            pass
