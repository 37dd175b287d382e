"""End to end on a real local Ray cluster: rollout actors, sandbox workers and a DeepSpeed
learner group run coupled-GRPO steps, push weights and write every figure to Redis.
Bounded-async mode shows its lag and the staleness-corrected ratio; a learner worker killed
with kill -9 makes the job resume from its last checkpoint; `resume=True` continues a finished
job's run from its last checkpoint."""

from __future__ import annotations

import math
import os
import signal

import pytest
import ray

import dllm
import jobstate as st
from dllm.schedule import warmup_cosine
from orchestrator.config import parse_config
from orchestrator.driver import run_job

pytestmark = pytest.mark.slow
LR = 1e-3


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
        "learner": {"workers": 2, "zero_stage": 2, "lr": LR, "num_cpus": 0.5},
        "grpo": {"num_iterations": 1, "num_generations": 2},
        "run": {"steps": 3, "prompts_per_step": 2, "mode": "sync", "checkpoint_every": 0, "output_dir": str(out_dir),
                **run},
    })


def test_async_steps_lag_one_version_and_correct_the_ratio(cluster, redis_client, tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path, mode="async", eval_every=3, eval_tasks=4, eval_samples=2)
    job_id = f"e2e-{os.getpid()}"
    summary = run_job(cfg, job_id)
    assert summary["final_step"] == 3
    job = st.read_job(redis_client, job_id)
    assert job["status"] == "succeeded" and job["step"] == 3 and job["export_path"] == summary["export"]
    assert job_id in [j["id"] for j in st.list_jobs(redis_client)]  # listed on the dashboard
    metrics = st.read_metrics(redis_client, job_id).items
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["weight_version"] for m in metrics] == [1, 2, 3]
    # one batch in flight while the learner trains: batches 0 and 1 come from v0, batch 2 from v1
    assert [m["rollout_version"] for m in metrics] == [0, 0, 1]
    # the first batch is on-policy (ratio exactly 1); the stale ones are scored against the
    # weights that generated them, which the updates moved away from
    assert metrics[0]["ratio_mean"] == metrics[0]["ratio_min"] == metrics[0]["ratio_max"] == 1.0
    assert all(abs(m["ratio_mean"] - 1.0) > 1e-7 and m["ratio_min"] < m["ratio_max"] for m in metrics[1:])
    for i, m in enumerate(metrics):  # the figures are the learner's own, none filled in
        assert m["lr"] == pytest.approx(LR * warmup_cosine(i, i / 3, min_lr_ratio=0.1), rel=1e-6)
        assert m["grad_norm"] >= 0 and m["kl"] >= 0 and math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])
        assert 0 <= m["pass_rate"] <= 1 and 0 <= m["reward_mean"] <= 2.5 and m["reward_std"] >= 0
        assert m["rollout_tokens_per_s"] > 0 and m["learner_step_s"] > 0
    workers = st.read_workers(redis_client, job_id).items
    roles = sorted(w["role"] for w in workers)
    assert roles.count("rollout") == 2 and roles.count("sandbox") == 2 and roles.count("learner") == 2
    # every rollout actor reported the newest weights after the last push
    assert {w["weight_version"] for w in workers if w["role"] == "rollout"} == {3}
    evals = st.read_evals(redis_client, job_id).items
    assert sorted((e["step"], e["steps_mode"]) for e in evals) == [(0, "full"), (0, "half"), (3, "full"), (3, "half")]
    for e in evals:  # 4 tasks x 2 samples each, with the per-task counts behind the mean
        assert e["n"] == 4 and e["samples"] == 2 and len(e["correct"]) == 4
        assert e["pass_at_1"] == pytest.approx(sum(e["correct"]) / 8) and e["se"] is not None
    sample = st.read_rollout(redis_client, job_id).items
    assert sample and len(sample[0]["tokens"]) == len(sample[0]["order"]) and sample[0]["problem"] is None
    exported = dllm.load_model(summary["export"])
    assert exported.raw_config["model_type"] == "Dream"


def test_killed_learner_resumes_and_a_finished_job_resumes_further(cluster, redis_client, tiny_model_dir,
                                                                   tmp_path):
    # weights are pushed every other update: batches 2 and 4 come from weights one update old
    cfg = _config(tiny_model_dir, tmp_path, steps=4, checkpoint_every=2, weight_sync_every=2)
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
    metrics = {m["step"]: m for m in st.read_metrics(redis_client, job_id).items}
    assert sorted(metrics) == [1, 2, 3, 4]  # step 3 was redone after the restart from step 2
    assert [metrics[s]["weight_version"] for s in (1, 2, 3, 4)] == [0, 2, 2, 4]
    assert [metrics[s]["rollout_version"] for s in (1, 2, 3, 4)] == [0, 0, 2, 2]
    assert metrics[3]["ratio_mean"] == 1.0 and metrics[4]["ratio_mean"] != 1.0
    assert {w["state"] for w in st.read_workers(redis_client, job_id).items} == {"stopped"}

    longer = cfg.model_copy(update={"run": cfg.run.model_copy(update={"steps": 5})})
    resumed = run_job(longer, job_id, resume=True)
    assert resumed["start_step"] == 4 and resumed["final_step"] == 5
    events = [e["message"] for e in st.read_events(redis_client, job_id).items]
    assert "resumed from checkpoint at step 4" in events
    assert st.read_metrics(redis_client, job_id).items[-1]["step"] == 5
