"""Scout RL settings in minutes: the real rollout worker, sandbox worker and DeepSpeed learner
in one process, no cluster.

`cgrpo experiment` runs every job the way users do (Ray actors, sandbox pool, learner group,
Redis). Trying a learning rate that way costs the whole stack's start-up and two cores shared
by five processes. Here the same ``RolloutWorker``, ``SandboxWorker`` (programs still run in
the sandbox) and ``LearnerWorker`` (a one-rank DeepSpeed engine) run in this process, in sync
mode, on the demo job config with ``--set`` overrides. Held-out pass@1 (T=0.2) is measured
with full and half denoising steps before training, every ``--eval-every`` steps and at the
end, on the same tasks with the same seeds, so the differences are the policy's.

    python bench/rl_scout.py --steps 60 --set learner.lr=2e-4 [--eval-tasks 96] [--eval-every 20]

Last line: ``heldout_pass1_gain: +X.XXX`` (pass@1 after minus before, full steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from learner.worker import LearnerWorker  # noqa: E402
from orchestrator import components  # noqa: E402
from orchestrator.config import ConfigError, demo_config  # noqa: E402
from orchestrator.experiment import positive_int, with_overrides  # noqa: E402
from orchestrator.loop import ScoredBatch, TaskCursor, sampling_settings  # noqa: E402
from orchestrator.tasks.evaluate import truncate_completion  # noqa: E402
from rollout.worker import RolloutWorker  # noqa: E402
from sandbox.pool import SandboxWorker, TaskView  # noqa: E402

EVAL_SEED = 10_000


def score(sandbox: SandboxWorker, tasks_by_id: dict, rollouts: list[dict]) -> list[dict]:
    items = [(TaskView(t.prompt, t.entry_point, t.test), truncate_completion(r["text"]))
             for r in rollouts for t in [tasks_by_id[r["task_id"]]]]
    return [components.reward_dict(x) for x in sandbox.score_batch(items)]


def heldout_pass1(rollout: RolloutWorker, sandbox: SandboxWorker, cfg, tasks: list) -> dict[str, float]:
    """pass@1 at the eval temperature with full and half steps (fixed seed: comparable across calls)."""
    requests = [{"task_id": t.task_id, "prompt": t.prompt} for t in tasks]
    by_id = {t.task_id: t for t in tasks}
    out = {}
    for mode, steps in (("full", cfg.rollout.steps), ("half", max(1, cfg.rollout.steps // 2))):
        gen = rollout.generate(requests, num_generations=1, seed=EVAL_SEED,
                               sampling=sampling_settings(cfg, cfg.run.eval_temperature, steps))
        rewards = score(sandbox, by_id, gen["rollouts"])
        out[mode] = sum(bool(r["all_passed"]) for r in rewards) / len(rewards)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=60, help="RL steps (default 60)")
    parser.add_argument("--eval-tasks", type=positive_int, default=96, help="held-out tasks evaluated (default 96)")
    parser.add_argument("--eval-every", type=positive_int, default=None, help="steps between evaluations "
                                                                           "(default: only before and after)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of the demo job config (repeatable), e.g. --set learner.lr=2e-4")
    args = parser.parse_args()
    try:
        cfg = with_overrides(demo_config(), args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg.run.steps = args.steps
    torch.set_num_threads(args.threads)
    train, heldout = components.load_job_tasks(cfg)
    heldout = heldout[: args.eval_tasks]
    rollout = RolloutWorker(cfg.model.path, threads=args.threads, device="cpu")
    sandbox = SandboxWorker(cfg.sandbox.backend, components.sandbox_limits(cfg), components.reward_config(cfg))
    learner = LearnerWorker(cfg.model.path, components.grpo_config(cfg))
    pad = rollout.tokenizer.pad_token_id if rollout.tokenizer.pad_token_id is not None else 0
    train_by_id = {t.task_id: t for t in train}
    cursor = TaskCursor(train, cfg.run.seed)
    print(f"scouting {args.steps} steps with {' '.join(args.set) or 'the demo config'}; "
          f"{len(heldout)} held-out tasks", flush=True)
    start = time.perf_counter()
    evals = [{"step": 0, **heldout_pass1(rollout, sandbox, cfg, heldout)}]
    print(json.dumps(evals[-1]), flush=True)
    try:
        for step in range(args.steps):
            tasks = cursor.take(cfg.rollout.prompts_per_step)
            requests = [{"task_id": t.task_id, "prompt": t.prompt, "group": g} for g, t in enumerate(tasks)]
            gen = rollout.generate(requests, num_generations=cfg.rollout.num_generations,
                                   sampling=sampling_settings(cfg), seed=cfg.run.seed * 7919 + step)
            batch = ScoredBatch(step, gen["rollouts"], score(sandbox, train_by_id, gen["rollouts"]), step, None, 0.0)
            metrics = learner.train_step(components.learner_batch(batch, cfg, pad, rollout.tokenizer.eos_token_id))
            rollout.set_weights(step + 1, [learner.get_weights(step + 1)])
            rewards = [r["reward"] for r in batch.rewards]
            print(json.dumps({"step": step + 1, "reward": round(sum(rewards) / len(rewards), 3),
                              "pass": round(sum(bool(r["all_passed"]) for r in batch.rewards) / len(rewards), 3),
                              "kl": round(metrics["kl"], 4), "grad_norm": round(metrics["grad_norm"], 3),
                              "s": round(time.perf_counter() - start)}), flush=True)
            if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
                evals.append({"step": step + 1, **heldout_pass1(rollout, sandbox, cfg, heldout)})
                print(json.dumps(evals[-1]), flush=True)
        evals.append({"step": args.steps, **heldout_pass1(rollout, sandbox, cfg, heldout)})
        print(json.dumps(evals[-1]), flush=True)
    finally:
        learner.shutdown()
        sandbox.shutdown()
    print(f"wall time {time.perf_counter() - start:.0f} s; held-out pass@1 (full / half steps): "
          + ", ".join(f"step {e['step']}: {e['full']:.3f} / {e['half']:.3f}" for e in evals))
    print(f"heldout_pass1_gain: {evals[-1]['full'] - evals[0]['full']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
