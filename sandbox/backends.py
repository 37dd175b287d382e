"""Choosing a backend: ``jail``, ``docker`` or ``auto`` (Docker when an engine answers and the
sandbox image is present, else the jail), and saying which was chosen and why."""

from __future__ import annotations

import threading

from sandbox._process import Backend
from sandbox.errors import SandboxError

BACKENDS = ("auto", "jail", "docker")


def resolve(name: str) -> tuple[str, str]:
    """Return (concrete backend name, one-line reason)."""
    from sandbox import container

    if name not in BACKENDS:
        raise SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name, f"{name} requested"
    reason = container.why_unavailable()
    if reason is None:
        return "docker", f"auto: Docker engine {container.engine_version()} answered"
    return "jail", f"auto: jail, because {reason}"


def make_backend(name: str = "auto", **kwargs) -> Backend:
    """A new, not yet started backend instance (each owns one warm executor)."""
    concrete, reason = resolve(name)
    if concrete == "docker":
        from sandbox.container import DockerBackend

        backend: Backend = DockerBackend(**kwargs)
    else:
        from sandbox.jail import JailBackend

        backend = JailBackend(**kwargs)
    backend.note = reason
    return backend


_shared: dict[str, Backend] = {}
_shared_lock = threading.Lock()


def shared_backend(name: str = "auto") -> Backend:
    """The process-wide backend ``run_program`` uses for ``name`` (started on first use)."""
    with _shared_lock:
        if name not in _shared:
            _shared[name] = make_backend(name)
        return _shared[name]


def close_shared() -> None:
    with _shared_lock:
        for backend in _shared.values():
            backend.close()
        _shared.clear()
