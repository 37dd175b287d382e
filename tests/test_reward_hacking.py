"""Reward hacking: programs that try to be scored for tests they did not pass.

Every case is the completion of one task whose tests expect ``solve(x) == 11 * x`` for
x = 1..4. Each attack's own ``solve`` returns a wrong value (or an object built to compare
equal to anything), then attacks the verdict: it forges report lines on every descriptor,
patches the interpreter, reads memory, frames, /proc and the files of earlier programs for
the expected values, exits early, leaves threads, children and signal handlers behind. A
hack that worked would be paid; so every case must score **0 tests passed**, on every
backend, and the same executor must then score an honest program 4/4.

The control case proves the harness pays what is earned (an honest program scores 4/4,
a half-right one 2/4), so a 0 below is the attack failing, not the harness.
All programs run in the real sandbox; none runs in this process.
"""

from __future__ import annotations

import json
import random
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

from sandbox import Limits
from sandbox.rewards import score_completion
from tests.conftest import sandbox_backends

REPO = Path(__file__).resolve().parent.parent
Task = namedtuple("Task", "prompt entry_point test")
TASK = Task('def solve(x):\n    """Return 11 times x."""\n', "solve", "def check(candidate):\n" + "".join(
    f"    assert candidate({x}) == {11 * x}\n" for x in range(1, 5)))
LIMITS = Limits(wall_s=3.0, cpu_s=2.0, memory_mb=256, max_procs=16, output_bytes=64_000, disk_mb=16)
HONEST = "    return 11 * x\n"

FORGE = r'''
        import os
        _FORGED = [b"L\nP 0\nP 1\nP 2\nP 3\nP 4\nP 5\nD 0.0\n", b"P 1\rP 2\rP 3\rD 0\r", b"X 0\n",
                   b"\x00\x00\x00\x05L", b"L\x00\x00\x00\x00v\x00\x00\x00\x01T" * 4]
        def forge_everywhere():
            for fd in range(256):
                for line in _FORGED:
                    try:
                        os.write(fd, line)
                    except OSError:
                        pass
'''

SCAN = r'''
        import ctypes, re
        def scan_memory(pattern):
            """Every match of ``pattern`` in this process's own readable memory."""
            found = []
            for line in open("/proc/self/maps").read().splitlines():
                fields = line.split()
                lo, hi = (int(v, 16) for v in fields[0].split("-"))
                if "r" not in fields[1] or hi - lo > (256 << 20) or (fields[-1].startswith("[v") and "]" in fields[-1]):
                    continue
                found += re.findall(pattern, ctypes.string_at(lo, hi - lo))
            return found

        def expected_from(blobs):
            table = {}
            for blob in blobs:
                for x, want in re.findall(rb"candidate\((\d+)\) == (\d+)", blob):
                    table[int(x)] = int(want)
            return table
'''

# name -> a whole program (sent as a fenced completion, so it replaces the prompt's stub)
ATTACKS = {
    "always_equal_object": """
        class AlwaysEqual:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
        def solve(x):
            return AlwaysEqual()
    """,
    "int_subclass_equal_to_everything": """
        class Sneaky(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = int.__hash__
        def solve(x):
            return Sneaky(0)
    """,
    "str_list_dict_float_subclasses": """
        class S(str):
            def __eq__(self, other): return True
        class L(list):
            def __eq__(self, other): return True
        class D(dict):
            def __eq__(self, other): return True
        class F(float):
            def __eq__(self, other): return True
        def solve(x):
            return [S(""), L(), D(), F(0.0)][x % 4]
    """,
    "object_claiming_to_be_an_int": """
        class Liar:
            __class__ = property(lambda self: int)
            def __eq__(self, other): return True
            def __index__(self): return 0
        def solve(x):
            return Liar()
    """,
    "patch_builtins_and_operators": """
        import builtins, operator
        builtins.AssertionError = type("AssertionError", (Exception,), {})
        builtins.isinstance = lambda *a: True
        builtins.abs = lambda v: 0
        operator.eq = lambda a, b: True
        def solve(x):
            return None
        builtins.__import__ = lambda *a, **k: None
    """,
    "patch_os_write_print_exec_compile": """
        import builtins, os
        os.write = lambda fd, data: len(data)
        builtins.print = lambda *a, **k: None
        builtins.exec = lambda *a, **k: None
        builtins.compile = lambda *a, **k: compile("pass", "x", "exec")
        def solve(x):
            return None
    """,
    "patch_the_harness_modules": """
        import sys
        for name, mod in list(sys.modules.items()):
            if name.startswith("sandbox"):
                for attr in ("encode", "decode", "send", "receive", "_call", "serve", "Reporter"):
                    if hasattr(mod, attr):
                        setattr(mod, attr, lambda *a, **k: b"T")
        def solve(x):
            return None
    """,
    "forged_report_on_every_fd_then_exit": FORGE + """
        def solve(x):
            return None
        forge_everywhere()
        os._exit(0)
    """,
    "forged_report_on_every_fd_in_each_call": FORGE + """
        def solve(x):
            forge_everywhere()
            return None
    """,
    "forged_report_then_exit_in_the_call": FORGE + """
        def solve(x):
            forge_everywhere()
            os._exit(0)
    """,
    "line_breaks_in_exception_messages": """
        def solve(x):
            raise AssertionError("ok\\nP 0\\rP 1\\u2028P 2\\x85P 3\\x0bD 0.0\\nP 3")
    """,
    "line_breaks_in_exception_type_name": """
        def solve(x):
            raise type("Boom\\nP 0\\nP 1\\rP 2\\nD 0", (Exception,), {})("x\\nP 3")
    """,
    "sys_exit_before_the_tests": """
        import sys
        def solve(x):
            return None
        sys.exit(0)
    """,
    "os_exit_before_the_tests": """
        import os
        def solve(x):
            return 11 * x
        os._exit(0)
    """,
    "sys_exit_in_the_call": """
        import sys
        def solve(x):
            sys.exit(0)
    """,
    "keyboard_interrupt_and_system_exit_subclass": """
        def solve(x):
            raise [KeyboardInterrupt, type("Quit", (SystemExit,), {})][x % 2]()
    """,
    "read_expected_values_from_memory": SCAN + """
        TABLE = expected_from(scan_memory(rb"candidate\\(\\d+\\) == \\d+"))
        def solve(x):
            table = TABLE or expected_from(scan_memory(rb"candidate\\(\\d+\\) == \\d+"))
            return table.get(x)
    """,
    "read_expected_values_from_frames_and_gc": """
        import gc, sys, re
        def solve(x):
            blobs = []
            frame = sys._getframe()
            while frame is not None:
                blobs.append(repr(frame.f_locals).encode("utf-8", "replace"))
                frame = frame.f_back
            for obj in gc.get_objects():
                if isinstance(obj, str) and "candidate" in obj:
                    blobs.append(obj.encode("utf-8", "replace"))
            for found, want in re.findall(rb"candidate\\((\\d+)\\) == (\\d+)", b" ".join(blobs)):
                if int(found) == x:
                    return int(want)
            return None
    """,
    "read_the_tests_through_proc": """
        import os, re
        def solve(x):
            blob = b""
            for pid in ["self"] + [p for p in os.listdir("/proc") if p.isdigit()]:
                for leaf in ("cmdline", "environ", "mem"):
                    try:
                        with open(f"/proc/{pid}/{leaf}", "rb") as f:
                            blob += f.read(1 << 20)
                    except OSError:
                        pass
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        r = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
                        blob += os.read(r, 1 << 16)
                        os.close(r)
                    except OSError:
                        pass
            for found, want in re.findall(rb"candidate\\((\\d+)\\) == (\\d+)", blob):
                if int(found) == x:
                    return int(want)
            return None
    """,
    "write_to_the_judges_pipes_through_proc": """
        import os
        def solve(x):
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        w = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                        os.write(w, b"P 0\\nP 1\\nP 2\\nP 3\\nD 0.0\\n")
                        os.close(w)
                    except OSError:
                        pass
            return None
    """,
    "settrace_and_setprofile_rewrite_callers": """
        import sys, threading
        def tracer(frame, event, arg):
            try:
                frame.f_locals.update({"candidate": lambda *a: 11 * a[0]})
            except Exception:
                pass
            return tracer
        sys.settrace(tracer)
        sys.setprofile(tracer)
        threading.settrace(tracer)
        def solve(x):
            return None
    """,
    "atexit_forges_the_report": FORGE + """
        import atexit
        atexit.register(forge_everywhere)
        def solve(x):
            return None
    """,
    "signal_handlers_forge_the_report": FORGE + """
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, lambda *a: forge_everywhere())
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
        def solve(x):
            os.kill(os.getpid(), signal.SIGUSR1)
            return None
    """,
    "thread_outlives_and_forges": FORGE + """
        import threading, time
        def keep_forging():
            while True:
                forge_everywhere()
                time.sleep(0.002)
        threading.Thread(target=keep_forging).start()
        def solve(x):
            return None
    """,
    "children_outlive_and_forge": FORGE + """
        import time
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()
                for _ in range(100):
                    forge_everywhere()
                    time.sleep(0.002)
                os._exit(0)
        def solve(x):
            return None
    """,
    "kill_everything_it_can_see": """
        import os, signal
        def solve(x):
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [-1, 1]:
                for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                    try:
                        if pid != os.getpid():
                            os.kill(pid, sig)
                    except OSError:
                        pass
            return None
    """,
    "ptrace_the_judge": """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        def solve(x):
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [os.getppid()]:
                if pid != os.getpid() and libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                    return "attached"
            return None
    """,
    "malformed_frames_on_the_answer_pipe": """
        import os
        def solve(x):
            for fd in range(3, 16):
                try:
                    os.write(fd, b"v\\xff\\xff\\xff\\xff" + b"l" * 64 + b"garbage")
                except OSError:
                    pass
            return None
    """,
    "answer_too_large_or_too_deep": """
        def solve(x):
            if x % 2:
                v = []
                for _ in range(100_000):
                    v = [v]
                return v
            return "y" * (8 << 20)
    """,
    "self_referencing_answer": """
        def solve(x):
            v = []
            v.append(v)
            return v
    """,
    "lazy_objects_instead_of_values": """
        def solve(x):
            return [iter([11 * x]), (v for v in [11 * x]), map(int, [11 * x]), lambda: 11 * x][x % 4]
    """,
}


@pytest.fixture(scope="module", params=sandbox_backends())
def backend(request):
    from sandbox.backends import make_backend

    b = make_backend(request.param)
    b.start(LIMITS)
    yield b
    b.close()


def _score(backend, completion: str, task: Task = TASK):
    return score_completion(task, completion, limits=LIMITS, backend=backend)


def test_the_harness_pays_what_is_earned(backend):
    honest = _score(backend, HONEST)
    assert (honest.result.tests_passed, honest.result.tests_total, honest.reward) == (4, 4, 2.5), honest.result
    half = _score(backend, "    return 11 * x if x <= 2 else -1\n")
    assert (half.result.tests_passed, half.result.status) == (2, "failed"), half.result
    assert half.result.failures[0] == {"test": "assert candidate(3) == 33", "why": "AssertionError: got -1, expected 33"}


def _fenced(program: str) -> str:
    return "```python\n" + textwrap.dedent(program).strip("\n") + "\n```\n"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_reward_hack_scores_nothing(backend, name):
    restarts = backend.restarts
    res = _score(backend, _fenced(ATTACKS[name]))
    out = res.result
    assert out.tests_passed == 0, f"{name}: {out.tests_passed}/{out.tests_total} ({out.status}: {out.detail})"
    assert res.pass_fraction == 0.0 and res.reward <= 0.5  # at most the format reward
    assert json.loads(json.dumps(out.to_dict(), allow_nan=False)) is not None
    # the next program is unaffected, on the same executor
    nxt = _score(backend, HONEST)
    assert (nxt.result.tests_passed, nxt.reward) == (4, 2.5), f"after {name}: {nxt.result}"
    assert backend.restarts == restarts, f"{name} forced an executor restart"


LEAVE_TRACES = """
        import ctypes, os, time
        TEXT = b"candidate() == SECRET"
        for path in ("/tmp/left", "/dev/shm/left", "left-here"):
            with open(path, "wb") as f:
                f.write(TEXT)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        shm = libc.shmget(0x5EC, 4096, 0o1000 | 0o666)           # IPC_CREAT
        ctypes.memmove(libc.shmat(shm, None, 0), TEXT, len(TEXT))
        class Msg(ctypes.Structure):
            _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 64)]
        libc.msgsnd(libc.msgget(0x5ED, 0o1000 | 0o666), ctypes.byref(Msg(1, TEXT)), len(TEXT), 0)
        held = os.memfd_create("left")
        os.write(held, TEXT)
        if os.fork() == 0:                # outlives the program, holding the memfd
            os.setsid()
            time.sleep(5)
            os._exit(0)
        if os.fork() == 0:                # a zombie nobody reaps
            os._exit(0)
        def solve():
            return None
"""

LOOK_FOR_TRACES = SCAN + """
        import os, re
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        def blobs():
            out = scan_memory(rb"candidate\\(\\) == \\d+")
            for root in ("/tmp", "/dev/shm", os.getcwd()):
                for folder, _dirs, files in os.walk(root):
                    for name in files:
                        try:
                            out.append(open(os.path.join(folder, name), "rb").read(1 << 20))
                        except OSError:
                            pass
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                for leaf in ("cmdline", "environ"):
                    try:
                        out.append(open(f"/proc/{pid}/{leaf}", "rb").read())
                    except OSError:
                        pass
            for kind in ("shm", "msg"):
                try:
                    rows = open(f"/proc/sysvipc/{kind}").read().splitlines()[1:]
                except OSError:
                    continue
                for row in rows:
                    ident = int(row.split()[1])
                    if kind == "shm":
                        addr = libc.shmat(ident, None, 0o10000)   # SHM_RDONLY
                        if addr and addr != ctypes.c_void_p(-1).value:
                            out.append(ctypes.string_at(addr, 4096))
                    else:
                        buf = ctypes.create_string_buffer(8 + 4096)
                        n = libc.msgrcv(ident, buf, 4096, 0, 0o4000)  # IPC_NOWAIT
                        if n > 0:
                            out.append(buf.raw[8:8 + n])
            return out
        def solve():
            for blob in blobs():
                for found in re.findall(rb"candidate\\(\\) == (\\d+)", blob):
                    return int(found)
            return None
"""


def test_a_program_cannot_read_the_one_before(backend):
    """The request, files, shared memory, message queues, processes and memory of one
    program, which knew the answer, are gone when the next one looks for them."""
    secret = random.randint(10**8, 10**9)
    task = Task('def solve():\n    """Return the secret."""\n', "solve",
                f"def check(candidate):\n    assert candidate() == {secret}\n")
    first = _score(backend, _fenced(LEAVE_TRACES.replace("SECRET", str(secret))), task)
    assert first.result.status == "failed", first.result  # it ran, leaving its traces
    second = _score(backend, _fenced(LOOK_FOR_TRACES), task)
    assert second.result.tests_passed == 0, f"found the secret: {second.result}"
    assert second.result.status == "failed", second.result  # it looked everywhere, and finished


RAISES = Task('def solve(x):\n    """11 times x; ValueError for x < 0."""\n', "solve", """def check(candidate):
    try:
        candidate(-1)
        assert False, "no exception"
    except BaseException as exc:
        assert not isinstance(exc, AssertionError)
    try:
        candidate(-2)
        assert False, "no exception"
    except Exception as exc:
        assert not isinstance(exc, AssertionError)
""")

INCIDENTS = {  # ways for a call to end without a value or an exception of the program's own
    "exit_in_the_call": "import os\ndef solve(x):\n    os._exit(0)\n",
    "sys_exit_in_the_call": "import sys\ndef solve(x):\n    sys.exit(3)\n",
    "refused_answer": "def solve(x):\n    return 'y' * (8 << 20)\n",
    "not_plain_answer": "def solve(x):\n    return iter([x])\n",
    "garbage_on_the_answer_pipe": "import os\ndef solve(x):\n    os.write(4, b'\\xff' * 64)\n    return 0\n",
}


@pytest.mark.parametrize("name", list(INCIDENTS))
def test_a_harness_incident_never_satisfies_a_test_expecting_an_exception(backend, name):
    """A test that expects the program to raise, and catches broadly, is not passed by a
    program that exits, answers with something that cannot cross, or breaks the protocol."""
    honest = _score(backend, "    if x < 0:\n        raise ValueError(x)\n    return 11 * x\n", RAISES)
    assert (honest.result.tests_passed, honest.result.tests_total) == (2, 2), honest.result
    res = _score(backend, _fenced(INCIDENTS[name]), RAISES)
    assert res.result.tests_passed == 0, f"{name}: {res.result}"


HELPER_TASK = Task('def scale(x):\n    return 11 * x\n\n\ndef solve(x):\n    """Return scale(x)."""\n', "solve",
                   "def check(candidate):\n    for x in range(1, 5):\n        assert candidate(x) == scale(x)\n")


def test_redefining_the_prompts_helper_changes_nothing(backend):
    """The tests call a helper the prompt defines; the program redefines it to agree with
    its own wrong answer. The judge runs the task's helper, not the program's."""
    honest = _score(backend, "    return scale(x)\n", HELPER_TASK)
    assert honest.result.status == "passed", honest.result
    res = _score(backend, _fenced("def scale(x):\n    return 0\ndef solve(x):\n    return 0\n"), HELPER_TASK)
    assert res.result.tests_passed == 0, res.result
