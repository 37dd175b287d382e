"""Isolated, fast execution of untrusted programs and their tests, and the rewards built on it.

    from sandbox import Limits, run_program
    res = run_program("def f(x): return x + 1", "assert f(1) == 2", limits=Limits(wall_s=2))
    res.status, res.tests_passed, res.tests_total, res.backend

Backends: ``jail`` (bubblewrap namespaces + a warm forking executor) and ``docker`` (a
long-lived locked-down container per worker); ``auto`` picks Docker when it can run.
Rewards: :mod:`sandbox.rewards`; the Ray worker pool: :mod:`sandbox.pool`. Threat model,
limits and measured speed: docs/sandbox.md.
"""

from __future__ import annotations

import atexit

from sandbox.backends import close_shared, make_backend, resolve, run_shared
from sandbox.errors import SandboxError
from sandbox.limits import Limits
from sandbox.result import STATUSES, ExecResult

__all__ = [
    "STATUSES",
    "ExecResult",
    "Limits",
    "SandboxError",
    "make_backend",
    "resolve",
    "run_program",
]


def run_program(program: str, tests: str | None = None, *, limits: Limits | None = None,
                backend: str = "auto") -> ExecResult:
    """Run ``program`` then ``tests`` in the sandbox and return what happened.

    ``tests`` is Python source run after the program in the same namespace; a HumanEval
    ``check(candidate)`` is split into its asserts so ``tests_passed/tests_total`` counts
    asserts. Warm executors are kept for later calls in this process; concurrent callers
    (threads) each get their own, up to the CPU count (``CGRPO_SANDBOX_LOCAL_WORKERS``).
    """
    return run_shared(backend, program, tests, limits or Limits())


atexit.register(close_shared)
