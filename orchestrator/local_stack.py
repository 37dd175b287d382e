"""``cgrpo demo``: a local stack (Ray head, dashboard) and the embedded demo job on it.

The Ray head listens on explicit ports (6385 for GCS, 8265 for its dashboard), never Ray's
default 6379, and the cgrpo dashboard on 8600; each is started only when nothing answers
on its port, so running the demo twice reuses them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jobstate as st
from evaluation.stats import paired_difference
from orchestrator.config import REPO, demo_config
from orchestrator.driver import DEFAULT_RAY_DASHBOARD, driver_log
from orchestrator.job_commands import DEFAULT_RAY_PORT, console, follow, new_job_id, require_redis, submit

DEFAULT_DASHBOARD_PORT = 8600


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_ray_head(num_cpus: int) -> str:
    """A local Ray head on explicit ports (Ray's default 6379 is left alone)."""
    if not port_answers(DEFAULT_RAY_PORT):
        ray_bin = Path(sys.executable).parent / "ray"
        subprocess.run([str(ray_bin), "start", "--head", f"--port={DEFAULT_RAY_PORT}", "--dashboard-port=8265",
                        "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--disable-usage-stats"],
                       check=True, stdout=subprocess.DEVNULL)
    for _ in range(60):
        if port_answers(8265):
            break
        time.sleep(1)
    return DEFAULT_RAY_DASHBOARD


def ensure_dashboard(port: int, log_dir: Path) -> str:
    if not port_answers(port):
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / "dashboard.log", "ab")
        subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "dashboard", "--port", str(port)],
                         stdout=log, stderr=log, start_new_session=True, env=os.environ.copy())
        for _ in range(30):
            if port_answers(port):
                break
            time.sleep(0.5)
    return f"http://127.0.0.1:{port}"


def cmd_demo(args) -> int:
    import yaml

    cfg = demo_config()
    if args.steps:
        cfg.run.steps = args.steps
    client = require_redis(cfg.redis.url)
    out = console()
    out.rule("[bold]cgrpo demo: coupled-GRPO on the shipped tiny dLLM")
    ray_url = ensure_ray_head(args.num_cpus)
    dash_url = ensure_dashboard(args.dashboard_port, REPO / "runs")
    out.print(f"Ray dashboard  {ray_url}\ncgrpo dashboard {dash_url}")
    job_id = new_job_id("demo")
    frozen = driver_log(cfg, job_id).parent / "job.yaml"
    frozen.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    submit(frozen, ray_url, job_id)
    code = follow(client, job_id, cfg.run.steps)
    print_summary(client, job_id, dash_url, ray_url)
    return code


def heldout_rows(evals: list[dict]) -> list[tuple[str, str, str, str]]:
    """(label, before, after, change) per steps mode: pass@1 ± se at the first and last
    evaluation, and the paired change with its standard error (same tasks, same seed)."""
    rows = []
    for mode in ("full", "half"):
        mine = [e for e in evals if e.get("steps_mode") == mode and e.get("pass_at_1") is not None]
        if len(mine) < 1:
            continue
        first, last = mine[0], mine[-1]

        def cell(e: dict) -> str:
            se = e.get("se")
            return f"{100 * e['pass_at_1']:.1f}%" + (f" ± {100 * se:.1f}" if se is not None else "")

        change = "-"
        if first is not last and first.get("correct") and last.get("correct") and first.get("samples"):
            n = int(first["samples"])
            diff = paired_difference([(n, c) for c in first["correct"]], [(n, c) for c in last["correct"]])
            change = f"{100 * diff.mean:+.1f} points (se {100 * diff.se:.1f})"
        rows.append((f"held-out pass@1 ({mode} steps)", cell(first), cell(last), change))
    return rows


def print_summary(client, job_id: str, dash_url: str, ray_url: str) -> None:
    from rich.table import Table

    job = st.read_job(client, job_id) or {}
    metrics = st.read_metrics(client, job_id).items
    evals = st.read_evals(client, job_id).items
    table = Table(title=f"demo job {job_id}: {job.get('status')}")
    for col in ("", "before", "after", "change"):
        table.add_column(col)
    if metrics:
        table.add_row("train reward (mean)", f"{metrics[0].get('reward_mean', 0):.3f}",
                      f"{metrics[-1].get('reward_mean', 0):.3f}", "")
        table.add_row("train pass rate", f"{metrics[0].get('pass_rate', 0):.2f}",
                      f"{metrics[-1].get('pass_rate', 0):.2f}", "")
    for row in heldout_rows(evals):
        table.add_row(*row)
    out = console()
    out.print(table)
    if job.get("error"):
        out.print(f"[red]error:[/red] {job['error']}")
    out.print(f"dashboard: {dash_url}/jobs/{job_id}\nRay dashboard: {ray_url}\n"
              f"logs: cgrpo logs {job_id}\nexported model: {job.get('export_path', '-')}")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the embedded demo end to end (Ray head, Redis, dashboard, job)",
                              description="Start a local Ray head and the dashboard, submit the demo job (the "
                              "shipped tiny dLLM trained by coupled-GRPO on the built-in tasks), follow it with a "
                              "progress bar and print the before/after summary with standard errors.")
    p.add_argument("--steps", type=int, default=None, help="override the demo's RL steps")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray head (default 8)")
    p.add_argument("--dashboard-port", type=int, default=DEFAULT_DASHBOARD_PORT)
    p.set_defaults(func=cmd_demo)
