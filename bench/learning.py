"""Does the demo recipe make the shipped model better? End to end through the users' path, then
a paired held-out evaluation.

1. The demo job (``orchestrator/demo.yaml``, with ``--set`` overrides) runs exactly as ``cgrpo
   run`` runs it: a local Ray cluster, rollout actors, sandbox workers, a DeepSpeed learner,
   the job's state in Redis.
2. The shipped model and the exported one are evaluated on the same held-out tasks with the
   same sampling seed (``--samples`` completions per task at T=0.2, every program run in the
   sandbox): pass@1 of each with its standard error, and the paired gain with its own.

    python bench/learning.py [--steps 200] [--samples 16] [--set learner.lr=5e-4 ...]

It runs the demo's recipe on the long schedule (``orchestrator.config.LONG_SCHEDULE``: 200
steps at lr 1e-3 where the demo runs 80 at 5e-4). The demo has to end within 10 minutes on 2
cores, this bench within 20; on the validation split 200 steps at 1e-3 gained more than at
5e-4, and 150 or 80 steps at 5e-4 less still (docs/learning.md). ``--set`` overrides apply on
top, so ``--set learner.lr=5e-4 --steps 80`` is the demo's schedule.

``--split validation`` evaluates on the built-in validation split (carved from train, never
trained on) instead: the way to compare settings through the users' path without touching
held-out.

Prints the exported model's path; the last line is
``heldout_pass1_gain: +X.X points (se Y.Y)`` (``validation_pass1_gain`` with ``--split validation``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from errors import CgrpoError  # noqa: E402
from evaluation.stats import paired_difference, pass_at_k_estimate  # noqa: E402
from orchestrator.config import LONG_SCHEDULE, long_schedule_config, with_overrides  # noqa: E402
from orchestrator.experiment import positive_int  # noqa: E402

EVAL_SEED = 20_000


def pass_counts(model_dir: str, tasks: list, cfg, samples: int, seed: int) -> list[tuple[int, int]]:
    """(samples, passed) per task for one model folder, at T=0.2 with the job's sampler (its
    blocks and cache too: the policy is trained, and served, through that sampler)."""
    import dllm
    from evaluation.evaluate import evaluate

    result = evaluate(dllm.load_model(model_dir), dllm.load_tokenizer(model_dir), tasks, k_list=(1,), n=samples,
                      **cfg.rollout.sampling.at(temperature=0.2).model_dump(), seed=seed, workers=2,
                      backend=cfg.sandbox.backend, progress=True)
    return [(t["n"], t["correct"]) for t in result["per_task"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="RL steps (default: the long schedule's 200; the demo runs 80 to end within 10 minutes)")
    parser.add_argument("--samples", type=positive_int, default=16,
                        help="completions per evaluated task (default 16)")
    parser.add_argument("--tasks", type=positive_int, default=None, help="evaluated tasks (default: all)")
    parser.add_argument("--split", choices=("heldout", "validation"), default="heldout",
                        help="built-in split evaluated (default heldout; choose settings on validation)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of the job config (repeatable), after the long schedule's "
                             f"{' '.join(LONG_SCHEDULE)}")
    args = parser.parse_args()
    try:
        steps = [f"run.steps={args.steps}"] if args.steps else []
        cfg = with_overrides(long_schedule_config(), [*args.set, *steps])
        import ray

        from orchestrator.driver import run_job
        from orchestrator.job_commands import require_redis
        from tasks import load_job_tasks, load_tasks

        require_redis(cfg.redis.url)
        _, tasks = load_job_tasks(cfg.tasks)
        if args.split == "validation":
            tasks = load_tasks("builtin", "validation")
        tasks = tasks[: args.tasks] if args.tasks else tasks
    except CgrpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    print(f"training: the demo job, {cfg.run.steps} steps at lr {cfg.learner.lr:g} "
          f"({' '.join(args.set) or 'no other overrides'})", flush=True)
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        job_id = f"learning-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = run_job(cfg, job_id, on_step=lambda s, m: print(
            f"  step {s}: reward {m['reward_mean']:.3f} pass {m['pass_rate']:.2f} kl {m['kl']:.4f}", flush=True))
    finally:
        ray.shutdown()
    train_s = time.perf_counter() - started
    print(f"exported model: {summary['export']}  (training {train_s / 60:.1f} min)", flush=True)

    eval_started = time.perf_counter()
    split = "held-out" if args.split == "heldout" else "validation"
    print(f"evaluating {len(tasks)} {split} tasks x {args.samples} samples at T=0.2, before and after", flush=True)
    before = pass_counts(cfg.model.path, tasks, cfg, args.samples, EVAL_SEED)
    after = pass_counts(summary["export"], tasks, cfg, args.samples, EVAL_SEED)
    gain = paired_difference(before, after)
    print(f"{split} pass@1 before {pass_at_k_estimate(before)}, after {pass_at_k_estimate(after)} "
          f"(evaluation {(time.perf_counter() - eval_started) / 60:.1f} min, training {train_s / 60:.1f} min)")
    print(f"exported model: {summary['export']}")
    print(f"{args.split}_pass1_gain: {100 * gain.mean:+.1f} points (se {100 * gain.se:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
