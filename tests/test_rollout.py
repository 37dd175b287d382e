"""Rollout worker and pool on a real local Ray cluster."""

import os
import signal
import threading
import time

import pytest
import ray
import torch

import dllm
from rollout.pool import RolloutPool
from rollout.worker import RolloutWorker

SAMPLING = dict(max_new_tokens=8, steps=4, temperature=1.2, top_p=0.95)
REQUESTS = [{"task_id": f"t{i}", "prompt": "def add(a, b):\n"} for i in range(4)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _weights(model_dir, scale: float) -> dict:
    state = dllm.load_model(model_dir).checkpoint_state_dict()
    return {k: (v * scale).numpy() for k, v in state.items()}


def test_worker_returns_groups_orders_and_arness(tiny_model_dir):
    worker = RolloutWorker(str(tiny_model_dir))
    reply = worker.generate(REQUESTS[:2], num_generations=3, sampling=SAMPLING, seed=0)
    rollouts = reply["rollouts"]
    assert [r["task_id"] for r in rollouts] == ["t0"] * 3 + ["t1"] * 3
    for r in rollouts:
        assert sorted(set(r["order"])) == list(range(4)) and len(r["completion_ids"]) == 8
        assert 0 <= r["arness_local"] <= 1 and 0 <= r["arness_global"] <= 1
        assert r["version"] == 0
    assert reply["tokens"] == 6 * 8


def test_worker_refuses_stale_weights(tiny_model_dir):
    worker = RolloutWorker(str(tiny_model_dir))
    assert worker.set_weights(2, [_weights(tiny_model_dir, 0.5)]) == 2
    before = worker.model.lm_head.weight.clone()
    assert worker.set_weights(1, [_weights(tiny_model_dir, 2.0)]) == 2  # older: refused
    assert worker.set_weights(2, [_weights(tiny_model_dir, 2.0)]) == 2  # same: refused
    assert torch.equal(worker.model.lm_head.weight, before)


def test_pool_balances_and_pushes_versions(ray_cluster, tiny_model_dir):
    pool = RolloutPool(str(tiny_model_dir), 2)
    try:
        rollouts, stats = pool.generate(REQUESTS, num_generations=2, sampling=SAMPLING, seed=1)
        assert [r["task_id"] for r in rollouts] == [f"t{i}" for i in range(4) for _ in range(2)]
        assert len({r["worker_id"] for r in rollouts}) == 2  # both actors took work
        assert stats.tokens == 8 * 8 and stats.tokens_per_s > 0 and 0 <= stats.idle_fraction <= 1
        ref = ray.put(_weights(tiny_model_dir, 0.5))
        assert pool.push_weights(1, ref) == [1, 1]
        rollouts, _ = pool.generate(REQUESTS, num_generations=2, sampling=SAMPLING, seed=1)
        assert {r["version"] for r in rollouts} == {1}
        pool.resize(3)
        rollouts, _ = pool.generate(REQUESTS * 2, num_generations=1, sampling=SAMPLING, seed=2)
        assert {r["version"] for r in rollouts} == {1}  # the new actor got the latest weights
        pool.resize(1)
        assert len(pool.actors) == 1
    finally:
        pool.shutdown()


def test_actor_killed_mid_generation_is_restarted_and_step_completes(ray_cluster, tiny_model_dir):
    pool = RolloutPool(str(tiny_model_dir), 2)
    try:
        ref = ray.put(_weights(tiny_model_dir, 0.5))
        pool.push_weights(3, ref)
        victim_pid = ray.get(pool.actors[0].info.remote())["pid"]
        # enough work (~seconds even on idle cores) that a kill at 0.5 s lands mid-generation
        many = [{"task_id": f"t{i}", "prompt": "def f(x):\n    return"} for i in range(120)]
        killed_at = []

        def kill():
            os.kill(victim_pid, signal.SIGKILL)
            killed_at.append(time.time())

        killer = threading.Timer(0.5, kill)
        killer.start()
        start = time.time()
        rollouts, _ = pool.generate(many, num_generations=2,
                                    sampling=dict(max_new_tokens=32, steps=32, temperature=1.2), seed=3)
        returned_at = time.time()
        killer.join()
        assert killed_at and killed_at[0] < returned_at  # the kill really happened mid-generation
        assert len(rollouts) == 240
        assert {r["version"] for r in rollouts} == {3}  # restarted actor reloaded the pushed weights
        pids = {info["pid"] for info in pool.infos()}
        assert victim_pid not in pids
        assert time.time() - start < 300
    finally:
        pool.shutdown()
