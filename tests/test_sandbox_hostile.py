"""Hostile programs against every backend that can run here: each must be contained.

Each attack is the completion of a task whose test passes only if ``solve()`` returns 42.
The completion returns 42 *and* runs the attack at import time, written the way an
attacker checks success: it raises when the attack fails. So an attack that is contained
leaves the program unloadable (error), stopped (timeout/killed) and the reward 0; an
attack that got through would load, pass the test and earn a reward. On top of that the
host is checked directly: files it must not see or get, a sentinel process that must
survive, and the same executor serving the next program with no restart.

Runs against the jail always, and against Docker when an engine and the sandbox image
answer (``bash scripts/docker_setup.sh`` provides both); otherwise those cases are
skipped with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import uuid
from collections import namedtuple
from pathlib import Path

import pytest

from sandbox import Limits
from sandbox.rewards import score_completion
from tests.conftest import sandbox_backends

REPO = Path(__file__).resolve().parent.parent
Task = namedtuple("Task", "prompt entry_point test")
TASK = Task("def solve():\n", "solve", "def check(candidate):\n    assert candidate() == 42\n")
LIMITS = Limits(wall_s=2.0, cpu_s=1.0, memory_mb=256, max_procs=8, output_bytes=16_000, disk_mb=16)
CANARY = f"canary-{uuid.uuid4().hex}"
HOST_MARK = f"/var/tmp/cgrpo-hostile-{uuid.uuid4().hex[:8]}"  # outside every scratch

ALLOWED = ("error", "timeout", "killed")
# name -> (attack source run at import time, statuses that mean "contained")
ATTACKS = {
    "network_connect": ("""
        import socket
        s = socket.create_connection(("1.1.1.1", 53), timeout=1)
    """, ("error",)),
    "host_loopback_service": ("""
        import socket  # the host's Redis; inside the sandbox 127.0.0.1 is its own
        s = socket.create_connection(("127.0.0.1", 6390), timeout=1)
    """, ("error",)),
    "dns": ("""
        import socket
        socket.getaddrinfo("example.com", 80)
    """, ("error",)),
    "read_etc_shadow": ("""
        print(open("/etc/shadow").read())
    """, ("error",)),
    "read_project_files": (f"""
        print(open({str(REPO / "pyproject.toml")!r}).read())
    """, ("error",)),
    "read_parent_environment": (f"""
        import os
        blob = repr(dict(os.environ))
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    blob += open(f"/proc/{{pid}}/environ", "rb").read().decode("latin-1")
                except OSError:
                    pass
        assert {CANARY!r} in blob, "no secret found"
    """, ("error",)),
    "write_outside_scratch": (f"""
        for path in ("/usr/pwned", "/pwned", {HOST_MARK!r}, {str(REPO / "pwned")!r}):
            try:
                open(path, "w").write("pwned")
            except OSError:
                continue
            break
        else:
            raise PermissionError("nothing writable outside scratch")
    """, ("error",)),
    "fork_bomb": ("""
        import os
        while True:
            os.fork()
    """, ALLOWED),
    "memory_bomb": ("""
        hog = bytearray(2 * 1024 ** 3)
    """, ("killed",)),
    "memory_creep": ("""
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 ** 2))
    """, ("killed",)),
    "memory_across_forks": ("""
        import mmap, os, time
        holding = mmap.mmap(-1, 4)  # shared by the forks: one flag per process
        first, second = os.fork(), os.fork()  # 4 processes, each within its own RLIMIT_AS, together over the budget
        hog = b"x" * (200 * 1024 ** 2)  # written, so the pages really count (a calloc'd bytearray may not)
        holding[2 * (first == 0) + (second == 0)] = 1
        deadline = time.monotonic() + 1.5  # hold it until all four hold theirs: an early exit frees its pages
        while sum(holding) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        kids_ok = True
        while True:
            try:
                kids_ok &= os.wait()[1] == 0
            except ChildProcessError:
                break
        assert kids_ok, "a process was killed"
    """, ("killed", "error", "timeout")),  # timeout: a machine so loaded the wall clock came first
    "cpu_spin": ("""
        while True:
            pass
    """, ("timeout",)),
    "infinite_output": ("""
        while True:
            print("spam" * 256)
    """, ("killed",)),
    "sleep_past_limit": ("""
        import time
        time.sleep(60)
    """, ("timeout",)),
    "kill_parent": ("""
        import os, signal, time
        parent = os.getppid()
        os.kill(parent, signal.SIGKILL)
        time.sleep(0.2)
        os.kill(parent, 0)
        raise RuntimeError("parent survived")
    """, ALLOWED),
    "kill_everything": ("""
        import os, signal
        os.kill(-1, signal.SIGKILL)
        os.system("kill -9 -1")
        raise RuntimeError("still alive")
    """, ALLOWED),
    "ctypes_escape": ("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        ok = (libc.unshare(0x10000000) == 0          # new user namespace
              or libc.setuid(0) == 0                 # become root
              or libc.mount(b"none", b"/usr", b"tmpfs", 0, None) == 0
              or libc.ptrace(16, 1, 0, 0) == 0)      # attach to PID 1
        assert ok, "ctypes got nothing"
    """, ("error",)),
    "os_system_escape": (f"""
        import os
        assert os.system("echo pwned > {HOST_MARK} || echo pwned > /usr/pwned") == 0
    """, ("error",)),
    "subprocess_escape": ("""
        import subprocess
        subprocess.run(["sh", "-c", "mount -t tmpfs none /usr || cat /etc/shadow"], check=True,
                       capture_output=True)
    """, ("error",)),
    "signal_storm": ("""
        import os
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [1, -1]:
            for sig in range(1, 65):
                try:
                    if pid != os.getpid():
                        os.kill(pid, sig)
                except (OSError, ValueError):
                    pass
        raise RuntimeError("nothing else could be signalled")
    """, ALLOWED),
    "sysv_shared_memory_past_the_limit": ("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        for _ in range(40):  # 32 MB at a time, detached again: RLIMIT_AS never sees the sum
            shm = libc.shmget(0, 32 << 20, 0o1000 | 0o600)
            assert shm >= 0, "shmget refused"
            addr = libc.shmat(shm, None, 0)
            ctypes.memset(addr, 1, 32 << 20)
            libc.shmdt(ctypes.c_void_p(addr))
        raise RuntimeError("pinned 1.25 GB of shared memory")
    """, ("killed", "error", "timeout")),
    "memfd_past_the_limit": ("""
        import os
        held = []
        for _ in range(80):  # 16 MB each (the file-size limit), kept open: 1.25 GB in all
            fd = os.memfd_create("hog")
            os.write(fd, b"x" * (16 << 20))
            held.append(fd)
        raise RuntimeError("held 1.25 GB in memfds")
    """, ("killed", "error", "timeout")),
}


@pytest.fixture(scope="module")
def sentinel():
    """A host process no program may kill."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module", params=sandbox_backends())
def backend(request):
    from sandbox.backends import make_backend

    os.environ["CGRPO_HOSTILE_CANARY"] = CANARY  # in the host's environment, never the sandbox's
    b = make_backend(request.param)
    b.start(LIMITS)
    yield b
    b.close()
    os.environ.pop("CGRPO_HOSTILE_CANARY", None)


def _completion(attack: str) -> str:
    return "    return 42\n\n" + textwrap.dedent(attack)


def test_the_harness_would_pay_an_attack_that_got_through(backend):
    # The control: the same shape with a harmless "attack" loads, passes and is paid.
    res = score_completion(TASK, _completion("x = 1\n"), limits=LIMITS, backend=backend)
    assert res.reason == "passed" and res.reward == 2.5


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_contained(backend, sentinel, name):
    attack, statuses = ATTACKS[name]
    if name == "memory_across_forks" and backend.name == "jail" and backend.cgroup is None:
        pytest.skip(f"the jail has no memory cgroup here ({backend.cgroup_note}): "
                    "memory is limited per process only")
    restarts = backend.restarts
    res = score_completion(TASK, _completion(attack), limits=LIMITS, backend=backend)
    out = res.result
    assert out.status in statuses, f"{name}: {out.status} ({out.detail})\n{out.stderr[-600:]}"
    assert res.reward == 0.0 and res.pass_fraction == 0.0
    assert CANARY not in out.stdout + out.stderr
    assert "root:" not in out.stdout  # no /etc/shadow or /etc/passwd content
    assert out.duration_s < LIMITS.wall_s + 2.0
    # the host is unharmed
    assert sentinel.poll() is None, "a host process was killed"
    assert not os.path.exists(HOST_MARK) and not (REPO / "pwned").exists()
    assert not os.path.exists("/usr/pwned") and not os.path.exists("/pwned")
    # and the same executor serves the next program
    nxt = backend.run("print('next')", "assert 1 + 1 == 2", limits=LIMITS)
    assert nxt.status == "passed" and nxt.stdout == "next\n", nxt
    assert backend.restarts == restarts, "the executor had to be restarted"


def test_nothing_written_is_visible_to_the_next_program(backend):
    leave = textwrap.dedent("""
        import os, subprocess
        for path in ("/tmp/left-behind", "left-here", "/dev/shm/left-shm"):
            open(path, "w").write("secret")
        # a process that outlives the program and would write later
        subprocess.Popen(["sh", "-c", "sleep 1; echo late > /tmp/late"], start_new_session=True)
    """)
    first = backend.run(leave, limits=LIMITS)
    assert first.status == "passed", first
    look = textwrap.dedent("""
        import os, time
        time.sleep(1.5)
        found = [p for p in ("/tmp/left-behind", "/dev/shm/left-shm", "/tmp/late") if os.path.exists(p)]
        for root in ("/tmp", "/dev/shm"):
            for dirpath, _dirs, files in os.walk(root):
                found += [os.path.join(dirpath, f) for f in files]
        procs = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    procs.append(open(f"/proc/{pid}/cmdline", "rb").read())
                except OSError:
                    pass
        assert not found, found
        assert not any(b"sleep" in c for c in procs), procs
    """)
    second = backend.run(look, limits=Limits(wall_s=4, cpu_s=2))
    assert second.status == "passed", second.stderr


def test_no_ipc_object_process_or_zombie_survives(backend):
    """SysV shared memory, message queues and semaphores, a memfd held by a process that
    outlives the program, and a zombie: the next program finds none of them."""
    leave = textwrap.dedent("""
        import ctypes, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.shmget(0x5EC, 1 << 20, 0o1000 | 0o666) >= 0
        assert libc.msgget(0x5ED, 0o1000 | 0o666) >= 0
        assert libc.semget(0x5EE, 1, 0o1000 | 0o666) >= 0
        fd = os.memfd_create("left")
        os.write(fd, b"x" * 4096)
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)
        if os.fork() == 0:
            os._exit(0)  # a zombie: nobody reaps it
        time.sleep(0.1)
    """)
    first = backend.run(leave, limits=LIMITS)
    assert first.status == "passed", first
    look = textwrap.dedent("""
        import os
        left = {kind: open(f"/proc/sysvipc/{kind}").read().splitlines()[1:] for kind in ("shm", "msg", "sem")}
        procs = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines())
                    uid = int(st["Uid"].split()[0])
                    if uid == os.getuid() or st["State"].strip().startswith("Z"):
                        procs[pid] = st["State"].strip()
                except (OSError, KeyError):
                    pass
        assert not any(left.values()), left
        assert not procs, procs
    """)
    second = backend.run(look, limits=LIMITS)
    assert second.status == "passed", second.stderr


def test_pinned_shared_memory_does_not_poison_the_worker(backend):
    """A program that pins 300 MB of SysV shared memory (100 MB at a time, each within
    RLIMIT_AS) and leaves: honest programs that each need 150 MB still run after it."""
    pin = textwrap.dedent("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        for _ in range(3):
            shm = libc.shmget(0, 100 << 20, 0o1000 | 0o600)
            if shm < 0:
                break
            addr = libc.shmat(shm, None, 0)
            ctypes.memset(addr, 1, 100 << 20)
            libc.shmdt(ctypes.c_void_p(addr))
    """)
    for _ in range(2):
        backend.run(pin, limits=LIMITS)  # passed (pinned), killed (its memory cgroup) or error
    honest = "hog = b'x' * (150 << 20)\nassert len(hog) == 150 << 20\n"
    for _ in range(3):
        res = backend.run(honest, limits=LIMITS)
        assert res.status == "passed", res


def test_sandbox_user_and_signals_are_its_own(backend):
    probe = textwrap.dedent("""
        import os, signal
        assert os.getuid() != 0 and os.geteuid() != 0
        st = open("/proc/self/status").read()
        assert "CapEff:\\t0000000000000000" in st and "NoNewPrivs:\\t1" in st
        assert "Seccomp:\\t2" in st
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    """)
    res = backend.run(probe, limits=LIMITS)
    assert res.status == "passed", res.stderr
    assert signal.SIGKILL  # (the host's own pids are not visible: checked by kill_* attacks)
