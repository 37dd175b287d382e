"""The dashboard's FastAPI app: one HTML page plus a JSON API over the jobs' state: Redis
for the live view, and each job's run directory for a job Redis no longer has
(:mod:`dashboard.sources`).

Read endpoints are open (serve on loopback); ``stop`` and ``scale`` change a running
job, so they need ``Authorization: Bearer <token>`` and answer 401 otherwise. Whatever
is in Redis, a read answers 200 with what could be parsed (``problems`` lists what could
not), 404 for an unknown job, or 503 when Redis itself is unreachable: never a 500.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

import jobstate as state
from dashboard import vendor
from dashboard.sources import Source, all_jobs, find_job

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_ENV = "CGRPO_DASHBOARD_TOKEN"
# Config keys shown first in the job list's one-line summary, when present.
_SUMMARY_KEYS = ("model", "estimator", "num_generations", "learning_rate", "lr",
                 "rollout_actors", "temperature", "steps", "tasks", "dataset")


class ScaleRequest(BaseModel):
    """Body of ``POST /api/jobs/{id}/scale``."""

    model_config = ConfigDict(extra="forbid")
    rollout_actors: int = Field(ge=1, le=4096, description="rollout actors the job should run")


def config_summary(config: dict | None, limit: int = 5) -> str:
    """A one-line ``key=value`` summary of a job config: well-known keys first, then
    other scalar leaves (nested keys dotted), at most ``limit`` of them."""
    if not config:
        return ""
    leaves: list[tuple[str, Any]] = []

    def walk(prefix: str, node: Any) -> None:
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(name + ".", v)
            elif isinstance(v, (str, int, float, bool)) and v != "":
                leaves.append((name, v))

    walk("", config)
    rank = {k: i for i, k in enumerate(_SUMMARY_KEYS)}
    leaves.sort(key=lambda kv: rank.get(kv[0].rsplit(".", 1)[-1], len(rank)))
    parts = [f"{k.rsplit('.', 1)[-1]}={str(v)[:40]}" for k, v in leaves[:limit]]
    return " ".join(parts)


def create_app(redis_url: str | None = None, token: str | None = None, *,
               runs_dir: str | Path | None = None, poll_s: float = 1.0) -> FastAPI:
    """The app, reading ``redis_url`` (default ``$CGRPO_REDIS_URL``/port 6390) and the run
    directories under ``runs_dir`` (default ``$CGRPO_RUNS_DIR`` or the repository's
    ``runs/``); ``token`` (default ``$CGRPO_DASHBOARD_TOKEN``) guards stop/scale: with
    none, they always 401."""
    url = state.redis_url(redis_url)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    r = state.connect(url)
    app = FastAPI(title="cgrpo dashboard",
                  description="Live state of coupled-GRPO jobs, read from Redis. Read "
                              "endpoints are open; stop/scale need a bearer token.",
                  version="1")
    app.state.redis = r
    app.state.redis_url = url
    bearer = HTTPBearer(auto_error=False, description="the dashboard's --token")

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={
            "detail": f"Redis at {url} is unreachable ({exc}); start it (scripts/setup.sh "
                      "does) or pass --redis"})

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            raise HTTPException(401, "this dashboard has no token configured: start it with "
                                     f"--token or ${TOKEN_ENV} to allow stop/scale",
                                headers={"WWW-Authenticate": "Bearer"})
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def runs() -> Path:
        """Read per request: $CGRPO_RUNS_DIR may change while the app runs (tests do that)."""
        return Path(runs_dir).resolve() if runs_dir is not None else runs_root()

    app.state.runs_dir = runs()

    def job_or_404(job_id: str) -> tuple[dict, Source]:
        found = find_job(r, runs(), job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id!r} in Redis or in {runs()}")
        return found

    # -- page -----------------------------------------------------------------------

    page = (STATIC_DIR / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def index(job_id: str | None = None) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    # -- read API -------------------------------------------------------------------

    @app.get("/api/health", tags=["read"])
    def health() -> dict:
        """Whether Redis answers and the charting library is installed."""
        try:
            redis_ok, redis_error = bool(r.ping()), None
        except redis.RedisError as exc:
            redis_ok, redis_error = False, str(exc)
        return {"redis_url": url, "redis_ok": redis_ok, "redis_error": redis_error,
                "charts_js": vendor.is_installed(),
                "charts_js_hint": None if vendor.is_installed() else
                "uPlot is missing: run `bash scripts/setup.sh` or "
                "`python -m dashboard.vendor`",
                "control_enabled": token is not None, "server_time": time.time()}

    @app.get("/api/jobs", tags=["read"])
    def jobs() -> dict:
        """All jobs, newest first, with a one-line config summary; ``source`` says whether
        a job is read from Redis or, when Redis has lost it, from its run directory."""
        items = all_jobs(r, runs())
        for job in items:
            job["config_summary"] = config_summary(job.get("config"))
        return {"jobs": items, "server_time": time.time()}

    @app.get("/api/jobs/{job_id}", tags=["read"])
    def job(job_id: str) -> dict:
        """One job record."""
        rec, _ = job_or_404(job_id)
        rec["config_summary"] = config_summary(rec.get("config"))
        return rec

    def records(name: str, rec: state.Records) -> dict:
        return {name: rec.items, "skipped": rec.skipped, "error": rec.error}

    @app.get("/api/jobs/{job_id}/metrics", tags=["read"])
    def metrics(job_id: str, after_step: int | None = Query(None, description="only later steps")) -> dict:
        """Per-step metrics sorted by step."""
        return records("metrics", job_or_404(job_id)[1].metrics(after_step))

    @app.get("/api/jobs/{job_id}/evals", tags=["read"])
    def evals(job_id: str) -> dict:
        """Held-out pass@1 evaluations."""
        return records("evals", job_or_404(job_id)[1].evals())

    @app.get("/api/jobs/{job_id}/workers", tags=["read"])
    def workers(job_id: str) -> dict:
        """Rollout, sandbox and learner workers with their last heartbeat."""
        return {**records("workers", job_or_404(job_id)[1].workers()), "server_time": time.time()}

    @app.get("/api/jobs/{job_id}/events", tags=["read"])
    def events(job_id: str, limit: int = Query(100, ge=1, le=state.EVENTS_CAP)) -> dict:
        """The job's latest events, oldest first."""
        return records("events", job_or_404(job_id)[1].events(limit))

    @app.get("/api/jobs/{job_id}/rollout", tags=["read"])
    def rollout(job_id: str) -> dict:
        """The latest sampled completion with the step each token was committed at."""
        rec = job_or_404(job_id)[1].rollout()
        return {"rollout": rec.items[0] if rec.items else None, "skipped": rec.skipped,
                "error": rec.error}

    @app.get("/api/jobs/{job_id}/snapshot", tags=["read"])
    def snapshot(job_id: str, after_step: int | None = Query(None, description="only later metrics")) -> dict:
        """Everything the job page shows, in one answer (what the live stream sends)."""
        return _snapshot(*job_or_404(job_id), after_step)

    @app.get("/api/jobs/{job_id}/stream", tags=["read"])
    async def stream(job_id: str, request: Request,
                     after_step: int | None = Query(None, description="only later metrics")) -> StreamingResponse:
        """Server-sent events: a ``snapshot`` event (as /snapshot, metrics only after the
        last step sent) whenever the job's state changes, checked every second."""
        await run_in_threadpool(job_or_404, job_id)
        return StreamingResponse(_events(lambda: find_job(r, runs(), job_id), after_step, request, poll_s),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/logs", response_class=PlainTextResponse, tags=["read"])
    def logs(job_id: str, lines: int = Query(500, ge=1, le=20_000)) -> PlainTextResponse:
        """The last lines of the job's log file (the job record's ``log_path``)."""
        path = job_or_404(job_id)[0].get("log_path")
        if not path:
            raise HTTPException(404, f"job {job_id!r} has no log_path in its record")
        log_file = Path(path).resolve()
        if not log_file.is_relative_to(runs()):
            # The path comes from Redis: never let it point the server at arbitrary files.
            raise HTTPException(403, f"log_path {path} is outside the runs folder {runs()}")
        try:
            text = _tail(log_file, lines)
        except OSError as exc:
            raise HTTPException(404, f"log file {path} cannot be read: {exc.strerror or exc}")
        return PlainTextResponse(text)

    # -- control API ----------------------------------------------------------------

    def control(job_id: str, command: dict) -> dict:
        job = state.read_job(r, job_id)  # only a job in Redis can be running
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} in Redis")
        if job["status"] in state.TERMINAL_STATUSES:
            raise HTTPException(409, f"job {job_id!r} is already {job['status']}")
        return {"queued": state.push_command(r, job_id, command)}

    @app.post("/api/jobs/{job_id}/stop", tags=["control"], dependencies=[Depends(require_token)])
    def stop(job_id: str) -> dict:
        """Ask the running job to stop after its current step."""
        return control(job_id, {"cmd": "stop"})

    @app.post("/api/jobs/{job_id}/scale", tags=["control"], dependencies=[Depends(require_token)])
    def scale(job_id: str, body: ScaleRequest) -> dict:
        """Ask the running job to run ``rollout_actors`` rollout actors."""
        return control(job_id, {"cmd": "scale", "rollout_actors": body.rollout_actors})

    return app


def runs_root() -> Path:
    """Where run directories (and job logs) live: ``$CGRPO_RUNS_DIR`` or the repository's ``runs/``."""
    return Path(os.environ.get("CGRPO_RUNS_DIR") or Path(__file__).resolve().parents[1] / "runs").resolve()


def _snapshot(job: dict, source: Source, after_step: int | None) -> dict:
    """Job record plus metrics, evals, workers, events and rollout; ``problems`` says in
    words what was unreadable, so the page can show a partial state."""
    job["config_summary"] = config_summary(job.get("config"))
    parts = {"metrics": source.metrics(after_step), "evals": source.evals(), "workers": source.workers(),
             "events": source.events(50), "rollout": source.rollout()}
    problems = []
    if job.get("missing_record"):
        problems.append("the job record is missing (only its index entry exists)")
    if job.get("config_error"):
        problems.append(job["config_error"])
    for name, rec in parts.items():
        if rec.skipped:
            problems.append(f"{rec.skipped} unreadable {name} entr{'y' if rec.skipped == 1 else 'ies'} skipped")
        if rec.error:
            problems.append(f"{name} unreadable: {rec.error}")
    rollout = parts["rollout"].items[0] if parts["rollout"].items else None
    if rollout and rollout.get("problem"):
        problems.append(f"rollout: {rollout['problem']}")
    return {"job": job, "metrics": parts["metrics"].items, "evals": parts["evals"].items,
            "workers": parts["workers"].items, "events": parts["events"].items,
            "rollout": rollout, "problems": problems, "server_time": time.time()}


async def _events(find: Callable[[], tuple[dict, Source] | None], after_step: int | None, request: Request,
                  poll_s: float) -> AsyncIterator[str]:
    last_sig, last_send = None, 0.0
    while not await request.is_disconnected():
        try:
            found = await run_in_threadpool(find)
            if found is None:
                yield "event: gone\ndata: {}\n\n"
                return
            job, source = found
            sig = (source.kind, await run_in_threadpool(source.signature))
            if sig != last_sig:
                snap = await run_in_threadpool(_snapshot, job, source, after_step)
                if snap["metrics"]:
                    after_step = snap["metrics"][-1]["step"]
                last_sig, last_send = sig, time.monotonic()
                yield f"event: snapshot\ndata: {json.dumps(snap, allow_nan=False)}\n\n"
            elif time.monotonic() - last_send > 15:
                last_send = time.monotonic()
                yield ": keep-alive\n\n"
        except redis.RedisError as exc:
            last_sig = None  # resend everything once Redis is back
            yield f"event: redis_error\ndata: {json.dumps({'detail': str(exc)})}\n\n"
        await asyncio.sleep(poll_s)


def _tail(path: Path, lines: int, chunk: int = 1 << 16) -> str:
    """The last ``lines`` lines of a file, reading it from the end."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        pos, data = f.tell(), b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    return b"\n".join(data.split(b"\n")[-lines - 1:]).decode("utf-8", errors="replace")
