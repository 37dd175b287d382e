"""Host side of the executor protocol, shared by both backends.

A backend is "a command that starts the warm executor inside some isolation" plus this
class, which speaks the JSON-lines protocol to it, enforces a host-side deadline (the
executor enforces the real limits; this only catches a hung or dead executor), restarts
the executor when it dies, and turns raw responses into :class:`ExecResult`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.harness import count_tests, program_names, split_tests
from sandbox.limits import Limits
from sandbox.result import ExecResult, infra_error, interpret

# The modules that run inside the sandbox, in import order. They travel as one ``-c``
# script (the executor needs no files in the jail or the image): each is rebuilt as
# ``sandbox.<name>`` from its source, then the executor starts.
BUNDLE = ("_plain", "_seccomp", "_confine", "_candidate", "_judge", "_executor")
_BOOT = """import sys, types
pkg = types.ModuleType("sandbox")
pkg.__path__ = []
sys.modules["sandbox"] = pkg
for name, source in SOURCES:
    mod = types.ModuleType("sandbox." + name)
    mod.__file__ = "<sandbox/" + name + ".py>"
    sys.modules[mod.__name__] = mod
    setattr(pkg, name, mod)
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)
del pkg, mod, name, source
sys.modules["sandbox._executor"].main(sys.argv[1:])
"""
EXECUTOR_SOURCE = "SOURCES = " + repr([(name, Path(__file__).with_name(f"{name}.py").read_text())
                                        for name in BUNDLE]) + "\n" + _BOOT
GRACE_S = 5.0  # host waits this long beyond the wall limit before declaring the executor hung


class ExecutorDied(Exception):
    """The executor process exited, hung, or answered garbage."""


class ExecutorProcess:
    """One running executor: a subprocess whose stdin/stdout carry JSON lines."""

    def __init__(self, cmd: list[str], start_timeout: float):
        self._err = tempfile.TemporaryFile()
        self._buf = b""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, bufsize=0, close_fds=True,
                                     start_new_session=True)
        try:
            self.hello = json.loads(self._read_line(time.monotonic() + start_timeout))
        except (ExecutorDied, ValueError) as exc:
            self.close()
            raise ExecutorDied(f"executor did not start: {exc}; stderr: {self.stderr_tail()}") from None
        self._ids = 0

    def stderr_tail(self, n: int = 800) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            size = self._err.tell()
            self._err.seek(max(0, size - n))
            return self._err.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def _read_line(self, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select(): a busy worker may hold fds above 1024
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExecutorDied("no answer before the host deadline")
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = self.proc.poll()
                raise ExecutorDied(f"executor exited (code {code})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def request(self, req: dict, timeout: float) -> dict:
        self._ids += 1
        req = dict(req, id=self._ids)
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        except (BrokenPipeError, OSError) as exc:
            raise ExecutorDied(f"executor input closed: {exc}") from None
        try:
            res = json.loads(self._read_line(time.monotonic() + timeout))
        except ValueError as exc:
            raise ExecutorDied(f"executor answered garbage: {exc}") from None
        if res.get("id") != self._ids and not res.get("infra_error"):
            raise ExecutorDied("executor answered out of order")
        return res

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()


class Backend:
    """A sandbox backend: one warm executor, programs run one at a time (thread-safe).

    Subclasses give the command that starts the executor (``_command``) and may ask for a
    restart when a program needs larger outer limits (``_needs_restart``).
    """

    name = "?"
    start_timeout = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: ExecutorProcess | None = None
        self._limits_started: Limits | None = None
        self.restarts = 0
        self.note = ""

    # -- subclass hooks ----------------------------------------------------------------------
    def _command(self, limits: Limits) -> list[str]:
        raise NotImplementedError

    def _needs_restart(self, limits: Limits) -> bool:
        return False

    def _cleanup_after_death(self) -> None:
        """Remove whatever a dead executor may have left (containers)."""

    # -- public ------------------------------------------------------------------------------
    def start(self, limits: Limits | None = None) -> dict:
        """Start the executor now (it is otherwise started by the first program)."""
        with self._lock:
            return self._ensure(limits or Limits()).hello

    def run(self, program: str, tests: str | None = None, *, limits: Limits | None = None,
            units: list | None = None) -> ExecResult:
        """Run ``program`` followed by ``tests`` (split per assert) under ``limits``."""
        limits = limits or Limits()
        if units is None:
            units = split_tests(tests)
        if not isinstance(program, str):
            raise SandboxError("the program must be a string of Python source")
        req = {"program": program, "units": units, "names": program_names(units),
               "limits": limits.to_dict()}
        last = ""
        start = time.monotonic()
        with self._lock:
            for _attempt in range(2):  # an executor that dies is replaced once per program
                try:
                    raw = self._ensure(limits).request(req, limits.wall_s + GRACE_S)
                    return interpret(raw, units, limits, self.name)
                except ExecutorDied as exc:
                    last = f"{exc}; stderr: {self._proc.stderr_tail() if self._proc else ''}"
                    self._discard()
        return infra_error(last, self.name, count_tests(units), time.monotonic() - start)

    def close(self) -> None:
        with self._lock:
            self._discard(clean=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _ensure(self, limits: Limits) -> ExecutorProcess:
        if self._proc is not None and (not self._proc.alive() or self._needs_restart(limits)):
            self._discard()
        if self._proc is None:
            try:
                self._proc = ExecutorProcess(self._command(limits), self.start_timeout)
            except ExecutorDied as exc:
                self._cleanup_after_death()
                raise SandboxError(f"the {self.name} sandbox backend cannot start: {exc}") from None
            self._limits_started = limits
        return self._proc

    def _discard(self, clean: bool = False) -> None:
        if self._proc is not None:
            if not clean:
                self.restarts += 1
                try:
                    self._proc.proc.kill()
                except OSError:
                    pass
            self._proc.close()  # clean: EOF on stdin, the executor exits by itself
            self._proc = None
            self._cleanup_after_death()
