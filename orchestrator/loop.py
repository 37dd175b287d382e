"""The coupled-GRPO recipe: sample prompts, roll out, score, update, push weights, log.

Read :func:`run_job` top to bottom: it owns the loop; everything it calls is a plain
component tested on its own (rollout pool, sandbox pool, learner group, Redis state).
Sync mode rolls out with the newest weights; bounded-async mode prepares the batches of
the next ``max_staleness`` steps while the learner trains (the importance ratio of the
GRPO loss corrects the small off-policy gap).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ray

from orchestrator import components
from orchestrator.config import JobConfig
from orchestrator.state import JobState, connect, read_job
from orchestrator.tasks.evaluate import truncate_completion


@dataclass
class ScoredBatch:
    """One step's rollouts with their rewards, ready for the learner."""

    step: int
    rollouts: list[dict]
    rewards: list[dict]
    version: int
    rollout_stats: object
    sandbox_s: float


class TaskCursor:
    """Deterministic pass over the training tasks (reshuffled each epoch); its position is
    saved in checkpoints so a resumed job sees the same prompts as an uninterrupted one."""

    def __init__(self, tasks: list, seed: int, position: int = 0):
        self.tasks, self.seed, self.position = tasks, seed, position

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list:
        out = []
        for _ in range(n):
            epoch, index = divmod(self.position, len(self.tasks))
            out.append(self.tasks[self._order(epoch)[index]])
            self.position += 1
        return out


def sampling_settings(cfg: JobConfig, temperature: float | None = None, steps: int | None = None) -> dict:
    r = cfg.rollout
    return {"max_new_tokens": r.max_new_tokens, "steps": steps or r.steps,
            "temperature": r.temperature if temperature is None else temperature,
            "top_p": r.top_p, "top_k": r.top_k, "alg": r.alg, "alg_temp": r.alg_temp}


def produce_batch(step: int, tasks: list, parts: components.Parts, cfg: JobConfig) -> ScoredBatch:
    """Roll out G completions for each task and score them in the sandbox."""
    requests = [{"task_id": t.task_id, "prompt": t.prompt, "group": g} for g, t in enumerate(tasks)]
    version = parts.rollout.version
    rollouts, stats = parts.rollout.generate(requests, num_generations=cfg.rollout.num_generations,
                                             sampling=sampling_settings(cfg), seed=cfg.run.seed * 7919 + step)
    by_id = {t.task_id: t for t in tasks}
    start = time.perf_counter()
    rewards = parts.sandbox.score([(by_id[r["task_id"]], truncate_completion(r["text"])) for r in rollouts])
    return ScoredBatch(step, rollouts, [components.reward_dict(x) for x in rewards], version, stats,
                       time.perf_counter() - start)


def evaluate(parts: components.Parts, cfg: JobConfig, tasks: list, step: int, state: JobState) -> dict:
    """Held-out pass@1 at the eval temperature, with full and half denoising steps."""
    out = {}
    requests = [{"task_id": t.task_id, "prompt": t.prompt} for t in tasks]
    by_id = {t.task_id: t for t in tasks}
    for mode, steps in (("full", cfg.rollout.steps), ("half", max(1, cfg.rollout.steps // 2))):
        rollouts, _ = parts.rollout.generate(requests, num_generations=1,
                                             sampling=sampling_settings(cfg, cfg.run.eval_temperature, steps),
                                             seed=10_000 + step)
        results = parts.sandbox.score([(by_id[r["task_id"]], truncate_completion(r["text"])) for r in rollouts])
        passed = [bool(components.reward_dict(x)["all_passed"]) for x in results]
        out[mode] = sum(passed) / max(len(passed), 1)
        state.log_eval(step=step, split="heldout", steps_mode=mode, pass_at_1=out[mode], n=len(passed))
    state.event(f"eval at step {step}: held-out pass@1 {out['full']:.3f} (full steps), {out['half']:.3f} (half)")
    return out


def step_metrics(batch: ScoredBatch, learner_metrics: dict, learner_s: float, version: int) -> dict:
    rewards = [r["reward"] for r in batch.rewards]
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    std = (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5
    stats = batch.rollout_stats
    return {
        "step": batch.step + 1,
        "time": time.time(),
        "reward_mean": mean,
        "reward_std": std,
        "pass_rate": sum(bool(r["all_passed"]) for r in batch.rewards) / n,
        "kl": learner_metrics.get("kl", 0.0),
        "loss": learner_metrics.get("loss", 0.0),
        "clip_frac": learner_metrics.get("clip_frac", 0.0),
        "grad_norm": learner_metrics.get("grad_norm", 0.0),
        "arness_local": sum(r["arness_local"] for r in batch.rollouts) / max(len(batch.rollouts), 1),
        "arness_global": sum(r["arness_global"] for r in batch.rollouts) / max(len(batch.rollouts), 1),
        "rollout_tokens_per_s": stats.tokens_per_s,
        "sandbox_execs_per_s": len(batch.rewards) / batch.sandbox_s if batch.sandbox_s > 0 else 0.0,
        "learner_step_s": learner_s,
        "rollout_idle_frac": stats.idle_fraction,
        "weight_version": version,
        "rollout_version": batch.version,
    }


def _sample_for_viewer(batch: ScoredBatch, tokenizer_decode: Callable[[int], str], tasks_by_id: dict) -> dict:
    """The best-rewarded completion of the step, token by token with its commit step."""
    best = max(range(len(batch.rollouts)), key=lambda i: batch.rewards[i]["reward"])
    r, reward = batch.rollouts[best], batch.rewards[best]
    n = r["completion_len"]
    return {"step": batch.step + 1, "task_id": r["task_id"], "prompt": tasks_by_id[r["task_id"]].prompt,
            "tokens": [tokenizer_decode(t) for t in r["completion_ids"][:n]], "order": r["order"][:n],
            "reward": reward["reward"], "status": reward["status"], "test_report": reward["report"]}


def run_job(cfg: JobConfig, job_id: str, *, resume: bool = False,
            on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run a whole job on the connected Ray cluster; returns the final summary."""
    client = connect(cfg.redis.url)
    state = JobState(job_id, client)
    if read_job(client, job_id) is None:  # run directly, not through `cgrpo submit`
        state.create(name=cfg.name, config=cfg.model_dump(mode="json"), total_steps=cfg.run.steps)
    parts = None
    try:
        tasks = components.load_job_tasks(cfg)  # a bad task source fails before any actor starts
        parts = components.start(cfg, job_id, state)
        return _loop(cfg, job_id, state, parts, cfg.run_dir(job_id), resume, on_step, *tasks)
    except BaseException as exc:
        state.set_status("stopped" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc)[:2000])
        state.event(f"job ended: {type(exc).__name__}: {exc}", level="error")
        raise
    finally:
        if parts is not None:
            parts.shutdown()
        state.close()


def _loop(cfg, job_id, state, parts, out_dir, resume, on_step, train_tasks, heldout) -> dict:
    cursor = TaskCursor(train_tasks, cfg.run.seed)
    step = 0
    if resume and components.latest_checkpoint(out_dir):
        extra = parts.learner.load(str(components.latest_checkpoint(out_dir)))
        step, cursor.position = int(extra["step"]), int(extra["cursor"])
        state.event(f"resumed from checkpoint at step {step}")
    version = step
    parts.push_weights(version)
    summary = {"job_id": job_id, "start_step": step}
    if cfg.run.eval_every:
        summary["eval_start"] = evaluate(parts, cfg, heldout, step, state)
    state.set_status("running")
    decode = parts.tokenizer_decode
    tasks_by_id = {t.task_id: t for t in train_tasks}
    pending: deque = deque()
    producer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-producer")
    lookahead = cfg.run.max_staleness if cfg.run.mode == "async" else 0
    last_checkpoint_step = step
    learner_restarts = 0
    try:
        while step < cfg.run.steps:
            for command in state.pop_commands():
                if components.apply_command(command, parts, state):
                    state.set_status("stopped")
                    summary["stopped_at"] = step
                    return summary
            # Keep `lookahead` future batches in flight (async) or produce this one now (sync).
            while len(pending) <= lookahead and step + len(pending) < cfg.run.steps:
                s = step + len(pending)
                pending.append(producer.submit(produce_batch, s, cursor.take(cfg.rollout.prompts_per_step),
                                               parts, cfg))
            batch = pending.popleft().result()
            start = time.perf_counter()
            try:
                learner_metrics = parts.learner.train_step(
                    components.learner_batch(batch, cfg, parts.pad_token_id, parts.tokenizer.eos_token_id))
            except ray.exceptions.RayError as exc:
                learner_restarts += 1
                if learner_restarts > cfg.run.max_learner_restarts:
                    raise
                state.event(f"learner failed ({type(exc).__name__}); restarting from the last checkpoint "
                            f"(retry {learner_restarts}/{cfg.run.max_learner_restarts})", level="warning")
                for f in pending:
                    f.cancel()
                pending.clear()
                step, cursor.position = parts.restart_learner(out_dir, cfg)
                version = step
                parts.push_weights(version)
                continue
            learner_s = time.perf_counter() - start
            step += 1
            if step % cfg.run.weight_sync_every == 0 or step == cfg.run.steps:
                version = step
                parts.push_weights(version)
            metrics = step_metrics(batch, learner_metrics, learner_s, version)
            state.log_metrics(metrics)
            state.update(step=step, weight_version=version)
            state.set_rollout(_sample_for_viewer(batch, decode, tasks_by_id))
            parts.heartbeats(state)
            if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0:
                parts.save_checkpoint(out_dir, step, cursor.position)
                last_checkpoint_step = step
            if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.steps:
                evaluate(parts, cfg, heldout, step, state)
            if on_step:
                on_step(step, metrics)
    finally:
        for f in pending:
            f.cancel()
        producer.shutdown(wait=True, cancel_futures=True)
    if last_checkpoint_step != step:
        parts.save_checkpoint(out_dir, step, cursor.position)
    if cfg.run.eval_every:
        summary["eval_end"] = evaluate(parts, cfg, heldout, step, state)
    export = parts.learner.export_hf(str(out_dir / "final"))
    summary.update(final_step=step, export=str(export or out_dir / "final"), learner_restarts=learner_restarts)
    state.update(export_path=summary["export"])
    state.set_status("succeeded")
    state.event(f"job finished at step {step}; model exported to {summary['export']}")
    return summary
