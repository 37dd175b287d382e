"""The dashboard's JSON API served by real uvicorn over a real redis-server: read
endpoints, bearer-token control, SSE live stream, garbage in Redis (never a 500), Redis
down (503 with a message), and the `cgrpo dashboard` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import jobstate as state
from dashboard.app import config_summary
from dashboard.server import DashboardServer
from tests.conftest import free_port

TOKEN = "tok-123"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api(redis_url):
    server = DashboardServer(port=free_port(), redis_url=redis_url, token=TOKEN, poll_s=0.2).start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()


@pytest.fixture(scope="module")
def good_job(redis_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    os.environ["CGRPO_RUNS_DIR"] = str(log.parent)  # the only folder the logs endpoint may read
    js = state.JobState("good", redis_url)
    js.create(name="good run", config={"model": "tiny", "rollout": {"temperature": 1.2}},
              total_steps=10, status="running", log_path=str(log))
    for step in range(4):
        js.log_metrics({"step": step, "reward_mean": step / 4, "reward_std": 0.1, "kl": 0.01})
    js.log_eval(3, "humaneval", "full", 0.3, 164)
    js.heartbeat("rollout-0", role="rollout", node="n0", device="cpu", weight_version=3)
    js.event("hello")
    js.set_rollout({"step": 3, "tokens": ["a", "b"], "order": [1, 0], "reward": 1.0})
    return js


def test_read_endpoints(api, good_job):
    health = api.get("/api/health").json()
    assert health["redis_ok"] and health["charts_js"] and health["control_enabled"]
    jobs = api.get("/api/jobs").json()["jobs"]
    (job,) = [j for j in jobs if j["id"] == "good"]
    assert job["status"] == "running" and job["step"] == 3
    assert job["config_summary"] == "model=tiny temperature=1.2"
    assert api.get("/api/jobs/good").json()["total_steps"] == 10
    assert [m["step"] for m in api.get("/api/jobs/good/metrics").json()["metrics"]] == [0, 1, 2, 3]
    assert [m["step"] for m in api.get("/api/jobs/good/metrics?after_step=1").json()["metrics"]] == [2, 3]
    assert api.get("/api/jobs/good/evals").json()["evals"][0]["pass_at_1"] == 0.3
    assert api.get("/api/jobs/good/workers").json()["workers"][0]["id"] == "rollout-0"
    assert api.get("/api/jobs/good/events").json()["events"][0]["message"] == "hello"
    assert api.get("/api/jobs/good/rollout").json()["rollout"]["order"] == [1, 0]
    snap = api.get("/api/jobs/good/snapshot").json()
    assert snap["problems"] == [] and len(snap["metrics"]) == 4 and snap["rollout"]["reward"] == 1.0
    logs = api.get("/api/jobs/good/logs?lines=3")
    assert logs.status_code == 200 and logs.text.splitlines() == ["line 997", "line 998", "line 999"]


def test_logs_endpoint_refuses_paths_outside_the_runs_folder(api, redis_url, good_job):
    state.JobState("evil", redis_url).create(name="evil", log_path="/etc/passwd")
    answer = api.get("/api/jobs/evil/logs")
    assert answer.status_code == 403 and "root:" not in answer.text
    assert api.get("/api/jobs/nope").status_code == 404
    assert api.get("/api/jobs/nope/metrics").status_code == 404
    page = api.get("/jobs/good")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert api.get("/static/vendor/uPlot.iife.min.js").status_code == 200


def test_openapi_documents_the_api(api):
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/api/jobs", "/api/jobs/{job_id}/snapshot", "/api/jobs/{job_id}/stop",
              "/api/jobs/{job_id}/scale", "/api/jobs/{job_id}/stream"):
        assert p in paths, p


def test_control_needs_the_token(api, good_job):
    good_job.pop_commands()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        assert api.post("/api/jobs/good/stop", headers=headers).status_code == 401
        assert api.post("/api/jobs/good/scale", json={"rollout_actors": 3},
                        headers=headers).status_code == 401
    assert good_job.pop_commands() == []  # nothing was queued by refused requests

    auth = {"Authorization": f"Bearer {TOKEN}"}
    res = api.post("/api/jobs/good/scale", json={"rollout_actors": 3}, headers=auth)
    assert res.status_code == 200 and res.json()["queued"]["rollout_actors"] == 3
    assert api.post("/api/jobs/good/stop", headers=auth).status_code == 200
    assert [(c["cmd"], c.get("rollout_actors")) for c in good_job.pop_commands()] == \
        [("scale", 3), ("stop", None)]

    assert api.post("/api/jobs/good/scale", json={"rollout_actors": 0}, headers=auth).status_code == 422
    assert api.post("/api/jobs/good/scale", json={"actors": 2}, headers=auth).status_code == 422
    assert api.post("/api/jobs/nope/stop", headers=auth).status_code == 404


def test_control_refuses_finished_jobs_and_tokenless_servers(api, redis_url, monkeypatch):
    done = state.JobState("done", redis_url)
    done.create(name="done", status="succeeded")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert api.post("/api/jobs/done/stop", headers=auth).status_code == 409

    monkeypatch.delenv("CGRPO_DASHBOARD_TOKEN", raising=False)
    bare = DashboardServer(port=free_port(), redis_url=redis_url).start()
    try:
        res = httpx.post(f"{bare.url}/api/jobs/good/stop", headers=auth)
        assert res.status_code == 401 and "--token" in res.json()["detail"]
    finally:
        bare.stop()
    monkeypatch.setenv("CGRPO_DASHBOARD_TOKEN", "from-env")
    env = DashboardServer(port=free_port(), redis_url=redis_url).start()
    try:
        ok = httpx.post(f"{env.url}/api/jobs/good/stop", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200
        assert httpx.post(f"{env.url}/api/jobs/good/stop", headers=auth).status_code == 401
    finally:
        env.stop()


def test_garbage_in_redis_never_gives_500(api, redis_url):
    r = state.connect(redis_url)
    r.zadd("cgrpo:jobs", {"junk": 1.0, "hollow": 2.0, "bare": 3.0})
    r.hset("cgrpo:job:junk", mapping={"status": "??", "step": "NaN", "config": "[1, 2]",
                                      "created_at": "Infinity", "log_path": "/nonexistent/x.log"})
    r.rpush("cgrpo:job:junk:metrics", "{", '{"step": 1, "kl": NaN, "loss": Infinity}', "null")
    r.rpush("cgrpo:job:junk:evals", '{"step": 0, "pass_at_1": NaN}', "7")
    r.hset("cgrpo:job:junk:workers", "w", '{"last_heartbeat": "yesterday"}')
    r.set("cgrpo:job:junk:rollout", json.dumps({"tokens": "not a list"}))
    r.hset("cgrpo:job:junk:events", "a", "b")            # wrong type
    r.set("cgrpo:job:hollow", "a string, not a hash")     # wrong type for the record itself
    state.JobState("bare", redis_url).create(name="bare")  # record only, nothing else

    endpoints = ["", "/metrics", "/metrics?after_step=0", "/evals", "/workers", "/events",
                 "/rollout", "/snapshot"]
    for jid in ("junk", "hollow", "bare"):
        for ep in endpoints:
            res = api.get(f"/api/jobs/{jid}{ep}")
            assert res.status_code == 200, (jid, ep, res.status_code, res.text)
    assert api.get("/api/jobs").status_code == 200

    snap = api.get("/api/jobs/junk/snapshot").json()
    assert [m["step"] for m in snap["metrics"]] == [1] and snap["metrics"][0]["kl"] is None
    assert snap["evals"][0]["pass_at_1"] is None and snap["rollout"] is None
    assert snap["workers"][0]["last_heartbeat"] is None
    assert any("events unreadable" in p for p in snap["problems"])
    assert any("2 unreadable metrics entries" in p for p in snap["problems"])
    assert snap["job"]["status"] == "unknown" and snap["job"]["config"] is None
    hollow = api.get("/api/jobs/hollow/snapshot").json()
    assert hollow["job"]["missing_record"] and hollow["metrics"] == []
    bare = api.get("/api/jobs/bare/snapshot").json()
    assert bare["problems"] == [] and bare["metrics"] == [] and bare["rollout"] is None
    missing_log = api.get("/api/jobs/junk/logs")
    assert missing_log.status_code == 403 and "outside the runs folder" in missing_log.json()["detail"]
    assert api.get("/api/jobs/bare/logs").status_code == 404
    assert api.get("/api/jobs/bad:id").status_code == 404


def test_redis_down_gives_503_with_a_message():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = DashboardServer(port=free_port(), redis_url=dead).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/").status_code == 200
            health = c.get("/api/health").json()
            assert health["redis_ok"] is False and health["redis_error"]
            for path in ("/api/jobs", "/api/jobs/x", "/api/jobs/x/snapshot"):
                res = c.get(path)
                assert res.status_code == 503 and "unreachable" in res.json()["detail"], path
    finally:
        server.stop()


def test_stream_sends_new_steps_only(api, redis_url):
    js = state.JobState("streamed", redis_url)
    js.create(name="streamed", status="running")
    for step in range(3):
        js.log_metrics({"step": step, "kl": 0.1})
    with api.stream("GET", "/api/jobs/streamed/stream?after_step=0") as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        lines = res.iter_lines()
        first = _sse_events_from(lines, 1)
        assert first[0][0] == "snapshot" and [m["step"] for m in first[0][1]["metrics"]] == [1, 2]
        js.log_metrics({"step": 3, "kl": 0.2})
        (ev,) = _sse_events_from(lines, 1)
        assert ev[0] == "snapshot" and [m["step"] for m in ev[1]["metrics"]] == [3]
        assert ev[1]["job"]["step"] == 3


def _sse_events_from(lines, want: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
    events, name, deadline = [], None, time.monotonic() + timeout
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if len(events) >= want:
                return events
        assert time.monotonic() < deadline
    return events


def test_config_summary():
    assert config_summary(None) == ""
    cfg = {"zeta": 1, "model": "m", "learner": {"lr": 1e-6}, "tags": ["x"], "empty": "",
           "rollout": {"temperature": 1.2, "rollout_actors": 4}}
    assert config_summary(cfg, limit=4) == "model=m lr=1e-06 rollout_actors=4 temperature=1.2"


def test_cli_serves_and_reports_user_errors(redis_url, good_job, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CGRPO_DASHBOARD_TOKEN", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "dashboard", "--port", str(port),
                             "--redis", redis_url, "--token", "cli-token"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90  # the CLI imports every area (torch ...) first
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cgrpo dashboard did not start"
                time.sleep(0.1)
        assert httpx.get(f"{base}/api/jobs/good").json()["name"] == "good run"
        assert httpx.post(f"{base}/api/jobs/good/stop").status_code == 401
        assert httpx.post(f"{base}/api/jobs/good/stop",
                          headers={"Authorization": "Bearer cli-token"}).status_code == 200
        # A second dashboard on the same port, a bad Redis URL: one-line errors, exit 2.
        from orchestrator.cli import main
        assert main(["dashboard", "--port", str(port), "--redis", redis_url]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: port {port}") and "--port" in err
        assert main(["dashboard", "--port", str(free_port()), "--redis", "http://x"]) == 2
        assert "--redis" in capsys.readouterr().err
        assert main(["dashboard", "--port", "70000"]) == 2
        assert "1-65535" in capsys.readouterr().err
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}" in out
    good_job.pop_commands()


def test_jobs_redis_has_lost_are_read_from_their_run_directories(redis_url, good_job, tmp_path):
    """Redis (this module's server) has no trace of "lost-run": the job list, the job page's
    endpoints and the live stream read it from runs/lost-run; a job in both is read from Redis."""
    from tests.test_record import write_job

    runs = tmp_path / "runs"
    lost = state.JobLog(state.JobState("lost-run", f"redis://127.0.0.1:{free_port()}/0", retry_s=60),
                        state.RunRecord(runs / "lost-run", "lost-run"))  # its Redis is gone for good
    write_job(lost, steps=3)
    lost.record.close()
    both = state.RunRecord(runs / "good", "good")  # "good" (the module's Redis job) also has a record
    both.create(name="stale copy")
    both.close()
    (runs / "garbled").mkdir()
    (runs / "garbled" / "job.json").write_text("[]")
    r = state.connect(redis_url)
    assert not r.exists(state.job_key("lost-run")) and "lost-run" not in [j["id"] for j in state.list_jobs(r)]

    server = DashboardServer(port=free_port(), redis_url=redis_url, runs_dir=runs, token=TOKEN, poll_s=0.2).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            jobs = {j["id"]: j for j in c.get("/api/jobs").json()["jobs"]}
            assert jobs["lost-run"]["source"] == "record" and jobs["lost-run"]["status"] == "succeeded"
            assert jobs["lost-run"]["config_summary"] == "model=tiny lr=1e-05"
            assert jobs["good"]["source"] == "redis" and jobs["good"]["name"] == "good run"
            assert jobs["garbled"]["missing_record"]
            assert c.get("/api/jobs/lost-run").json()["step"] == 3
            assert [m["step"] for m in c.get("/api/jobs/lost-run/metrics").json()["metrics"]] == [1, 2, 3]
            assert [m["step"] for m in c.get("/api/jobs/lost-run/metrics?after_step=2").json()["metrics"]] == [3]
            evals = c.get("/api/jobs/lost-run/evals").json()["evals"]
            assert [(e["step"], e["steps_mode"], e["pass_at_1"]) for e in evals] == \
                [(0, "full", 0.25), (3, "full", 0.5), (3, "half", 0.25)]
            events = c.get("/api/jobs/lost-run/events").json()["events"]
            assert [e["message"] for e in events] == ["lost a rollout actor"]
            assert c.get("/api/jobs/lost-run/rollout").json()["rollout"]["order"] == [2, 0, 1]
            assert c.get("/api/jobs/lost-run/workers").json()["workers"] == []
            snap = c.get("/api/jobs/lost-run/snapshot").json()
            assert snap["job"]["source"] == "record" and snap["problems"] == [] and len(snap["metrics"]) == 3
            assert c.get("/api/jobs/garbled/snapshot").status_code == 200
            # Control needs the live job: a job known only from its record cannot be stopped.
            assert c.post("/api/jobs/lost-run/stop", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
            assert c.get("/api/jobs/nowhere").status_code == 404
            with c.stream("GET", "/api/jobs/lost-run/stream?after_step=1") as res:
                lines = res.iter_lines()
                ((name, first),) = _sse_events_from(lines, 1)
                assert name == "snapshot" and [m["step"] for m in first["metrics"]] == [2, 3]
                lost.record = state.RunRecord(runs / "lost-run", "lost-run")  # the job goes on writing
                lost.record.log_metrics({"step": 4, "kl": 0.5})
                ((name, later),) = _sse_events_from(lines, 1)
                assert name == "snapshot" and [m["step"] for m in later["metrics"]] == [4]
                lost.record.close()
    finally:
        server.stop()
