"""The run directory's record (jobstate.record) written through a JobLog next to a real
redis-server: both places hold the same job, TensorBoard reads every curve, the readers
survive garbage, and a resumed job appends to its record."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing import event_accumulator

import jobstate as state
from tests.conftest import RedisServer


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.kill()


def _metrics(step: int) -> dict:
    """One step's record with every field the recipe produces, each a different number."""
    return {"step": step, **{f: step + i / 100 for i, f in enumerate(state.METRIC_FIELDS)}, "weight_version": step}


def write_job(log: state.JobLog, steps: int = 3) -> None:
    log.create(name="recorded run", config={"model": "tiny", "learner": {"lr": 1e-5}}, total_steps=steps)
    log.set_status("running")
    log.log_eval(step=0, split="heldout", steps_mode="full", pass_at_1=0.25, se=0.1, n=4, samples=1,
                 correct=[1, 0, 0, 0])
    for step in range(1, steps + 1):
        log.log_metrics(_metrics(step))
        log.set_rollout({"step": step, "task_id": f"t/{step}", "prompt": "def f():", "tokens": ["a", "b", "c"],
                         "order": [2, 0, 1], "reward": 1.5, "status": "passed", "test_report": {"passed": 2}})
    log.log_eval(step=steps, split="heldout", steps_mode="full", pass_at_1=0.5, se=0.125, n=4)
    log.log_eval(step=steps, split="heldout", steps_mode="half", pass_at_1=0.25, se=0.1, n=4)
    log.event("lost a rollout actor", level="warning")
    log.update(export_path="/x/final")
    log.set_status("succeeded")


def _without_time(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k != "time"} for item in items]


def test_redis_and_run_directory_hold_the_same_job(server, tmp_path):
    run_dir = tmp_path / "runs" / "rec-1"
    log = state.JobLog(state.JobState("rec-1", server.url), state.RunRecord(run_dir, "rec-1"))
    write_job(log)
    assert log.close()
    r = state.connect(server.url)

    live, recorded = state.read_job(r, "rec-1"), state.read_run_job(run_dir)
    for key in ("name", "status", "step", "total_steps", "weight_version", "config", "export_path", "created_at"):
        assert recorded[key] == live[key], key
    assert recorded["status"] == "succeeded" and recorded["step"] == 3 and not recorded["missing_record"]
    metrics = state.read_run_metrics(run_dir)
    assert _without_time(metrics.items) == _without_time(state.read_metrics(r, "rec-1").items)
    assert [m["step"] for m in metrics.items] == [1, 2, 3] and metrics.skipped == 0
    assert metrics.items[1]["grad_norm"] == _metrics(2)["grad_norm"]  # every field survives the round trip
    assert _without_time(state.read_run_evals(run_dir).items) == _without_time(state.read_evals(r, "rec-1").items)
    assert [e["message"] for e in state.read_run_events(run_dir).items] == \
        [e["message"] for e in state.read_events(r, "rec-1").items] == ["lost a rollout actor"]
    assert state.read_run_rollout(run_dir).items == state.read_rollout(r, "rec-1").items
    assert state.read_run_metrics(run_dir, after_step=2).items[0]["step"] == 3

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert set(state.METRIC_FIELDS) <= set(json.loads(lines[0]))
    assert json.loads((run_dir / "rollout.json").read_text())["task_id"] == "t/3"


def test_tensorboard_reads_every_curve(tmp_path):
    run_dir = tmp_path / "rec-tb"
    record = state.RunRecord(run_dir, "rec-tb")
    record.create(name="tb")
    for step in (1, 2, 3):
        record.log_metrics(_metrics(step))
    record.log_eval(3, "heldout", "full", 0.5, 4, se=0.125)
    record.event("hello")
    record.set_rollout({"step": 3, "tokens": ["x", "y"], "order": [1, 0], "reward": 1.0})
    record.close()

    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"),
                                             size_guidance={event_accumulator.SCALARS: 0,
                                                            event_accumulator.TENSORS: 0})
    acc.Reload()
    expected = {f"train/{f}" for f in state.METRIC_FIELDS} | {"train/weight_version",
                                                              "eval/heldout/pass_at_1_full",
                                                              "eval/heldout/pass_at_1_full_se"}
    assert set(acc.Tags()["scalars"]) == expected
    for field in state.METRIC_FIELDS:
        points = acc.Scalars(f"train/{field}")
        assert [p.step for p in points] == [1, 2, 3], field
        assert points[2].value == pytest.approx(_metrics(3)[field]), field
    assert acc.Scalars("eval/heldout/pass_at_1_full")[0].value == 0.5
    assert {"events", "rollout"} <= set(acc.Tags()["tensors"])
    assert acc.Tensors("events")[0].tensor_proto.string_val == [b"info: hello"]


def test_run_directory_readers_survive_garbage(tmp_path):
    runs = tmp_path / "runs"
    garbled = runs / "garbled"
    garbled.mkdir(parents=True)
    (garbled / "job.json").write_text("{not json")
    (garbled / "metrics.jsonl").write_text('{"step": 1, "kl": 0.5}\nnot json\n{"step": 2, "kl": NaN}\n{"step": 3, "k')
    (garbled / "rollout.json").write_text('{"tokens": "not a list"}')
    (garbled / "events.jsonl").write_bytes(b'{"time": 1, "message": "caf\xe9"}\n')
    (runs / "no-record").mkdir()                       # a folder without job.json is no job
    (runs / "stray-file.txt").write_text("x")
    state.RunRecord(runs / "fine", "fine").create(name="fine")

    job = state.read_run_job(garbled)
    assert job["missing_record"] and job["status"] == "unknown" and job["id"] == "garbled"
    metrics = state.read_run_metrics(garbled)
    assert [m["step"] for m in metrics.items] == [1, 2] and metrics.skipped == 2
    assert metrics.items[1]["kl"] is None
    assert state.read_run_rollout(garbled).skipped == 1
    assert state.read_run_events(garbled).items[0]["message"] == "caf\ufffd"
    assert state.read_run_evals(garbled).items == []
    assert sorted(j["id"] for j in state.list_runs(runs)) == ["fine", "garbled"]
    assert [j["id"] for j in state.list_runs(runs, skip={"garbled"})] == ["fine"]
    assert state.list_runs(tmp_path / "nowhere") == []
    assert state.read_run_job(runs / "no-record") is None


def test_a_resumed_job_appends_to_its_record(tmp_path):
    run_dir = tmp_path / "resumed"
    first = state.RunRecord(run_dir, "resumed")
    first.create(name="resumed", total_steps=4)
    for step in (1, 2, 3):
        first.log_metrics({**_metrics(step), "loss": 1.0})
    first.close()
    created = state.read_run_job(run_dir)["created_at"]

    again = state.RunRecord(run_dir, "resumed")  # the job restarts from its step-2 checkpoint
    for step in (3, 4):
        again.log_metrics({**_metrics(step), "loss": 2.0})
    again.close()
    job = state.read_run_job(run_dir)
    assert job["name"] == "resumed" and job["created_at"] == created and job["step"] == 4
    metrics = state.read_run_metrics(run_dir).items
    assert [(m["step"], m["loss"]) for m in metrics] == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0)]
    with pytest.raises(state.StateError, match="status"):
        again.update(status="exploded")


def test_wandb_online_without_an_api_key_is_one_error_naming_the_fix(tmp_path, monkeypatch):
    from jobstate.config import WandbConfig
    from jobstate.wandb_run import WandbRun

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc or W&B settings of the user's
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(state.StateError, match="WANDB_API_KEY.*wandb.mode: offline"):
        WandbRun.start(WandbConfig(enabled=True, mode="online"), "no-key", tmp_path / "run", {})
