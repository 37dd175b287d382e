"""End to end on a real local Ray cluster: rollout actors, sandbox workers and a DeepSpeed
learner group run coupled-GRPO steps, push weights each step and write metrics to Redis.
Also: a learner worker killed with kill -9 makes the job resume from its last checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
import ray

import dllm
import jobstate as st
from orchestrator.config import parse_config
from orchestrator.driver import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def redis_client():
    client = st.connect(os.environ.get("CGRPO_REDIS_URL"))
    client.ping()
    return client


def _config(model_dir, out_dir, **run):
    return parse_config({
        "name": "e2e",
        "model": {"path": str(model_dir)},
        "rollout": {"actors": 2, "num_cpus": 0.5, "sampling": {"max_new_tokens": 8, "steps": 4}},
        "sandbox": {"workers": 2, "backend": "jail", "limits": {"wall_s": 5}},
        "learner": {"workers": 2, "zero_stage": 2, "lr": 1e-3, "num_cpus": 0.5},
        "grpo": {"num_iterations": 1, "num_generations": 2},
        "run": {"steps": 3, "prompts_per_step": 2, "mode": "sync", "checkpoint_every": 0, "output_dir": str(out_dir),
                **run},
    })


def test_three_steps_push_weights_and_log_to_redis(cluster, redis_client, tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path, mode="async", eval_every=3, eval_tasks=4)
    job_id = f"e2e-{os.getpid()}"
    summary = run_job(cfg, job_id)
    assert summary["final_step"] == 3
    job = st.read_job(redis_client, job_id)
    assert job["status"] == "succeeded" and job["step"] == 3
    assert job_id in [j["id"] for j in st.list_jobs(redis_client)]  # listed on the dashboard
    metrics = st.read_metrics(redis_client, job_id).items
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["weight_version"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        for key in st.METRIC_FIELDS:
            assert m.get(key) is not None, key
    workers = st.read_workers(redis_client, job_id).items
    roles = sorted(w["role"] for w in workers)
    assert roles.count("rollout") == 2 and roles.count("sandbox") == 2 and roles.count("learner") == 2
    # every rollout actor reported the newest weights after the last push
    assert {w["weight_version"] for w in workers if w["role"] == "rollout"} == {3}
    evals = st.read_evals(redis_client, job_id).items
    assert {e["steps_mode"] for e in evals} == {"full", "half"}
    sample = st.read_rollout(redis_client, job_id).items
    assert sample and len(sample[0]["tokens"]) == len(sample[0]["order"])
    exported = dllm.load_model(summary["export"])
    assert exported.raw_config["model_type"] == "Dream"


def test_killed_learner_worker_resumes_from_last_checkpoint(cluster, redis_client, tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path, steps=4, checkpoint_every=2)
    job_id = f"e2e-fault-{os.getpid()}"
    killed = []

    def kill_a_learner(step: int, metrics: dict) -> None:
        if step == 2 and not killed:
            learners = [w for w in st.read_workers(redis_client, job_id).items if w["role"] == "learner"]
            os.kill(int(learners[-1]["pid"]), signal.SIGKILL)
            killed.append(learners[-1]["pid"])

    summary = run_job(cfg, job_id, on_step=kill_a_learner)
    assert killed
    assert summary["final_step"] == 4 and summary["learner_restarts"] == 1
    events = [e["message"] for e in st.read_events(redis_client, job_id).items]
    assert any("restarting from the last checkpoint" in e for e in events)
    steps = [m["step"] for m in st.read_metrics(redis_client, job_id).items]
    assert steps[-1] == 4 and 3 in steps
