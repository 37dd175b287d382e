"""Job commands: ``submit``, ``status``, ``logs``, ``stop``, ``list``, ``scale``.

Jobs go to a Ray cluster through the Ray Jobs API (the driver runs ``cgrpo run`` on the
head node); their state is read back from Redis, so ``status``/``list`` work even when
the cluster is gone. ``stop`` and ``scale`` are control commands the running job picks up
at its next step.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import jobstate as st
from errors import CgrpoError
from orchestrator.config import JobConfig, load_config
from orchestrator.driver import DEFAULT_RAY_DASHBOARD, driver_log

DEFAULT_RAY_PORT = 6385


class JobError(CgrpoError):
    """A job command that cannot be carried out (unknown job, cluster unreachable, ...)."""


def new_job_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40].strip("-") or "job"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def require_redis(url: str | None = None):
    client = st.connect(url)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure is the same user problem
        raise JobError(f"Redis at {st.redis_url(url)} does not answer ({exc}); start it with "
                       f"`redis-server --port 6390 --daemonize yes` or set CGRPO_REDIS_URL") from None
    return client


def _use_ray_token_if_present() -> None:
    """Ray >= 2.5x heads require a token when one exists (``~/.ray/auth_token``, made by
    ``ray start``); clients only send it in token mode, so turn that on when a token is there."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _jobs_client(address: str):
    _use_ray_token_if_present()  # before ray is imported: it caches the auth mode
    from ray.job_submission import JobSubmissionClient
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"no Ray cluster answers at {address} ({exc}); start one with "
                       f"`ray start --head --port {DEFAULT_RAY_PORT} --dashboard-port 8265` or run `cgrpo demo`") from None


def console():
    from rich.console import Console
    return Console()


# --- submit / status / logs / stop / list / scale -----------------------------------------
def submit(job_file: str | Path, address: str, job_id: str | None = None, resume: bool = False) -> tuple[str, JobConfig]:
    """Validate the job file, register the job in Redis and submit its driver through the
    Ray Jobs API; returns (job id, config). The driver runs a frozen copy of the file."""
    cfg = load_config(job_file)  # every config mistake surfaces here, before Ray is touched
    client = require_redis(cfg.redis.url)
    job_id = job_id or new_job_id(cfg.name)
    log_path = driver_log(cfg, job_id)
    frozen = log_path.parent / "job.yaml"
    if Path(job_file).resolve() != frozen.resolve():
        shutil.copyfile(job_file, frozen)  # the job runs what was submitted, even if the file changes
    jobs = _jobs_client(address)
    st.JobState(job_id, client).create(name=cfg.name, config=cfg.model_dump(mode="json"), total_steps=cfg.run.steps,
                                       ray_job_id=job_id, ray_dashboard_url=address, log_path=str(log_path))
    env = {"CGRPO_REDIS_URL": st.redis_url(cfg.redis.url), "PYTHONUNBUFFERED": "1"}
    entrypoint = f"{sys.executable} -m orchestrator.cli run {frozen} --job-id {job_id}"
    if resume:
        entrypoint += " --resume"
    _submit_driver(jobs, entrypoint, job_id, env)
    return job_id, cfg


def _submit_driver(jobs, entrypoint: str, job_id: str, env: dict, wait_s: float = 60.0) -> None:
    """Hand the driver to the Jobs API. A head that has just started answers "No available
    agent" until its job agent is up (seconds), so that answer is retried for ``wait_s``;
    any other refusal is the user's one-line error."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            jobs.submit_job(entrypoint=entrypoint, submission_id=job_id,
                            runtime_env={"env_vars": env}, entrypoint_num_cpus=0)
            return
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise JobError(f"the Ray Jobs API refused job {job_id}: {exc}") from None
            time.sleep(1.0)


def cmd_submit(args) -> int:
    job_id, cfg = submit(args.job, args.address, args.job_id, args.resume)
    console().print(f"submitted [bold]{job_id}[/bold]\n  follow: cgrpo logs {job_id} --follow\n"
                     f"  status: cgrpo status {job_id}")
    if args.follow:
        return follow(require_redis(cfg.redis.url), job_id, cfg.run.steps)
    return 0


def _ray_status(address: str, job_id: str) -> str:
    try:
        return str(_jobs_client(address).get_job_status(job_id))
    except Exception:  # noqa: BLE001 - cluster gone or job unknown to it: Redis still knows
        return "-"


def cmd_status(args) -> int:
    client = require_redis(args.redis)
    if not args.job:
        return cmd_list(args)
    job = st.read_job(client, args.job)
    if job is None:
        raise JobError(f"no job {args.job!r} in Redis ({st.redis_url(args.redis)}); `cgrpo list` shows the jobs")
    from rich.table import Table
    table = Table(title=f"job {args.job}", show_header=False)
    for key in ("name", "status", "step", "total_steps", "weight_version", "error", "export_path", "log_path"):
        if job.get(key) not in (None, ""):
            table.add_row(key, str(job[key]))
    table.add_row("ray job", _ray_status(args.address, args.job))
    metrics = st.read_metrics(client, args.job).items
    if metrics:
        last = metrics[-1]
        for key in ("reward_mean", "pass_rate", "kl", "arness_local", "rollout_tokens_per_s"):
            if last.get(key) is not None:
                table.add_row(f"last {key}", f"{last[key]:.4g}")
    for ev in st.read_evals(client, args.job).items[-2:]:
        table.add_row(f"eval step {ev.get('step')} ({ev.get('steps_mode')})", f"pass@1 {ev.get('pass_at_1')}")
    workers = st.read_workers(client, args.job).items
    table.add_row("workers", ", ".join(f"{w.get('worker_id', w.get('id', '?'))}:{w.get('role')}" for w in workers) or "-")
    console().print(table)
    return 0


def cmd_list(args) -> int:
    client = require_redis(args.redis)
    from rich.table import Table
    table = Table(title="cgrpo jobs")
    for col in ("job", "name", "status", "step", "age"):
        table.add_column(col)
    now = time.time()
    for job in st.list_jobs(client):
        age = now - job["created_at"] if job.get("created_at") else None
        table.add_row(job["id"], str(job.get("name") or ""), str(job.get("status")),
                      f"{job.get('step') or 0}/{job.get('total_steps') or '?'}",
                      f"{age / 60:.1f} min" if age is not None else "-")
    console().print(table)
    return 0


def cmd_logs(args) -> int:
    jobs = _jobs_client(args.address)
    try:
        if not args.follow:
            sys.stdout.write(jobs.get_job_logs(args.job))
            return 0
        import asyncio

        async def tail() -> None:
            async for lines in jobs.tail_job_logs(args.job):
                sys.stdout.write(lines)
                sys.stdout.flush()

        asyncio.run(tail())
    except RuntimeError as exc:
        raise JobError(f"no logs for job {args.job!r} on {args.address} ({exc})") from None
    return 0


def _require_job(client, job_id: str) -> dict:
    job = st.read_job(client, job_id)
    if job is None:
        raise JobError(f"no job {job_id!r}; `cgrpo list` shows the jobs")
    return job


def cmd_stop(args) -> int:
    client = require_redis(args.redis)
    job = _require_job(client, args.job)
    if job.get("status") in st.TERMINAL_STATUSES:
        console().print(f"job {args.job} already {job['status']}")
        return 0
    st.push_command(client, args.job, {"cmd": "stop"})
    if args.force:
        _jobs_client(args.address).stop_job(args.job)
    console().print(f"stop requested for {args.job}" + (" (Ray job killed)" if args.force else
                                                         "; it stops after the current step"))
    return 0


def cmd_scale(args) -> int:
    if not 1 <= args.rollout_actors <= 1024:
        raise JobError(f"--rollout-actors must be between 1 and 1024 (got {args.rollout_actors})")
    client = require_redis(args.redis)
    job = _require_job(client, args.job)
    if job.get("status") in st.TERMINAL_STATUSES:
        raise JobError(f"job {args.job} is {job['status']}; only a running job can be scaled")
    st.push_command(client, args.job, {"cmd": "scale", "rollout_actors": args.rollout_actors})
    console().print(f"{args.job}: rollout pool → {args.rollout_actors} actors at the next step "
                     "(learner untouched)")
    return 0


def follow(client, job_id: str, total: int, timeout_s: float = 3600) -> int:
    """A live progress bar from Redis until the job ends."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    deadline = time.time() + timeout_s
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(job_id, total=total, info="starting")
        while time.time() < deadline:
            job = st.read_job(client, job_id) or {}
            metrics = st.read_metrics(client, job_id).items
            info = job.get("status", "?")
            if metrics:
                m = metrics[-1]
                info = f"reward {m.get('reward_mean', 0):.3f} pass {m.get('pass_rate', 0):.2f}"
            bar.update(task, completed=job.get("step") or 0, info=info)
            if job.get("status") in st.TERMINAL_STATUSES:
                break
            time.sleep(1.0)
    job = st.read_job(client, job_id) or {}
    return 0 if job.get("status") == "succeeded" else 1


# --- parser -------------------------------------------------------------------------------
def register(subparsers) -> None:
    def common(p, redis_too=True, address_too=True):
        if redis_too:
            p.add_argument("--redis", default=None, help="Redis URL (default $CGRPO_REDIS_URL or redis://127.0.0.1:6390/0)")
        if address_too:
            p.add_argument("--address", default=DEFAULT_RAY_DASHBOARD,
                           help=f"Ray dashboard/Jobs API address (default {DEFAULT_RAY_DASHBOARD})")

    p = subparsers.add_parser("submit", help="submit a job YAML to a Ray cluster",
                              description="Validate the job YAML, register the job in Redis and submit its driver "
                              "through the Ray Jobs API. Sections: name, model, tasks, rollout, sandbox, learner, "
                              "grpo, run, redis (see docs/config.md).")
    p.add_argument("job", help="job YAML")
    p.add_argument("--job-id", default=None, help="job id (default: NAME-DATE-TIME-XXXX)")
    p.add_argument("--resume", action="store_true", help="resume the job id's last checkpoint")
    p.add_argument("--follow", action="store_true", help="show a progress bar until the job ends")
    common(p, redis_too=False)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="one job's state, or the job list")
    p.add_argument("job", nargs="?")
    common(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("list", help="all jobs known to Redis")
    common(p, address_too=False)
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser("logs", help="a job's driver logs from Ray")
    p.add_argument("job")
    p.add_argument("--follow", "-f", action="store_true")
    common(p, redis_too=False)
    p.set_defaults(func=cmd_logs)

    p = subparsers.add_parser("stop", help="stop a running job after its current step")
    p.add_argument("job")
    p.add_argument("--force", action="store_true", help="also kill the Ray job at once")
    common(p)
    p.set_defaults(func=cmd_stop)

    p = subparsers.add_parser("scale", help="resize a running job's rollout pool (learner untouched)")
    p.add_argument("job")
    p.add_argument("--rollout-actors", type=int, required=True, metavar="M")
    common(p, address_too=False)
    p.set_defaults(func=cmd_scale)
