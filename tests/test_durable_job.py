"""A real job (local Ray cluster, DeepSpeed learner, jail sandbox) whose Redis crashes mid-job:
Redis runs with an append-only file as the project's does, is killed with SIGKILL after step
2 and started again after step 3. Afterwards every step's metrics are in Redis and in the run
directory's JSONL, TensorBoard reads every curve, the offline W&B run holds the metrics, every
worker row says stopped, and the dashboard shows the job from its run directory alone."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import httpx
import pytest
import ray
from tensorboard.backend.event_processing import event_accumulator

import jobstate as st
from dashboard.server import DashboardServer
from orchestrator.config import parse_config
from orchestrator.driver import run_job
from tests.conftest import RedisServer, free_port

pytestmark = pytest.mark.slow
STEPS = 4


def _config(model_dir: Path, out_dir: Path, redis_url: str):
    return parse_config({
        "name": "durable",
        "model": {"path": str(model_dir)},
        "rollout": {"actors": 2, "num_cpus": 0.5, "sampling": {"max_new_tokens": 8, "steps": 4}},
        "sandbox": {"workers": 1, "backend": "jail", "limits": {"wall_s": 5}},
        "learner": {"workers": 1, "lr": 1e-3, "num_cpus": 0.5},
        "grpo": {"num_iterations": 1, "num_generations": 2},
        "run": {"steps": STEPS, "prompts_per_step": 2, "eval_every": 2, "eval_tasks": 2, "output_dir": str(out_dir)},
        "redis": {"url": redis_url},
        "wandb": {"enabled": True, "mode": "offline", "project": "cgrpo-tests"},
    })


def test_job_history_survives_a_redis_crash_in_redis_and_its_run_directory(tiny_model_dir, tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", aof=True).start()
    cfg = _config(tiny_model_dir, tmp_path / "runs", server.url)
    job_id = f"durable-{os.getpid()}"
    crashes = []

    def crash_redis(step: int, metrics: dict) -> None:
        if step == 2:
            server.kill()          # steps 1-2 must come back from the append-only file
            crashes.append(step)
        elif step == 3:
            server.start()         # step 3 was written while Redis was down: the job's buffer delivers it

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_job(cfg, job_id, on_step=crash_redis)
    finally:
        ray.shutdown()
    try:
        assert crashes == [2] and summary["final_step"] == STEPS
        r = st.connect(server.url)
        job = st.read_job(r, job_id)
        assert job["status"] == "succeeded" and job["step"] == STEPS
        in_redis = st.read_metrics(r, job_id).items
        assert [m["step"] for m in in_redis] == list(range(1, STEPS + 1))
        for m in in_redis:
            assert all(m[f] is not None for f in st.METRIC_FIELDS), m
        workers = st.read_workers(r, job_id).items
        assert sorted(w["role"] for w in workers) == ["learner", "rollout", "rollout", "sandbox"]
        assert {w["state"] for w in workers} == {"stopped"}  # the finished job marked them
        evals_in_redis = st.read_evals(r, job_id).items
    finally:
        server.kill()

    run_dir = cfg.run_dir(job_id)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    for line, live in zip(lines, in_redis):
        assert {f: line[f] for f in st.METRIC_FIELDS} == {f: live[f] for f in st.METRIC_FIELDS}
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert [(e["step"], e["steps_mode"]) for e in evals] == [(s, m) for s in (0, 2, 4) for m in ("full", "half")]
    assert [(e["step"], e["steps_mode"]) for e in evals_in_redis] == [(e["step"], e["steps_mode"]) for e in evals]
    assert json.loads((run_dir / "job.json").read_text())["status"] == "succeeded"

    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    for field in (*st.METRIC_FIELDS, "weight_version"):
        assert [p.step for p in acc.Scalars(f"train/{field}")] == list(range(1, STEPS + 1)), field
    assert [p.step for p in acc.Scalars("eval/heldout/pass_at_1_half")] == [0, 2, 4]

    history = _wandb_history(run_dir)
    for step in range(1, STEPS + 1):
        assert float(history[step]["train/reward_mean"]) == pytest.approx(lines[step - 1]["reward_mean"])
        assert "train/grad_norm" in history[step] and "train/lr" in history[step]

    # A dashboard whose Redis (the session's) never saw the job reads it from the run directory.
    dashboard = DashboardServer(port=free_port(), runs_dir=tmp_path / "runs").start()
    try:
        snap = httpx.get(f"{dashboard.url}/api/jobs/{job_id}/snapshot", timeout=10).json()
    finally:
        dashboard.stop()
    assert snap["job"]["source"] == "record" and snap["job"]["status"] == "succeeded"
    assert [m["step"] for m in snap["metrics"]] == list(range(1, STEPS + 1)) and len(snap["evals"]) == 6
    assert any("job finished" in e["message"] for e in snap["events"]) and snap["rollout"]["step"] == STEPS


def _wandb_history(run_dir: Path) -> dict[int, dict[str, str]]:
    """Step -> logged values, read from the offline W&B run's .wandb file (a LevelDB-style
    log of protobuf records: 7-byte file header, then records in 32 KiB blocks, each with a
    7-byte header: checksum, length, kind 1 = full / 2 = first / 3 = middle / 4 = last)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk, history = 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                history[int(row["_step"])] = row
    return history
