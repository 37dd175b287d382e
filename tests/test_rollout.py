"""Rollout worker and pool on a real local Ray cluster."""

import os
import signal
import threading
import time

import pytest
import ray
import torch

import dllm
from rollout.config import SamplingConfig
from rollout.pool import RolloutPool
from rollout.record import Prompt
from rollout.worker import RolloutWorker

SAMPLING = SamplingConfig(max_new_tokens=8, steps=4, temperature=1.2, top_p=0.95)
REQUESTS = [Prompt(f"t{i}", "def add(a, b):\n", i) for i in range(4)]


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
    rollouts, cost = worker.generate(REQUESTS[:2], num_generations=3, sampling=SAMPLING, seed=0)
    assert [(r.task_id, r.group) for r in rollouts] == [("t0", 0)] * 3 + [("t1", 1)] * 3
    prompt = worker.tokenizer.encode(REQUESTS[0].text, add_special_tokens=False)
    for r in rollouts:
        # 8 positions in 4 steps: exactly two positions committed at each step
        assert sorted(r.order) == [0, 0, 1, 1, 2, 2, 3, 3] and len(r.completion_ids) == 8
        assert r.prompt_ids == prompt and r.version == 0
        stops = [i for i, t in enumerate(r.completion_ids) if t in (worker.model.eos_token_id, worker.model.pad_token_id)]
        answer = stops[0] if stops else len(r.completion_ids)
        assert r.completion_len == answer + (1 if stops else 0)
        assert r.arness_local == dllm.local_arness(r.order[:max(1, answer)], 1)
        assert r.arness_global == dllm.global_arness(r.order[:max(1, answer)], 1)
        assert r.parallel_fraction == (1.0 if answer else 0.0)  # two per step: every answer token went with another
    assert cost.tokens == 6 * 8 and cost.busy_s > 0


def test_worker_inpaints_hints_drawn_per_completion(tiny_model_dir):
    worker = RolloutWorker(str(tiny_model_dir))
    hint = "    return a + b\n"
    ids = worker.tokenizer.encode(hint, add_special_tokens=False) + [worker.model.eos_token_id]
    whole = Prompt("t0", "def add(a, b):\n", 0, hint=hint, hint_ratio=1.0)
    half = Prompt("t1", "def add(a, b):\n", 1, hint=hint, hint_ratio=0.5)
    rollouts, _ = worker.generate([whole, half, REQUESTS[2]], num_generations=6, sampling=SAMPLING, seed=0)
    for r in rollouts[:6]:  # every token given: the reference completion, EOS included
        assert r.completion_ids[:len(ids)] == ids and r.hinted == len(ids) and r.text == hint
    halves = rollouts[6:12]
    assert 0 < sum(r.hinted for r in halves) < 6 * len(ids)
    assert len({r.hinted for r in halves}) > 1  # a fresh draw for each completion
    assert all(sum(a == b for a, b in zip(r.completion_ids, ids)) >= r.hinted for r in halves)
    assert all(r.hinted == 0 for r in rollouts[12:])  # a prompt without a hint is decoded freely


def test_worker_refuses_stale_weights(tiny_model_dir):
    worker = RolloutWorker(str(tiny_model_dir))
    assert worker.set_weights(2, [_weights(tiny_model_dir, 0.5)]) == 2
    before = worker.model.lm_head.weight.clone()
    assert worker.set_weights(1, [_weights(tiny_model_dir, 2.0)]) == 2  # older: refused
    assert worker.set_weights(2, [_weights(tiny_model_dir, 2.0)]) == 2  # same: refused
    assert torch.equal(worker.model.lm_head.weight, before)


def test_worker_rewinds_to_an_older_version_only_when_told(tiny_model_dir):
    """After a learner recovery the job goes back to a checkpoint's version: a replica that
    serves a newer one (from the steps trained again) must load it, or it would generate
    with weights no learner has any more."""
    worker = RolloutWorker(str(tiny_model_dir))
    worker.set_weights(5, [_weights(tiny_model_dir, 2.0)])
    older = _weights(tiny_model_dir, 0.5)
    assert worker.set_weights(3, [older], rewind=True) == 3
    assert torch.equal(worker.model.lm_head.weight, torch.from_numpy(older["lm_head.weight"]))
    # then forward again as usual; a rewind to the version served changes nothing
    assert worker.set_weights(4, [_weights(tiny_model_dir, 3.0)]) == 4
    before = worker.model.lm_head.weight.clone()
    assert worker.set_weights(4, [older], rewind=True) == 4
    assert torch.equal(worker.model.lm_head.weight, before)


def test_pool_balances_and_pushes_versions(ray_cluster, tiny_model_dir):
    pool = RolloutPool(str(tiny_model_dir), 2)
    try:
        rollouts, stats = pool.generate(REQUESTS, num_generations=2, sampling=SAMPLING, seed=1)
        assert [r.task_id for r in rollouts] == [f"t{i}" for i in range(4) for _ in range(2)]
        assert len({r.worker_id for r in rollouts}) == 2  # both actors took work
        assert stats.tokens == 8 * 8 and stats.actors == 2
        assert stats.tokens_per_s == pytest.approx(stats.tokens / stats.wall_s)
        assert stats.busy_s <= 2 * stats.wall_s
        ref = ray.put(_weights(tiny_model_dir, 0.5))
        assert pool.push_weights(1, ref) == [1, 1]
        rollouts, _ = pool.generate(REQUESTS, num_generations=2, sampling=SAMPLING, seed=1)
        assert {r.version for r in rollouts} == {1}
        pool.resize(3)
        rollouts, _ = pool.generate(REQUESTS * 2, num_generations=1, sampling=SAMPLING, seed=2)
        assert {r.version for r in rollouts} == {1}  # the new actor got the latest weights
        pool.resize(1)
        assert len(pool.actors) == 1
    finally:
        pool.shutdown()


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_actor_killed_mid_generation_is_restarted_and_step_completes(ray_cluster, tiny_model_dir):
    pool = RolloutPool(str(tiny_model_dir), 2)
    try:
        ref = ray.put(_weights(tiny_model_dir, 0.5))
        pool.push_weights(3, ref)
        victim_pid = ray.get(pool.actors[0].info.remote())["pid"]
        many = [Prompt(f"t{i}", "def f(x):\n    return", i) for i in range(60)]
        killed_at = []

        def kill_once_busy():
            # the victim is generating once it has burnt CPU since the call started
            start_cpu, deadline = _cpu_seconds(victim_pid), time.time() + 120
            while time.time() < deadline and _cpu_seconds(victim_pid) - start_cpu < 0.3:
                time.sleep(0.02)
            os.kill(victim_pid, signal.SIGKILL)
            killed_at.append(time.time())

        killer = threading.Thread(target=kill_once_busy)
        killer.start()
        rollouts, _ = pool.generate(many, num_generations=2,
                                    sampling=SamplingConfig(max_new_tokens=32, steps=32, temperature=1.2), seed=3)
        returned_at = time.time()
        killer.join()
        assert killed_at and killed_at[0] < returned_at  # the kill really happened mid-generation
        # every prompt's group, in request order, despite the retried chunk
        assert [r.task_id for r in rollouts] == [f"t{i}" for i in range(60) for _ in range(2)]
        assert {r.version for r in rollouts} == {3}  # restarted actor reloaded the pushed weights
        assert victim_pid not in {info["pid"] for info in pool.infos()}
    finally:
        pool.shutdown()
