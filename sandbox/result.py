"""The structured outcome of one program, and how the executor's raw facts map to it.

The executor reports facts (whether the wall clock or the output cap fired, how the judge
ended, the judge's report lines); ``interpret`` turns them into one of five statuses with a
human-readable ``detail``. Keeping this mapping in one pure function makes every backend
agree on what "timeout" or "killed" means.

Nothing in the raw answer is trusted: every field is checked for type and range and every
report line is parsed against a fixed grammar with bounded numbers, so a malformed or
hostile answer becomes a sandbox failure of that one program (status ``error``, reward 0),
never an exception in the caller, a non-JSON value, or a pass.
"""

from __future__ import annotations

import math
import re
import signal as _signal
from dataclasses import asdict, dataclass, field

from sandbox.limits import Limits

STATUSES = ("passed", "failed", "error", "timeout", "killed")
MAX_FAILURES = 10  # failed tests listed (with their source and why) per result
_LINE_MAX = 1000
_INDEX = re.compile(r"\d{1,7}\Z")
_CODE = re.compile(r"\d{1,3}\Z")
_SECONDS = re.compile(r"\d{1,7}(\.\d{1,6})?\Z")


@dataclass
class ExecResult:
    """What happened to one program.

    status      passed: loaded and every test passed (no tests: exited 0)
                failed: loaded, ran, but a test failed or it exited non-zero / early
                error:  did not load (syntax error, exception at import), broke the harness
                        protocol, or the sandbox failed
                timeout: wall-clock or CPU-time limit hit
                killed: stopped for memory, output or a fatal signal
    outcomes    per test unit: "passed", "failed: <why>", "harness limitation: <why>" (the
                test needs more than plain data to cross to the program), or "not run"
    failures    the failed tests (at most MAX_FAILURES): {"test": source, "why": reason}
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
    harness_limitations: int = 0
    failures: list[dict] = field(default_factory=list)

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
                      detail=f"sandbox failure: {detail}"[:2000], duration_s=_finite(duration_s),
                      outcomes=["not run"] * tests_total)


def _finite(value, lo: float = 0.0, hi: float = 1e7) -> float:
    """A float within [lo, hi]; anything else (NaN, inf, a string, a huge int) is lo."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return lo
    try:
        value = float(value)
    except OverflowError:
        return lo
    return value if math.isfinite(value) and lo <= value <= hi else lo


def _small_int(value, lo: int, hi: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi else None


def _text(value, limit: int = 200_000) -> str:
    return value[:limit] if isinstance(value, str) else ""


class Malformed(ValueError):
    """A report line outside the grammar."""


@dataclass
class _Report:
    """The judge's report lines, parsed."""

    loaded: bool = False
    done: bool = False
    memory: bool = False
    cpu: float = 0.0
    load_error: str | None = None
    load_exit: int | None = None
    quit_code: int | None = None
    killed: tuple[int, float] | None = None
    violation: str | None = None
    infra: str | None = None
    setup_error: str | None = None
    outcomes: dict[int, str] = field(default_factory=dict)


def _parse_report(lines, units: list) -> _Report:
    """Parse the report against its grammar (see ``sandbox/_judge.py``); Malformed otherwise."""
    rep = _Report()
    if not isinstance(lines, list):
        raise Malformed("the report is not a list of lines")
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str) or len(line) > _LINE_MAX:
            raise Malformed(f"line {number} is not a bounded string")
        if not line:
            continue
        if rep.done:
            raise Malformed(f"line {number} follows the final line")
        tag, _, rest = line.partition(" ")
        if tag in ("P", "F", "H", "S"):
            index, _, why = rest.partition(" ")
            if not _INDEX.match(index) or int(index) >= len(units):
                raise Malformed(f"line {number}: no unit {index[:20]!r}")
            i = int(index)
            is_test = units[i][0] == "test"
            if (tag == "S") == is_test or i in rep.outcomes:
                raise Malformed(f"line {number}: unit {i} reported twice or as the wrong kind")
            if tag == "S":
                rep.setup_error = rep.setup_error or why
                continue
            rep.outcomes[i] = {"P": "passed", "F": f"failed: {why}", "H": f"harness limitation: {why}"}[tag]
        elif tag == "L" and not rest:
            rep.loaded = True
        elif tag == "M" and not rest:
            rep.memory = True
        elif tag == "E":
            rep.load_error = rest
        elif tag in ("X", "Q") and _CODE.match(rest) and int(rest) <= 255:
            if tag == "X":
                rep.load_exit = int(rest)
            else:
                rep.quit_code = int(rest)
        elif tag == "K":
            sig, _, cpu = rest.partition(" ")
            if not (_CODE.match(sig) and 1 <= int(sig) <= 64 and _SECONDS.match(cpu)):
                raise Malformed(f"line {number}: bad signal line")
            rep.killed = (int(sig), float(cpu))
        elif tag == "V":
            rep.violation = rest
        elif tag == "I":
            rep.infra = rep.infra or rest
        elif tag == "D" and _SECONDS.match(rest):
            rep.done, rep.cpu = True, float(rest)
        else:
            raise Malformed(f"line {number}: unknown line {line[:40]!r}")
    return rep


def _cpu_limit(limits: Limits) -> float:
    return float(-(-limits.cpu_s // 1))


def _killed(res: ExecResult, sig: int, cpu: float, limits: Limits) -> None:
    if sig == _signal.SIGXCPU or (sig == _signal.SIGKILL and cpu >= 0.8 * _cpu_limit(limits)):
        # RLIMIT_CPU's hard limit is a SIGKILL; CPU accounting is tick-grained, hence 0.8
        res.status, res.detail = "timeout", f"CPU-time limit of {_cpu_limit(limits):g} s exceeded"
    elif sig == _signal.SIGXFSZ:
        res.status, res.detail = "killed", f"file-size limit of {limits.disk_mb} MB exceeded"
    elif sig == _signal.SIGKILL:
        res.status, res.detail = "killed", "killed by SIGKILL (memory or process limit)"
    else:
        res.status, res.detail = "killed", f"killed by {_signame(sig)}"


def _exit_code(rep: _Report) -> int | None:
    """The program's exit code: how it left while loading or during the tests; 0 when it
    was still serving at the end; None when a signal ended it."""
    if rep.load_exit is not None:
        return rep.load_exit
    if rep.quit_code is not None:
        return rep.quit_code
    if rep.killed:
        return None
    if rep.load_error is not None or rep.memory:
        return 1
    return 0 if rep.loaded else None


def interpret(raw: dict, units: list | None, limits: Limits, backend: str) -> ExecResult:
    """Map the executor's raw answer for one program to an :class:`ExecResult`. Never
    raises: anything outside the expected shape is a sandbox failure of this program."""
    units = list(units or ())
    test_index = [i for i, (kind, _) in enumerate(units) if kind == "test"]
    total = len(test_index)
    if not isinstance(raw, dict):
        return infra_error("the executor's answer is not an object", backend, total)
    duration = _finite(raw.get("duration_s"))
    if raw.get("infra_error"):
        return infra_error(_text(raw["infra_error"], 1000), backend, total, duration)
    try:
        rep = _parse_report(raw.get("report", []), units)
    except Malformed as exc:
        return infra_error(f"the judge's report is malformed ({exc})", backend, total, duration)
    outcomes = [rep.outcomes.get(i, "not run") for i in test_index]
    passed = sum(o == "passed" for o in outcomes)
    failures = [{"test": units[i][1][:200], "why": o.partition(": ")[2][:300] or o}
                for i, o in zip(test_index, outcomes) if o.startswith(("failed", "harness"))]
    judge_signal = _small_int(raw.get("signal"), 1, 64)
    cpu = rep.cpu or _finite(raw.get("judge_cpu_s"))
    res = ExecResult(status="failed", tests_passed=passed, tests_total=total,
                     stdout=_text(raw.get("stdout")), stderr=_text(raw.get("stderr")),
                     duration_s=duration, backend=backend, outcomes=outcomes, cpu_s=cpu,
                     harness_limitations=sum(o.startswith("harness") for o in outcomes),
                     failures=failures[:MAX_FAILURES], exit_code=_exit_code(rep))
    if rep.infra:
        res.status, res.detail = "error", f"sandbox failure: {rep.infra}"
    elif raw.get("timed_out") is True:
        res.status, res.detail = "timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded"
    elif raw.get("output_exceeded") is True:
        res.status, res.detail = "killed", f"output limit of {limits.output_bytes} bytes exceeded"
    elif rep.killed:
        _killed(res, rep.killed[0], rep.killed[1], limits)
    elif not rep.done:
        if judge_signal is not None:
            _killed(res, judge_signal, cpu, limits)
            res.detail += " (while judging)"
        else:
            code = _small_int(raw.get("exit"), 0, 255)
            res.status = "error"
            res.detail = ("sandbox failure: the judge ended before its last test"
                          + (f" (exit code {code}: did a test exit the interpreter?)" if code is not None else ""))
    elif rep.memory:
        res.status, res.detail = "killed", f"memory limit of {limits.memory_mb} MB exceeded"
    elif rep.violation is not None:
        res.status, res.detail = "error", rep.violation or "the program broke the harness protocol"
    elif rep.load_error is not None and not rep.loaded:
        res.status, res.detail = "error", f"program raised {rep.load_error}"
    elif not rep.loaded:
        code = rep.load_exit if rep.load_exit is not None else 1
        if total:
            res.detail = f"program exited (code {code}) before its tests ran"
        elif code == 0:
            res.status, res.detail = "passed", "exited 0 (no tests)"
        else:
            res.detail = f"exited with code {code}"
    elif total == 0:
        if rep.quit_code:
            res.detail = f"exited with code {rep.quit_code}"
        else:
            res.status, res.detail = "passed", "exited 0 (no tests)"
    elif passed == total and rep.quit_code is None:
        res.status, res.detail = "passed", f"{passed}/{total} tests passed"
    else:
        res.detail = f"{passed}/{total} tests passed"
        if res.harness_limitations:
            res.detail += (f"; {res.harness_limitations} need more than plain data to reach the "
                           "program (harness limitation)")
        if rep.quit_code is not None:
            res.detail += f"; program exited (code {rep.quit_code}) during the tests"
        elif rep.setup_error:
            res.detail += f"; test set-up raised {rep.setup_error}"
    if res.status == "error":  # nothing of a run that broke down counts as passed
        res.tests_passed = 0
        res.outcomes = ["not run" if o == "passed" else o for o in res.outcomes]
    return res
