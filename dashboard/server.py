"""Run the dashboard with uvicorn in a background thread (used by the demo and tests)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from dashboard import DEFAULT_PORT
from dashboard.app import create_app

__all__ = ["DashboardServer"]


class DashboardServer:
    """uvicorn serving the dashboard from a daemon thread: ``start()``, ``url``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 redis_url: str | None = None, token: str | None = None,
                 poll_s: float = 1.0, runs_dir: str | Path | None = None) -> None:
        self.host, self.port = host, port
        app = create_app(redis_url, token, runs_dir=runs_dir, poll_s=poll_s)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                timeout_graceful_shutdown=2, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "DashboardServer":
        """Start serving; returns once the port accepts connections."""
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name="cgrpo-dashboard")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"dashboard failed to start on {self.url}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dashboard did not start on {self.url} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
