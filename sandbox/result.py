"""The structured outcome of one program, and how the executor's raw facts map to it.

The executor reports facts (exit code, signal, whether the wall clock or the output cap
fired, CPU seconds, the harness's per-unit lines); ``interpret`` turns them into one of
five statuses with a human-readable ``detail``. Keeping this mapping in one pure function
makes every backend agree on what "timeout" or "killed" means.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import asdict, dataclass, field

from sandbox.limits import Limits

STATUSES = ("passed", "failed", "error", "timeout", "killed")


@dataclass
class ExecResult:
    """What happened to one program.

    status      passed: loaded and every test passed (no tests: exited 0)
                failed: loaded, ran, but a test failed or it exited non-zero / early
                error:  did not load (syntax error, exception at import) or the sandbox failed
                timeout: wall-clock or CPU-time limit hit
                killed: stopped for memory, output or a fatal signal
    outcomes    per test unit: "passed", "failed: <exception>", or "not run"
    """

    status: str
    tests_passed: int = 0
    tests_total: int = 0
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    backend: str = ""
    detail: str = ""
    exit_code: int | None = None
    outcomes: list[str] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def pass_fraction(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _signame(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def infra_error(detail: str, backend: str, tests_total: int = 0, duration_s: float = 0.0) -> ExecResult:
    """A result for a program the sandbox could not run: never counted as passed."""
    return ExecResult(status="error", tests_total=tests_total, backend=backend,
                      detail=f"sandbox failure: {detail}", duration_s=duration_s,
                      outcomes=["not run"] * tests_total)


def interpret(raw: dict, units: list | None, limits: Limits, backend: str) -> ExecResult:
    """Map the executor's raw response for one program to an :class:`ExecResult`."""
    test_index = [i for i, (kind, _) in enumerate(units or ()) if kind == "test"]
    total = len(test_index)
    if raw.get("infra_error"):
        return infra_error(raw["infra_error"], backend, total)
    outcome_by_unit: dict[int, str] = {}
    flags = {"loaded": False, "done": False, "memory": False}
    error_line = setup_error = exit_line = infra = None
    for line in raw.get("report", ()):
        tag, _, rest = line.partition(" ")
        if tag == "L":
            flags["loaded"] = True
        elif tag == "D":
            flags["done"] = True
        elif tag == "M":
            flags["memory"] = True
        elif tag == "P" and rest.isdigit():
            outcome_by_unit.setdefault(int(rest), "passed")
        elif tag == "F":
            idx, _, msg = rest.partition(" ")
            if idx.isdigit():
                outcome_by_unit.setdefault(int(idx), f"failed: {msg}")
        elif tag == "S":
            setup_error = setup_error or rest.partition(" ")[2]
        elif tag == "E":
            error_line = error_line or rest
        elif tag == "X":
            exit_line = exit_line if exit_line is not None else rest
        elif tag == "I":
            infra = infra or rest
    outcomes = [outcome_by_unit.get(i, "not run") for i in test_index]
    passed = sum(1 for o in outcomes if o == "passed")
    sig, code, cpu = raw.get("signal"), raw.get("exit"), float(raw.get("cpu_s") or 0.0)
    res = ExecResult(status="failed", tests_passed=passed, tests_total=total,
                     stdout=raw.get("stdout", ""), stderr=raw.get("stderr", ""),
                     duration_s=float(raw.get("duration_s") or 0.0), backend=backend,
                     exit_code=code, outcomes=outcomes, cpu_s=cpu)
    cpu_limit = float(-(-limits.cpu_s // 1))
    if infra:
        res.status, res.detail = "error", f"sandbox failure: {infra}"
    elif raw.get("timed_out"):
        res.status, res.detail = "timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded"
    elif sig == _signal.SIGXCPU or (sig == _signal.SIGKILL and cpu >= 0.8 * cpu_limit):
        # RLIMIT_CPU's hard limit is a SIGKILL; CPU accounting is tick-grained, hence 0.8
        res.status, res.detail = "timeout", f"CPU-time limit of {cpu_limit:g} s exceeded"
    elif raw.get("output_exceeded"):
        res.status = "killed"
        res.detail = f"output limit of {limits.output_bytes} bytes exceeded"
    elif flags["memory"]:
        res.status, res.detail = "killed", f"memory limit of {limits.memory_mb} MB exceeded"
    elif sig == _signal.SIGXFSZ:
        res.status, res.detail = "killed", f"file-size limit of {limits.disk_mb} MB exceeded"
    elif sig == _signal.SIGKILL:
        res.status, res.detail = "killed", "killed by SIGKILL (memory cgroup or process limit)"
    elif sig is not None:
        res.status, res.detail = "killed", f"killed by {_signame(sig)}"
    elif error_line is not None and not flags["loaded"]:
        res.status, res.detail = "error", f"program raised {error_line}"
    elif not flags["loaded"]:
        if total:
            res.detail = (f"program exited (code {exit_line or code}) before its tests ran")
        elif code == 0 and exit_line in (None, "0"):
            res.status, res.detail = "passed", "exited 0 (no tests)"
        else:
            res.detail = f"exited with code {exit_line or code}"
    elif total == 0:
        if code == 0:
            res.status, res.detail = "passed", "exited 0 (no tests)"
        else:
            res.detail = f"exited with code {code}"
    elif passed == total and flags["done"] and code == 0:
        res.status, res.detail = "passed", f"{passed}/{total} tests passed"
    else:
        res.detail = f"{passed}/{total} tests passed"
        if exit_line is not None:
            res.detail += f"; program exited (code {exit_line}) during the tests"
        elif setup_error:
            res.detail += f"; test set-up raised {setup_error}"
        elif not flags["done"]:
            res.detail += f"; harness did not finish (exit code {code})"
    return res
