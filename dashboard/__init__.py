"""The cgrpo dashboard: a FastAPI app and one web page that show jobs live from Redis.

``create_app(redis_url, token)`` builds the app; ``DashboardServer`` runs it with uvicorn
in a background thread (the demo and the tests use it); ``cgrpo dashboard`` runs it in
the foreground. See docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "DashboardServer", "DEFAULT_PORT"]

DEFAULT_PORT = 8600


def __getattr__(name: str) -> Any:
    # Lazy, so that `cgrpo --help` does not import FastAPI and uvicorn.
    if name == "create_app":
        from dashboard.app import create_app
        return create_app
    if name == "DashboardServer":
        from dashboard.server import DashboardServer
        return DashboardServer
    raise AttributeError(name)
