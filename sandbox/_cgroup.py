"""A memory + pids cgroup around one jailed executor (when started as root).

rlimits bound each process; a cgroup bounds their sum. Without it a program could fork
``max_procs`` processes of ``memory_mb`` each. With it the whole jail (executor, spare
child, program and everything it starts) shares one memory budget and one process count,
and the kernel's OOM killer acts inside that budget only (children mark themselves the
preferred victims). cgroup v1 (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/pids``) and v2
(unified, with the memory and pids controllers) are both handled; where neither is
writable the jail runs on rlimits alone and its ``cgroup`` note says why.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "cgrpo-sandbox"


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CGroup:
    """The cgroup directories (one per v1 controller, or one v2 directory) of a jail."""

    def __init__(self, dirs: list[Path], note: str):
        self.dirs = dirs
        self.note = note

    @classmethod
    def create(cls, memory_mb: int, pids: int) -> CGroup | str:
        """A new cgroup with these limits, or the reason there is none."""
        if os.geteuid() != 0:
            return "not root"
        name = f"jail-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        limit = str(memory_mb * 1024 * 1024)
        made: list[Path] = []
        try:
            if (ROOT / "cgroup.controllers").exists():  # v2
                controllers = (ROOT / "cgroup.controllers").read_text().split()
                if not {"memory", "pids"} <= set(controllers):
                    return "cgroup v2 without the memory and pids controllers"
                parent = ROOT / PARENT
                parent.mkdir(exist_ok=True)
                for d in (ROOT, parent):
                    if not {"memory", "pids"} <= set((d / "cgroup.subtree_control").read_text().split()):
                        _write(d / "cgroup.subtree_control", "+memory +pids")
                d = parent / name
                d.mkdir()
                made.append(d)
                _write(d / "memory.max", limit)
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(pids))
                return cls(made, f"cgroup v2 {d}")
            mem_root, pids_root = ROOT / "memory", ROOT / "pids"
            if not (mem_root.is_dir() and pids_root.is_dir()):
                return "no memory/pids cgroup controller mounted"
            for root in (mem_root, pids_root):
                (root / PARENT).mkdir(exist_ok=True)
                d = root / PARENT / name
                d.mkdir()
                made.append(d)
            mem, pid_dir = made
            _write(mem / "memory.limit_in_bytes", limit)
            if (mem / "memory.memsw.limit_in_bytes").exists():
                _write(mem / "memory.memsw.limit_in_bytes", limit)
            _write(pid_dir / "pids.max", str(pids))
            return cls(made, f"cgroup v1 memory+pids {PARENT}/{name}")
        except OSError as exc:
            cls(made, "").remove()
            return f"cgroup not writable ({exc.strerror or exc})"

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` started inside the cgroup (the shell joins it, then execs ``cmd``)."""
        join = "; ".join(f'echo $$ > "{d}/cgroup.procs" || exit 97' for d in self.dirs)
        return ["/bin/sh", "-c", f'{join}; exec "$@"', "sh", *cmd]

    def remove(self) -> None:
        """Remove the directories (they must be empty: called after the jail is gone)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last processes are still exiting
        self.dirs = []


def remove_stale() -> None:
    """Remove empty jail cgroups left by workers that died without cleaning up."""
    for parent in (ROOT / PARENT, ROOT / "memory" / PARENT, ROOT / "pids" / PARENT):
        if not parent.is_dir():
            continue
        for d in parent.glob("jail-*"):
            pid = d.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                try:
                    d.rmdir()
                except OSError:
                    pass
