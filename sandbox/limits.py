"""Resource limits for one program: what every backend enforces, with the defaults of
docs/contracts.md. Kept as a frozen dataclass so a job config can carry it and Ray can ship it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sandbox.errors import SandboxError


@dataclass(frozen=True)
class Limits:
    """Per-program limits.

    wall_s        wall-clock seconds before the program is killed (status ``timeout``)
    cpu_s         CPU seconds (RLIMIT_CPU, rounded up to whole seconds) -> ``timeout``
    memory_mb     address-space limit (RLIMIT_AS; the container also gets a cgroup limit)
                  -> MemoryError or kill -> ``killed``
    max_procs     processes and threads of the sandbox user (RLIMIT_NPROC; pids cgroup in Docker)
    output_bytes  stdout + stderr kept; a program writing more is killed -> ``killed``
    disk_mb       size of the private scratch tmpfs and largest file (RLIMIT_FSIZE)
    """

    wall_s: float = 5.0
    cpu_s: float = 5.0
    memory_mb: int = 512
    max_procs: int = 16
    output_bytes: int = 64_000
    disk_mb: int = 64

    def __post_init__(self) -> None:
        bounds = {"wall_s": (0.05, 3600), "cpu_s": (0.05, 3600), "memory_mb": (32, 65536),
                  "max_procs": (1, 4096), "output_bytes": (0, 1 << 30), "disk_mb": (1, 65536)}
        for f in fields(self):
            value = getattr(self, f.name)
            lo, hi = bounds[f.name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise SandboxError(f"sandbox limit {f.name}={value!r} is out of range; "
                                   f"use a number between {lo} and {hi}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Limits:
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SandboxError(f"unknown sandbox limit(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        return cls(**data)
