"""One job's log: what the job writes goes to the live view (Redis, :class:`JobState`)
and to the durable record (the run directory, :class:`RunRecord`), and its step metrics
and evaluations to W&B when the job switches it on. The recipe, the supervisor and the
driver write only here, so nothing reaches one place and not the other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from jobstate.config import WandbConfig
from jobstate.record import RunRecord
from jobstate.writer import JobState

# Fields of a job registered in Redis (by `cgrpo submit`) that its record starts from.
_REGISTERED = ("name", "status", "created_at", "total_steps", "config", "ray_job_id", "ray_dashboard_url", "log_path")


class JobLog:
    def __init__(self, state: JobState, record: RunRecord) -> None:
        self.job_id = state.job_id
        self.state, self.record = state, record
        self.wandb = None

    # -- the job record: both places ------------------------------------------------------

    def create(self, **fields: Any) -> None:
        """Register a new job (:meth:`JobState.create`'s arguments) in Redis and its record."""
        fields.setdefault("created_at", time.time())
        self.state.create(**fields)
        self.record.create(**fields)

    def adopt(self, registered: Mapping[str, Any]) -> None:
        """Start the record from a job already registered in Redis (as ``read_job`` gives it)."""
        self.record.update(**{k: registered[k] for k in _REGISTERED if registered.get(k) is not None})

    def update(self, **fields: Any) -> None:
        self.state.update(**fields)
        self.record.update(**fields)

    def set_status(self, status: str, error: str | None = None) -> None:
        self.state.set_status(status, error)
        self.record.set_status(status, error)

    # -- history: both places (metrics and evals to W&B too) ----------------------------------

    def start_wandb(self, cfg: WandbConfig, config: Mapping[str, Any]) -> None:
        from jobstate.wandb_run import WandbRun

        self.wandb = WandbRun.start(cfg, self.job_id, Path(self.record.run_dir), config)

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.state.log_metrics(metrics)
        self.record.log_metrics(metrics)
        if self.wandb is not None:
            self.wandb.log_metrics(metrics)

    def log_eval(self, step: int, split: str, steps_mode: str, pass_at_1: float, n: int, **extra: Any) -> None:
        self.state.log_eval(step, split, steps_mode, pass_at_1, n, **extra)
        self.record.log_eval(step, split, steps_mode, pass_at_1, n, **extra)
        if self.wandb is not None:
            self.wandb.log_eval(step=step, split=split, steps_mode=steps_mode, pass_at_1=pass_at_1, **extra)

    def event(self, message: str, level: str = "info") -> None:
        self.state.event(message, level)
        self.record.event(message, level)

    def set_rollout(self, sample: Mapping[str, Any]) -> None:
        self.state.set_rollout(sample)
        self.record.set_rollout(sample)

    # -- the live view only -----------------------------------------------------------------

    def heartbeat(self, worker_id: str, **info: Any) -> None:
        self.state.heartbeat(worker_id, **info)

    def remove_worker(self, worker_id: str) -> None:
        self.state.remove_worker(worker_id)

    def pop_commands(self) -> list[dict]:
        return self.state.pop_commands()

    def close(self, timeout: float = 5.0) -> bool:
        """Finish W&B, close the record, then give the last Redis writes up to ``timeout``
        seconds; True when all of them landed."""
        try:
            if self.wandb is not None:
                self.wandb.close()
        finally:
            self.record.close()
            delivered = self.state.close(timeout)
        return delivered
