"""The sandbox's contract: statuses, per-assert counting, limits, rewards and the CLI.

Every program here runs in a real jail (bubblewrap + the warm executor); nothing
model-like is executed in the test process. The hostile programs are in
test_sandbox_hostile.py, the Ray pool in test_sandbox_pool.py.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from sandbox import Limits, SandboxError, run_program
from sandbox._seccomp import AUDIT_ARCH, SYSCALLS, build_seccomp_filter
from sandbox.harness import count_tests, split_tests
from sandbox.jail import JailBackend
from sandbox.result import interpret
from sandbox.rewards import RewardConfig, build_program, extract_code, score_completion

REPO = Path(__file__).resolve().parent.parent
Task = namedtuple("Task", "prompt entry_point test")

HUMANEVAL_TEST = '''
METADATA = {"author": "jt", "dataset": "test"}


def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-1, 1) == 0
    import math
    assert math.isclose(candidate(0.5, 0.25), 0.75)
    assert True, "this prints if this assert fails (good for debugging!)"
    for a in range(3):
        assert candidate(a, a) == 2 * a
'''
ADD = Task(prompt='def add(a, b):\n    """Return a + b."""\n', entry_point="add", test=HUMANEVAL_TEST)


@pytest.fixture(scope="module")
def jail():
    backend = JailBackend()
    backend.start()
    yield backend
    backend.close()


# -- the harness split (pure, on the host) -----------------------------------------------------

def test_split_expands_check_into_one_unit_per_assert():
    units = split_tests(ADD.test + "\ncheck(add)\n")
    tests = [src for kind, src in units if kind == "test"]
    assert count_tests(units) == 4  # three asserts + the loop; `assert True` is not a test
    assert tests[0] == "assert candidate(1, 2) == 3"
    assert tests[-1].startswith("for a in range(3):")
    assert ("setup", "candidate = add") in units
    assert ("setup", "import math") in units


def test_split_falls_back_to_one_test_when_check_returns():
    src = "def check(c):\n    if c(1) == 1:\n        return\n    assert False\ncheck(f)\n"
    units = split_tests(src)
    assert count_tests(units) == 1 and units[-1] == ("test", "check(f)")


def test_split_rejects_bad_tests_with_a_fix():
    with pytest.raises(SandboxError, match="do not parse"):
        split_tests("assert (")
    with pytest.raises(SandboxError, match="never call it"):
        split_tests("def check(candidate):\n    assert candidate(1)\n")
    assert split_tests(None) is None and split_tests("  \n") is None
    assert split_tests("print('no asserts')") == [("test", "print('no asserts')")]


def test_limits_are_validated():
    with pytest.raises(SandboxError, match="memory_mb"):
        Limits(memory_mb=1)
    with pytest.raises(SandboxError, match="unknown sandbox limit"):
        Limits.from_dict({"wall": 1})
    assert Limits.from_dict({"wall_s": 2}).wall_s == 2


@pytest.mark.parametrize("arch", sorted(SYSCALLS))
def test_seccomp_filter_is_valid_bpf(arch):
    prog = build_seccomp_filter(arch)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load arch
    assert insns[1][0] == 0x15 and insns[1][3] == AUDIT_ARCH[arch]
    assert insns[2] == (0x06, 0, 0, 0x80000000)  # foreign arch: kill
    for i, (code, jt, jf, _k) in enumerate(insns):  # every jump lands inside the program
        if code & 0x07 == 0x05:
            assert i + 1 + max(jt, jf) < len(insns)
    assert insns[-1][0] == 0x06


UNITS = [("setup", "candidate = add"), ("test", "assert candidate(1, 2) == 3"),
         ("test", "assert candidate(2, 2) == 4")]


@pytest.mark.parametrize("raw", [
    {"report": ["L", "P " + "9" * 5000, "D 0.1"]},            # a 5,000-digit unit index
    {"report": ["L", "P 1", "P 2", "D inf"]},                  # a CPU time that is not finite
    {"report": ["L", "P 1", "P 2", "D nan"]},
    {"report": ["L", "P 1", "P 1", "P 2", "D 0.1"]},           # a unit reported twice
    {"report": ["L", "P 1", "P 2", "P 7", "D 0.1"]},           # a unit that does not exist
    {"report": ["L", "P 0", "P 1", "P 2", "D 0.1"]},           # a set-up unit reported as a test
    {"report": ["L", "P 1\rP 2", "D 0.1"]},                    # a carriage return inside a line
    {"report": ["L", "P 1", "D 0.1", "P 2"]},                  # a line after the final one
    {"report": ["L", "P 1", "P 2", "Z", "D 0.1"]},             # a line outside the grammar
    {"report": ["L", "P 1", "P 2", "x" * 100_000, "D 0.1"]},   # an unbounded line
    {"report": ["L", "P 1", "P 2", "K 9 1e400", "D 0.1"]},
    {"report": "L\nP 1\nP 2\nD 0.1"},                          # not a list of lines
    {"report": ["L", "P 1", "P 2"], "signal": 10 ** 100},      # no final line, absurd signal
    "not an object",
])
def test_a_hostile_report_fails_that_program_only(raw):
    """However the answer is malformed, interpret() returns (never raises) a result that
    pays nothing and serialises as strict JSON."""
    res = interpret(raw, UNITS, Limits(), "jail")
    assert res.status == "error" and res.tests_passed == 0
    assert res.detail.startswith("sandbox failure:")
    json.dumps(res.to_dict(), allow_nan=False)


def test_a_well_formed_report_is_read_field_by_field():
    raw = {"report": ["L", "P 1", "F 2 AssertionError: got 5, expected 4", "D 0.0123", ""],
           "stdout": "out", "duration_s": float("inf"), "timed_out": "yes"}
    res = interpret(raw, UNITS, Limits(), "jail")
    assert (res.status, res.tests_passed, res.tests_total, res.cpu_s, res.duration_s) == ("failed", 1, 2, 0.0123, 0.0)
    assert res.failures == [{"test": "assert candidate(2, 2) == 4", "why": "AssertionError: got 5, expected 4"}]


# -- running programs in the jail ----------------------------------------------------------------

def test_per_assert_counting(jail):
    half = "def add(a, b):\n    return a + b if a >= 0 else 42\n"
    res = jail.run(half, ADD.test + "\ncheck(add)\n")
    assert (res.status, res.tests_passed, res.tests_total) == ("failed", 3, 4)
    assert res.outcomes[1].startswith("failed: AssertionError")
    good = jail.run("def add(a, b):\n    return a + b\n", ADD.test + "\ncheck(add)\n")
    assert (good.status, good.tests_passed, good.tests_total) == ("passed", 4, 4)
    assert good.backend == "jail" and good.duration_s > 0


@pytest.mark.parametrize("program, tests, status, detail", [
    ("print('hi')", None, "passed", "exited 0"),
    ("import sys; sys.exit(3)", None, "failed", "code 3"),
    ("exit(0)", None, "passed", "exited 0"),
    ("raise ValueError('boom')", None, "error", "ValueError: boom"),
    ("def f(:\n  pass", "assert f", "error", "SyntaxError"),
    ("import sys\nsys.exit(0)", "assert False", "failed", "before its tests ran"),
    ("x = 1", "import os\nos._exit(0)\nassert x == 1", "error", "the judge ended before its last test"),
    ("def f(): return 1", "assert f() == 1\nraise SystemExit(0)\nassert f() == 2", "failed",
     "1/2 tests passed; test set-up raised SystemExit"),
    ("def f():\n    import os\n    os._exit(0)", "assert f() == 1\nassert f() == 2", "failed",
     "program exited (code 0) during the tests"),
])
def test_statuses(jail, program, tests, status, detail):
    res = jail.run(program, tests, limits=Limits(wall_s=3))
    assert res.status == status, res
    assert detail in res.detail, res.detail


def test_output_and_traceback_are_the_programs_own(jail):
    res = jail.run("print('to stdout')\nimport sys\nprint('to stderr', file=sys.stderr)\n1/0")
    assert res.stdout == "to stdout\n"
    assert "to stderr" in res.stderr and "ZeroDivisionError" in res.stderr
    assert "_harness" not in res.stderr and "_executor" not in res.stderr


def test_program_runs_confined(jail):
    probe = (
        "import os, threading\n"
        "st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "print(os.getuid(), os.getpid(), st['Seccomp'].strip(), st['NoNewPrivs'].strip(),\n"
        "      st['CapEff'].strip(), os.getcwd(), sorted(os.listdir('/')))\n"
    )
    res = jail.run(probe)
    assert res.status == "passed", res
    uid, pid, seccomp, nnp, capeff, cwd, root = res.stdout.split(" ", 6)
    assert int(uid) >= 200_000 and pid == "1"
    assert (seccomp, nnp, capeff, cwd) == ("2", "1", "0000000000000000", "/tmp")
    assert "work" not in root and "root" in root  # only the interpreter's parents are there


def test_run_program_auto_says_which_backend():
    res = run_program("print(6 * 7)", "assert 6 * 7 == 42", limits=Limits(wall_s=3))
    assert res.status == "passed" and res.stdout == "42\n"
    assert res.backend in ("jail", "docker")


# -- rewards -----------------------------------------------------------------------------------

def test_extract_code_and_build_program():
    assert extract_code("    return a + b\n") == ("    return a + b\n", False)
    fenced = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(fenced) == ("def add(a, b):\n    return a + b\n", True)
    assert extract_code("```python\ndef f():\n    return 1") == ("def f():\n    return 1", True)
    assert build_program(ADD, "   \n") is None and build_program(ADD, "```python\n```") is None
    program, tests = build_program(ADD, "    return a + b\n")
    assert program == ADD.prompt + "    return a + b\n" and tests.endswith("check(add)\n")


def test_score_completion(jail):
    lim = Limits(wall_s=3)
    full = score_completion(ADD, "    return a + b\n", limits=lim, backend=jail)
    assert (full.reward, full.pass_fraction, full.all_passed, full.format_ok) == (2.5, 1.0, True, True)
    fenced = score_completion(ADD, "```python\ndef add(a, b):\n    return b + a\n```", limits=lim, backend=jail)
    assert fenced.reward == 2.5 and fenced.reason == "passed"
    part = score_completion(ADD, "    return a + b if a >= 0 else 42\n", limits=lim, backend=jail)
    assert part.pass_fraction == 0.75 and part.reward == pytest.approx(2.0 * 0.75 + 0.5)
    strict = score_completion(ADD, "    return a + b if a >= 0 else 42\n", limits=lim, backend=jail,
                              config=RewardConfig(all_pass=True, format_weight=0.0))
    assert strict.reward == 0.0 and not strict.all_passed
    empty = score_completion(ADD, "", backend=jail)
    assert (empty.reward, empty.reason, empty.result) == (0.0, "no code", None)
    broken = score_completion(ADD, "    return (a +\n", backend=jail)
    assert (broken.reward, broken.reason, broken.format_ok) == (0.0, "syntax error", False)
    crash = score_completion(ADD, "    return a + b\nraise SystemError('at import')\n", limits=lim, backend=jail)
    assert crash.reason == "error" and crash.reward == 0.0  # parses, but did not load: no format reward
    slow = score_completion(ADD, "    while True: pass\n", limits=Limits(wall_s=1, cpu_s=1), backend=jail)
    assert slow.reason == "timeout" and slow.reward == 0.0


def test_nul_bytes_and_oversized_completions_score_zero_without_running(jail):
    """What a sampler can emit but Python cannot load: decided on the host, never executed."""
    restarts = jail.restarts
    nul = score_completion(ADD, "    return a + b\x00\n", backend=jail)
    assert (nul.reward, nul.reason, nul.format_ok) == (0.0, "syntax error", False)
    assert "null" in nul.result.detail and nul.result.backend == "none"
    huge = score_completion(ADD, "    return a + b\n" + "    # pad\n" * 30_000, backend=jail)
    assert (huge.reward, huge.reason) == (0.0, "syntax error") and "longer than" in huge.result.detail
    ok = score_completion(ADD, "    return a + b\n", limits=Limits(wall_s=3), backend=jail)
    assert ok.reward == 2.5 and jail.restarts == restarts  # the executor never saw the bad ones


# -- the CLI -------------------------------------------------------------------------------------

def _cgrpo() -> list[str]:
    exe = Path(sys.executable).with_name("cgrpo")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.cli"]


def test_cli_run_prints_one_json_object(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text("def add(a, b):\n    return a + b\nprint('hello')\n")
    tests = tmp_path / "tests.py"
    tests.write_text("def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 5\n"
                     "check(add)\n")
    out = subprocess.run(_cgrpo() + ["sandbox", "run", str(prog), "--tests", str(tests),
                                     "--backend", "jail", "--timeout", "3", "--memory-mb", "256"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["status"] == "failed" and (res["tests_passed"], res["tests_total"]) == (1, 2)
    assert res["stdout"] == "hello\n" and res["backend"] == "jail" and res["duration_s"] > 0
    assert set(res) >= {"status", "stdout", "stderr", "duration_s", "backend", "backend_note"}
    assert res["failures"] == [{"test": "assert candidate(2, 2) == 5", "why": "AssertionError: got 4, expected 5"}]
    bad = subprocess.run(_cgrpo() + ["sandbox", "run", str(tmp_path / "missing.py")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error: program file")
    assert "Traceback" not in bad.stderr


def test_cli_answer_is_strict_json_whatever_the_program_writes(tmp_path, capsys):
    """The CLI's own code (in this process; the program runs in the sandbox): a program that
    forges report lines with absurd numbers on every descriptor and returns an object equal
    to anything still yields one strictly valid JSON object scoring nothing."""
    import argparse

    from sandbox.cli import _run

    prog, tests = tmp_path / "prog.py", tmp_path / "tests.py"
    prog.write_text("import os\nclass Eq:\n    def __eq__(self, other): return True\n"
                    "def add(a, b):\n    for fd in range(64):\n        try:\n"
                    "            os.write(fd, b'P 1\\nP 2\\nD 1e999\\nP ' + b'9' * 5000 + b'\\n')\n"
                    "        except OSError:\n            pass\n    return Eq()\n")
    tests.write_text("def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 5\n"
                     "check(add)\n")
    args = argparse.Namespace(program=str(prog), tests=str(tests), backend="jail", timeout=3.0,
                              cpu_timeout=None, memory_mb=256, max_procs=16, output_bytes=64_000, pretty=False)
    assert _run(args) == 0
    res = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert (res["status"], res["tests_passed"]) == ("error", 0)  # it wrote on its answer pipe too
    assert "broke the harness protocol" in res["detail"]


def test_env_of_host_does_not_reach_programs(jail, monkeypatch):
    # The jail backend was started with a cleared environment; a fresh one proves it.
    monkeypatch.setenv("CGRPO_TEST_CANARY", "canary-value-7f3a")
    with JailBackend() as fresh:
        res = fresh.run("import os; print(sorted(os.environ))")
    assert res.status == "passed" and "CGRPO_TEST_CANARY" not in res.stdout
    assert os.environ["CGRPO_TEST_CANARY"] == "canary-value-7f3a"


def test_jail_works_for_a_non_root_caller():
    """The user-namespace mode (what runs in deploy/'s non-root sandbox container): started
    as an unprivileged user, programs get no capabilities, their own /proc, and cannot
    reach the executor. Uses the system python, which any user can execute."""
    import shutil

    from sandbox.jail import bwrap_command

    system_python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not system_python.exists():
        pytest.skip("needs root (to become another user with setpriv) and /usr/bin/python3")
    become = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(become + ["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are off here: {probe.stderr.strip()}")

    class NonRootJail(JailBackend):
        def _command(self, limits):
            return become + bwrap_command(
                0, root=False, python=(str(system_python.resolve()), "/usr"))

    with NonRootJail() as jail:
        ok = jail.run("def add(a, b):\n    return a + b\n", ADD.test + "\ncheck(add)\n")
        assert (ok.status, ok.tests_passed, ok.tests_total) == ("passed", 4, 4), ok
        probe = jail.run("import os\nst = open('/proc/self/status').read()\n"
                         "print('CapEff:\\t0000000000000000' in st, 'Seccomp:\\t2' in st, os.getpid(),"
                         " sorted(p for p in os.listdir('/proc') if p.isdigit()))")
        assert probe.stdout.strip() == "True True 1 ['1']", probe
        parent = jail.run("import os, signal\nos.kill(os.getppid() or 1, signal.SIGKILL)\n"
                          "open('/usr/pwned', 'w')")
        assert parent.status == "error", parent
        assert "Read-only" in parent.stderr or "denied" in parent.stderr, parent.stderr
        assert jail.run("print('still serving')").stdout == "still serving\n"
        assert jail.restarts == 0


def test_humaneval_canonical_solutions_all_pass(jail):
    """The per-assert split on real data: every HumanEval canonical solution passes every
    one of its asserts (data fetched by scripts/fetch_data.py)."""
    import gzip

    data = Path(os.environ.get("CGRPO_DATA_DIR") or REPO / "data") / "humaneval" / "HumanEval.jsonl.gz"
    if not data.exists():
        pytest.skip(f"{data} not fetched (scripts/fetch_data.py)")
    rows = [json.loads(line) for line in gzip.open(data, "rt")]
    assert len(rows) == 164
    lim = Limits(wall_s=10, cpu_s=10)
    failures, asserts = [], 0
    for row in rows:
        task = Task(row["prompt"], row["entry_point"], row["test"])
        res = score_completion(task, row["canonical_solution"], limits=lim, backend=jail)
        asserts += res.result.tests_total
        if res.reward != 2.5:
            failures.append((row["task_id"], res.reason, res.result.detail))
    assert not failures, failures[:5]
    assert asserts > 164 * 5  # split per assert, not one test per task
