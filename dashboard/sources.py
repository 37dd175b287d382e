"""Where the dashboard reads a job from: Redis (the live view) while Redis knows the job,
else the job's run directory (the record), so a job Redis has lost still shows its curves,
evaluations, events and last rollout sample.

A job's run directory is ``RUNS/JOB`` where RUNS is the dashboard's runs folder
(``--runs``, default ``$CGRPO_RUNS_DIR`` or the repository's ``runs/``): jobs whose
``run.output_dir`` is elsewhere are found there only while Redis has them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import redis

import jobstate as state


@dataclass(frozen=True)
class Source:
    """One job's readers; ``kind`` is "redis" or "record"."""

    kind: str
    metrics: Callable[[int | None], state.Records]
    evals: Callable[[], state.Records]
    workers: Callable[[], state.Records]
    events: Callable[[int], state.Records]
    rollout: Callable[[], state.Records]
    signature: Callable[[], str]


def redis_source(r: redis.Redis, job_id: str) -> Source:
    return Source("redis", lambda after: state.read_metrics(r, job_id, after), lambda: state.read_evals(r, job_id),
                  lambda: state.read_workers(r, job_id), lambda limit: state.read_events(r, job_id, limit),
                  lambda: state.read_rollout(r, job_id), lambda: _redis_signature(r, job_id))


def record_source(run_dir: Path) -> Source:
    """The run directory has no worker table: a job read from it shows none."""
    return Source("record", lambda after: state.read_run_metrics(run_dir, after),
                  lambda: state.read_run_evals(run_dir), lambda: state.Records(),
                  lambda limit: state.read_run_events(run_dir, limit), lambda: state.read_run_rollout(run_dir),
                  lambda: state.run_signature(run_dir))


def find_job(r: redis.Redis, runs: Path, job_id: str) -> tuple[dict, Source] | None:
    """The job and where to read it: Redis when it holds the job's record, else its run
    directory, else Redis's bare index entry; None when neither knows the job."""
    job = state.read_job(r, job_id)
    if job is not None and not job["missing_record"]:
        return _tagged(job, "redis"), redis_source(r, job_id)
    recorded = state.read_run_job(runs / job_id) if state.valid_job_id(job_id) else None
    if recorded is not None:
        return _tagged(recorded, "record"), record_source(runs / job_id)
    if job is not None:
        return _tagged(job, "redis"), redis_source(r, job_id)
    return None


def all_jobs(r: redis.Redis, runs: Path) -> list[dict]:
    """Every job in Redis, and every recorded job that Redis has no record of; newest first."""
    live = [_tagged(j, "redis") for j in state.list_jobs(r)]
    known = {j["id"] for j in live if not j["missing_record"]}
    recorded = {j["id"]: _tagged(j, "record") for j in state.list_runs(runs, skip=known)}
    jobs = [j for j in live if j["id"] not in recorded] + list(recorded.values())
    jobs.sort(key=lambda j: j["created_at"] or 0.0, reverse=True)
    return jobs


def _tagged(job: dict, source: str) -> dict:
    job["source"] = source
    return job


def _redis_signature(r: redis.Redis, job_id: str) -> str:
    """A cheap digest of what the page shows; it changes when any of it does."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(state.job_key(job_id))
    for part in ("metrics", "evals", "events"):
        pipe.llen(state.job_key(job_id, part))
        pipe.lindex(state.job_key(job_id, part), -1)
    pipe.hgetall(state.job_key(job_id, "workers"))
    pipe.get(state.job_key(job_id, "rollout"))
    res = pipe.execute(raise_on_error=False)
    return hashlib.sha1(repr(res).encode()).hexdigest()
