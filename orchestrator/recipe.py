"""The coupled-GRPO recipe: sample prompts, roll out, score, advantages, update, push, log.

Read :func:`train` top to bottom: it owns the loop. It drives three parts through the
interfaces of :mod:`orchestrator.parts` (Ray pools on a cluster, plain workers in this
process: the same loop either way), writes what happened to a ``log`` (the job's Redis state
and run directory, or the console), and lets a supervisor (control commands, heartbeats,
learner restarts: :mod:`orchestrator.supervisor`) act between steps.

Sync mode rolls out every batch with the newest weights. Bounded-async mode rolls out the
next ``run.max_staleness`` batches while the learner trains on this one, so a batch may come
from weights up to that many versions old. Each rollout carries the version that generated
it and the learner takes the old log-probs from that version's weights, so the importance
ratio measures the policy's distance from the behaviour policy that really sampled the batch.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from evaluation.evaluate import truncate_completion
from evaluation.stats import pass_at_k_estimate
from learner.batch import RolloutBatch, from_token_rows
from learner.grpo import group_advantages
from orchestrator.config import JobConfig
from orchestrator.parts import Parts
from rollout.config import SamplingConfig
from rollout.record import GenerationStats, Prompt, Rollout
from sandbox.rewards import RewardResult
from tasks.record import Task

EVAL_SEED = 10_000  # every evaluation samples with the same seed: before/after are paired
HINT_SEED = 1_000_003  # hinted rollouts draw apart from the step's plain ones


class Log(Protocol):
    """Where the recipe reports (``jobstate.JobLog``: Redis and the run directory; or the console)."""

    def log_metrics(self, metrics: dict) -> None: ...

    def log_eval(self, **record: Any) -> None: ...

    def event(self, message: str, level: str = "info") -> None: ...

    def set_rollout(self, sample: dict) -> None: ...


class Supervisor(Protocol):
    """What the loop asks between steps (the unsupervised default answers: go on)."""

    def should_stop(self, step: int) -> bool: ...

    def after_step(self, step: int) -> None: ...

    def recover_learner(self, exc: Exception, out_dir: Path) -> tuple[int, int]: ...


class Unsupervised:
    def should_stop(self, step: int) -> bool:
        return False

    def after_step(self, step: int) -> None:
        pass

    def recover_learner(self, exc: Exception, out_dir: Path) -> tuple[int, int]:
        raise exc


class TaskCursor:
    """Deterministic pass over the training tasks (reshuffled each epoch); its position is
    saved in checkpoints so a resumed job sees the same prompts as an uninterrupted one."""

    def __init__(self, tasks: list[Task], seed: int, position: int = 0):
        self.tasks, self.seed, self.position = tasks, seed, position

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Task]:
        out = []
        for _ in range(n):
            epoch, index = divmod(self.position, len(self.tasks))
            out.append(self.tasks[self._order(epoch)[index]])
            self.position += 1
        return out


@dataclass
class ScoredBatch:
    """One step's prompts, their rollouts (prompt-major, G each) and the sandbox's verdicts."""

    step: int
    tasks: list[Task]
    rollouts: list[Rollout]
    rewards: list[RewardResult]
    generation: GenerationStats
    sandbox_s: float

    @property
    def version(self) -> int:
        """The oldest weight version that generated any of its rollouts."""
        return min(r.version for r in self.rollouts)


def sample_and_score(parts: Parts, tasks: list[Task], *, num_generations: int, sampling: SamplingConfig,
                     seed: int, step: int = 0) -> ScoredBatch:
    """``num_generations`` completions of each task, each run against the task's tests."""
    prompts = [Prompt(t.task_id, t.prompt, group) for group, t in enumerate(tasks)]
    rollouts, generation = parts.rollout.generate(prompts, num_generations=num_generations, sampling=sampling,
                                                  seed=seed)
    start = time.perf_counter()
    rewards = parts.scorer.score([(tasks[r.group], truncate_completion(r.text)) for r in rollouts])
    return ScoredBatch(step, tasks, rollouts, rewards, generation, time.perf_counter() - start)


def informative_groups(batch: ScoredBatch, num_generations: int, keep: int) -> ScoredBatch:
    """The first ``keep`` prompt groups whose rewards are not all equal, renumbered 0.. (DAPO's
    dynamic sampling): a group of equal rewards has zero advantage everywhere, so it adds no
    policy gradient and only dilutes the token-normalised loss. When no group has signal the
    batch is returned unchanged (the step still applies its KL term)."""
    rewards = [r.reward for r in batch.rewards]
    groups = [g for g in range(len(batch.tasks))
              if len(set(rewards[g * num_generations:(g + 1) * num_generations])) > 1][:keep]
    if not groups:
        return batch
    rollouts, scored = [], []
    for new, g in enumerate(groups):
        for i in range(g * num_generations, (g + 1) * num_generations):
            rollouts.append(replace(batch.rollouts[i], group=new))
            scored.append(batch.rewards[i])
    return ScoredBatch(batch.step, [batch.tasks[g] for g in groups], rollouts, scored, batch.generation,
                       batch.sandbox_s)


def inpaint_failed_groups(parts: Parts, batch: ScoredBatch, *, num_generations: int, sampling: SamplingConfig,
                          seed: int, hint_ratio: float, share: float) -> ScoredBatch:
    """IGPO's inpainting (arXiv 2509.10396): a group whose completions all fail has zero
    advantage and teaches nothing. For each such group of a task with a canonical solution,
    decode ``share x G`` more completions with a random ``hint_ratio`` of that solution's
    tokens given, score them, and put those that pass in place of failed ones (never all G,
    so the group keeps some failures to compare with). The replaced completions carry their
    hints as their own tokens: the update raises the probability of the given tokens too,
    weighted by their advantage, which is the point (a skill shown, not only found).
    """
    size = num_generations
    groups = [batch.rewards[g * size:(g + 1) * size] for g in range(len(batch.tasks))]
    failed = [g for g, task in enumerate(batch.tasks)
              if task.canonical_solution and not any(r.all_passed for r in groups[g])
              and len({r.reward for r in groups[g]}) == 1]
    if not failed:
        return batch
    prompts = [Prompt(batch.tasks[g].task_id, batch.tasks[g].prompt, g, hint=batch.tasks[g].canonical_solution or "",
                      hint_ratio=hint_ratio) for g in failed]
    hinted, generation = parts.rollout.generate(prompts, num_generations=max(1, round(share * size)),
                                                sampling=sampling, seed=seed)
    start = time.perf_counter()
    scored = parts.scorer.score([(batch.tasks[r.group], truncate_completion(r.text)) for r in hinted])
    rollouts, rewards = list(batch.rollouts), list(batch.rewards)
    for g in failed:
        passing = [(r, s) for r, s in zip(hinted, scored) if r.group == g and s.all_passed][:size - 1]
        for slot, (rollout, reward) in enumerate(passing, start=g * size):
            rollouts[slot], rewards[slot] = rollout, reward
    cost = GenerationStats(batch.generation.wall_s + generation.wall_s, batch.generation.busy_s + generation.busy_s,
                           batch.generation.tokens + generation.tokens, max(batch.generation.actors, generation.actors))
    return ScoredBatch(batch.step, batch.tasks, rollouts, rewards, cost,
                       batch.sandbox_s + time.perf_counter() - start)


def learner_batch(batch: ScoredBatch, cfg: JobConfig, pad_token_id: int, eos_token_id: int | None) -> RolloutBatch:
    """Rewards → advantages within each prompt's group → the learner's batch."""
    rewards = torch.tensor([r.reward for r in batch.rewards], dtype=torch.float32)
    g = cfg.grpo
    advantages = group_advantages(rewards, g.num_generations, scale_rewards=g.scale_rewards, eps=g.advantage_eps,
                                  negative_weight=g.negative_weight)
    return from_token_rows([r.prompt_ids for r in batch.rollouts], [r.completion_ids for r in batch.rollouts],
                           advantages, pad_token_id=pad_token_id, eos_token_id=eos_token_id, step=batch.step,
                           versions=[r.version for r in batch.rollouts])


def evaluate(parts: Parts, cfg: JobConfig, tasks: list[Task], step: int, log: Log) -> dict[str, float]:
    """Held-out pass@1 (± standard error over tasks) at the eval temperature, with full and
    half denoising steps; ``run.eval_samples`` completions per task, the same seed every time."""
    out = {}
    full = cfg.rollout.sampling.at(temperature=cfg.run.eval_temperature)
    for mode, sampling in (("full", full), ("half", full.half_steps())):
        scored = sample_and_score(parts, tasks, num_generations=cfg.run.eval_samples, sampling=sampling,
                                  seed=cfg.run.seed + EVAL_SEED, step=step)
        correct = [0] * len(tasks)
        for rollout, reward in zip(scored.rollouts, scored.rewards):
            correct[rollout.group] += int(reward.all_passed)
        estimate = pass_at_k_estimate([(cfg.run.eval_samples, c) for c in correct], 1)
        out[mode] = estimate.mean
        log.log_eval(step=step, split="heldout", steps_mode=mode, pass_at_1=estimate.mean, se=estimate.se,
                     n=len(tasks), samples=cfg.run.eval_samples, correct=correct)
    log.event(f"eval at step {step}: held-out pass@1 {out['full']:.3f} (full steps), {out['half']:.3f} (half)")
    return out


def step_metrics(batch: ScoredBatch, learner: dict, learner_s: float, version: int) -> dict:
    """The step's record: rewards, learner figures, AR-ness, throughput, versions."""
    rewards = [r.reward for r in batch.rewards]
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    rollouts = batch.rollouts
    return {
        "step": batch.step + 1,
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "pass_rate": sum(r.all_passed for r in batch.rewards) / n,
        **{k: learner[k] for k in ("loss", "kl", "clip_frac", "grad_norm", "lr", "ratio_mean", "ratio_min",
                                   "ratio_max")},
        "arness_local": sum(r.arness_local for r in rollouts) / max(len(rollouts), 1),
        "arness_global": sum(r.arness_global for r in rollouts) / max(len(rollouts), 1),
        "parallel_fraction": sum(r.parallel_fraction for r in rollouts) / max(len(rollouts), 1),
        "inpainted_frac": sum(r.hinted > 0 for r in rollouts) / max(len(rollouts), 1),
        "rollout_tokens_per_s": batch.generation.tokens_per_s,
        "rollout_idle_frac": batch.generation.idle_fraction,
        "sandbox_execs_per_s": len(rewards) / batch.sandbox_s if batch.sandbox_s > 0 else 0.0,
        "learner_step_s": learner_s,
        "weight_version": version,
        "rollout_version": batch.version,
    }


def viewer_sample(batch: ScoredBatch, decode: Callable[[list[int]], str]) -> dict:
    """The step's best-rewarded completion, token by token with the step that committed it."""
    best = max(range(len(batch.rollouts)), key=lambda i: batch.rewards[i].reward)
    r, reward = batch.rollouts[best], batch.rewards[best]
    result = reward.result
    return {"step": batch.step + 1, "task_id": r.task_id, "prompt": batch.tasks[r.group].prompt,
            "tokens": [decode([t]) for t in r.completion_ids[:r.completion_len]], "order": r.order[:r.completion_len],
            "reward": reward.reward, "status": result.status if result else reward.reason,
            "test_report": {"reason": reward.reason, "tests_passed": result.tests_passed if result else 0,
                            "tests_total": result.tests_total if result else 0,
                            "stderr": (result.stderr or "")[-500:] if result else "",
                            "failures": list(result.failures or [])[:5] if result else []}}  # which tests, why


def latest_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in checkpoints if (p / "COMPLETE").exists()]
    return complete[-1] if complete else None


def save_checkpoint(parts: Parts, out_dir: Path, step: int, cursor: int) -> Path:
    path = out_dir / "checkpoints" / f"step-{step}"
    parts.learner.save(str(path), {"step": step, "cursor": cursor})
    (path / "COMPLETE").write_text(str(time.time()))
    return path


class _Lookahead:
    """The batches of the next steps, produced in a background thread (async mode) or on
    demand (sync mode: ``depth`` 0)."""

    def __init__(self, produce: Callable[[int, list[Task]], ScoredBatch], next_tasks: Callable[[], list[Task]],
                 depth: int, last_step: int):
        self.produce, self.next_tasks, self.depth, self.last_step = produce, next_tasks, depth, last_step
        self.pending: deque[Future] = deque()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-producer")

    def take(self, step: int) -> ScoredBatch:
        # Tasks are drawn here, in step order on the caller's thread, so the prompt order is
        # the same in sync and async mode and after a resume.
        while len(self.pending) <= self.depth and step + len(self.pending) < self.last_step:
            s = step + len(self.pending)
            self.pending.append(self.pool.submit(self.produce, s, self.next_tasks()))
        return self.pending.popleft().result()

    def reset(self) -> None:
        """Drop the batches not taken yet; one being produced is waited for (and dropped), so
        no generation is still running when the caller changes the served weights."""
        running = [f for f in self.pending if not f.cancel()]
        wait(running)
        self.pending.clear()

    def close(self) -> None:
        self.reset()
        self.pool.shutdown(wait=True, cancel_futures=True)


def train(cfg: JobConfig, parts: Parts, train_tasks: list[Task], heldout: list[Task], log: Log, out_dir: Path, *,
          resume: bool = False, supervisor: Supervisor | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run ``cfg.run.steps`` coupled-GRPO steps; returns a summary (start/end evaluations,
    final step, exported model)."""
    supervisor = supervisor or Unsupervised()
    cursor = TaskCursor(train_tasks, cfg.run.seed)
    step = 0
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        extra = parts.learner.load(str(checkpoint))
        step, cursor.position = int(extra["step"]), int(extra["cursor"])
        log.event(f"resumed from checkpoint at step {step}")
    version = step
    parts.push_weights(version)
    summary: dict[str, Any] = {"start_step": step}
    if cfg.run.eval_every:
        summary["eval_start"] = evaluate(parts, cfg, heldout, step, log)

    def roll_out(s: int, tasks: list[Task]) -> ScoredBatch:
        batch = sample_and_score(parts, tasks, num_generations=cfg.grpo.num_generations,
                                 sampling=cfg.rollout.sampling, seed=cfg.run.seed * 7919 + s, step=s)
        if cfg.run.inpaint:
            batch = inpaint_failed_groups(parts, batch, num_generations=cfg.grpo.num_generations,
                                          sampling=cfg.rollout.sampling, seed=cfg.run.seed * 7919 + s + HINT_SEED,
                                          hint_ratio=cfg.run.inpaint_hint_ratio, share=cfg.run.inpaint_share)
        if cfg.run.drop_equal_groups:
            batch = informative_groups(batch, cfg.grpo.num_generations, cfg.run.prompts_per_step)
        return batch

    batches = _Lookahead(roll_out, lambda: cursor.take(cfg.run.prompts_drawn()),
                         cfg.run.max_staleness if cfg.run.mode == "async" else 0, cfg.run.steps)
    last_checkpoint = step
    try:
        while step < cfg.run.steps:
            if supervisor.should_stop(step):
                summary["stopped_at"] = step
                return summary
            batch = batches.take(step)
            start = time.perf_counter()
            # Every call that needs the learner group: a group lost in any of them (its node
            # gone, a rank killed) is rebuilt from the last checkpoint and the steps since
            # are trained again. (Delivering the weights needs only the rollout pool, which
            # copes with its own losses.)
            weights = None
            try:
                learned = parts.learner.train_step(
                    learner_batch(batch, cfg, parts.pad_token_id, parts.tokenizer.eos_token_id))
                learner_s = time.perf_counter() - start
                if (step + 1) % cfg.run.weight_sync_every == 0 or step + 1 == cfg.run.steps:
                    weights = parts.learner.publish_weights(step + 1)
                if cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0:
                    save_checkpoint(parts, out_dir, step + 1, cursor.position)
                    last_checkpoint = step + 1
            except Exception as exc:  # noqa: BLE001 - the supervisor re-raises what it cannot recover
                batches.reset()
                step, cursor.position = supervisor.recover_learner(exc, out_dir)
                version = step
                # The replicas may serve a version of the steps now trained again: back to this one.
                parts.push_weights(version, rewind=True)
                continue
            step += 1
            if weights is not None:
                parts.rollout.push_weights(step, weights)
                version = step
            metrics = step_metrics(batch, learned, learner_s, version)
            log.log_metrics(metrics)
            log.set_rollout(viewer_sample(batch, parts.tokenizer.decode))
            supervisor.after_step(step)
            if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.steps:
                evaluate(parts, cfg, heldout, step, log)
            if on_step:
                on_step(step, metrics)
    finally:
        batches.close()
    if last_checkpoint != step:
        save_checkpoint(parts, out_dir, step, cursor.position)
    if cfg.run.eval_every:
        summary["eval_end"] = evaluate(parts, cfg, heldout, step, log)
    export = parts.learner.export_hf(str(out_dir / "final"))
    summary.update(final_step=step, export=str(export or out_dir / "final"))
    return summary
