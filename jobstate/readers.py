"""What the dashboard and the CLI read back from Redis.

Plain functions over a ``redis.Redis`` client. They never trust what they find: entries
that are not JSON objects, records without a valid step, NaN or non-numeric values, keys of
the wrong type all become skipped entries or ``None`` values, counted in :class:`Records`,
so that a half-written job shows as partial instead of breaking the reader.

Each reader fetches raw entries and hands them to a ``parse_*`` function; the run
directory's readers (:mod:`jobstate.record`) use the same parsers on its JSONL lines, so
a job reads the same from either place.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import redis

from jobstate.keys import JOB_STATUSES, METRIC_FIELDS, job_key, jobs_key, load_obj, valid_job_id


@dataclass
class Records:
    """What a reader found: the valid ``items`` and how many entries it ``skipped``
    (not JSON, no valid step, ...); ``error`` names a key of the wrong type."""

    items: list[dict] = field(default_factory=list)
    skipped: int = 0
    error: str | None = None




def _num(v: Any) -> float | None:
    """A finite float from a JSON value or numeric string; None for anything else."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None and f == int(f) else None


def _str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _wrongtype(key: str, exc: Exception) -> Records:
    return Records(error=f"{key}: {exc}")


def list_jobs(r: redis.Redis) -> list[dict]:
    """All jobs, newest first, each as :func:`read_job` gives it; a job in the index
    whose record is gone shows with status "unknown" and ``missing_record`` True."""
    try:
        entries = r.zrevrange(jobs_key(), 0, -1, withscores=True)
    except redis.ResponseError:
        return []
    ids = [(jid, score) for jid, score in entries if valid_job_id(jid)]
    pipe = r.pipeline(transaction=False)
    for jid, _ in ids:
        pipe.hgetall(job_key(jid))
    raws = pipe.execute(raise_on_error=False) if ids else []
    jobs = []
    for (jid, score), raw in zip(ids, raws):
        raw = raw if isinstance(raw, dict) else {}
        job = parse_job(jid, raw)
        if job["created_at"] is None:
            job["created_at"] = score
        jobs.append(job)
    return jobs


def read_job(r: redis.Redis, job_id: str) -> dict | None:
    """The job record with typed fields, or None when there is no such job."""
    if not valid_job_id(job_id):
        return None
    try:
        raw = r.hgetall(job_key(job_id))
    except redis.ResponseError:
        raw = {}
    if not raw:
        score = r.zscore(jobs_key(), job_id)
        if score is None:
            return None
        job = parse_job(job_id, {})
        job["created_at"] = score
        return job
    return parse_job(job_id, raw)


def parse_job(job_id: str, raw: Mapping[str, Any]) -> dict:
    """A job record with typed fields from its raw fields (the Redis hash's strings, or the
    run directory's job.json values)."""
    status = raw.get("status", "")
    config, config_error = None, None
    if raw.get("config"):
        config = raw["config"] if isinstance(raw["config"], dict) else load_obj(raw["config"])
        if config is None:
            config_error = "config is not a JSON object"
    url = _str(raw.get("ray_dashboard_url"))
    if url and not re.match(r"^https?://", url):
        url = None  # only web links are shown (never javascript: and the like)
    return {
        "id": job_id,
        "name": _str(raw.get("name")) or job_id,
        "status": status if status in JOB_STATUSES else "unknown",
        "created_at": _num(raw.get("created_at")),
        "updated_at": _num(raw.get("updated_at")),
        "step": _int(raw.get("step")),
        "total_steps": _int(raw.get("total_steps")),
        "weight_version": _int(raw.get("weight_version")),
        "config": config,
        "config_error": config_error,
        "ray_job_id": _str(raw.get("ray_job_id")),
        "ray_dashboard_url": url,
        "log_path": _str(raw.get("log_path")),
        "export_path": _str(raw.get("export_path")),
        "error": _str(raw.get("error")),
        "missing_record": not raw,
    }


def read_metrics(r: redis.Redis, job_id: str, after_step: int | None = None) -> Records:
    """Per-step metrics sorted by step (the last record of a repeated step wins), every
    METRIC_FIELDS value a float or None; only steps > ``after_step`` when given (read
    from the tail of the list, so a live poll does not re-read 10 000 entries)."""
    key = job_key(job_id, "metrics")
    try:
        raw = _tail_after(r, key, after_step)
    except redis.ResponseError as exc:
        return _wrongtype(key, exc)
    return parse_metrics(raw, after_step)


def parse_metrics(raw: Iterable[str], after_step: int | None = None) -> Records:
    """:func:`read_metrics` over raw JSON entries."""
    by_step: dict[int, dict] = {}
    skipped = 0
    for entry in raw:
        rec = load_obj(entry)
        step = _int(rec.get("step")) if rec else None
        if step is None or step < 0:
            skipped += 1
            continue
        if after_step is not None and step <= after_step:
            continue
        item = {"step": step, "time": _num(rec.get("time")),
                "weight_version": _int(rec.get("weight_version"))}
        item.update({f: _num(rec.get(f)) for f in METRIC_FIELDS})
        by_step[step] = item
    return Records([by_step[s] for s in sorted(by_step)], skipped)


def _tail_after(r: redis.Redis, key: str, after_step: int | None) -> list[str]:
    if after_step is None:
        return r.lrange(key, 0, -1)
    n = 64
    while True:
        chunk = r.lrange(key, -n, -1)
        if len(chunk) < n:
            return chunk
        steps = [_int(o.get("step")) for o in map(load_obj, chunk) if o]
        if any(s is not None and s <= after_step for s in steps):
            return chunk
        n *= 4


def read_evals(r: redis.Redis, job_id: str) -> Records:
    """Held-out evaluations sorted by step: step, split, steps_mode, pass_at_1, se (its
    standard error), n (tasks), samples (per task), correct (per-task counts, for paired
    comparisons; None when absent or malformed)."""
    key = job_key(job_id, "evals")
    try:
        raw = r.lrange(key, 0, -1)
    except redis.ResponseError as exc:
        return _wrongtype(key, exc)
    return parse_evals(raw)


def parse_evals(raw: Iterable[str]) -> Records:
    """:func:`read_evals` over raw JSON entries."""
    items, skipped = [], 0
    for entry in raw:
        rec = load_obj(entry)
        step = _int(rec.get("step")) if rec else None
        if step is None:
            skipped += 1
            continue
        correct = rec.get("correct")
        if not (isinstance(correct, list) and all(_int(c) is not None for c in correct)):
            correct = None
        items.append({"step": step, "split": _str(rec.get("split")) or "heldout",
                      "steps_mode": _str(rec.get("steps_mode")) or "full",
                      "pass_at_1": _num(rec.get("pass_at_1")), "se": _num(rec.get("se")), "n": _int(rec.get("n")),
                      "samples": _int(rec.get("samples")), "correct": [_int(c) for c in correct] if correct else None,
                      "time": _num(rec.get("time"))})
    items.sort(key=lambda e: e["step"])
    return Records(items, skipped)


def read_workers(r: redis.Redis, job_id: str) -> Records:
    """Workers sorted by role then id: id, role, node, device, pid, weight_version,
    last_heartbeat, restarts, state."""
    key = job_key(job_id, "workers")
    try:
        raw = r.hgetall(key)
    except redis.ResponseError as exc:
        return _wrongtype(key, exc)
    items, skipped = [], 0
    for wid, entry in raw.items():
        rec = load_obj(entry)
        if rec is None:
            skipped += 1
            continue
        items.append({"id": wid, "role": _str(rec.get("role")) or "unknown",
                      "node": _str(rec.get("node")), "device": _str(rec.get("device")),
                      "pid": _int(rec.get("pid")), "weight_version": _int(rec.get("weight_version")),
                      "last_heartbeat": _num(rec.get("last_heartbeat")),
                      "restarts": _int(rec.get("restarts")) or 0, "state": _str(rec.get("state"))})
    items.sort(key=lambda w: (w["role"], w["id"]))
    return Records(items, skipped)


def read_events(r: redis.Redis, job_id: str, limit: int = 100) -> Records:
    """The last ``limit`` events, oldest first: time, level, message."""
    key = job_key(job_id, "events")
    try:
        raw = r.lrange(key, -max(1, limit), -1)
    except redis.ResponseError as exc:
        return _wrongtype(key, exc)
    return parse_events(raw)


def parse_events(raw: Iterable[str]) -> Records:
    """:func:`read_events` over raw JSON entries."""
    items, skipped = [], 0
    for entry in raw:
        rec = load_obj(entry)
        if rec is None or rec.get("message") is None:
            skipped += 1
            continue
        items.append({"time": _num(rec.get("time")), "level": _str(rec.get("level")) or "info",
                      "message": str(rec["message"])})
    return Records(items, skipped)


def read_rollout(r: redis.Redis, job_id: str) -> Records:
    """The latest sampled completion as zero or one item: step, task_id, prompt, tokens,
    order (same length as tokens; None where unknown), reward, status, test_report,
    and ``problem`` when tokens and order disagree."""
    key = job_key(job_id, "rollout")
    try:
        raw = r.get(key)
    except redis.ResponseError as exc:
        return _wrongtype(key, exc)
    return parse_rollout(raw)


def parse_rollout(raw: str | None) -> Records:
    """:func:`read_rollout` over the raw JSON string (None: no sample yet)."""
    if raw is None:
        return Records()
    rec = load_obj(raw)
    if rec is None or not isinstance(rec.get("tokens"), list):
        return Records(skipped=1)
    tokens = ["" if t is None else str(t) for t in rec["tokens"]]
    order_raw = rec.get("order") if isinstance(rec.get("order"), list) else []
    order = [_int(o) for o in order_raw[:len(tokens)]]
    order += [None] * (len(tokens) - len(order))
    problem = None
    if len(order_raw) != len(tokens):
        problem = f"order has {len(order_raw)} entries for {len(tokens)} tokens"
    report = rec.get("test_report")
    if report is not None and not isinstance(report, str):
        report = json.dumps(report, indent=2, default=str)
    return Records([{"step": _int(rec.get("step")), "task_id": _str(rec.get("task_id")),
                     "prompt": _str(rec.get("prompt")) or "", "tokens": tokens, "order": order,
                     "reward": _num(rec.get("reward")), "status": _str(rec.get("status")),
                     "test_report": report or "", "problem": problem}])
