"""Scout RL settings in minutes: the job's own recipe with its parts in one process, no cluster.

`cgrpo experiment` runs every job the way users do (Ray actors, sandbox pool, learner group,
Redis). Trying a learning rate that way costs the whole stack's start-up and two cores shared
by five processes. Here the recipe (``orchestrator.recipe.train``, the very loop a cluster
job runs) drives the plain ``RolloutWorker``, ``SandboxWorker`` (programs still run in the
sandbox) and a one-rank DeepSpeed ``LearnerWorker`` in this process, in sync mode, on the demo
job config with ``--set`` overrides.

Settings are chosen on the built-in *validation* split (carved from train, never trained on);
``--eval-split heldout`` is for the one final check of settings chosen that way. pass@1 at
T=0.2 is measured from ``--eval-samples`` completions per task, with full and half denoising
steps, before training, every ``--eval-every`` steps and at the end, on the same tasks with
the same seed, so the differences are the policy's; the gain is paired per task and printed
with its standard error.

    python bench/rl_scout.py --steps 60 --set learner.lr=2e-4 [--eval-tasks 165] [--eval-every 20]

``--probe-only`` skips the sampled evaluations (the slow part on 2 cores) and compares the copy
probe (p of the docstring's constants with the rest of the body visible, ``cgrpo probe``) of
the model before and after, on the same split: a cheap, low-noise first cut between settings.

Last line: ``validation_pass1_gain: +X.X points (se Y.Y)`` (or ``heldout_...``), full steps;
with ``--probe-only``, ``validation_copy_probe: A -> B``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from errors import ConfigError  # noqa: E402
from evaluation.stats import paired_difference  # noqa: E402
from orchestrator.config import demo_config, with_overrides  # noqa: E402
from orchestrator.experiment import positive_int  # noqa: E402
from orchestrator.parts import local_parts  # noqa: E402
from orchestrator.recipe import train  # noqa: E402
from tasks import load_job_tasks  # noqa: E402


class ConsoleLog:
    """The recipe's log as JSON lines on stdout (what a job writes to Redis)."""

    def __init__(self):
        self.evals: list[dict] = []
        self.start = time.perf_counter()

    def log_metrics(self, m: dict) -> None:
        print(json.dumps({"step": m["step"], "reward": round(m["reward_mean"], 3), "pass": round(m["pass_rate"], 3),
                          "kl": round(m["kl"], 4), "grad_norm": round(m["grad_norm"], 3),
                          "inpainted": round(m["inpainted_frac"], 3),
                          "s": round(time.perf_counter() - self.start)}), flush=True)

    def log_eval(self, **record) -> None:
        self.evals.append(record)
        print(json.dumps({k: round(record[k], 4) if isinstance(record[k], float) else record[k]
                          for k in ("step", "steps_mode", "pass_at_1", "se")}), flush=True)

    def event(self, message: str, level: str = "info") -> None:
        pass

    def set_rollout(self, sample: dict) -> None:
        pass


def _probe(model_dir: str, tasks: list, width: int) -> dict:
    """The copy probe's constant slots for one model folder."""
    import dllm
    from evaluation.probe import copy_probe

    return copy_probe(dllm.load_model(model_dir), dllm.load_tokenizer(model_dir), tasks, width=width)["by_kind"]["constant"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=60, help="RL steps (default 60)")
    parser.add_argument("--eval-split", choices=["validation", "heldout"], default="validation",
                        help="built-in split evaluated (default validation: choose settings there)")
    parser.add_argument("--eval-tasks", type=positive_int, default=165, help="tasks evaluated (default 165)")
    parser.add_argument("--eval-samples", type=positive_int, default=4, help="completions per task (default 4)")
    parser.add_argument("--eval-every", type=positive_int, default=None, help="steps between evaluations "
                                                                           "(default: only before and after)")
    parser.add_argument("--probe-only", action="store_true",
                        help="no sampled evaluation: compare the copy probe before and after instead")
    parser.add_argument("--keep", metavar="DIR", help="keep the job's output (checkpoint, exported model) in DIR")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of the demo job config (repeatable), e.g. --set learner.lr=2e-4")
    args = parser.parse_args()
    try:
        cfg = with_overrides(demo_config(), args.set + [
            f"run.steps={args.steps}", "run.mode=sync", "run.checkpoint_every=0", f"run.eval_tasks={args.eval_tasks}",
            f"run.eval_samples={args.eval_samples}", f"tasks.heldout={args.eval_split}",
            f"run.eval_every={0 if args.probe_only else args.eval_every or args.steps}"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_tasks, evaluated = load_job_tasks(cfg.tasks)
    parts = local_parts(cfg, threads=args.threads)
    log = ConsoleLog()
    print(f"scouting {args.steps} steps with {' '.join(args.set) or 'the demo config'}; "
          f"{min(len(evaluated), args.eval_tasks)} {args.eval_split} tasks x {args.eval_samples}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rl-scout-") as tmp:
            summary = train(cfg, parts, train_tasks, evaluated[: args.eval_tasks], log, Path(args.keep or tmp))
            if args.probe_only:
                before, after = (_probe(path, evaluated[: args.eval_tasks], cfg.rollout.sampling.max_new_tokens)
                                 for path in (cfg.model.path, summary["export"]))
    finally:
        parts.shutdown()
    if args.probe_only:
        print(f"wall time {time.perf_counter() - log.start:.0f} s")
        print(f"{args.eval_split}_copy_probe: {before['p_correct']:.3f} (se {before['se']:.3f}) -> "
              f"{after['p_correct']:.3f} (se {after['se']:.3f})")
        return 0
    full = [e for e in log.evals if e["steps_mode"] == "full"]
    half = {e["step"]: e["pass_at_1"] for e in log.evals if e["steps_mode"] == "half"}
    print(f"wall time {time.perf_counter() - log.start:.0f} s; {args.eval_split} pass@1 (full / half steps): "
          + ", ".join(f"step {e['step']}: {e['pass_at_1']:.3f} / {half.get(e['step'], float('nan')):.3f}" for e in full))
    n = args.eval_samples
    gain = paired_difference([(n, c) for c in full[0]["correct"]], [(n, c) for c in full[-1]["correct"]])
    print(f"{args.eval_split}_pass1_gain: {100 * gain.mean:+.1f} points (se {100 * gain.se:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
