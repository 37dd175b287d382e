"""The warm executor: the one piece of cgrpo that runs *inside* a sandbox (jail or container).

It is started once per worker (``python -I -c <this file's source> <config JSON>``), imports
the standard-library modules test programs commonly use, then serves requests forever:
one JSON line in on stdin, one JSON line out on stdout. For every program it forks a
fresh child, confines it (fresh scratch, rlimits, non-root uid, no new privileges, a
seccomp filter, and in the jail its own PID and mount namespaces) and only then lets the
child compile and run the untrusted code. Forking a warm interpreter costs about a
millisecond; starting a cold one costs tens: that difference is the sandbox's speed.

This file must stay standard-library only and self-contained: it is shipped into the
jail and into the Docker image as source text, and the host imports it only to build
and unit-test the seccomp filter (never to run untrusted code).

Two confinement modes, chosen by the host:
``jail``      the executor is root inside bubblewrap (namespaces, read-only binds); each
              child gets new PID + mount namespaces, fresh tmpfs on /tmp and /dev/shm,
              a fresh /proc, then drops to the sandbox uid. When the child (PID 1 of its
              namespace) ends, the kernel kills everything it started.
``container`` the executor is PID 1 of a Docker container, already non-root with no
              capabilities; each child gets its own session and scratch directory; after
              each program the executor kills every other process in the container and
              wipes the writable tmpfs mounts, so nothing survives into the next program.

Harness report (child -> executor, one line each on fd 3):
``L`` program loaded; ``P i`` / ``F i msg`` test unit i passed / failed; ``S i msg`` setup
unit i raised; ``X code`` sys.exit(code); ``E msg`` program raised while loading;
``M`` MemoryError; ``D code cpu_s`` harness finished (written last, after output is flushed:
the executor answers on it without waiting for the process teardown).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import resource
import select
import signal
import struct
import sys
import time

# ---------------------------------------------------------------------------------------
# seccomp: a BPF program built in pure Python (no libseccomp, nothing compiled at run time)
# ---------------------------------------------------------------------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Syscalls no test program needs and that widen the kernel attack surface or could reach
# outside the sandbox: tracing other processes, (un)mounting, namespaces, kernel modules,
# keyrings, BPF, io_uring, perf, clock and host settings, handle-based opens.
_DENY = [
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "syslog", "sethostname", "setdomainname", "quotactl", "quotactl_fd",
    "lookup_dcookie", "vhangup", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "move_pages", "migrate_pages",
    "mknodat",
    # x86_64 only (absent from the aarch64 table, skipped there)
    "mknod", "iopl", "ioperm", "modify_ldt", "uselib", "nfsservctl", "create_module",
    "get_kernel_syms", "query_module", "_sysctl", "ustat", "sysfs",
]

SYSCALLS = {
    "x86_64": {
        "socket": 41, "clone": 56, "ptrace": 101, "syslog": 103, "mknod": 133, "uselib": 134,
        "ustat": 136, "sysfs": 139, "vhangup": 153, "modify_ldt": 154, "pivot_root": 155,
        "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
        "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
        "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
        "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
        "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
        "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
        "keyctl": 250, "migrate_pages": 256, "mknodat": 259, "unshare": 272, "move_pages": 279,
        "perf_event_open": 298, "fanotify_init": 300, "prlimit64": 302,
        "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
        "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
        "pidfd_getfd": 438, "mount_setattr": 442, "quotactl_fd": 443,
    },
    "aarch64": {
        "lookup_dcookie": 18, "mknodat": 33, "umount2": 39, "mount": 40, "pivot_root": 41,
        "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112,
        "syslog": 116, "ptrace": 117, "reboot": 142, "sethostname": 161, "setdomainname": 162,
        "settimeofday": 170, "adjtimex": 171, "socket": 198, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225,
        "migrate_pages": 238, "move_pages": 239, "perf_event_open": 241, "prlimit64": 261,
        "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
        "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
        "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
        "mount_setattr": 442, "quotactl_fd": 443,
    },
}

AF_UNIX = 1
# CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
# | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NEW_MASK = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 \
    | 0x10000000 | 0x20000000 | 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000


def _ret_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def build_seccomp_filter(arch: str | None = None) -> bytes:
    """Return the classic-BPF seccomp program (``struct sock_filter[]`` bytes) for ``arch``.

    Policy: a foreign architecture (or x32 ABI) is killed; denied syscalls fail with EPERM;
    ``socket`` works only for AF_UNIX (EACCES otherwise, so no network even if a namespace
    leaked); ``clone`` with any namespace flag fails with EPERM; ``clone3`` fails with ENOSYS
    (its flags live in memory BPF cannot read; libc then falls back to ``clone``);
    ``prlimit64`` on another process fails with EPERM. Everything else is allowed: the
    namespaces, uid and rlimits do the containing, this filter shrinks the kernel surface.
    """
    arch = arch or platform.machine()
    if arch not in SYSCALLS:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {arch}")
    table = SYSCALLS[arch]
    # Program as a list of (code, jt, jf, k), jumps given as labels resolved below.
    prog: list[list] = []

    def emit(code, k=0, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    emit(_LD_W_ABS, 4)                                  # A = arch
    emit(_JEQ, AUDIT_ARCH[arch], 1, 0)
    emit(_RET, RET_KILL_PROCESS)
    emit(_LD_W_ABS, 0)                                  # A = syscall nr
    if arch == "x86_64":
        emit(_JGE, 0x40000000, "kill", 0)               # x32 ABI
    for name in _DENY:
        if name in table:
            emit(_JEQ, table[name], "eperm", 0)
    emit(_JEQ, table["clone3"], "enosys", 0)
    emit(_JEQ, table["socket"], "socket", 0)
    emit(_JEQ, table["clone"], "clone", 0)
    emit(_JEQ, table["prlimit64"], "prlimit", 0)
    emit(_RET, RET_ALLOW)
    labels = {}
    labels["socket"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0] low word: domain
    emit(_JEQ, AF_UNIX, "allow", "eacces")
    labels["clone"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0] low word: flags
    emit(_JSET, CLONE_NEW_MASK, "eperm", "allow")
    labels["prlimit"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0]: pid (0 = self)
    emit(_JEQ, 0, "allow", "eperm")
    labels["allow"] = len(prog)
    emit(_RET, RET_ALLOW)
    labels["eperm"] = len(prog)
    emit(_RET, _ret_errno(errno.EPERM))
    labels["eacces"] = len(prog)
    emit(_RET, _ret_errno(errno.EACCES))
    labels["enosys"] = len(prog)
    emit(_RET, _ret_errno(errno.ENOSYS))
    labels["kill"] = len(prog)
    emit(_RET, RET_KILL_PROCESS)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp jump out of range")
        out += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(out)


# ---------------------------------------------------------------------------------------
# libc calls the standard library lacks in Python 3.11
# ---------------------------------------------------------------------------------------

_libc = None

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
PR_CAPBSET_DROP, PR_SET_SECUREBITS = 24, 28
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_char_p]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                                ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _unshare(flags: int) -> None:
    _check(_c().unshare(flags), "unshare")


def _setns(fd: int, nstype: int) -> None:
    _check(_c().setns(fd, nstype), "setns")


def _enc(s: str | None) -> bytes | None:
    return s.encode() if isinstance(s, str) else s


def _mount(src, target, fstype, flags, data=None) -> None:
    _check(_c().mount(_enc(src), _enc(target), _enc(fstype), flags, _enc(data)), f"mount {target}")


def _prctl(option: int, arg2: int = 0, arg3=None) -> None:
    _check(_c().prctl(option, arg2, arg3, 0, 0), f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_caps() -> None:
    """Drop every capability for good: lock securebits so uid 0 (in a user namespace)
    regains nothing through exec, empty the bounding set, then clear all sets."""
    _prctl(PR_SET_SECUREBITS, 0x2F)  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off; all locked
    for cap in range(64):
        if _c().prctl(PR_CAPBSET_DROP, cap, None, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break
            _check(-1, "drop bounding capability")
    data = (_CapData * 2)()
    _check(_c().capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(filter_bytes: bytes) -> None:
    buf = ctypes.create_string_buffer(filter_bytes, len(filter_bytes))
    fprog = _SockFprog(len(filter_bytes) // 8, ctypes.addressof(buf))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# ---------------------------------------------------------------------------------------
# The harness: runs in the confined child, after every restriction is in place
# ---------------------------------------------------------------------------------------


def _harness(program: str, units, report_fd: int) -> int:
    """Run ``program`` then each test unit in one namespace, reporting on ``report_fd``.

    ``units`` is a list of ``[kind, source]`` (kind "setup" or "test") prepared by the host
    from the task's tests; None means "just run the program". Returns the exit code.
    """
    import builtins
    import traceback

    me = os.getpid()  # a program's forked children inherit this code: they must not report

    def report(line: str) -> None:
        if os.getpid() != me:
            return
        try:
            os.write(report_fd, (line.replace("\n", " ")[:500] + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def exc_line(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"[:300]

    g = {"__name__": "__main__", "__builtins__": builtins, "__file__": "program.py"}
    code = 0
    try:
        try:
            exec(compile(program, "program.py", "exec"), g)
            report("L")
        except SystemExit as exc:
            code = _exit_code(exc)
            report(f"X {code}")
            return code
        except MemoryError:
            report("M")
            return 1
        except BaseException as exc:  # the program's own error: shown to the user
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
            report("E " + exc_line(exc))
            return 1
        for i, (kind, src) in enumerate(units or ()):
            try:
                exec(compile(src, f"test_{i}.py", "exec"), g)
                if kind == "test":
                    report(f"P {i}")
            except SystemExit as exc:
                code = _exit_code(exc)
                report(f"X {code}")
                return code
            except MemoryError:
                report("M")
                return 1
            except BaseException as exc:
                if kind == "test":
                    report(f"F {i} " + exc_line(exc))
                else:
                    report(f"S {i} " + exc_line(exc))
        return 0
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


# ---------------------------------------------------------------------------------------
# Child set-up: every restriction, in an order where each step still has the rights it needs
# ---------------------------------------------------------------------------------------

_CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
              "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _confine_child(cfg: dict, disk_mb: int, scratch: str, fds: tuple[int, ...]) -> None:
    """Everything that does not depend on the request: done before it arrives (pre-fork)."""
    uid, gid = cfg["uid"], cfg["gid"]
    if cfg["mode"] == "jail":
        # New mount namespace (the PID namespace came from the parent's unshare): private
        # propagation, then fresh tmpfs scratch, fresh /dev/shm and a /proc that shows only
        # this program's processes.
        _unshare(CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        opts = f"size={int(disk_mb)}m,mode=0700,uid={uid},gid={gid}"
        _mount("scratch", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
        _mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            # In a user namespace the kernel may refuse a new /proc (bwrap's has read-only
            # submounts). The executor is then non-dumpable, so a program sharing its uid
            # still cannot read or write its memory; and it cannot signal it: the executor
            # lives outside the program's PID namespace.
            if cfg.get("drop", "uid") == "uid":
                raise
    os.setsid()
    # stdin /dev/null; 1, 2 output; 3 report; 4 the request; 5 done. The pipes are first
    # lifted above 64 so that no dup2 below overwrites one still to be copied.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    for target, fd in zip((1, 2, 3, 4, 5), high):
        os.dup2(fd, target)
    os.closerange(6, 65536)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # if the jail's memory cgroup runs out, the program dies, not the executor
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    if cfg.get("drop", "uid") == "uid" and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # leaves root: every capability is cleared
    elif cfg.get("drop") == "caps":
        _drop_caps()  # user-namespace jail: only our own uid is mapped; shed the capabilities
    if os.geteuid() == 0 and cfg.get("drop", "uid") == "uid":
        raise OSError(errno.EPERM, "refusing to run a program as root")
    os.chdir(scratch)  # after the drop: root without CAP_DAC_* cannot enter the 0700 scratch
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setresuid, which clears it
    if cfg.get("seccomp", True):
        _install_seccomp(cfg["_filter"])
    os.environ.clear()
    os.environ.update(_CHILD_ENV)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    for sig in (signal.SIGTERM, signal.SIGXFSZ, signal.SIGXCPU):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python program
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace",
                      buffering=1)
    sys.argv = ["program.py"]
    os.umask(0o077)


def _apply_limits(limits: dict) -> None:
    """The request's rlimits. Lowering limits needs no privilege, so this runs after the
    uid drop and seccomp, right before the program; RLIMIT_NPROC applies to later forks."""
    mb = 1024 * 1024
    cpu = max(1, int(-(-limits["cpu_s"] // 1)))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))  # hard limit: SIGKILL, even for a PID 1
    mem = int(limits["memory_mb"]) * mb
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_procs"]),) * 2)
    fsize = int(limits["disk_mb"]) * mb
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))


def _read_request(fd: int) -> dict:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        os._exit(0)  # the executor went away (or retired this spare) before a program came
    return json.loads(b"".join(chunks))


def _warm_up() -> None:
    """While waiting for its program, touch what running one touches (the compiler, exec,
    json): the copy-on-write page faults of a fresh fork happen now, not on the clock."""
    g = {"__name__": "__warm__"}
    exec(compile("def _f(a, b):\n    return a + b\nassert _f(1, 2) == 3\n", "warm.py", "exec"), g)
    json.loads('{"program": "x = 1", "units": [["test", "assert x"]], "limits": {"cpu_s": 1}}')


def _child_main(cfg, disk_mb, scratch, fds) -> None:
    """A pre-forked child: confine, wait for the program on fd 4, limit, run, report."""
    code = 70
    try:
        _confine_child(cfg, disk_mb, scratch, fds)
        _warm_up()
        req = _read_request(4)
        _apply_limits(req["limits"])
    except BaseException as exc:
        for fd in (fds[2], 3):  # the pipe's own fd until closed, then its copy on fd 3
            try:
                os.write(fd, f"I sandbox set-up failed: {exc}\n".encode())
                break
            except OSError:
                pass
        os._exit(71)
    me = os.getpid()
    try:
        code = _harness(req["program"], req.get("units"), 3)
    finally:
        if os.getpid() == me:  # not in a process the program forked
            try:
                ru = resource.getrusage(resource.RUSAGE_SELF)
                os.write(3, f"D {code} {ru.ru_utime + ru.ru_stime:.4f}\n".encode())
                os.write(5, b"!")  # the one wake-up the executor waits for
            except BaseException:
                pass
        os._exit(code)


# ---------------------------------------------------------------------------------------
# The executor loop
# ---------------------------------------------------------------------------------------

class Executor:
    """Serves requests from stdin; one confined child per program."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.n = 0
        self._pending: list[int] = []
        self._spare: dict | None = None
        self.mode = cfg["mode"]
        self._pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if self.mode == "jail" else None
        try:
            cfg["_filter"] = build_seccomp_filter()
            self.seccomp = "on"
        except (OSError, ValueError) as exc:
            cfg["seccomp"] = False
            self.seccomp = f"off ({exc})"
        if not cfg.get("seccomp", True) and self.seccomp == "on":
            self.seccomp = "off (disabled by config)"
        if self.mode == "container" or cfg.get("drop") == "caps":
            _prctl(PR_SET_DUMPABLE, 0)  # programs share our uid: no ptrace, no /proc/1/mem
        for name in cfg.get("preimport", ()):
            try:
                __import__(name)
            except ImportError:
                pass
        import gc

        gc.collect()
        gc.freeze()  # children never scan (so never copy-on-write) what is already here

    # -- one program ---------------------------------------------------------------------
    def _prefork(self, disk_mb: int) -> None:
        """Fork and confine the child that will run the next program, before it arrives."""
        self.n += 1
        cfg = self.cfg
        if self.mode == "jail":
            # A uid per program slot (rotating): RLIMIT_NPROC counts per uid, and a finished
            # program's processes may still be tearing down while the next one starts.
            uid = cfg["uid"] + self.n % 8 if cfg.get("drop", "uid") == "uid" else cfg["uid"]
            scratch = "/tmp"
        else:
            uid = cfg["uid"]
            scratch = f"{cfg['scratch']}/run{self.n}"
            os.mkdir(scratch, 0o700)
        child_cfg = dict(cfg, uid=uid, gid=uid)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        try:  # the report is read once, at the end: give it room for thousands of lines
            fcntl.fcntl(rep_w, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        if self.mode == "jail":
            _unshare(CLONE_NEWPID)  # the next child is PID 1 of a fresh namespace
        try:
            pid = os.fork()
        except BaseException:
            if self.mode == "jail":
                _setns(self._pidns, CLONE_NEWPID)
            raise
        if pid == 0:  # the child never returns from here
            try:
                for fd in (out_r, err_r, rep_r, ctl_w, done_r):
                    os.close(fd)
                _child_main(child_cfg, disk_mb, scratch, (out_w, err_w, rep_w, ctl_r, done_w))
            finally:
                os._exit(72)
        if self.mode == "jail":
            _setns(self._pidns, CLONE_NEWPID)  # our later children: back in our namespace
        for fd in (out_w, err_w, rep_w, ctl_r, done_w):
            os.close(fd)
        self._spare = {"pid": pid, "disk_mb": disk_mb, "ctl": ctl_w,
                       "fds": {out_r: "stdout", err_r: "stderr", rep_r: "report", done_r: "done"}}

    def _retire_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare:
            os.close(spare["ctl"])  # EOF: it exits without running anything
            self._kill(spare["pid"])
            for fd in spare["fds"]:
                os.close(fd)
            self._pending.append(spare["pid"])

    def run(self, req: dict) -> dict:
        limits = req["limits"]
        disk_mb = int(limits["disk_mb"])
        if self._spare is None or self._spare["disk_mb"] != disk_mb:
            self._retire_spare()
            self._prefork(disk_mb)
        spare, self._spare = self._spare, None
        payload = json.dumps({"program": req["program"], "units": req.get("units"),
                              "limits": limits}).encode()
        start = time.monotonic()
        try:
            try:
                self._feed(spare["ctl"], payload)
            except OSError:
                pass  # the child died in set-up: its report says why
            os.close(spare["ctl"])
            if self.mode == "jail":
                # The next program's child is forked and confined while this one runs (it is
                # in its own PID namespace under another uid, and sees nothing of this one).
                # Not in a container: the sweep after each program kills every process there.
                self._prefork(disk_mb)
            res = self._watch(spare["pid"], start, limits, spare["fds"])
        finally:
            for fd in spare["fds"]:
                os.close(fd)
        res["id"] = req.get("id")
        return res

    @staticmethod
    def _feed(fd: int, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]

    def after_run(self, disk_mb: int) -> None:
        """Between programs (after the answer is sent): clean up, then pre-fork the next."""
        if self.mode == "container":
            self._sweep()
        self._reap()
        if self._spare is None:
            self._prefork(disk_mb)

    def _watch(self, pid: int, start: float, limits: dict, fds: dict) -> dict:
        """Collect output until the harness says done, the child dies, or a limit hits.

        The fast path: the child's last act is the ``D`` report line, then one byte on the
        done pipe, so the answer is complete when that byte arrives; the child is then
        killed and reaped later, and the kernel's namespace teardown (an RCU grace period)
        overlaps the next program. The report pipe is not watched (no wake-up per test);
        it is drained at the end.
        """
        cap = int(limits["output_bytes"])
        bufs = {"stdout": bytearray(), "stderr": bytearray(), "report": bytearray(),
                "done": bytearray()}
        seen = 0
        timed_out = output_exceeded = exited = False
        done = None
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd, name in fds.items():
            os.set_blocking(fd, False)
            if name != "report":
                poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        open_fds = set(fds)
        deadline = start + float(limits["wall_s"])
        stop_at = None  # once set: keep draining output until then, then stop

        def read(fd: int) -> bool:
            """Read what is there; False at EOF or when nothing is ready."""
            nonlocal seen, output_exceeded
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return False
            name = fds[fd]
            if not chunk:
                if name != "report":
                    poller.unregister(fd)
                open_fds.discard(fd)
                return False
            buf = bufs[name]
            if name in ("report", "done"):
                if len(buf) < 1 << 20:
                    buf += chunk
                return True
            seen += len(chunk)
            room = cap - len(bufs["stdout"]) - len(bufs["stderr"])
            if room > 0:
                buf += chunk[:room]
            if seen > cap:
                output_exceeded = True
            return True

        def finished() -> list | None:
            rep = [fd for fd, name in fds.items() if name == "report"][0]
            while rep in open_fds and read(rep):
                pass
            buf = bufs["report"]
            last = buf[buf.rfind(b"\n", 0, len(buf) - 1) + 1:]
            return last.split() if last.startswith(b"D ") and buf.endswith(b"\n") else None

        while True:
            now = time.monotonic()
            if stop_at is None:
                if output_exceeded or done is not None:
                    break
                if now >= deadline:
                    timed_out = True
                    self._kill(pid)
                    stop_at = now + 0.2
            if stop_at is not None and (now >= stop_at or open_fds <= {k for k, v in fds.items() if v == "report"}):
                break
            wait_s = (stop_at if stop_at is not None else deadline) - now
            for fd, _ev in poller.poll(max(0.0, wait_s) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    exited = True
                    if self.mode == "container":
                        self._kill_all()  # whatever it left behind
                    if stop_at is None:
                        stop_at = time.monotonic() + 0.5
                elif fds[fd] == "done":
                    read(fd)
                    if done is None and stop_at is None:
                        done = finished()
                else:
                    read(fd)
        for fd in list(open_fds):  # what is already in the pipes belongs to the answer
            while fd in open_fds and read(fd):
                pass
        if done is None and not (timed_out or output_exceeded):
            done = finished()
        self._kill(pid)
        os.close(pidfd)
        cpu = maxrss = 0
        code = sig = None
        reaped = os.wait4(pid, os.WNOHANG) if (exited or done is None) else (0, 0, None)
        if reaped[0] == 0 and done is None:
            reaped = os.wait4(pid, 0)  # killed by us or by a limit: its status tells how
        if reaped[0] == pid:
            _, status, ru = reaped
            cpu, maxrss = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        else:
            self._pending.append(pid)
        if done is not None:  # the harness finished: its word is the exit status
            code, sig = int(done[1]), None
            cpu = max(cpu, float(done[2]) if len(done) > 2 else 0.0)
        return {
            "exit": code, "signal": sig, "timed_out": timed_out,
            "output_exceeded": output_exceeded, "output_bytes": seen,
            "stdout": bufs["stdout"].decode("utf-8", "replace"),
            "stderr": bufs["stderr"].decode("utf-8", "replace"),
            "report": bufs["report"].decode("utf-8", "replace").splitlines(),
            "duration_s": round(time.monotonic() - start, 6),
            "cpu_s": round(cpu, 4), "maxrss_kb": maxrss,
        }

    def _reap(self) -> None:
        """Reap children killed after earlier programs; wait only if many are pending."""
        still = []
        for pid in self._pending:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG if len(self._pending) < 16 else 0)
            except ChildProcessError:
                continue
            if done == 0:
                still.append(pid)
        self._pending = still

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)  # in the jail: PID 1 of its namespace, so all of it
        except ProcessLookupError:
            pass
        if self.mode == "container":
            self._kill_all()

    def _kill_all(self) -> None:
        """Container mode: kill every process but us (we are PID 1)."""
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _sweep(self) -> None:
        """Container mode, after each program: no process and no file survives it."""
        self._kill_all()
        while True:  # reap what has died; the rest is reaped after the next program
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self._pending:
                self._pending.remove(pid)
        for root in self.cfg.get("wipe", ()):
            _wipe(root)

    # -- the loop --------------------------------------------------------------------------
    def serve(self, inp, out) -> None:
        hello = {"ready": True, "mode": self.mode, "pid": os.getpid(), "seccomp": self.seccomp,
                 "python": sys.version.split()[0], "uid": self.cfg["uid"]}
        out.write(json.dumps(hello) + "\n")
        out.flush()
        self._prefork(int(self.cfg.get("disk_mb", 64)))
        for line in inp:
            if not line.strip():
                continue
            disk_mb = None
            try:
                req = json.loads(line)
                if req.get("cmd") == "ping":
                    res = {"id": req.get("id"), "pong": True}
                else:
                    disk_mb = int(req["limits"]["disk_mb"])
                    res = self.run(req)
            except Exception as exc:  # an executor fault, reported, never fatal
                res = {"id": None, "infra_error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(res) + "\n")
            out.flush()
            if disk_mb is not None:
                self.after_run(disk_mb)


def _wipe(root: str) -> None:
    """Delete everything under ``root`` (not root itself), whatever modes programs set."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                _wipe(path)
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass


PREIMPORT = ["ast", "array", "bisect", "collections", "copy", "dataclasses", "datetime",
             "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "itertools",
             "json", "math", "operator", "random", "re", "statistics", "string", "sys",
             "textwrap", "traceback", "typing", "unittest"]


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[0]) if argv else {}
    cfg.setdefault("mode", "jail")
    cfg.setdefault("uid", 65534)
    cfg.setdefault("gid", cfg["uid"])
    cfg.setdefault("scratch", "/tmp")
    cfg.setdefault("preimport", PREIMPORT)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a dead child's pipe: EPIPE, not death
    # Started with -I -S: no site-packages, no .pth hooks of the host's installation. The
    # builtins `site` would add that programs do use (exit, quit) are added back here.
    import site

    site.setquit()
    inp = open(sys.stdin.fileno(), "r", encoding="utf-8", closefd=False)
    # The protocol stream moves to a high fd, so fds 3.. are never ours in a child.
    out = open(fcntl.fcntl(sys.stdout.fileno(), fcntl.F_DUPFD_CLOEXEC, 100), "w", encoding="utf-8")
    # Nothing a child inherits may reach our protocol stream: fd 1 becomes stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    Executor(cfg).serve(inp, out)


if __name__ == "__main__":
    main(sys.argv[1:])
