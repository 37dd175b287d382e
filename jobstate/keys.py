"""Where a job's state lives in Redis, and how values are written there.

Key layout (all under ``cgrpo:``; docs/contracts.md): ``jobs`` (zset id -> created time),
``job:{id}`` (hash: the job record), ``job:{id}:metrics`` / ``:evals`` / ``:events`` (capped
lists of JSON), ``job:{id}:workers`` (hash worker id -> JSON), ``job:{id}:rollout`` (JSON
string), ``job:{id}:control`` (list of JSON commands for the running job).

Redis is the live view; the durable record of a job is its run directory
(:mod:`jobstate.record`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Any, Mapping

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from errors import CgrpoError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"
PREFIX = "cgrpo:"
METRICS_CAP = 10_000
EVALS_CAP = 1_000
EVENTS_CAP = 1_000
CONTROL_CAP = 1_000
JOB_STATUSES = ("pending", "running", "succeeded", "failed", "stopped")
TERMINAL_STATUSES = ("succeeded", "failed", "stopped")
# Numeric per-step metrics (besides ``step``, ``time`` and ``weight_version``).
METRIC_FIELDS = (
    "reward_mean", "reward_std", "pass_rate", "kl", "loss", "clip_frac", "grad_norm", "lr",
    "ratio_mean", "ratio_min", "ratio_max", "arness_local", "arness_global", "parallel_fraction",
    "inpainted_frac", "rollout_tokens_per_s",
    "sandbox_execs_per_s", "learner_step_s", "rollout_idle_frac", "rollout_version",
)
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_LISTS = {"metrics": METRICS_CAP, "evals": EVALS_CAP, "events": EVENTS_CAP}


class StateError(CgrpoError):
    """A bad job id or Redis URL given to the state layer."""


# --------------------------------------------------------------------------- keys, client


def redis_url(url: str | None = None) -> str:
    """The Redis URL to use: the argument, else ``$CGRPO_REDIS_URL``, else port 6390."""
    return url or os.environ.get("CGRPO_REDIS_URL") or DEFAULT_REDIS_URL


def connect(url: str | None = None) -> redis.Redis:
    """A client with short timeouts and no retry loop, so that an outage costs a job
    milliseconds per write instead of blocking it (the write buffer does the retrying)."""
    url = redis_url(url)
    try:
        return redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )
    except ValueError as exc:
        raise StateError(f"bad Redis URL {url!r}: {exc}; use redis://HOST:PORT/DB "
                         f"(cgrpo's default is {DEFAULT_REDIS_URL})") from exc


def valid_job_id(job_id: str) -> bool:
    """Job ids are key segments: letters, digits, ``_.-`` (no ``:``), at most 128 chars."""
    return isinstance(job_id, str) and bool(_JOB_ID_RE.match(job_id))


def job_key(job_id: str, part: str | None = None) -> str:
    """``cgrpo:job:{id}`` or ``cgrpo:job:{id}:{part}``."""
    if not valid_job_id(job_id):
        raise StateError(f"bad job id {job_id!r}: use letters, digits, '_', '.', '-' "
                         "(at most 128 characters, no ':')")
    return f"{PREFIX}job:{job_id}" + (f":{part}" if part else "")


def jobs_key() -> str:
    return f"{PREFIX}jobs"


# --------------------------------------------------------------------------- the job record


def new_job_record(job_id: str, *, name: str = "", config: Mapping[str, Any] | None = None,
                   total_steps: int | None = None, status: str = "pending", **fields: Any) -> dict:
    """A new job's record (the fields of ``cgrpo:job:{id}`` and of the run directory's
    job.json); ``fields`` add to or override the defaults (e.g. ``created_at``)."""
    return {"id": job_id, "name": name or job_id, "status": status, "created_at": time.time(), "step": 0,
            "total_steps": total_steps, "config": dict(config or {}), **fields}


def check_status(fields: Mapping[str, Any]) -> None:
    """Refuse a job record update whose ``status`` is not one of JOB_STATUSES."""
    if "status" in fields and fields["status"] not in JOB_STATUSES:
        raise StateError(f"bad job status {fields['status']!r}: use one of {JOB_STATUSES}")


def dumps(obj: Any) -> str:
    """JSON without NaN/Infinity (browsers reject them): non-finite floats become null."""
    return json.dumps(_finite(obj), separators=(",", ":"), default=str)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _finite(obj.item())
        except (TypeError, ValueError):
            return str(obj)
    return obj



def load_obj(raw: Any) -> dict | None:
    """A JSON object from a stored string, or None (NaN/Infinity literals become None: they
    are not JSON a browser accepts)."""
    try:
        obj = json.loads(raw, parse_constant=lambda _: None)
    except (TypeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
