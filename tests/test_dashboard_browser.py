"""The dashboard page in Debian's headless Chromium (driven by Playwright, no browser
download): a job written through jobstate shows up with its charts, workers and
rollout viewer, updates live, and empty/garbled jobs and a missing chart library show a
clear message. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import json
import math
import os
import random
import re
import time

import pytest

import jobstate as state
from dashboard import vendor
from dashboard.server import DashboardServer
from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
N_STEPS = 24
EVAL_STEPS = (0, 6, 12, 18)
METRIC_CHARTS = ["reward", "loss", "kl", "clip", "ratio", "grad", "lr", "arness", "inpaint", "tokens", "execs",
                 "learner", "idle", "versions"]
BODY = '''    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    best = max(counts, key=counts.get)
    return best, counts[best]
'''


def _rollout_sample(seed: int = 0) -> dict:
    """A completion split into tokens with a non-left-to-right decoding order: the return
    line and the loop header are committed early, the rest mostly left to right."""
    tokens = re.findall(r"\s+|\w+|[^\w\s]", BODY)
    n = len(tokens)
    rng = random.Random(seed)
    ret = BODY.index("    return")
    early = [i for i, _ in enumerate(tokens) if len("".join(tokens[:i])) >= ret]
    rest = [i for i in range(n) if i not in early]
    for _ in range(n // 4):  # local swaps: mostly, not exactly, left to right
        a = rng.randrange(len(rest) - 1)
        rest[a], rest[a + 1] = rest[a + 1], rest[a]
    order = [0] * n
    for step, pos in enumerate(early + rest):
        order[pos] = step
    return {"step": N_STEPS - 1, "task_id": "builtin/train/17",
            "prompt": "def most_common_word(text: str) -> tuple[str, int]:\n"
                      '    """Return the most frequent word and its count."""\n',
            "tokens": tokens, "order": order, "reward": 2.5, "status": "passed",
            "test_report": "passed 4/4 asserts in 0.03 s (jail backend)"}


def write_job(url: str, job_id: str = "demo-run", steps: int = N_STEPS) -> state.JobState:
    """A job with `steps` metrics, held-out evals, five workers and a rollout sample."""
    js = state.JobState(job_id, url)
    js.create(name="tiny-dllm coupled-GRPO", total_steps=100, status="running",
              config={"model": "models/tiny-dllm", "estimator": "coupled", "num_generations": 10,
                      "lr": 1e-6, "rollout_actors": 2, "rollout": {"temperature": 1.2, "steps": 64}},
              ray_dashboard_url="http://127.0.0.1:8265/#/jobs/raysubmit_1", log_path="/dev/null")
    for step in range(steps):
        js.log_metrics(_metrics(step))
    for step in EVAL_STEPS:
        if step < steps:
            js.log_eval(step, "humaneval", "full", 0.1 + step / 100, 164)
            js.log_eval(step, "humaneval", "half", 0.08 + step / 120, 164)
    now = time.time()
    for wid, role, node, device, version, age, restarts in [
            ("rollout-0", "rollout", "node-a", "cuda:0", steps - 1, 1, 0),
            ("rollout-1", "rollout", "node-b", "cuda:0", steps - 2, 2, 1),
            ("sandbox-0", "sandbox", "node-a", "cpu", None, 1, 0),
            ("sandbox-1", "sandbox", "node-b", "cpu", None, 95, 0),
            ("learner-0", "learner", "node-a", "cuda:1", steps - 1, 0, 0)]:
        js.heartbeat(wid, role=role, node=node, device=device, pid=1000 + len(wid),
                     weight_version=version, last_heartbeat=now - age, restarts=restarts,
                     state="running")
    js.event("job started")
    js.event("sandbox-1 heartbeat late", level="warning")
    js.set_rollout(_rollout_sample())
    return js


def _metrics(step: int) -> dict:
    x = step / 10
    return {"step": step, "reward_mean": 0.4 + 1.2 * (1 - math.exp(-x)) + 0.05 * math.sin(3 * x),
            "reward_std": 0.5 - 0.1 * (1 - math.exp(-x)), "pass_rate": 0.15 + 0.3 * (1 - math.exp(-x)),
            "kl": 1e-4 * step, "loss": 0.02 * math.cos(x), "clip_frac": 0.03 + 0.01 * math.sin(x),
            "arness_local": 0.92 - 0.1 * (1 - math.exp(-x)), "arness_global": 0.8 - 0.12 * (1 - math.exp(-x)),
            "parallel_fraction": 0.3 + 0.1 * math.sin(x), "inpainted_frac": 0.05 * (step % 3),
            "rollout_tokens_per_s": 1500 + 80 * math.sin(x), "sandbox_execs_per_s": 40 + 3 * math.cos(x),
            "learner_step_s": 3.1 + 0.2 * math.sin(2 * x), "rollout_idle_frac": 0.2 + 0.05 * math.sin(x),
            "grad_norm": 0.5 + 0.1 * math.cos(x), "lr": 1e-6 * min(1.0, (step + 1) / 5),
            "ratio_mean": 1.0 + 0.01 * math.sin(x), "ratio_min": 0.9, "ratio_max": 1.1 + 0.02 * math.cos(x),
            "weight_version": step, "rollout_version": max(0, step - 1)}


@pytest.fixture(scope="module")
def app_url(redis_url):
    assert vendor.is_installed(), "uPlot is not vendored: scripts/setup.sh runs the vendoring step"
    server = DashboardServer(port=free_port(), redis_url=redis_url, token="s3cret",
                             poll_s=0.3).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    assert os.path.exists(CHROMIUM), "Debian chromium is missing: scripts/setup.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


POINTS_JS = ("() => Object.fromEntries(Object.entries(window.cgrpo.charts).map("
             "([k, u]) => [k, {x: u.data[0].length, "
             "nonnull: u.data.slice(1).map(s => s.filter(v => v !== null).length), "
             "labels: u.series.slice(1).map(s => s.label)}]))")


def test_page_shows_job_charts_workers_and_rollout(redis_url, app_url, page, tmp_path):
    write_job(redis_url)
    page.goto(f"{app_url}/jobs/demo-run")
    page.wait_for_function("() => window.cgrpo && window.cgrpo.charts.pass && window.cgrpo.charts.idle")

    row = page.locator("#jobs tbody tr[data-job='demo-run']")
    assert "tiny-dllm coupled-GRPO" in row.inner_text() and "running" in row.inner_text()
    assert "estimator=coupled" in row.inner_text()
    assert row.locator("a", has_text="Ray dashboard").get_attribute("href").startswith("http://127.0.0.1:8265")
    assert row.locator("a", has_text="Logs").get_attribute("href") == "/api/jobs/demo-run/logs"
    assert page.locator("#job-name").inner_text() == "tiny-dllm coupled-GRPO"

    charts = page.evaluate(POINTS_JS)
    for name in METRIC_CHARTS:
        assert charts[name]["x"] == N_STEPS, (name, charts[name])
    assert charts["reward"]["nonnull"] == [N_STEPS] * 3  # +std, -std, mean
    assert charts["arness"]["labels"] == ["local@1", "global@1", "parallel"]
    assert charts["arness"]["nonnull"] == [N_STEPS] * 3
    assert charts["ratio"]["labels"] == ["mean", "min", "max"] and charts["ratio"]["nonnull"] == [N_STEPS] * 3
    assert charts["versions"]["nonnull"] == [N_STEPS, N_STEPS]
    assert charts["pass"]["x"] == N_STEPS  # eval steps are a subset of the metric steps
    assert charts["pass"]["labels"] == ["train (rollouts)", "humaneval (full steps)", "humaneval (half steps)"]
    assert charts["pass"]["nonnull"] == [N_STEPS, len(EVAL_STEPS), len(EVAL_STEPS)]
    assert page.locator("#charts canvas").count() == len(METRIC_CHARTS) + 1

    rows = page.locator("#workers tbody tr")
    assert rows.count() == 5
    assert page.locator("#workers td.stale").count() == 1       # sandbox-1: 95 s old heartbeat
    assert page.locator("#workers td.behind").count() >= 1      # rollout-1: old weights, restarted

    sample = _rollout_sample()
    toks = page.locator("#rollout .tok")
    assert toks.count() == len(sample["tokens"])
    colours = set(page.evaluate("() => [...document.querySelectorAll('#rollout .tok')]"
                                ".map(t => getComputedStyle(t).backgroundColor)"))
    assert len(colours) > 10, colours
    assert page.locator("#rollout-legend").is_visible()
    assert "passed 4/4" in page.locator("#rollout").inner_text()
    # The replay slider hides tokens committed after the chosen step.
    page.locator("#rollout input[type=range]").fill("5")
    assert page.locator("#rollout .tok.masked").count() == len(sample["tokens"]) - 6
    page.locator("#rollout input[type=range]").fill(str(len(sample["tokens"]) - 1))
    assert page.locator("#banner").is_hidden()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 50_000


def test_live_update_without_reload(redis_url, app_url, page):
    js = write_job(redis_url, "live-run", steps=5)
    page.goto(f"{app_url}/jobs/live-run")
    page.wait_for_function("() => window.cgrpo.charts.kl && window.cgrpo.charts.kl.data[0].length === 5")
    page.evaluate("() => { window.__sameDocument = true; }")
    js.log_metrics(_metrics(5))
    js.log_eval(5, "humaneval", "full", 0.5, 164)
    page.wait_for_function("() => window.cgrpo.charts.kl.data[0].length === 6", timeout=10_000)
    page.wait_for_function("() => window.cgrpo.charts.pass.data[2].filter(v => v !== null).length === 2",
                           timeout=10_000)
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.locator("#conn").inner_text() == "live"
    js.set_status("succeeded")
    page.wait_for_function("() => document.querySelector('#job-status').textContent === 'succeeded'",
                           timeout=10_000)


def test_empty_and_garbled_jobs_show_partial_state(redis_url, app_url, page, tmp_path):
    state.JobState("empty-run", redis_url).create(name="no metrics yet", status="pending")
    r = state.connect(redis_url)
    r.zadd("cgrpo:jobs", {"garbled": time.time() - 30})
    r.hset("cgrpo:job:garbled", mapping={"status": "running", "step": "x", "config": "{oops"})
    r.rpush("cgrpo:job:garbled:metrics", '{"step": 0, "kl": 0.1}', '{"step": 1, "kl"',
            json.dumps({"step": 2, "kl": 0.3}))
    r.set("cgrpo:job:garbled:rollout", "not json")
    r.set("cgrpo:job:garbled:workers", "wrong type")

    page.goto(f"{app_url}/jobs/empty-run")
    page.wait_for_selector("#no-metrics", state="visible")
    assert "No rollout sample yet" in page.locator("#rollout").inner_text()
    assert page.locator("#workers-empty").is_visible()

    page.locator("#jobs tbody tr[data-job='garbled']").click()
    page.wait_for_function("() => window.cgrpo.charts.kl && window.cgrpo.charts.kl.data[0].length === 2")
    assert page.url.endswith("/jobs/garbled")
    problems = page.locator("#problems").inner_text()
    assert "1 unreadable metrics entry skipped" in problems and "workers unreadable" in problems
    assert "config is not a JSON object" in problems
    page.screenshot(path=str(tmp_path / "garbled.png"), full_page=True)


def test_missing_chart_library_is_explained(redis_url, app_url, page):
    write_job(redis_url, "nolib-run", steps=3)
    page.route("**/static/vendor/uPlot.iife.min.js", lambda route: route.abort())
    page.goto(f"{app_url}/jobs/nolib-run")
    page.wait_for_selector("#banner", state="visible")
    assert "charting library (uPlot) is not installed" in page.locator("#banner").inner_text()
    assert "dashboard.vendor" in page.locator("#banner").inner_text()
    page.wait_for_selector("#workers tbody tr")  # the rest of the page still works


def test_control_form_uses_the_token(redis_url, app_url, page):
    js = write_job(redis_url, "ctl-run", steps=2)
    js.pop_commands()
    page.goto(f"{app_url}/jobs/ctl-run")
    page.wait_for_selector("#controls", state="visible")
    page.locator("#controls summary").click()
    page.locator("#ctl-token").fill("wrong")
    page.locator("#ctl-stop").click()
    page.wait_for_function("() => document.querySelector('#ctl-result').textContent.startsWith('401')")
    assert js.pop_commands() == []
    page.locator("#ctl-token").fill("s3cret")
    page.locator("#ctl-actors").fill("4")
    page.locator("#ctl-scale").click()
    page.wait_for_function("() => document.querySelector('#ctl-result').textContent.startsWith('200')")
    assert [(c["cmd"], c["rollout_actors"]) for c in js.pop_commands()] == [("scale", 4)]


def test_rollout_viewer_lists_failed_tests_and_why(redis_url, app_url, page):
    js = write_job(redis_url, "failing-run", steps=3)
    js.set_rollout(dict(_rollout_sample(), reward=1.75, status="failed", test_report={
        "reason": "failed", "tests_passed": 3, "tests_total": 4, "stderr": "",
        "failures": [{"test": "assert candidate(2, 2) == 5", "why": "AssertionError: got 4, expected 5"}]}))
    js.flush()
    page.goto(f"{app_url}/jobs/failing-run")
    item = page.locator("#rollout .failures li")
    item.wait_for()
    assert item.count() == 1 and "got 4, expected 5" in item.inner_text()
    assert item.locator("code").inner_text() == "assert candidate(2, 2) == 5"
    assert '"tests_passed": 3' in page.locator("#rollout .test-report pre").inner_text()
