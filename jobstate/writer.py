"""What is written to Redis: a running job's state (:class:`JobState`) and the control
commands users queue for it (:func:`push_command`).

A training job must not stop because Redis restarted, so every write goes to memory first
and is flushed to Redis in one MULTI/EXEC transaction; when Redis is unreachable the writes
stay buffered (list appends in order, the job record and the worker table as their latest
values) and a background thread delivers them once Redis answers again. When the server
comes back empty, the job record, the job index entry, the worker table and the latest
rollout are re-written in full.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import redis

from jobstate.keys import (CONTROL_CAP, EVALS_CAP, EVENTS_CAP, METRICS_CAP, StateError, check_status, connect, dumps,
                           job_key, jobs_key, load_obj, new_job_record)

log = logging.getLogger("cgrpo.state")

_LISTS = {"metrics": METRICS_CAP, "evals": EVALS_CAP, "events": EVENTS_CAP}
_BATCH = 1_000  # list entries per RPUSH in one flush


class JobState:
    """Writes one job's state; survives Redis outages by buffering (see module doc).

    Every method returns at once; ``pending`` tells how many writes wait for Redis.
    Call :meth:`close` at the end of the job to give the last writes a chance to land.
    """

    def __init__(self, job_id: str, client: redis.Redis | str | None = None, *,
                 buffer_limit: int = 100_000, retry_s: float = 1.0) -> None:
        job_key(job_id)  # validates
        self.job_id = job_id
        self._r = client if isinstance(client, redis.Redis) else connect(client)
        self._buffer_limit = buffer_limit
        self._retry_s = retry_s
        self._lock = threading.Lock()         # guards the buffers below
        self._flush_lock = threading.Lock()   # one flusher at a time
        self._job: dict[str, str] = {}
        self._job_dirty: set[str] = set()
        self._workers: dict[str, str] = {}
        self._workers_dirty: set[str] = set()
        self._workers_removed: set[str] = set()
        self._rollout: str | None = None
        self._rollout_dirty = False
        self._index_dirty = False
        self._appends: deque[tuple[str, str]] = deque()
        self._dropped = 0
        self._retry_at = 0.0
        self._outage_since: float | None = None
        self._retrier: threading.Thread | None = None
        self._closed = False
        self._record_sent = False   # the record / worker table reached Redis once, so
        self._workers_sent = False  # finding them missing later means the server restarted

    # -- public writes ------------------------------------------------------------------

    def create(self, *, name: str = "", config: Mapping[str, Any] | None = None,
               total_steps: int | None = None, status: str = "pending", **fields: Any) -> None:
        """Register the job: its record and its entry in the job index."""
        record = new_job_record(self.job_id, name=name, config=config, total_steps=total_steps, status=status,
                                **fields)
        with self._lock:
            self._index_dirty = True
        self.update(**record)

    def update(self, **fields: Any) -> None:
        """Set fields of the job record (``status``, ``step``, ``ray_dashboard_url``, ...);
        dicts and lists are stored as JSON, ``None`` as an empty string."""
        check_status(fields)
        fields.setdefault("updated_at", time.time())
        with self._lock:
            for k, v in fields.items():
                self._job[k] = _field_str(v)
                self._job_dirty.add(k)
        self._written()

    def set_status(self, status: str, error: str | None = None) -> None:
        """Move the job to ``status``; ``error`` is the message a failed job shows."""
        self.update(status=status, **({"error": error} if error is not None else {}))

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one step's metrics (must hold ``step``; see METRIC_FIELDS) and move the
        job record's ``step`` (and ``weight_version`` when given) along."""
        if "step" not in metrics:
            raise StateError("metrics record has no 'step' field; pass the training step")
        record = {"time": time.time(), **metrics}
        fields = {"step": metrics["step"], "updated_at": record["time"]}
        if "weight_version" in metrics:
            fields["weight_version"] = metrics["weight_version"]
        with self._lock:
            for k, v in fields.items():
                self._job[k] = _field_str(v)
                self._job_dirty.add(k)
        self._append("metrics", dumps(record))  # one transaction carries both

    def log_eval(self, step: int, split: str, steps_mode: str, pass_at_1: float, n: int,
                 **extra: Any) -> None:
        """Append one held-out evaluation: pass@1 on ``split`` with ``steps_mode``
        ("full" = steps equal to the completion length, "half" = half as many)."""
        self._append("evals", dumps({"step": step, "split": split, "steps_mode": steps_mode,
                                      "pass_at_1": pass_at_1, "n": n, "time": time.time(),
                                      **extra}))

    def heartbeat(self, worker_id: str, **info: Any) -> None:
        """Record a worker's latest state (role, node, device, pid, weight_version,
        restarts, state); ``last_heartbeat`` defaults to now. Keeps earlier fields."""
        with self._lock:
            old = json.loads(self._workers.get(worker_id, "{}"))
            old.update(info)
            if "last_heartbeat" not in info:
                old["last_heartbeat"] = time.time()
            self._workers[worker_id] = dumps(old)
            self._workers_dirty.add(worker_id)
            self._workers_removed.discard(worker_id)
        self._written()

    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker from the table (scaled down, not crashed: crashes keep the row)."""
        with self._lock:
            self._workers.pop(worker_id, None)
            self._workers_dirty.discard(worker_id)
            self._workers_removed.add(worker_id)
        self._written()

    def event(self, message: str, level: str = "info") -> None:
        """Append a line to the job's event log (level: info, warning, error)."""
        self._append("events", dumps({"time": time.time(), "level": level, "message": message}))

    def set_rollout(self, sample: Mapping[str, Any]) -> None:
        """Replace the sampled completion the dashboard shows: step, task_id, prompt,
        tokens (list of str), order (step each token was committed), reward, status,
        test_report."""
        with self._lock:
            self._rollout = dumps(dict(sample))
            self._rollout_dirty = True
        self._written()

    def pop_commands(self) -> list[dict]:
        """Take the control commands queued for this job ({"cmd": "stop"} or
        {"cmd": "scale", "rollout_actors": M}); ``[]`` when there are none or Redis is
        down. Entries that are not JSON objects with a ``cmd`` are dropped with a warning."""
        key = job_key(self.job_id, "control")
        try:
            pipe = self._r.pipeline(transaction=True)
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            return []
        except redis.ResponseError as exc:
            log.warning("job %s: control key unreadable (%s)", self.job_id, exc)
            return []
        out = []
        for entry in raw:
            cmd = load_obj(entry)
            if cmd is None or not isinstance(cmd.get("cmd"), str):
                log.warning("job %s: ignoring malformed control command %r", self.job_id, entry)
                continue
            out.append(cmd)
        return out

    # -- buffer -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Writes not yet in Redis (list entries plus changed record fields)."""
        with self._lock:
            return (len(self._appends) + len(self._job_dirty) + len(self._workers_dirty)
                    + len(self._workers_removed) + int(self._rollout_dirty))

    @property
    def dropped(self) -> int:
        """List entries dropped because the buffer overflowed during an outage."""
        return self._dropped

    def flush(self) -> bool:
        """Try to deliver everything now; True when nothing is left pending."""
        return self._flush()

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, retrying for up to ``timeout`` seconds; True when all writes landed."""
        deadline = time.monotonic() + timeout
        while not self._flush():
            if time.monotonic() >= deadline:
                log.warning("job %s: %d writes never reached Redis", self.job_id, self.pending)
                break
            time.sleep(min(0.2, self._retry_s))
        self._closed = True
        return self.pending == 0

    def _append(self, name: str, payload: str) -> None:
        with self._lock:
            self._appends.append((name, payload))
            while len(self._appends) > self._buffer_limit:
                self._appends.popleft()
                self._dropped += 1
                if self._dropped in (1, 1000) or self._dropped % 100_000 == 0:
                    log.warning("job %s: write buffer full, dropped %d oldest entries",
                                self.job_id, self._dropped)
        self._written()

    def _written(self) -> None:
        """After a buffered write: flush now, unless Redis is known down (then the
        retry thread will)."""
        with self._lock:
            if time.monotonic() < self._retry_at:
                self._ensure_retrier()
                return
        self._flush()

    def _ensure_retrier(self) -> None:  # caller holds self._lock
        if self._closed or (self._retrier is not None and self._retrier.is_alive()):
            return
        self._retrier = threading.Thread(target=self._retry_loop, daemon=True,
                                         name=f"cgrpo-state-{self.job_id}")
        self._retrier.start()

    def _retry_loop(self) -> None:
        while True:
            time.sleep(self._retry_s)
            self._flush()
            with self._lock:
                if self._closed or not self._has_pending():
                    self._retrier = None
                    return

    def _has_pending(self) -> bool:  # caller holds self._lock
        return bool(self._appends or self._job_dirty or self._workers_dirty
                    or self._workers_removed or self._rollout_dirty or self._index_dirty)

    def _flush(self) -> bool:
        with self._flush_lock:
            while True:
                with self._lock:
                    if not self._has_pending():
                        return True
                    batch = _Batch.take(self)
                try:
                    lost = batch.send(self._r, self.job_id, self._record_sent, self._workers_sent)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    with self._lock:
                        batch.give_back(self)
                        self._retry_at = time.monotonic() + self._retry_s
                        if self._outage_since is None:
                            self._outage_since = time.time()
                            log.warning("job %s: Redis unreachable (%s); buffering writes",
                                        self.job_id, exc)
                        self._ensure_retrier()
                    return False
                with self._lock:
                    self._retry_at = 0.0
                    self._record_sent = self._record_sent or bool(batch.job)
                    self._workers_sent = self._workers_sent or bool(batch.workers)
                    if self._outage_since is not None or lost:
                        if self._outage_since is not None:
                            log.warning("job %s: Redis back after %.1f s; delivering buffered "
                                        "writes", self.job_id, time.time() - self._outage_since)
                        else:
                            log.warning("job %s: job record missing in Redis (server restarted?);"
                                        " re-writing it", self.job_id)
                        self._outage_since = None
                        # The server may have restarted empty: re-send the latest record,
                        # index entry, workers and rollout with the next batch.
                        self._job_dirty |= set(self._job)
                        self._workers_dirty |= set(self._workers)
                        self._rollout_dirty = self._rollout is not None
                        self._index_dirty = self._index_dirty or "created_at" in self._job


@dataclass
class _Batch:
    """One transaction's worth of buffered writes, taken out of a JobState under its lock."""

    job: dict[str, str]
    index: str | None
    workers: dict[str, str]
    removed: set[str]
    rollout: str | None
    appends: list[tuple[str, str]]
    taken: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def take(cls, s: JobState) -> "_Batch":
        appends = [s._appends.popleft() for _ in range(min(len(s._appends), 4 * _BATCH))]
        b = cls(job={k: s._job[k] for k in s._job_dirty if k in s._job},
                index=s._job.get("created_at") if s._index_dirty else None,
                workers={w: s._workers[w] for w in s._workers_dirty if w in s._workers},
                removed=set(s._workers_removed),
                rollout=s._rollout if s._rollout_dirty else None,
                appends=appends)
        b.taken = {"job": set(s._job_dirty), "index": s._index_dirty,
                   "workers": set(s._workers_dirty), "rollout": s._rollout_dirty}
        s._job_dirty, s._workers_dirty, s._workers_removed = set(), set(), set()
        s._rollout_dirty = s._index_dirty = False
        return b

    def give_back(self, s: JobState) -> None:
        """Undo :meth:`take` after a failed send (newer writes since then win)."""
        s._job_dirty |= self.taken["job"]
        s._workers_dirty |= self.taken["workers"]
        s._workers_removed |= self.removed - set(s._workers)
        s._rollout_dirty = s._rollout_dirty or self.taken["rollout"]
        s._index_dirty = s._index_dirty or self.taken["index"]
        s._appends.extendleft(reversed(self.appends))
        while len(s._appends) > s._buffer_limit:
            s._appends.popleft()
            s._dropped += 1

    def send(self, r: redis.Redis, job_id: str, expect_job: bool, expect_workers: bool) -> bool:
        """Run the batch as one transaction; True when the server had lost the job record
        or worker table this writer keeps (it restarted empty), so they need re-sending."""
        pipe = r.pipeline(transaction=True)
        pipe.exists(job_key(job_id))
        pipe.exists(job_key(job_id, "workers"))
        if self.job:
            pipe.hset(job_key(job_id), mapping=self.job)
        if self.index is not None:
            pipe.zadd(jobs_key(), {job_id: float(self.index or time.time())})
        if self.workers:
            pipe.hset(job_key(job_id, "workers"), mapping=self.workers)
        if self.removed:
            pipe.hdel(job_key(job_id, "workers"), *self.removed)
        if self.rollout is not None:
            pipe.set(job_key(job_id, "rollout"), self.rollout)
        grouped: dict[str, list[str]] = {}
        for name, payload in self.appends:
            grouped.setdefault(name, []).append(payload)
        for name, payloads in grouped.items():
            key = job_key(job_id, name)
            for i in range(0, len(payloads), _BATCH):
                pipe.rpush(key, *payloads[i:i + _BATCH])
            pipe.ltrim(key, -_LISTS[name], -1)
        results = pipe.execute(raise_on_error=False)
        for res in results:
            if isinstance(res, redis.ResponseError):  # e.g. WRONGTYPE: a data problem, not an outage
                log.warning("job %s: Redis refused a write: %s", job_id, res)
        return (expect_job and results[0] == 0) or (expect_workers and results[1] == 0)


def _field_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list, tuple)):
        return dumps(v)
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return str(v)


def push_command(r: redis.Redis, job_id: str, command: Mapping[str, Any]) -> dict:
    """Queue a control command for a running job (read by ``JobState.pop_commands``);
    returns the command as stored, with ``time`` added."""
    if not isinstance(command.get("cmd"), str):
        raise StateError("a control command needs a 'cmd' string such as 'stop' or 'scale'")
    stored = {**command, "time": time.time()}
    key = job_key(job_id, "control")
    pipe = r.pipeline(transaction=True)
    pipe.rpush(key, dumps(stored))
    pipe.ltrim(key, -CONTROL_CAP, -1)
    pipe.execute()
    return stored

