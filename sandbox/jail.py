"""The jail backend: bubblewrap namespaces around a warm executor, for hosts without Docker.

Outer layer (bubblewrap, once per worker): new network, PID, IPC, UTS and cgroup
namespaces (and a user namespace when not started as root), a root filesystem that holds
only read-only binds of /usr and the Python installation, a fresh /proc and minimal /dev,
an empty environment, all capabilities dropped except the four the executor needs to
confine children (SYS_ADMIN for namespaces and mounts, SETUID/SETGID to drop to the
sandbox uid, KILL to stop it), and death with its parent.

Inner layer (the executor, once per program): new PID and mount namespaces, private
tmpfs on /tmp and /dev/shm, a /proc showing only the program's own processes, rlimits,
a non-root uid with no capabilities, no-new-privileges, and a seccomp filter. See
``sandbox/_executor.py`` and docs/sandbox.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

from sandbox._cgroup import CGroup, remove_stale
from sandbox._process import EXECUTOR_SOURCE, Backend
from sandbox.errors import SandboxError
from sandbox.limits import Limits

EXECUTOR_CAPS = ["CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"]


def interpreter() -> tuple[str, str]:
    """The real (non-venv) Python binary and its installation prefix, bound read-only.

    Programs get the standard library of the interpreter cgrpo runs on, not the project's
    virtual environment (torch, ray ... are none of a test program's business).
    """
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def privileged() -> bool:
    """Real root with CAP_SYS_ADMIN (then no user namespace is needed, and programs run
    under a uid of their own); a root without it (e.g. in a container) counts as not."""
    if os.geteuid() != 0:
        return False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return False


def _root_binds(prefix: str) -> list[str]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    if not (prefix == "/usr" or prefix.startswith("/usr/")):
        # bubblewrap creates missing parents with the host's modes (/root is 0700):
        # make them traversable, then bind the interpreter prefix read-only.
        parents = list(reversed(Path(prefix).parents))[1:]
        for parent in parents:
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    return args


def bwrap_command(uid: int, *, seccomp: bool = True, root: bool | None = None,
                  python: tuple[str, str] | None = None, program_cgroups: str | None = None,
                  cgroup_namespace: bool = True) -> list[str]:
    """The full command line that starts a jailed executor.

    ``root`` (default: detected) picks real-root mode or the user-namespace mode;
    ``python`` is an (executable, prefix) pair to use instead of the running interpreter;
    ``program_cgroups`` the host directory holding the per-program ``slot-N`` cgroups,
    bound into the jail at /cgroup; ``cgroup_namespace`` False where a cgroup namespace
    would forbid moving a program into its slot (cgroup v2).
    """
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise SandboxError("bubblewrap (bwrap) is not installed, so the jail backend cannot run; "
                           "install it with `apt-get install -y bubblewrap` (scripts/setup.sh does)")
    exe, prefix = python or interpreter()
    root = privileged() if root is None else root
    cmd = [bwrap]
    caps = list(EXECUTOR_CAPS)
    if not root:
        # Without real root: a user namespace where we are uid 0 with namespaced
        # capabilities; children cannot take another uid, so they shed every capability
        # instead (SETPCAP lets them lock the securebits and empty the bounding set).
        cmd += ["--unshare-user", "--uid", "0", "--gid", "0"]
        caps.append("CAP_SETPCAP")
    cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            *(["--unshare-cgroup-try"] if cgroup_namespace else []), "--die-with-parent", "--new-session",
            "--hostname", "sandbox", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8"]
    cmd += _root_binds(prefix)
    if program_cgroups:
        cmd += ["--bind", program_cgroups, "/cgroup"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--remount-ro", "/",
            "--cap-drop", "ALL"]
    for cap in caps:
        cmd += ["--cap-add", cap]
    if not root:
        uid = 0  # the only uid mapped in bubblewrap's user namespace (the caller's own)
    cfg = {"mode": "jail", "uid": uid, "seccomp": seccomp, "drop": "uid" if root else "caps",
           "cgroup": "/cgroup" if program_cgroups else None}
    return cmd + [exe, "-I", "-S", "-c", EXECUTOR_SOURCE, json.dumps(cfg)]


def cgroup_budget(limits: Limits) -> tuple[int, int, int]:
    """(jail memory MB, jail pids, program memory MB). A program: its memory and both its
    scratch tmpfs (shared memory included). The jail: one program's budget, its judge (which
    may hold a decoded answer as large as the program's memory), the executor, template and
    spare pair; the processes of one program and of the previous one that may still be
    tearing down, plus ours."""
    program = limits.memory_mb + 2 * limits.disk_mb
    return program + limits.memory_mb + 256, 2 * limits.max_procs + 16, program


class JailBackend(Backend):
    """Programs run in a bubblewrap jail by a warm executor (see module docstring)."""

    name = "jail"
    start_timeout = 20.0

    def __init__(self, uid: int | None = None, seccomp: bool = True, cgroup: bool = True):
        super().__init__()
        # A uid of its own per executor: RLIMIT_NPROC counts per uid, so one worker's fork
        # bomb cannot starve another's programs, and no host account owns these files.
        self.uid = uid if uid is not None else random.randint(200_000, 299_999)
        self.seccomp = seccomp
        self.use_cgroup = cgroup
        self.cgroup: CGroup | None = None
        self.cgroup_note = "off"
        bwrap_command(self.uid)  # fail early and clearly when bubblewrap is missing
        if cgroup:
            remove_stale()

    def _command(self, limits: Limits) -> list[str]:
        if self.use_cgroup and privileged():
            made = CGroup.create(*cgroup_budget(limits))
            if isinstance(made, CGroup):
                self.cgroup, self.cgroup_note = made, made.note
                return made.wrap(bwrap_command(self.uid, seccomp=self.seccomp,
                                               program_cgroups=str(made.program_root),
                                               cgroup_namespace=made.version == 1))
            self.cgroup_note = f"off ({made})"
        return bwrap_command(self.uid, seccomp=self.seccomp)

    def _needs_restart(self, limits: Limits) -> bool:
        """The cgroup's budget is set at start: grow it when a program needs more."""
        s = self._limits_started
        if self.cgroup is None or s is None:
            return False
        return not all(a <= b for a, b in zip(cgroup_budget(limits), cgroup_budget(s)))

    def _cleanup_after_death(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
