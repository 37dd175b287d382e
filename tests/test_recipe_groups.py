"""Dropping equal-reward groups (``run.drop_equal_groups``): only groups with signal reach the
learner, renumbered, each with its own G rollouts and rewards; nothing to keep keeps all."""

from __future__ import annotations

from rollout.record import GenerationStats, Rollout
from orchestrator.config import demo_config, with_overrides
from orchestrator.recipe import ScoredBatch, informative_groups
from sandbox.rewards import RewardResult
from tasks.record import Task


def _batch(rewards_per_group: list[list[float]]) -> ScoredBatch:
    tasks, rollouts, rewards = [], [], []
    for g, group in enumerate(rewards_per_group):
        tasks.append(Task(task_id=f"t{g}", prompt=f"p{g}", entry_point="f", test="", canonical_solution=""))
        for i, r in enumerate(group):
            rollouts.append(Rollout(f"t{g}", g, [1], [2], 1, f"g{g}-{i}", [0], 0.0, 0.0, 0, "w"))
            rewards.append(RewardResult(r, r, r > 0, True, "ok", None))
    return ScoredBatch(3, tasks, rollouts, rewards, GenerationStats(), 0.0)


def test_only_groups_with_signal_are_kept_and_renumbered():
    batch = _batch([[0.5, 0.5], [0.5, 2.5], [2.5, 2.5], [0.0, 2.5], [0.5, 2.0]])
    kept = informative_groups(batch, num_generations=2, keep=2)
    assert [t.task_id for t in kept.tasks] == ["t1", "t3"]
    assert [r.group for r in kept.rollouts] == [0, 0, 1, 1]
    assert [r.text for r in kept.rollouts] == ["g1-0", "g1-1", "g3-0", "g3-1"]
    assert [r.reward for r in kept.rewards] == [0.5, 2.5, 0.0, 2.5] and kept.step == 3


def test_a_batch_without_signal_is_kept_whole():
    batch = _batch([[0.5, 0.5], [2.5, 2.5]])
    assert informative_groups(batch, num_generations=2, keep=2) is batch


def test_oversampling_draws_more_prompts_only_when_dropping():
    cfg = demo_config()
    assert cfg.run.prompts_drawn() == cfg.run.prompts_per_step
    cfg = with_overrides(cfg, ["run.drop_equal_groups=true", "run.oversample=1.5", "run.prompts_per_step=8"])
    assert cfg.run.prompts_drawn() == 12
