"""Scout RL settings in minutes: the job's own recipe with its parts in one process, no cluster.

`cgrpo experiment` runs every job the way users do (Ray actors, sandbox pool, learner group,
Redis). Trying a learning rate that way costs the whole stack's start-up and two cores shared
by five processes. Here the recipe (``orchestrator.recipe.train``, the very loop a cluster
job runs) drives the plain ``RolloutWorker``, ``SandboxWorker`` (programs still run in the
sandbox) and a one-rank DeepSpeed ``LearnerWorker`` in this process, in sync mode, on the demo
job config with ``--set`` overrides. Held-out pass@1 (T=0.2) is measured with full and half
denoising steps before training, every ``--eval-every`` steps and at the end, on the same
tasks with the same seed, so the differences are the policy's.

    python bench/rl_scout.py --steps 60 --set learner.lr=2e-4 [--eval-tasks 96] [--eval-every 20]

Last line: ``heldout_pass1_gain: +X.XXX`` (pass@1 after minus before, full steps).
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
                          "s": round(time.perf_counter() - self.start)}), flush=True)

    def log_eval(self, **record) -> None:
        self.evals.append(record)
        print(json.dumps({k: record[k] for k in ("step", "steps_mode", "pass_at_1", "se")}), flush=True)

    def event(self, message: str, level: str = "info") -> None:
        pass

    def set_rollout(self, sample: dict) -> None:
        pass


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
        cfg = with_overrides(demo_config(), args.set + [
            f"run.steps={args.steps}", "run.mode=sync", "run.checkpoint_every=0", f"run.eval_tasks={args.eval_tasks}",
            f"run.eval_every={args.eval_every or args.steps}"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_tasks, heldout = load_job_tasks(cfg.tasks)
    parts = local_parts(cfg, threads=args.threads)
    log = ConsoleLog()
    print(f"scouting {args.steps} steps with {' '.join(args.set) or 'the demo config'}; "
          f"{min(len(heldout), args.eval_tasks)} held-out tasks", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rl-scout-") as out_dir:
            train(cfg, parts, train_tasks, heldout[: args.eval_tasks], log, Path(out_dir))
    finally:
        parts.shutdown()
    full = [e for e in log.evals if e["steps_mode"] == "full"]
    half = {e["step"]: e["pass_at_1"] for e in log.evals if e["steps_mode"] == "half"}
    print(f"wall time {time.perf_counter() - log.start:.0f} s; held-out pass@1 (full / half steps): "
          + ", ".join(f"step {e['step']}: {e['pass_at_1']:.3f} / {half.get(e['step'], float('nan')):.3f}" for e in full))
    print(f"heldout_pass1_gain: {full[-1]['pass_at_1'] - full[0]['pass_at_1']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
