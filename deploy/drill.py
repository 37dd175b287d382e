#!/usr/bin/env python3
"""Run a job on the compose stack across its Ray nodes and break things on purpose.

Brings up deploy/compose.yaml as its own project (fresh volumes, free loopback ports),
submits deploy/examples/job-compose.yaml (optionally changed with --set), and checks:
  placement  rollout actors run on `ray-rollout` nodes, the learner ranks on the
             `ray-learner` node, sandbox workers on `ray-sandbox`, as the dashboard's
             worker table shows them;
  rollout    `docker kill` of the node serving the rollout actors: the job goes on with
             the other actors, and Ray restarts the lost ones on the other rollout node;
  redis      `docker kill` + `docker start` of Redis: every metric written before is
             still there (append-only file) and the steps run during the outage arrive;
  learner    `docker kill` of the learner node once a checkpoint exists, `docker start`
             once the job has seen the loss: a new learner group resumes from that
             checkpoint on the returning node;
and that the job then succeeds with every step recorded. Each wait is bounded; the stack
is removed at the end (--keep leaves it running). Prints a summary; exits 0 when every
check passed, 1 otherwise, 2 when the stack cannot run here (no engine, no images).

    python deploy/drill.py [--faults rollout redis learner] [--set run.steps=9] [--timeout 1500] [--keep]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import REPO, Stack, StackError, docker_answers, missing_images, wait_until  # noqa: E402

JOB = REPO / "deploy" / "examples" / "job-compose.yaml"
FAULTS = ("rollout", "redis", "learner")
# Long enough that every fault lands mid-job (each takes tens of seconds of wall time while
# the job goes on); no evaluations, a checkpoint every few steps to resume from.
DRILL_JOB = ["run.steps=40", "run.eval_every=0", "run.checkpoint_every=4"]


def job_yaml(overrides: list[str]) -> str:
    """The example job with ``section.key=value`` overrides (values parsed as YAML)."""
    job = yaml.safe_load(JOB.read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = job
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return yaml.safe_dump(job, sort_keys=False)


class Drill:
    def __init__(self, stack: Stack, timeout_s: float):
        self.stack, self.deadline = stack, time.monotonic() + timeout_s
        self.results: list[tuple[str, bool, str]] = []
        self.job_id = ""

    def left(self, cap: float) -> float:
        """Seconds this wait may take: ``cap``, or less when the whole drill's time runs out."""
        return max(5.0, min(cap, self.deadline - time.monotonic()))

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        self.stack.log(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return ok

    def step(self) -> int:
        return int(self.stack.job(self.job_id).get("step") or 0)

    def wait_step(self, target: int, cap: float, what: str) -> dict:
        return self.stack.wait_job(self.job_id, self.left(cap), until=lambda j: int(j.get("step") or 0) >= target,
                                   what=what)

    # -- the parts of the drill -----------------------------------------------------------
    def placement(self) -> None:
        want = {"rollout": "ray-rollout", "learner": "ray-learner", "sandbox": "ray-sandbox"}
        rows = wait_until(lambda: (w := self.stack.workers(self.job_id)) and {x["role"] for x in w} >= set(want) and w,
                          self.left(120), "the worker table")
        nodes = {role: sorted({w["node"] for w in rows if w["role"] == role}) for role in want}
        containers = self.stack.nodes()
        for role, service in want.items():
            services = {containers[n]["Service"] if n in containers else f"unknown node {n}" for n in nodes[role]}
            self.check(f"placement {role}", services == {service},
                       f"{len(nodes[role])} node(s) {nodes[role]} in {sorted(services)} (want {service})")

    def kill_rollout_node(self) -> None:
        before = {w["id"]: w["node"] for w in self.stack.workers(self.job_id) if w["role"] == "rollout"}
        node = before[min(before)]
        victim = self.stack.container_of(node)
        moved = sorted(w for w, n in before.items() if n == node)
        step = self.step()
        self.stack.log(f"docker kill {victim['Name']} (rollout node of {', '.join(moved)}, at step {step})")
        self.stack.docker("kill", victim["ID"])
        killed_at = time.monotonic()
        self.wait_step(step + 2, 900, "two more steps after the rollout node was killed")
        went_on = f"the job went on to step {self.step()} ({time.monotonic() - killed_at:.0f}s)"

        def placed() -> dict:
            return {w["id"]: w["node"] for w in self.stack.workers(self.job_id) if w["role"] == "rollout"}

        # The other actors carry the job while Ray declares the node dead and restarts the
        # lost actors elsewhere; that takes its own time (health checks, model load), so
        # wait for their heartbeat from a new node rather than read the table once.
        try:
            after = wait_until(lambda: (a := placed()) and all(a.get(w) not in (None, node) for w in moved) and a,
                               self.left(300), f"{', '.join(moved)} to report from another node")
        except StackError:
            after = placed()
        learner_restarts = len(self.events_matching("learner failed"))
        self.check("rollout node lost", all(after.get(w) not in (None, node) for w in moved) and not learner_restarts,
                   f"{went_on}; {', '.join(moved)} moved from {node} to {sorted({after.get(w) for w in moved})} "
                   f"({time.monotonic() - killed_at:.0f}s after the kill); learner restarts: {learner_restarts}")
        self.stack.docker("start", victim["ID"])  # the node comes back for what follows

    def restart_redis(self) -> None:
        before = (self.stack.api(f"/api/jobs/{self.job_id}/metrics") or {}).get("metrics", [])
        redis = next(c for c in self.stack.containers() if c["Service"] == "redis")
        step = self.step()
        self.stack.log(f"docker kill + start {redis['Name']} (at step {step}, {len(before)} metrics recorded)")
        self.stack.docker("kill", redis["ID"])
        time.sleep(5)  # the job keeps running meanwhile, its writes buffered
        self.stack.docker("start", redis["ID"])
        self.wait_step(step + 2, 900, "two more steps after Redis restarted")
        after = (self.stack.api(f"/api/jobs/{self.job_id}/metrics") or {}).get("metrics", [])
        kept = all(any(a == b for a in after) for b in before)
        self.check("redis restarted", kept and len(after) > len(before),
                   f"{len(before)} metrics before, all kept: {kept}; {len(after)} after")

    def kill_learner_node(self, checkpoint_every: int) -> None:
        target = (self.step() // checkpoint_every + 1) * checkpoint_every  # the next checkpoint
        self.wait_step(target + 1, 900, f"a checkpoint at step {target}")
        learner = self.stack.container_of(next(w["node"] for w in self.stack.workers(self.job_id)
                                               if w["role"] == "learner"))
        step = self.step()
        self.stack.log(f"docker kill {learner['Name']} (learner node, at step {step}, checkpoints up to step "
                       f"{target} or later)")
        seen = len(self.events())
        self.stack.docker("kill", learner["ID"])
        noticed = wait_until(lambda: self.events_matching("learner failed", seen), self.left(600),
                             "the job to notice the lost learner")
        self.stack.log(f"the job noticed: {noticed[0]}; docker start {learner['Name']}")
        self.stack.docker("start", learner["ID"])
        resumed = wait_until(lambda: self.events_matching("resumed from step", seen), self.left(900),
                             "the learner group to be rebuilt")
        self.stack.log(f"the job says: {resumed[0]}")
        resumed_from = int(re.search(r"resumed from step (\d+)", resumed[0]).group(1))
        restarts = len(self.events_matching("learner failed", seen))
        # The newest checkpoint when the node went: `target`, or one saved since (at most
        # one step runs ahead of the job record).
        newest = (step + 1) // checkpoint_every * checkpoint_every
        self.check("learner node lost", target <= resumed_from <= newest and restarts == 1,
                   f"{restarts} learner restart(s); a new group on the returning node resumed from the "
                   f"checkpoint at step {resumed_from} (newest at the kill: {target}..{newest})")

    def events(self) -> list[dict]:
        return (self.stack.api(f"/api/jobs/{self.job_id}/events?limit=1000") or {}).get("events", [])

    def events_matching(self, text: str, since: int = 0) -> list[str]:
        """Messages of the job's events from the ``since``-th on that contain ``text``."""
        return [e["message"] for e in self.events()[since:] if text in e.get("message", "")]

    def finish(self, steps: int) -> None:
        job = self.stack.wait_job(self.job_id, self.left(1200))
        metrics = (self.stack.api(f"/api/jobs/{self.job_id}/metrics") or {}).get("metrics", [])
        recorded = sorted({m["step"] for m in metrics})
        self.check("job completed", job.get("status") == "succeeded" and recorded == list(range(1, steps + 1)),
                   f"status {job.get('status')}, steps recorded {recorded[:3]}..{recorded[-3:]} of {steps}, "
                   f"export {job.get('export_path') or '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="*", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a field of deploy/examples/job-compose.yaml (after {' '.join(DRILL_JOB)})")
    parser.add_argument("--project", default="cgrpo-drill", help="compose project name (default cgrpo-drill)")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds for the whole drill (default 2400)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    if not docker_answers():
        print("drill: no Docker engine answers")
        return 2
    if missing := missing_images():
        print(f"drill: images missing: {', '.join(missing)} (bash deploy/build.sh)")
        return 2
    start = time.monotonic()
    log = lambda line: print(f"[{time.monotonic() - start:6.0f}s] {line}", flush=True)  # noqa: E731
    stack = Stack.new(args.project, log)
    drill = Drill(stack, args.timeout)
    text = job_yaml(DRILL_JOB + args.set)
    job = yaml.safe_load(text)
    try:
        stack.up(timeout_s=drill.left(600))
        drill.job_id = stack.submit(text, f"drill-{int(time.time())}")
        log(f"submitted {drill.job_id}: {job['run']['steps']} steps")
        drill.wait_step(1, 900, "the first step")
        drill.placement()
        if "rollout" in args.faults:
            drill.kill_rollout_node()
        if "redis" in args.faults:
            drill.restart_redis()
        if "learner" in args.faults:
            drill.kill_learner_node(job["run"]["checkpoint_every"])
        drill.finish(job["run"]["steps"])
    except (StackError, StopIteration) as exc:
        drill.check("drill", False, str(exc) or type(exc).__name__)
        if drill.job_id:
            tail = stack.exec("ray-head", "sh", "-c", f"tail -20 /app/runs/{drill.job_id}/driver.log", check=False)
            log("driver log:\n" + tail.stdout)
    finally:
        if not args.keep:
            stack.down()
    passed = sum(ok for _, ok, _ in drill.results)
    print(f"\ndrill {drill.job_id or '-'}: {time.monotonic() - start:.0f}s")
    for name, ok, detail in drill.results:
        print(f"  {'ok  ' if ok else 'FAIL'} {name:20s} {detail}")
    print(f"drill_checks_passed: {passed}/{len(drill.results)}")
    return 0 if drill.results and passed == len(drill.results) else 1


if __name__ == "__main__":
    sys.exit(main())
