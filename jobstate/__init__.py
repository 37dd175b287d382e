"""A job's state: Redis for the live view (:mod:`jobstate.writer`, :mod:`jobstate.readers`),
the run directory for the durable record (:mod:`jobstate.record`, TensorBoard files and
optionally W&B), both written through one :class:`JobLog` (:mod:`jobstate.joblog`).

This package imports no torch, Ray or DeepSpeed: the dashboard and the job commands read
state without loading the training stack.
"""

from jobstate.joblog import JobLog
from jobstate.keys import (CONTROL_CAP, DEFAULT_REDIS_URL, EVALS_CAP, EVENTS_CAP, JOB_STATUSES, METRIC_FIELDS,
                           METRICS_CAP, PREFIX, TERMINAL_STATUSES, StateError, connect, job_key, redis_url,
                           valid_job_id)
from jobstate.readers import (Records, list_jobs, read_evals, read_events, read_job, read_metrics, read_rollout,
                              read_workers)
from jobstate.record import (RunRecord, eval_scalars, list_runs, metric_scalars, read_run_evals, read_run_events,
                             read_run_job, read_run_metrics, read_run_rollout, run_signature)
from jobstate.writer import JobState, push_command

__all__ = [
    "CONTROL_CAP", "DEFAULT_REDIS_URL", "EVALS_CAP", "EVENTS_CAP", "JOB_STATUSES", "METRICS_CAP", "METRIC_FIELDS",
    "PREFIX", "TERMINAL_STATUSES", "JobLog", "JobState", "Records", "RunRecord", "StateError", "connect",
    "eval_scalars", "job_key", "list_jobs", "list_runs", "metric_scalars", "push_command", "read_evals",
    "read_events", "read_job", "read_metrics", "read_rollout", "read_run_evals", "read_run_events", "read_run_job",
    "read_run_metrics", "read_run_rollout", "read_workers", "redis_url", "run_signature", "valid_job_id",
]
