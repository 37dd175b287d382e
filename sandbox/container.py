"""The Docker backend: one long-lived, locked-down container per worker, fed over stdin.

``docker run -i`` starts the container once with the warm executor as its PID 1; programs
then travel over that one attached stdin/stdout stream, so there is no ``docker run`` or
``docker exec`` per program. The container: no network, read-only root, tmpfs /tmp and
/dev/shm, memory/swap, pids and CPU limits, SysV IPC capped by namespaced sysctls,
no-new-privileges, and only three capabilities, which the executor (root *inside* the
container) needs to give each program and its judge a uid of their own (SETUID, SETGID)
and to stop them (KILL). Programs and judges hold no capability at all. After each
program the executor kills every process of its uids and, as each of them, removes their
SysV IPC objects and deletes their files, so nothing carries over.

The image is built without a registry by ``deploy/docker/sandbox/build.sh`` (debootstrap +
``docker import``), which ``scripts/docker_setup.sh`` runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid

from sandbox._process import EXECUTOR_SOURCE, Backend
from sandbox.errors import SandboxError
from sandbox.limits import Limits

IMAGE = os.environ.get("CGRPO_SANDBOX_IMAGE", "cgrpo-sandbox:1")
LABEL = "cgrpo.sandbox"
_ENGINE_CACHE: dict[str, tuple[float, str | None]] = {}


def docker_cli() -> str | None:
    return shutil.which("docker")


def engine_version(timeout: float = 5.0) -> str | None:
    """The Docker server version if an engine answers, else None (cached for 30 s)."""
    hit = _ENGINE_CACHE.get("engine")
    if hit and time.monotonic() - hit[0] < 30:
        return hit[1]
    version = None
    cli = docker_cli()
    if cli:
        try:
            out = subprocess.run([cli, "version", "--format", "{{.Server.Version}}"],
                                 capture_output=True, text=True, timeout=timeout)
            if out.returncode == 0 and out.stdout.strip():
                version = out.stdout.strip()
        except (subprocess.TimeoutExpired, OSError):
            version = None
    _ENGINE_CACHE["engine"] = (time.monotonic(), version)
    return version


def image_present(image: str = IMAGE) -> bool:
    cli = docker_cli()
    if not cli:
        return False
    try:
        return subprocess.run([cli, "image", "inspect", "--format", "{{.Id}}", image],
                              capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def why_unavailable(image: str = IMAGE) -> str | None:
    """None when the Docker backend can run; otherwise the reason and the fix."""
    if not docker_cli():
        return "the docker CLI is not installed (apt-get install -y docker.io)"
    if engine_version() is None:
        return "no Docker engine answers (start dockerd, or run bash scripts/docker_setup.sh)"
    if not image_present(image):
        return f"the sandbox image {image} is missing (build it with bash scripts/docker_setup.sh)"
    return None


def remove_stale_containers() -> int:
    """Remove sandbox containers whose owning process on this host is gone."""
    cli = docker_cli()
    if not cli:
        return 0
    try:
        out = subprocess.run([cli, "ps", "-a", "--filter", f"label={LABEL}=1", "--format",
                              '{{.ID}} {{.Label "cgrpo.owner"}}'], capture_output=True,
                             text=True, timeout=10).stdout
    except (subprocess.TimeoutExpired, OSError):
        return 0
    stale = []
    host = socket.gethostname()
    for line in out.splitlines():
        cid, _, owner = line.partition(" ")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            stale.append(cid)
    if stale:
        subprocess.run([cli, "rm", "-f", *stale], capture_output=True, timeout=30)
    return len(stale)


def container_memory_mb(limits: Limits) -> int:
    """The container's memory cgroup, the only cap on a program's processes together (no
    per-program cgroup in a container): one program's memory and scratch tmpfs (/tmp and
    /dev/shm), plus room for its judge, the executor and the template (~60 MB) and the
    largest answer a judge decodes. The kernel's OOM killer prefers the program there."""
    return limits.memory_mb + 2 * limits.disk_mb + 192


class DockerBackend(Backend):
    """Programs run by a warm executor that is PID 1 of a locked-down container."""

    name = "docker"
    start_timeout = 60.0

    def __init__(self, image: str = IMAGE, uid: int | None = None, seccomp: bool = True,
                 cpus: float = 1.0):
        super().__init__()
        self.image = image
        self.uid = uid if uid is not None else random.randint(200_000, 299_999)
        self.seccomp = seccomp
        self.cpus = cpus
        self.container = ""
        reason = why_unavailable(image)
        if reason:
            raise SandboxError(f"the docker sandbox backend cannot run: {reason}")
        remove_stale_containers()

    def _command(self, limits: Limits) -> list[str]:
        self.container = f"cgrpo-sbx-{uuid.uuid4().hex[:12]}"
        mem = container_memory_mb(limits)
        shm_pages = limits.memory_mb * 256  # SysV shared memory, all segments together
        cfg = {"mode": "container", "uid": self.uid, "seccomp": self.seccomp,
               "scratch": "/tmp", "wipe": ["/tmp", "/dev/shm"]}
        return [
            docker_cli() or "docker", "run", "-i", "--rm", "--name", self.container,
            "--label", f"{LABEL}=1", "--label", f"cgrpo.owner={socket.gethostname()}:{os.getpid()}",
            "--network", "none", "--read-only",
            "--tmpfs", f"/tmp:rw,nosuid,nodev,size={limits.disk_mb}m,mode=1777",
            "--shm-size", f"{limits.disk_mb}m",
            "--memory", f"{mem}m", "--memory-swap", f"{mem}m",
            "--pids-limit", str(2 * limits.max_procs + 16), "--cpus", str(self.cpus),
            "--sysctl", f"kernel.shmall={shm_pages}", "--sysctl", f"kernel.shmmax={shm_pages * 4096}",
            "--sysctl", "kernel.msgmni=16",
            "--cap-drop", "ALL", "--cap-add", "SETUID", "--cap-add", "SETGID", "--cap-add", "KILL",
            "--security-opt", "no-new-privileges",
            "--user", "0:0", "--workdir", "/tmp",
            "--ulimit", "core=0", "--log-driver", "none",
            "--env", "LANG=C.UTF-8", "--entrypoint", "python3",
            self.image, "-I", "-S", "-c", EXECUTOR_SOURCE, json.dumps(cfg),
        ]

    def _needs_restart(self, limits: Limits) -> bool:
        """The container's cgroup limits are set at start: grow them when a program needs more."""
        s = self._limits_started
        return s is None or not (limits.memory_mb <= s.memory_mb and limits.max_procs <= s.max_procs
                                 and limits.disk_mb <= s.disk_mb)

    def _cleanup_after_death(self) -> None:
        if self.container and docker_cli():
            subprocess.run([docker_cli(), "rm", "-f", self.container], capture_output=True,
                           timeout=30)
        self.container = ""
