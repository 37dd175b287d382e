"""Dropping equal-reward groups (``run.drop_equal_groups``): only groups with signal reach the
learner, renumbered, each with its own G rollouts and rewards; nothing to keep keeps all."""

from __future__ import annotations

from rollout.record import GenerationStats, Rollout
from orchestrator.config import demo_config, with_overrides
from orchestrator.recipe import ScoredBatch, informative_groups, learner_batch
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
    cfg = with_overrides(demo_config(), ["run.oversample=1.5", "run.prompts_per_step=8"])
    assert with_overrides(cfg, ["run.drop_equal_groups=false"]).run.prompts_drawn() == 8
    assert with_overrides(cfg, ["run.drop_equal_groups=true"]).run.prompts_drawn() == 12


class _HintedRollouts:
    """Records the hinted prompts it is asked for and answers each with labelled completions."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, num_generations, sampling, seed):
        self.calls.append((prompts, num_generations))
        out = [Rollout(p.task_id, p.group, [1], [2], 1, f"hinted-{p.group}-{i}", [0], 0.0, 0.0, 1, "w", hinted=3)
               for p in prompts for i in range(num_generations)]
        return out, GenerationStats(wall_s=2.0, busy_s=2.0, tokens=10, actors=1)


class _ScriptedScores:
    """Scores hinted completions without running them (the sandbox's part is tested elsewhere):
    the i-th scored completion passes when ``passes(i)``."""

    def __init__(self, passes):
        self.passes = passes

    def score(self, items):
        return [RewardResult(1.0, 1.0, True, True, "ok", None) if self.passes(i)
                else RewardResult(0.0, 0.0, False, True, "ok", None) for i in range(len(items))]


def _failing_batch(groups: list[tuple[list[tuple[float, bool]], str | None]]) -> ScoredBatch:
    """Groups of (reward, all passed) with each task's canonical solution."""
    tasks, rollouts, rewards = [], [], []
    for g, (group, canonical) in enumerate(groups):
        tasks.append(Task(task_id=f"t{g}", prompt=f"p{g}", entry_point="f", test="", canonical_solution=canonical))
        for i, (r, passed) in enumerate(group):
            rollouts.append(Rollout(f"t{g}", g, [1], [2], 1, f"g{g}-{i}", [0], 0.0, 0.0, 0, "w"))
            rewards.append(RewardResult(r, r, passed, True, "ok", None))
    return ScoredBatch(3, tasks, rollouts, rewards, GenerationStats(wall_s=1.0, tokens=5), 0.0)


def test_inpainting_hints_only_groups_that_all_failed_alike():
    from types import SimpleNamespace

    from orchestrator.recipe import inpaint_failed_groups
    fail, partial, win = (0.0, False), (0.5, False), (1.0, True)
    batch = _failing_batch([([fail] * 4, "A"), ([fail, win, fail, fail], "B"), ([partial] * 4, "C"),
                            ([fail, partial, fail, fail], "D"), ([fail] * 4, None)])
    rollout = _HintedRollouts()
    parts = SimpleNamespace(rollout=rollout, scorer=_ScriptedScores(lambda i: False))
    out = inpaint_failed_groups(parts, batch, num_generations=4, sampling=None, seed=5, hint_ratio=0.25, share=0.5)
    (prompts, n), = rollout.calls
    # 0: all failed; 1: one passed; 2: equal partial rewards, none passed (zero advantage, all
    # wrong: hinted too); 3: unequal rewards already carry signal; 4: nothing to hint with
    assert [(p.group, p.hint, p.hint_ratio, p.text) for p in prompts] == [(0, "A", 0.25, "p0"), (2, "C", 0.25, "p2")]
    assert n == 2  # share x G
    assert [r.text for r in out.rollouts] == [r.text for r in batch.rollouts]  # no hinted one passed: nothing swapped


def test_inpainting_swaps_in_passing_hinted_completions_but_never_the_whole_group():
    from types import SimpleNamespace

    from orchestrator.recipe import inpaint_failed_groups
    fail = (0.0, False)
    batch = _failing_batch([([fail] * 4, "A"), ([fail] * 4, "B")])
    # group 0's hinted completions are scored 0..3, group 1's 4..7: all of group 0's pass, group 1's odd ones
    parts = SimpleNamespace(rollout=_HintedRollouts(), scorer=_ScriptedScores(lambda i: i < 4 or i % 2 == 1))
    out = inpaint_failed_groups(parts, batch, num_generations=4, sampling=None, seed=5, hint_ratio=0.5, share=1.0)
    assert [r.text for r in out.rollouts] == ["hinted-0-0", "hinted-0-1", "hinted-0-2", "g0-3",
                                              "hinted-1-1", "hinted-1-3", "g1-2", "g1-3"]
    assert [r.all_passed for r in out.rewards] == [True, True, True, False, True, True, False, False]
    assert out.generation.wall_s == 3.0 and out.generation.tokens == 15 and out.tasks == batch.tasks


def test_the_job_configs_negative_weight_reaches_the_learners_advantages():
    batch = _batch([[0.5, 2.5], [2.5, 0.5]])
    for weight, expected in [(1.0, [-1.0, 1.0, 1.0, -1.0]), (0.0, [0.0, 1.0, 1.0, 0.0])]:
        cfg = with_overrides(demo_config(), ["grpo.num_generations=2", f"grpo.negative_weight={weight}"])
        out = learner_batch(batch, cfg, pad_token_id=0, eos_token_id=None)
        assert out.advantages.tolist() == expected
