"""Choosing a backend: ``jail``, ``docker`` or ``auto`` (Docker when an engine answers and the
sandbox image is present, else the jail), and saying which was chosen and why."""

from __future__ import annotations

import os
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


class _Lending:
    """Warm backends of one kind, lent to callers one at a time: ``run_program`` from N
    threads uses up to N executors (capped by ``CGRPO_SANDBOX_LOCAL_WORKERS``, default the
    CPU count), each started on first need and kept warm."""

    def __init__(self, name: str):
        self.name = name
        self.cap = max(1, int(os.environ.get("CGRPO_SANDBOX_LOCAL_WORKERS") or os.cpu_count() or 1))
        self.free: list[Backend] = []
        self.all: list[Backend] = []
        self.cond = threading.Condition()

    def borrow(self) -> Backend:
        with self.cond:
            while not self.free and len(self.all) >= self.cap:
                self.cond.wait()
            if self.free:
                return self.free.pop()
            backend = make_backend(self.name)  # raises SandboxError when it cannot run
            self.all.append(backend)
            return backend

    def give_back(self, backend: Backend) -> None:
        with self.cond:
            self.free.append(backend)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            for backend in self.all:
                backend.close()
            self.all, self.free = [], []


_shared: dict[str, _Lending] = {}
_shared_lock = threading.Lock()


def run_shared(name: str, program: str, tests: str | None, limits):
    """Run one program on a warm backend of kind ``name`` lent for the call."""
    with _shared_lock:
        lending = _shared.setdefault(name, _Lending(name))
    backend = lending.borrow()
    try:
        return backend.run(program, tests, limits=limits)
    finally:
        lending.give_back(backend)


def close_shared() -> None:
    with _shared_lock:
        for lending in _shared.values():
            lending.close()
        _shared.clear()
