"""The job CLI over a real Ray head and the Ray Jobs API: submit, status, list, logs, scale, stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import jobstate as st
from tests.conftest import free_port

pytestmark = pytest.mark.slow
# Ports nobody listens on now (a fixed pair collides with another cluster on the machine).
GCS_PORT, DASH_PORT = free_port(), free_port()
ADDRESS = f"http://127.0.0.1:{DASH_PORT}"


def cgrpo(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="module")
def ray_head():
    # A head of its own (own ports, own temp dir), stopped by killing exactly its processes:
    # `ray stop` would also end every other Ray cluster on the machine.
    temp_dir = f"/tmp/cgrpo-rt-{os.getpid()}"
    ray_bin = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_bin), "start", "--head", f"--port={GCS_PORT}", f"--dashboard-port={DASH_PORT}",
                    "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}",
                    f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=8",
                    "--disable-usage-stats",
                    f"--temp-dir={temp_dir}"], check=True, capture_output=True, timeout=180)
    yield
    subprocess.run(["pkill", "-9", "-f", temp_dir], capture_output=True, timeout=60)
    subprocess.run(["pkill", "-9", "-f", f"--gcs-address=127.0.0.1:{GCS_PORT}"], capture_output=True, timeout=60)


def _job_yaml(tmp_path, model_dir, steps: int) -> Path:
    job = {"name": "cli", "model": {"path": str(model_dir)},
           "rollout": {"actors": 2, "num_cpus": 0.5, "sampling": {"max_new_tokens": 8, "steps": 4}},
           "sandbox": {"workers": 1, "backend": "jail", "num_cpus": 0.5},
           "learner": {"workers": 1, "lr": 1e-3, "num_cpus": 0.5},
           "grpo": {"num_iterations": 1, "num_generations": 2},
           "run": {"steps": steps, "prompts_per_step": 2, "output_dir": str(tmp_path / "runs")}}
    path = tmp_path / f"job-{steps}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _wait(client, job_id, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = st.read_job(client, job_id) or {}
        if predicate(job):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} never reached the expected state: {st.read_job(client, job_id)}")


def test_submit_scale_stop_status_logs(ray_head, tiny_model_dir, tmp_path):
    client = st.connect(None)
    job_file = _job_yaml(tmp_path, tiny_model_dir, steps=200)
    job_id = f"cli-{os.getpid()}"
    out = cgrpo("submit", str(job_file), "--job-id", job_id, "--address", ADDRESS)
    assert out.returncode == 0, out.stderr
    _wait(client, job_id, lambda j: (j.get("step") or 0) >= 1)
    scaled = cgrpo("scale", job_id, "--rollout-actors", "1")
    assert scaled.returncode == 0, scaled.stderr
    _wait(client, job_id, lambda j: any("scaled 2 → 1" in e["message"]
                                        for e in st.read_events(client, job_id).items))
    listed = cgrpo("list")
    assert job_id in listed.stdout
    status = cgrpo("status", job_id, "--address", ADDRESS)
    assert status.returncode == 0 and "running" in status.stdout
    stopped = cgrpo("stop", job_id, "--address", ADDRESS)
    assert stopped.returncode == 0
    job = _wait(client, job_id, lambda j: j.get("status") in st.TERMINAL_STATUSES)
    assert job["status"] == "stopped" and job["step"] < 200
    logs = cgrpo("logs", job_id, "--address", ADDRESS)
    assert "step 1/200" in logs.stdout


def test_user_mistakes_are_one_line_errors(ray_head, tmp_path):
    assert "no job" in cgrpo("scale", "nope", "--rollout-actors", "2").stderr
    bad = cgrpo("scale", "nope", "--rollout-actors", "0")
    assert bad.returncode == 2 and "between 1 and 1024" in bad.stderr and "Traceback" not in bad.stderr
    gone = cgrpo("submit", str(tmp_path / "missing.yaml"))
    assert gone.returncode == 2 and "does not exist" in gone.stderr
