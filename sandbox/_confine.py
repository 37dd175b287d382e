"""Confinement steps for the two processes of every program: the program process (runs
the untrusted code) and the judge (runs the tests). Each step is a small function so the
order in which they are applied, which matters (a step may need a right an earlier one
drops), reads in one place: ``sandbox/_executor.py``.

Standard library only (ctypes for the few libc calls Python 3.11 lacks): this file is
shipped into the sandbox as source.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import signal
import sys

_libc = None

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
PR_CAPBSET_DROP, PR_SET_SECUREBITS = 24, 28
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MNT_DETACH = 2
IPC_RMID = 0

CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                                ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(fd, nstype), "setns")


def _enc(s: str | None) -> bytes | None:
    return s.encode() if isinstance(s, str) else s


def mount(src, target, fstype, flags, data=None) -> None:
    _check(libc().mount(_enc(src), _enc(target), _enc(fstype), flags, _enc(data)), f"mount {target}")


def prctl(option: int, arg2: int = 0, arg3=None) -> None:
    _check(libc().prctl(option, arg2, arg3, 0, 0), f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_caps() -> None:
    """Drop every capability for good: lock securebits so uid 0 (in a user namespace)
    regains nothing through exec, empty the bounding set, then clear all sets."""
    prctl(PR_SET_SECUREBITS, 0x2F)  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off; all locked
    for cap in range(64):
        if libc().prctl(PR_CAPBSET_DROP, cap, None, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break
            _check(-1, "drop bounding capability")
    data = (_CapData * 2)()
    _check(libc().capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(filter_bytes: bytes) -> None:
    buf = ctypes.create_string_buffer(filter_bytes, len(filter_bytes))
    fprog = _SockFprog(len(filter_bytes) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# ---------------------------------------------------------------------------------------
# Steps, in the order the executor applies them
# ---------------------------------------------------------------------------------------

def private_scratch(disk_mb: int, uid: int, memory_mb: int, own_proc_required: bool) -> None:
    """Jail, program process: own mount and IPC namespaces; fresh tmpfs on /tmp and
    /dev/shm; a /proc of its own PID namespace; SysV IPC capped at the memory limit.

    The IPC namespace dies with the program's last process, taking every shared-memory
    segment, message queue and semaphore with it: nothing survives into the next program.
    """
    unshare(CLONE_NEWNS | CLONE_NEWIPC)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    opts = f"size={int(disk_mb)}m,mode=0700,uid={uid},gid={uid}"
    mount("scratch", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
    mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        # In a user namespace the kernel may refuse a new /proc (bwrap's has read-only
        # submounts); the program is still in its own PID namespace, so the old /proc
        # shows it nothing of the judge or the executor (it cannot signal them either).
        if own_proc_required:
            raise
    pages = max(1, int(memory_mb) * 256)
    for name, value in (("shmall", pages), ("shmmax", pages * 4096), ("msgmni", 16)):
        try:
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(str(value))
        except OSError:
            pass  # a read-only /proc/sys: the per-program cgroup and RLIMIT_AS still bound it


def join_cgroup(procs_file: str | None, hide: str | None) -> None:
    """Move this process (and so everything it will start) into its per-program cgroup,
    then unmount the cgroup tree from its view."""
    if not procs_file:
        return
    with open(procs_file, "w") as f:
        f.write("0")
    if hide:
        _check(libc().umount2(_enc(hide), MNT_DETACH), f"umount {hide}")


def arrange_fds(keep: dict[int, int]) -> None:
    """stdin from /dev/null; ``keep`` maps target fd -> current fd; every other fd closed."""
    high = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for target, fd in keep.items()}
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in high.items():
        os.dup2(fd, target)
    os.closerange(max(keep) + 1, 65536)


def prefer_as_oom_victim(score: int) -> None:
    """Raise oom_score_adj (no privilege needed to raise it): when a memory cgroup runs out,
    the kernel kills the program first, then the judge, never the executor."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass


def drop_privileges(cfg: dict, uid: int) -> None:
    """Leave root for ``uid`` (real root: every capability goes with it), or, in the
    user-namespace jail where no other uid exists, shed every capability instead."""
    if cfg.get("drop", "uid") == "uid" and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif cfg.get("drop") == "caps":
        drop_caps()
    if os.geteuid() == 0 and cfg.get("drop", "uid") == "uid":
        raise OSError(errno.EPERM, "refusing to run sandboxed code as root")


def lock_down(cfg: dict) -> None:
    """No new privileges, death with the parent, and the seccomp filter (last: it forbids
    the namespace and mount calls the earlier steps make)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setresuid, which clears it
    if cfg.get("seccomp", True) and cfg.get("_filter"):
        install_seccomp(cfg["_filter"])


def python_defaults(home: str) -> None:
    """The environment, signal dispositions and standard streams of a fresh interpreter."""
    os.environ.clear()
    os.environ.update(CHILD_ENV)
    os.environ["HOME"] = os.environ["TMPDIR"] = home
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGALRM, signal.SIGXFSZ, signal.SIGXCPU, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python program
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace",
                      buffering=1)
    sys.argv = ["program.py"]
    os.umask(0o077)


def apply_limits(limits: dict, extra_memory_mb: int = 0, extra_cpu_s: int = 0) -> None:
    """The request's rlimits (lowering needs no privilege, so this runs last, right before
    the code). RLIMIT_NPROC applies to later forks; the hard CPU limit is a SIGKILL."""
    mb = 1024 * 1024
    cpu = max(1, int(-(-limits["cpu_s"] // 1))) + extra_cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    mem = (int(limits["memory_mb"]) + extra_memory_mb) * mb
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_procs"]),) * 2)
    fsize = int(limits["disk_mb"]) * mb
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))


def remove_sysv_ipc() -> int:
    """Remove every SysV shared-memory segment, message queue and semaphore set this uid may
    remove (in a container the executor takes each program's uid as its effective uid for
    this). Returns how many were removed."""
    removed = 0
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]  # header, then "key id perms ..." per object
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 2 or not cols[1].isdigit():
                continue
            ident = int(cols[1])
            if kind == "shm":
                rc = libc().shmctl(ident, IPC_RMID, None)
            elif kind == "msg":
                rc = libc().msgctl(ident, IPC_RMID, None)
            else:
                rc = libc().semctl(ident, 0, IPC_RMID)
            removed += rc == 0
    return removed
