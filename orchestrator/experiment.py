"""`cgrpo experiment`: does it learn? coupled vs. decoupled vs. d1 at equal forward-pass cost.

From the shipped tiny model, runs one RL job per estimator (the demo's recipe on the long
schedule of ``bench/learning.py``, ``orchestrator.config.LONG_SCHEDULE``) with the same code
users run at scale (Ray actors, sandbox pool, DeepSpeed learner), then evaluates the untrained
baseline and every result on the held-out split with the job's sampler: pass@1 at T=0.2 with
full and half denoising steps, pass@8 at T=1.2, local/global AR-ness (plain sampler, where the
order is the model's own) at T=0.2 and T=1.2. Writes ``docs/results.md`` with the table, the
plots and how it was run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from errors import ConfigError
from evaluation.report import write_report
from orchestrator.config import REPO, long_schedule_config, with_overrides

# Forward passes per log-prob estimate, equal for the three estimators:
# coupled: full + 1 complementary pair; decoupled: full + 2 independent masks; d1: 3 full-mask passes.
ESTIMATOR_SETTINGS = {
    "coupled": {"estimator": "coupled", "num_pairs": 1},
    "decoupled": {"estimator": "decoupled", "num_pairs": 1},
    "d1": {"estimator": "d1", "d1_num_passes": 3},
}


def arness_at(model, tokenizer, tasks, *, temperature: float, steps: int, max_new_tokens: int, seed: int) -> dict:
    """Mean local/global AR-ness@1 of the decoding orders on the tasks' prompts."""
    import dllm
    from evaluation.evaluate import encode_prompt
    prompts = [encode_prompt(tokenizer, t.prompt) for t in tasks]
    local, global_, count = 0.0, 0.0, 0
    for start in range(0, len(prompts), 32):
        gen = dllm.generate(model, prompts[start:start + 32], max_new_tokens=max_new_tokens, steps=steps,
                            temperature=temperature, top_p=0.95, alg="entropy", seed=seed + start)
        for row, completion in zip(gen.order, gen.completions):
            n = max(len(completion), 1)  # the answer's tokens, not the EOS padding after it
            local += dllm.local_arness(row[:n]) if n else 0
            global_ += dllm.global_arness(row[:n]) if n else 0
            count += 1
    return {"local": local / count, "global": global_ / count}


def evaluate_model(path: str, tasks, cfg, seed: int = 0, pass1_samples: int = 4) -> dict:
    """The experiment's held-out evaluation of one model folder (sandboxed). pass@1 at T=0.2 is
    the unbiased estimate from ``pass1_samples`` completions per task: with one, sampling noise
    alone moved the same model's score by several points between runs."""
    import dllm
    from evaluation.evaluate import evaluate
    model, tokenizer = dllm.load_model(path), dllm.load_tokenizer(path)
    # the job's sampler, blocks and cache included: the policy is trained and served through it
    sampling = cfg.rollout.sampling
    n_tok, steps = sampling.max_new_tokens, sampling.steps
    common = dict(seed=seed, workers=2, backend=cfg.sandbox.backend)
    start = time.perf_counter()
    n = pass1_samples
    full = evaluate(model, tokenizer, tasks, k_list=(1,), n=n, **sampling.at(temperature=0.2).model_dump(), **common)
    half = evaluate(model, tokenizer, tasks, k_list=(1,), n=n, **sampling.half_steps().at(temperature=0.2).model_dump(),
                    **common)
    hot = evaluate(model, tokenizer, tasks, k_list=(1, 8), n=8, **sampling.at(temperature=1.2).model_dump(), **common)
    runs = {"full": full, "half": half, "hot": hot}
    return {
        "pass1_full": full["pass_at_k"]["1"], "pass1_half": half["pass_at_k"]["1"],
        "pass1_T1.2": hot["pass_at_k"]["1"], "pass8_T1.2": hot["pass_at_k"]["8"],
        "se": {"pass1_full": full["pass_at_k_se"]["1"], "pass1_half": half["pass_at_k_se"]["1"],
               "pass1_T1.2": hot["pass_at_k_se"]["1"], "pass8_T1.2": hot["pass_at_k_se"]["8"]},
        # per-task (samples, passed): the report compares models task by task (paired)
        "counts": {name: [[t["n"], t["correct"]] for t in r["per_task"]] for name, r in runs.items()},
        "arness_T0.2": arness_at(model, tokenizer, tasks, temperature=0.2, steps=steps, max_new_tokens=n_tok, seed=seed),
        "arness_T1.2": arness_at(model, tokenizer, tasks, temperature=1.2, steps=steps, max_new_tokens=n_tok, seed=seed),
        "eval_s": time.perf_counter() - start,
    }


def run_experiment(args) -> dict:
    import ray

    import jobstate as st
    from orchestrator.driver import run_job
    from orchestrator.job_commands import require_redis
    from tasks import load_job_tasks
    base = with_overrides(long_schedule_config(), args.set)
    base.run.steps = args.steps or base.run.steps
    # In-job held-out evaluations (start, every eval_every steps, end) give pass@1 vs. step.
    base.run.eval_every = args.eval_every if args.eval_every is not None else max(1, base.run.steps // 4)
    base.run.checkpoint_every = 0
    base.run.seed = args.seed
    base.run.eval_tasks = args.eval_tasks or 10**6
    client = require_redis(base.redis.url)  # jobs log to Redis: fail now, not after the baseline evaluation
    _, heldout = load_job_tasks(base.tasks)
    heldout = heldout[: base.run.eval_tasks]
    results = {"settings": {"steps": base.run.steps, "seed": args.seed, "eval_tasks": len(heldout),
                            "overrides": args.set, "pass1_samples": args.pass1_samples,
                            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "config": base.model_dump(mode="json")},
               "models": {}, "curves": {}, "evals": {}}
    t0 = time.perf_counter()
    print("evaluating the untrained baseline ...", flush=True)
    results["models"]["baseline"] = evaluate_model(base.model.path, heldout, base, args.seed, args.pass1_samples)
    print(json.dumps(results["models"]["baseline"]), flush=True)
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        for name in args.estimators:
            cfg = base.model_copy(update={"grpo": base.grpo.model_copy(update=ESTIMATOR_SETTINGS[name])})
            job_id = f"experiment-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            start = time.perf_counter()
            print(f"training with the {name} estimator ({base.run.steps} steps) ...", flush=True)
            summary = run_job(cfg, job_id, on_step=lambda s, m: print(
                f"  {name} step {s}: reward {m['reward_mean']:.3f} pass {m['pass_rate']:.2f}", flush=True))
            train_s = time.perf_counter() - start
            results["curves"][name] = [{"step": m["step"], "reward_mean": m.get("reward_mean"),
                                        "pass_rate": m.get("pass_rate")}
                                       for m in st.read_metrics(client, job_id).items]
            results["evals"][name] = [{"step": e["step"], "mode": e["steps_mode"], "pass_at_1": e["pass_at_1"]}
                                      for e in st.read_evals(client, job_id).items]
            results["models"][name] = evaluate_model(summary["export"], heldout, base, args.seed, args.pass1_samples)
            results["models"][name].update(train_s=train_s, job_id=job_id)
            print(json.dumps(results["models"][name]), flush=True)
    finally:
        ray.shutdown()
    results["settings"]["wall_s"] = time.perf_counter() - t0
    return results


def command_line(results: dict) -> str:
    """The command that reproduces a run, from what the run saved."""
    s = results["settings"]
    every = (s.get("config") or {}).get("run", {}).get("eval_every")
    trained = [n for n in results["models"] if n != "baseline"]
    parts = ["cgrpo experiment", f"--steps {s['steps']}"] + ([f"--eval-every {every}"] if every else []) + [
        f"--eval-tasks {s['eval_tasks']}", f"--pass1-samples {s.get('pass1_samples', 1)}", f"--seed {s['seed']}"]
    if trained and trained != list(ESTIMATOR_SETTINGS):
        parts.append("--estimators " + " ".join(trained))
    return " ".join(parts + [f"--set {x}" for x in s.get("overrides") or []])


def _saved_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--report-from: cannot read {str(path)!r} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--report-from: {str(path)!r} is not JSON ({exc})") from None
    if not isinstance(results, dict) or not {"settings", "models", "curves"} <= set(results):
        raise ConfigError(f"--report-from: {str(path)!r} is not a results.json written by `cgrpo experiment`")
    return results


def cmd_experiment(args) -> int:
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    if args.report_from:  # re-render the report of an earlier run from its saved results
        results = _saved_results(Path(args.report_from))
        write_report(results, out, command_line(results))
        print(f"wrote {args.out} from {args.report_from}")
        return 0
    results = run_experiment(args)
    write_report(results, out, command_line(results))
    print(f"wrote {args.out}")
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="coupled vs. decoupled vs. d1 from the shipped model → docs/results.md",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=None,
                   help="RL steps per estimator (default: the long schedule's 200, as bench/learning.py)")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATOR_SETTINGS), choices=list(ESTIMATOR_SETTINGS))
    p.add_argument("--eval-tasks", type=positive_int, default=None,
                   help="held-out tasks evaluated (default: all 228 of the built-in held-out split)")
    p.add_argument("--eval-every", type=positive_int, default=None,
                   help="RL steps between the in-job held-out evaluations (default: a quarter of --steps)")
    p.add_argument("--pass1-samples", type=positive_int, default=8,
                   help="completions per task behind each pass@1 at T=0.2 (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field of the job config (the demo's, on the long schedule) for every job "
                        "(repeatable), e.g. "
                        "--set learner.lr=1e-4 --set rollout.sampling.temperature=0.8; fields: docs/config.md")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--report-from", default=None, metavar="RESULTS_JSON",
                   help="only re-render the report from a saved docs/results/results.json")
    p.set_defaults(func=cmd_experiment)
