"""Memory + pids cgroups around one jailed executor and each of its programs (as root).

rlimits bound each process; cgroups bound sums. The jail's cgroup holds everything of one
worker (executor, template, judges, programs) under one memory budget and one process
count. Under it, one memory cgroup per program slot (``slot-0`` .. ``slot-7``, the slots
the executor rotates uids over) holds a program process and everything it starts: its
heap, its scratch tmpfs, and the shared memory (SysV segments, memfd, /dev/shm) that
RLIMIT_AS does not see. A program that pins shared memory therefore hits its own limit,
and is killed by the kernel there, instead of starving the programs after it. The slot
directory is bound into the jail at ``/cgroup``; the program process moves itself into its
slot, then unmounts that view. cgroup v1 (``/sys/fs/cgroup/memory``, ``.../pids``) and v2
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
SLOTS = 8  # the executor's program slots (sandbox/_executor.py SLOTS)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CGroup:
    """The cgroup directories (one per v1 controller, or one v2 directory) of a jail, and
    ``program_root``: the directory holding the per-program ``slot-N`` memory cgroups."""

    def __init__(self, dirs: list[Path], note: str, program_root: Path | None = None,
                 join: list[Path] | None = None, version: int = 1):
        self.dirs = dirs
        self.note = note
        self.version = version
        self.program_root = program_root
        self.join = join if join is not None else dirs

    @classmethod
    def create(cls, memory_mb: int, pids: int, program_memory_mb: int) -> CGroup | str:
        """A new jail cgroup with these limits and one memory cgroup of
        ``program_memory_mb`` per program slot, or the reason there is none."""
        if os.geteuid() != 0:
            return "not root"
        name = f"jail-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        limit = str(memory_mb * 1024 * 1024)
        program_limit = str(program_memory_mb * 1024 * 1024)
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
                # v2 allows no processes beside child cgroups: the executor gets a leaf too
                (d / "executor").mkdir()
                made.insert(0, d / "executor")
                _write(d / "cgroup.subtree_control", "+memory +pids")
                made[:0] = _slots(d, "memory.max", program_limit, "memory.swap.max")
                return cls(made, f"cgroup v2 {d}, a memory cgroup per program", d, [d / "executor"], 2)
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
            made[:0] = _slots(mem, "memory.limit_in_bytes", program_limit, "memory.memsw.limit_in_bytes")
            return cls(made, f"cgroup v1 memory+pids {PARENT}/{name}, a memory cgroup per program",
                       mem, [mem, pid_dir])
        except OSError as exc:
            cls(made, "").remove()
            return f"cgroup not writable ({exc.strerror or exc})"

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` started inside the cgroup (the shell joins it, then execs ``cmd``)."""
        join = "; ".join(f'echo $$ > "{d}/cgroup.procs" || exit 97' for d in self.join)
        return ["/bin/sh", "-c", f'{join}; exec "$@"', "sh", *cmd]

    def remove(self) -> None:
        """Remove the directories, children first (they must be empty: called after the
        jail is gone; its last processes may still be exiting, hence the retries)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = []


def _slots(parent: Path, limit_file: str, limit: str, swap_file: str) -> list[Path]:
    """The per-program memory cgroups ``slot-0`` .. ``slot-{SLOTS-1}`` under ``parent``."""
    made = []
    for i in range(SLOTS):
        d = parent / f"slot-{i}"
        d.mkdir()
        made.append(d)
        _write(d / limit_file, limit)
        if (d / swap_file).exists():
            _write(d / swap_file, "0" if swap_file == "memory.swap.max" else limit)
    return made


def remove_stale() -> None:
    """Remove empty jail cgroups left by workers that died without cleaning up."""
    for parent in (ROOT / PARENT, ROOT / "memory" / PARENT, ROOT / "pids" / PARENT):
        if not parent.is_dir():
            continue
        for d in parent.glob("jail-*"):
            pid = d.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                for child in [*d.glob("slot-*"), d / "executor", d]:
                    try:
                        child.rmdir()
                    except OSError:
                        pass
