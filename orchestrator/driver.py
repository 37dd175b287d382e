"""A job's driver: what ``cgrpo run`` (and a submitted job on the head node) executes.

:func:`run_job` wires the recipe to a cluster: the job's Redis state, the Ray parts, the
supervisor; it records the job's status and leaves nothing running when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jobstate as st
from orchestrator.config import JobConfig, load_config
from orchestrator.parts import ray_parts
from orchestrator.recipe import train
from orchestrator.supervisor import JobSupervisor
from tasks import load_job_tasks

DEFAULT_RAY_DASHBOARD = "http://127.0.0.1:8265"


def run_job(cfg: JobConfig, job_id: str, *, resume: bool = False,
            on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run a whole job on the connected Ray cluster (a local one when none is); returns the
    recipe's summary with ``job_id`` and ``learner_restarts``. Everything the job reports goes
    to Redis and to its run directory (:class:`jobstate.JobLog`)."""
    client = st.connect(cfg.redis.url)
    log = st.JobLog(st.JobState(job_id, client), st.RunRecord(cfg.run_dir(job_id), job_id))
    registered = st.read_job(client, job_id)
    if registered is None:  # run directly, not through `cgrpo submit`
        log.create(name=cfg.name, config=cfg.model_dump(mode="json"), total_steps=cfg.run.steps)
    else:
        log.adopt(registered)
    parts = supervisor = None
    try:
        if cfg.wandb.enabled:
            log.start_wandb(cfg.wandb, cfg.model_dump(mode="json"))
        train_tasks, heldout = load_job_tasks(cfg.tasks)  # a bad task source fails before any actor starts
        parts = ray_parts(cfg)
        log.event(f"started {cfg.rollout.actors} rollout actors, {cfg.sandbox.workers} sandbox workers "
                  f"({parts.scorer.backend_name}), {cfg.learner.workers} learner workers "
                  f"(ZeRO-{cfg.learner.zero_stage})")
        if parts.scorer.backend_note:
            log.event(f"sandbox backend: {parts.scorer.backend_name} ({parts.scorer.backend_note})")
        supervisor = JobSupervisor(cfg, parts, log)
        log.set_status("running")
        summary = train(cfg, parts, train_tasks, heldout[: cfg.run.eval_tasks], log, cfg.run_dir(job_id),
                        resume=resume, supervisor=supervisor, on_step=on_step)
        summary.update(job_id=job_id, learner_restarts=supervisor.learner_restarts)
        if "stopped_at" not in summary:
            log.update(export_path=summary["export"])
            log.set_status("succeeded")
            log.event(f"job finished at step {summary['final_step']}; model exported to {summary['export']}")
        return summary
    except BaseException as exc:
        log.set_status("stopped" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc)[:2000])
        log.event(f"job ended: {type(exc).__name__}: {exc}", level="error")
        raise
    finally:
        if supervisor is not None:
            supervisor.mark_stopped()
        if parts is not None:
            parts.shutdown()
        log.close()


def driver_log(cfg: JobConfig, job_id: str) -> Path:
    """runs/JOB/driver.log: what the dashboard's logs link serves."""
    run_dir = cfg.run_dir(job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "driver.log"


def run_driver(cfg: JobConfig, job_id: str, resume: bool = False) -> int:
    """``run_job`` with a line per step on stdout and in the driver log."""
    from orchestrator.job_commands import require_redis

    client = require_redis(cfg.redis.url)
    log_path = driver_log(cfg, job_id)
    if st.read_job(client, job_id) is None:
        st.JobState(job_id, client).create(name=cfg.name, config=cfg.model_dump(mode="json"),
                                           total_steps=cfg.run.steps, ray_dashboard_url=DEFAULT_RAY_DASHBOARD,
                                           log_path=str(log_path))
    with open(log_path, "a", buffering=1) as log:
        def say(line: str) -> None:
            print(line, flush=True)
            log.write(line + "\n")

        say(f"job {job_id}: {cfg.run.steps} steps of {cfg.grpo.estimator}-GRPO")

        def on_step(step: int, m: dict) -> None:
            say(f"step {step}/{cfg.run.steps}  reward {m['reward_mean']:.3f}±{m['reward_std']:.3f}  "
                f"pass {m['pass_rate']:.2f}  kl {m['kl']:.4f}  loss {m['loss']:.4f}  "
                f"AR-ness {m['arness_local']:.2f}/{m['arness_global']:.2f}  "
                f"{m['rollout_tokens_per_s']:.0f} tok/s")

        summary = run_job(cfg, job_id, resume=resume, on_step=on_step)
        say(json.dumps(summary))
    return 0


def cmd_run(args) -> int:
    from orchestrator.job_commands import new_job_id

    cfg = load_config(args.job)
    return run_driver(cfg, args.job_id or new_job_id(cfg.name), resume=args.resume)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a job in this process (what a submitted job's driver runs)",
                              description="Run a job YAML in this process on the Ray cluster at $RAY_ADDRESS, "
                              "or on a local one started for it.")
    p.add_argument("job", help="job YAML")
    p.add_argument("--job-id", default=None)
    p.add_argument("--resume", action="store_true", help="continue from the job's last complete checkpoint")
    p.set_defaults(func=cmd_run)
