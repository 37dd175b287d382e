"""``cgrpo dashboard``: serve the live job dashboard."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from pathlib import Path

from errors import CgrpoError
import jobstate as state
from dashboard import DEFAULT_PORT, vendor


class DashboardError(CgrpoError):
    """The dashboard cannot start: port taken, bad address or Redis URL."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboard", help="serve the live web dashboard of jobs (reads Redis and the run directories)",
        description="Serve a web page with every job's status, learning curves (reward, "
        "pass@1, KL, clip fraction, AR-ness), throughput, workers and a sampled rollout "
        "coloured by decoding order, updated live. The JSON API is documented at /docs. "
        "Reading is open; stopping or scaling a job needs the bearer token.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: only this machine; read "
                        "endpoints need no token, so think before exposing it)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--redis", default=None, metavar="URL",
                   help=f"Redis holding the job state (default $CGRPO_REDIS_URL or "
                        f"{state.DEFAULT_REDIS_URL})")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder of the jobs' run directories (the jobs' run.output_dir), read for jobs that "
                        "Redis no longer has (default $CGRPO_RUNS_DIR or the repository's runs/)")
    p.add_argument("--token", default=None,
                   help="bearer token that POST /api/jobs/{id}/stop and /scale require "
                        "(default $CGRPO_DASHBOARD_TOKEN; without one they are refused)")
    p.set_defaults(func=run)


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise DashboardError(f"--port {port} is not a TCP port; use 1-65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is in use (another dashboard?); "
                                 "pick another with --port") from exc
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror}; "
                             "check --host") from exc


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from dashboard.app import TOKEN_ENV, create_app

    _check_port(args.host, args.port)
    if args.runs is not None and not Path(args.runs).is_dir():
        raise DashboardError(f"--runs {args.runs}: no such folder; pass the folder of the jobs' run directories "
                             "(their run.output_dir)")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        app = create_app(args.redis, token, runs_dir=args.runs)
    except state.StateError as exc:
        raise DashboardError(f"--redis: {exc}") from exc
    url = app.state.redis_url
    try:
        app.state.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here is only a warning
        print(f"warning: Redis at {url} does not answer ({exc}); the page will say so "
              "until it does")
    if not vendor.is_installed():
        print("warning: the charting library is missing; run `bash scripts/setup.sh` or "
              "`python -m dashboard.vendor` (the page shows tables only)")
    if token is None:
        print(f"note: no --token/${TOKEN_ENV}: stop and scale requests will be refused")
    print(f"cgrpo dashboard on http://{args.host}:{args.port}  (API docs: /docs, Redis {url}, "
          f"run directories in {app.state.runs_dir})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)
    return 0
