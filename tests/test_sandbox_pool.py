"""The Ray sandbox pool on a real local Ray cluster: order, accounting, and worker death.

A worker process is killed with SIGKILL while it is scoring a batch; the pool must replace
it, retry its in-flight items once, and still return every result. Items whose worker
dies twice come back as errors with reward 0, never silently scored.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import namedtuple

import pytest
import ray

from sandbox import Limits
from sandbox.pool import SandboxPool
from tests.conftest import sandbox_backends

Task = namedtuple("Task", "prompt entry_point test")
ADD = Task('def add(a, b):\n    """a + b"""\n', "add",
           "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n")
RIGHT, HALF = "    return a + b\n", "    return 3\n"
SLOW = "    import time\n    time.sleep(0.4)\n    return a + b\n"


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        # address="local": a fresh cluster of our own, even when another one is running here
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _sandbox_workers() -> dict[int, int]:
    """This test's sandbox worker processes (Ray names a worker after its actor class) and how
    many descendant processes each has now."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, bytes] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
                cmdlines[int(name)] = open(f"/proc/{name}/cmdline", "rb").read()
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))

    def count(pid: int) -> int:
        return sum(1 + count(c) for c in children.get(pid, []))

    workers, todo = {}, [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if b"SandboxWorker" in cmdlines.get(child, b""):
                workers[child] = count(child)
    return workers


def _killer(times: int, killed: list[int], stop: threading.Event) -> threading.Thread:
    """SIGKILL a sandbox worker while it runs a program: a busy worker has more descendants
    (the judge and the program its executor forked) than an idle one (measured before the
    batch starts, so the test does not depend on when Ray retitles a busy worker)."""
    idle = max(_sandbox_workers().values())

    def run():
        while len(killed) < times and not stop.is_set():
            for pid, descendants in _sandbox_workers().items():
                if descendants > idle and pid not in killed:
                    time.sleep(0.1)  # let it get into the batch
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("backend", sandbox_backends())
def test_pool_scores_in_order_with_accounting(cluster, backend):
    pool = SandboxPool(2, backend, Limits(wall_s=3), batch_size=3, num_cpus_per_worker=0.5)
    try:
        info = pool.info()
        assert [i["backend"] for i in info] == [backend, backend]
        assert len({i["pid"] for i in info}) == 2 and all(i["executor"]["ready"] for i in info)
        items = [(ADD, [RIGHT, HALF, ""][i % 3]) for i in range(10)]
        results = pool.score(items, job_id="job-a")
        assert [r.reason for r in results] == [["passed", "failed", "no code"][i % 3] for i in range(10)]
        assert [r.reward for r in results[:3]] == [2.5, 2.0 * 0.5 + 0.5, 0.0]
        stats = pool.stats("job-a")
        assert stats["programs"] == 10 and stats["batches"] == 4
        assert stats["statuses"] == {"passed": 4, "failed": 3, "no code": 3}
        assert stats["execs_per_s"] > 0 and stats["retried"] == 0 and stats["worker_restarts"] == 0
        raw = pool.run([("print(1)", None), ("1/0", None)], job_id="job-b")
        assert [r.status for r in raw] == ["passed", "error"]
        assert set(pool.stats()["jobs"]) == {"job-a", "job-b"}
    finally:
        pool.shutdown()


def test_worker_killed_mid_batch_is_replaced_and_its_items_retried(cluster):
    pool = SandboxPool(2, "jail", Limits(wall_s=5), batch_size=2, num_cpus_per_worker=0.5)
    try:
        before = set(pool.worker_pids())
        killed: list[int] = []
        stop = threading.Event()
        killer = _killer(1, killed, stop)
        results = pool.score([(ADD, SLOW)] * 12, job_id="job-kill")
        stop.set()
        killer.join(5)
        assert len(killed) == 1 and killed[0] in before
        assert [r.reason for r in results] == ["passed"] * 12  # every item, none lost
        stats = pool.stats("job-kill")
        assert stats["worker_restarts"] == 1 and stats["retried"] >= 1 and stats["worker_errors"] == 0
        after = set(pool.worker_pids())
        assert killed[0] not in after and len(after) == 2
        again = pool.score([(ADD, RIGHT)] * 4, job_id="job-kill")
        assert [r.reward for r in again] == [2.5] * 4
    finally:
        pool.shutdown()


def test_items_whose_worker_dies_twice_are_reported_as_errors(cluster):
    pool = SandboxPool(1, "jail", Limits(wall_s=5), batch_size=3, max_inflight_per_worker=1,
                       num_cpus_per_worker=0.5)
    try:
        killed: list[int] = []
        stop = threading.Event()
        killer = _killer(2, killed, stop)
        results = pool.score([(ADD, SLOW)] * 3, job_id="job-twice")
        stop.set()
        killer.join(5)
        assert len(killed) == 2
        assert [r.reason for r in results] == ["sandbox worker died"] * 3
        assert all(r.reward == 0.0 and r.result.status == "error" for r in results)
        assert "died twice" in results[0].result.detail
        stats = pool.stats("job-twice")
        assert stats["worker_errors"] == 3 and stats["worker_restarts"] == 2
        assert [r.reward for r in pool.score([(ADD, RIGHT)])] == [2.5]  # the pool serves on
    finally:
        pool.shutdown()


def test_one_bad_item_never_fails_its_batch_mates():
    """The worker body without Ray: an item whose tests cannot even be split (a bad task)
    comes back as that item's error; the items around it are scored as usual."""
    from sandbox.pool import SandboxWorker
    from sandbox.rewards import RewardConfig

    worker = SandboxWorker("jail", Limits(wall_s=3), RewardConfig())
    try:
        broken = Task(ADD.prompt, "add", "def check(candidate):\n    assert (\n")
        out = worker.score([(ADD, RIGHT), (broken, RIGHT), (ADD, HALF)])
        assert [r.reward for r in out] == [2.5, 0.0, 1.5]
        assert out[1].reason == "error" and "do not parse" in out[1].result.detail
        runs = worker.run_batch([("x = 1", "assert x == 1"), ("x = 1", "assert ("), ("x = 2", None)])
        assert [r.status for r in runs] == ["passed", "error", "passed"]
    finally:
        worker.shutdown()
