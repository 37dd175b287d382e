"""A job's state: Redis for the live view (:mod:`jobstate.writer`, :mod:`jobstate.readers`).

This package imports no torch, Ray or DeepSpeed: the dashboard and the job commands read
state without loading the training stack.
"""

from jobstate.keys import (CONTROL_CAP, DEFAULT_REDIS_URL, EVALS_CAP, EVENTS_CAP, JOB_STATUSES, METRIC_FIELDS,
                           METRICS_CAP, PREFIX, TERMINAL_STATUSES, StateError, connect, job_key, redis_url,
                           valid_job_id)
from jobstate.readers import (Records, list_jobs, read_evals, read_events, read_job, read_metrics, read_rollout,
                              read_workers)
from jobstate.writer import JobState, push_command

__all__ = [
    "CONTROL_CAP", "DEFAULT_REDIS_URL", "EVALS_CAP", "EVENTS_CAP", "JOB_STATUSES", "METRICS_CAP", "METRIC_FIELDS",
    "PREFIX", "TERMINAL_STATUSES", "JobState", "Records", "StateError", "connect", "job_key", "list_jobs",
    "push_command", "read_evals", "read_events", "read_job", "read_metrics", "read_rollout", "read_workers",
    "redis_url", "valid_job_id",
]
