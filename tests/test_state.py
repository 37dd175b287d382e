"""The Redis state layer against real redis-server processes: round trips, caps, garbage
tolerance, control commands, and a job that keeps writing through a Redis restart."""

from __future__ import annotations

import json
import time

import pytest

import jobstate as state
from tests.conftest import RedisServer


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.kill()


@pytest.fixture
def r(server):
    return state.connect(server.url)


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_round_trip_of_every_part(r):
    js = state.JobState("job-1", r)
    js.create(name="tiny run", config={"model": "tiny-dllm", "lr": 1e-6}, total_steps=5,
              ray_dashboard_url="http://127.0.0.1:8265", log_path="/tmp/x.log")
    js.set_status("running")
    for step in range(3):
        js.log_metrics({"step": step, "reward_mean": 0.5 + step, "reward_std": 0.1,
                        "kl": float("nan"), "weight_version": step})
    js.log_eval(2, "humaneval", "full", 0.25, 164)
    js.log_eval(2, "humaneval", "half", 0.2, 164)
    js.heartbeat("rollout-0", role="rollout", node="n1", device="cpu", pid=123, weight_version=2)
    js.heartbeat("rollout-0", restarts=1)  # keeps earlier fields
    js.event("started")
    js.set_rollout({"step": 2, "task_id": "t/1", "tokens": ["a", "b"], "order": [1, 0],
                    "reward": 2.5, "status": "passed", "test_report": {"passed": 3}})
    assert js.pending == 0

    job = state.read_job(r, "job-1")
    assert job["status"] == "running" and job["step"] == 2 and job["total_steps"] == 5
    assert job["config"] == {"model": "tiny-dllm", "lr": 1e-6} and job["weight_version"] == 2
    assert job["ray_dashboard_url"] == "http://127.0.0.1:8265"
    assert [j["id"] for j in state.list_jobs(r)] == ["job-1"]
    m = state.read_metrics(r, "job-1")
    assert [x["step"] for x in m.items] == [0, 1, 2] and m.skipped == 0
    assert m.items[1]["reward_mean"] == 1.5 and m.items[1]["kl"] is None  # NaN -> None
    assert [e["steps_mode"] for e in state.read_evals(r, "job-1").items] == ["full", "half"]
    (w,) = state.read_workers(r, "job-1").items
    assert (w["id"], w["role"], w["pid"], w["restarts"]) == ("rollout-0", "rollout", 123, 1)
    assert time.time() - w["last_heartbeat"] < 10
    assert state.read_events(r, "job-1").items[0]["message"] == "started"
    (ro,) = state.read_rollout(r, "job-1").items
    assert ro["order"] == [1, 0] and json.loads(ro["test_report"]) == {"passed": 3}
    js.remove_worker("rollout-0")
    assert state.read_workers(r, "job-1").items == []


def test_lists_are_capped(r):
    js = state.JobState("capped", r)
    for i in range(state.EVENTS_CAP + 25):
        js.event(f"e{i}")
    raw = r.lrange(state.job_key("capped", "events"), 0, -1)
    assert len(raw) == state.EVENTS_CAP
    assert json.loads(raw[-1])["message"] == f"e{state.EVENTS_CAP + 24}"


def test_metrics_after_step_reads_only_the_tail(r):
    js = state.JobState("long", r)
    r.rpush(state.job_key("long", "metrics"),
            *[json.dumps({"step": s, "kl": s / 1000}) for s in range(3000)])
    js.log_metrics({"step": 3000, "kl": 3.0})
    newer = state.read_metrics(r, "long", after_step=2990)
    assert [m["step"] for m in newer.items] == list(range(2991, 3001))
    assert len(state.read_metrics(r, "long").items) == 3001


def test_readers_survive_garbage(r):
    key = state.job_key
    r.zadd("cgrpo:jobs", {"bad": 1.0, "ghost": 2.0, "no:colons": 3.0})
    r.hset(key("bad"), mapping={"status": "exploded", "step": "NaN", "config": "{not json",
                                "ray_dashboard_url": "javascript:alert(1)", "created_at": "soon"})
    r.rpush(key("bad", "metrics"), "not json", "[1, 2]", '{"step": "x"}', '{"step": -1}',
            '{"step": 4, "reward_mean": 0.5',              # half-written record
            '{"step": 3, "kl": NaN, "reward_mean": "0.25", "clip_frac": true}',
            '{"step": 5.0, "loss": 1e999}')
    r.rpush(key("bad", "evals"), '{"split": "x"}', '{"step": 1, "pass_at_1": "high"}')
    r.hset(key("bad", "workers"), mapping={"w0": "garbage", "w1": '{"role": 7}'})
    r.set(key("bad", "rollout"), json.dumps({"tokens": ["a", None, "c"], "order": [0, "x"]}))
    r.set(key("bad", "events"), "a string where a list belongs")

    job = state.read_job(r, "bad")
    assert job["status"] == "unknown" and job["step"] is None and job["config"] is None
    assert job["config_error"] and job["ray_dashboard_url"] is None and job["created_at"] is None
    jobs = {j["id"]: j for j in state.list_jobs(r)}
    assert set(jobs) == {"bad", "ghost"}  # invalid ids are ignored
    assert jobs["ghost"]["missing_record"] and jobs["ghost"]["created_at"] == 2.0
    assert jobs["bad"]["created_at"] == 1.0  # unreadable field falls back to the index
    m = state.read_metrics(r, "bad")
    assert [x["step"] for x in m.items] == [3, 5] and m.skipped == 5
    assert m.items[0]["reward_mean"] == 0.25 and m.items[0]["kl"] is None
    assert m.items[0]["clip_frac"] is None and m.items[1]["loss"] is None
    ev = state.read_evals(r, "bad")
    assert ev.skipped == 1 and ev.items[0]["pass_at_1"] is None
    w = state.read_workers(r, "bad")
    assert w.skipped == 1 and w.items[0]["role"] == "7"
    (ro,) = state.read_rollout(r, "bad").items
    assert ro["tokens"] == ["a", "", "c"] and ro["order"] == [0, None, None] and ro["problem"]
    events = state.read_events(r, "bad")
    assert events.items == [] and "WRONGTYPE" in events.error
    assert state.read_job(r, "nothing") is None and state.read_job(r, "a:b") is None
    empty = state.read_metrics(r, "nothing")
    assert empty.items == [] and empty.skipped == 0 and empty.error is None


def test_control_commands(r):
    js = state.JobState("ctl", r)
    assert js.pop_commands() == []
    state.push_command(r, "ctl", {"cmd": "scale", "rollout_actors": 3})
    r.rpush(state.job_key("ctl", "control"), "garbage", '{"nocmd": 1}')
    state.push_command(r, "ctl", {"cmd": "stop"})
    cmds = js.pop_commands()
    assert [c["cmd"] for c in cmds] == ["scale", "stop"] and cmds[0]["rollout_actors"] == 3
    assert js.pop_commands() == []
    with pytest.raises(state.StateError):
        state.push_command(r, "ctl", {"rollout_actors": 3})


def test_user_errors_name_the_fix():
    with pytest.raises(state.StateError, match="job id"):
        state.JobState("bad:id", "redis://127.0.0.1:1/0")
    with pytest.raises(state.StateError, match="Redis URL"):
        state.connect("http://nope")
    js = state.JobState("ok", "redis://127.0.0.1:1/0")
    with pytest.raises(state.StateError, match="step"):
        js.log_metrics({"kl": 0.1})
    with pytest.raises(state.StateError, match="status"):
        js.set_status("exploded")


def test_job_keeps_running_through_a_redis_restart(server, caplog):
    """Kill Redis mid-job: writes return at once and stay buffered; restart it (empty,
    no persistence) and the retry thread delivers them with the job record re-written."""
    js = state.JobState("survivor", server.url, retry_s=0.2)
    js.create(name="survivor", config={"model": "tiny"}, total_steps=100, status="running")
    js.heartbeat("learner-0", role="learner", node="n0", device="cpu")
    for step in range(3):
        js.log_metrics({"step": step, "reward_mean": step})
    assert js.pending == 0

    server.kill()
    t0 = time.monotonic()
    for step in range(3, 10):
        js.log_metrics({"step": step, "reward_mean": step})
        js.heartbeat("learner-0", weight_version=step)
    js.event("written during the outage")
    js.set_rollout({"step": 9, "tokens": ["x"], "order": [0]})
    assert time.monotonic() - t0 < 2.0, "writes must not block while Redis is down"
    assert js.pending >= 8
    assert js.pop_commands() == []  # control is unreadable, not an error

    server.start()  # same port, empty
    r = state.connect(server.url)
    assert _wait_for(lambda: js.pending == 0), "buffered writes were not delivered"
    steps = [m["step"] for m in state.read_metrics(r, "survivor").items]
    assert steps == list(range(3, 10))  # what the empty server got: everything buffered
    job = state.read_job(r, "survivor")
    assert job["name"] == "survivor" and job["config"] == {"model": "tiny"} and job["step"] == 9
    assert [j["id"] for j in state.list_jobs(r)] == ["survivor"]
    (w,) = state.read_workers(r, "survivor").items
    assert w["role"] == "learner" and w["weight_version"] == 9
    assert state.read_events(r, "survivor").items[-1]["message"] == "written during the outage"
    assert state.read_rollout(r, "survivor").items[0]["step"] == 9
    assert "buffering writes" in caplog.text

    # A restart that no write noticed: the next write finds the record gone and re-sends it.
    server.kill()
    server.start()
    js.log_metrics({"step": 10, "reward_mean": 10})
    assert _wait_for(lambda: (state.read_job(r, "survivor") or {}).get("name") == "survivor")
    assert state.read_workers(r, "survivor").items[0]["id"] == "learner-0"


def test_buffer_holds_a_long_outage_and_caps_on_delivery(server):
    """10 050 steps written while Redis is down arrive in one go, capped at METRICS_CAP."""
    js = state.JobState("flood", server.url, retry_s=0.2)
    js.create(name="flood")
    server.kill()
    n = state.METRICS_CAP + 50
    for step in range(n):
        js.log_metrics({"step": step, "kl": 0.01})
    server.start()
    assert js.close(timeout=20.0)
    r = state.connect(server.url)
    assert r.llen(state.job_key("flood", "metrics")) == state.METRICS_CAP
    items = state.read_metrics(r, "flood").items
    assert items[0]["step"] == 50 and items[-1]["step"] == n - 1
    assert js.dropped == 0
