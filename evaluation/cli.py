"""``cgrpo eval`` (pass@k of a model folder on a task split, every program run in the sandbox) and
``cgrpo probe`` (the copy probe: no code run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tasks.cli import SPLIT_HELP, write_json
from tasks.record import TaskError


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="pass@k of a model on a split, every program run in the sandbox",
                               description="Sample --n completions per task with the diffusion sampler, run each "
                               "program against the task's tests in the sandbox, and print pass@k (unbiased "
                               "estimator) for every --k.")
    ev.add_argument("--model", default="models/tiny-dllm", help="model folder (default models/tiny-dllm)")
    ev.add_argument("--split", default="heldout", help=f"{SPLIT_HELP} (default heldout)")
    ev.add_argument("--k", type=int, nargs="+", default=[1], help="k values for pass@k (default 1)")
    ev.add_argument("--n", type=int, default=None, help="samples per task (default: the largest k)")
    ev.add_argument("--temperature", type=float, nargs="+", default=[0.2],
                    help="sampling temperature(s); one row per value (default 0.2)")
    ev.add_argument("--steps", type=int, default=None, help="denoising steps (default: --max-new-tokens)")
    ev.add_argument("--half-steps", action="store_true",
                    help="also evaluate with half the steps (twice as fast; shows the pass@k drop)")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="completion length in tokens (default: the model's pretrain.json value, else 48)")
    ev.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    ev.add_argument("--alg", default="entropy", help="unmasking order: entropy, maskgit_plus, topk_margin, origin")
    ev.add_argument("--block-size", type=int, default=None, metavar="B",
                    help="decode in blocks of B tokens, left to right (default: one block); the demo job "
                         "samples with 16")
    ev.add_argument("--cache", choices=("none", "prefix", "dual"), default="none",
                    help="Fast-dLLM's approximate KV cache, refreshed at each block's start (default none; the "
                         "demo job uses dual)")
    ev.add_argument("--baseline", default=None, metavar="DIR",
                    help="also evaluate this model folder on the same tasks with the same seeds and print the "
                         "paired change of pass@k (each task against itself) with its standard error")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first L tasks")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ev.add_argument("--batch-size", type=int, default=32, help="sequences per sampler call (default 32)")
    ev.add_argument("--workers", type=int, default=2, help="sandbox programs run in parallel (default 2)")
    ev.add_argument("--backend", default="auto", help="sandbox backend: auto, docker, jail (default auto)")
    ev.add_argument("--ray-sandbox", type=int, default=0, metavar="N",
                    help="score with a Ray SandboxPool of N actors on a local Ray instead of threads")
    ev.add_argument("--json", metavar="PATH", help="write the full results as JSON ('-' for stdout)")
    ev.add_argument("--samples", type=int, default=0, metavar="N", help="keep one completion for N tasks in --json")
    ev.set_defaults(func=_eval)

    probe = subparsers.add_parser("probe", help="the copy probe: p(right constant / letter / name) vs. chance",
                                  description="For each built-in task, mask one slot of the canonical body (a "
                                  "constant, quoted letter or argument name the docstring gives), keep the rest "
                                  "visible, and read the model's probability of the right token(s). Printed per "
                                  "slot kind, averaged over tasks with its standard error, beside chance (a uniform "
                                  "guess over the slot's alternatives). Runs no code; a few seconds. Choose "
                                  "checkpoints on --split validation; heldout is for reporting.")
    probe.add_argument("--model", default="models/tiny-dllm", help="model folder (default models/tiny-dllm)")
    probe.add_argument("--split", default="heldout", help="heldout | validation | train (default heldout)")
    probe.add_argument("--limit", type=int, default=None, help="probe only the first L tasks")
    probe.add_argument("--max-new-tokens", type=int, default=None,
                       help="completion width (default: the model's pretrain.json value, else 48)")
    probe.add_argument("--json", metavar="PATH", help="also write the result as JSON ('-' for stdout)")
    probe.set_defaults(func=_probe)


def _check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise TaskError(f"model folder {path} does not exist; pass --model with a folder holding config.json, "
                        "model.safetensors and tokenizer.json (e.g. models/tiny-dllm, made by `cgrpo pretrain`)")
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise TaskError(f"model folder {path} lacks {', '.join(missing)}; it is not a cgrpo/HF model folder")


def _model_completion_length(model_dir: Path, default: int = 48) -> int:
    """The completion length the model was trained with (``cgrpo pretrain`` records it in
    pretrain.json): a model that learned to fill N positions with body + EOS does best at N."""
    try:
        value = json.loads((model_dir / "pretrain.json").read_text()).get("max_new_tokens")
    except (OSError, ValueError, AttributeError):
        return default
    return int(value) if isinstance(value, int) and value > 0 else default


def _eval(args) -> int:
    from tasks import loader  # noqa: PLC0415
    from evaluation.evaluate import _check_k, evaluate  # noqa: PLC0415

    source, split = loader.resolve_split(args.split)
    model_dir = Path(args.model)
    _check_model_dir(model_dir)
    if args.baseline:
        _check_model_dir(Path(args.baseline))
    if args.max_new_tokens is None:
        args.max_new_tokens = _model_completion_length(model_dir)
    n = args.n or max(args.k)
    _check_k(args.k, n)
    for name, value in (("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size),
                        ("--workers", args.workers)):
        if value < 1:
            raise TaskError(f"{name} must be >= 1 (got {value})")
    if args.block_size is not None and (args.block_size < 1 or args.max_new_tokens % args.block_size):
        raise TaskError(f"--block-size must divide --max-new-tokens ({args.max_new_tokens}); got {args.block_size}")
    steps = args.steps or args.max_new_tokens
    if not 1 <= steps <= args.max_new_tokens:
        raise TaskError(f"--steps must be between 1 and --max-new-tokens ({args.max_new_tokens}); got {steps}")
    tasks = loader.load_tasks(source, split, limit=args.limit)

    import dllm  # noqa: PLC0415
    from errors import validated  # noqa: PLC0415
    from rollout.config import SamplingConfig  # noqa: PLC0415

    # the job YAML's sampler block: checked as one (steps per block, --alg, --top-p) before any work
    sampler = validated(SamplingConfig, {"max_new_tokens": args.max_new_tokens, "steps": steps, "top_p": args.top_p,
                                         "alg": args.alg, "block_size": args.block_size, "cache": args.cache},
                        source="cgrpo eval (--steps, --max-new-tokens, --block-size, --alg, --top-p)", error=TaskError)

    models = {"model": model_dir, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    loaded = {role: (dllm.load_model(d), dllm.load_tokenizer(d)) for role, d in models.items()}
    pool = _ray_pool(args) if args.ray_sandbox else None
    modes = [("full", sampler)] + ([("half", sampler.half_steps())] if args.half_steps else [])
    runs = []
    for temperature in args.temperature:
        for mode, mode_sampler in modes:
            print(f"eval {args.split}: {len(tasks)} tasks x {n} samples, T={temperature}, "
                  f"steps={mode_sampler.steps} ({mode})", file=sys.stderr)
            results = {role: evaluate(
                model, tokenizer, tasks, k_list=args.k, n=n, **mode_sampler.at(temperature=temperature).model_dump(),
                batch_size=args.batch_size, seed=args.seed, workers=args.workers, backend=args.backend, pool=pool,
                progress=True, keep_samples=args.samples)
                for role, (model, tokenizer) in loaded.items()}
            result = results["model"]
            result.update({"split": args.split, "steps_mode": mode, "model": str(model_dir)})
            if "baseline" in results:
                result["vs_baseline"] = _paired_change(results["baseline"], result, sorted(set(args.k)))
                result["vs_baseline"]["model"] = args.baseline
            runs.append(result)
    _print_summary(runs, sorted(set(args.k)), to_stderr=args.json == "-")
    write_json(args.json, {"runs": runs})
    return 0


def _probe(args) -> int:
    from tasks import loader  # noqa: PLC0415
    from evaluation.probe import copy_probe  # noqa: PLC0415

    source, split = loader.resolve_split(args.split)
    if source != "builtin":
        raise TaskError(f"--split {args.split}: the copy probe reads the built-in tasks' slots; "
                        "use heldout, validation or train")
    model_dir = Path(args.model)
    _check_model_dir(model_dir)
    width = args.max_new_tokens or _model_completion_length(model_dir)
    tasks = loader.load_tasks(source, split, limit=args.limit)

    import dllm  # noqa: PLC0415

    result = copy_probe(dllm.load_model(model_dir), dllm.load_tokenizer(model_dir), tasks, width=width)
    result.update({"model": str(model_dir), "split": args.split})
    _print_probe(result, to_stderr=args.json == "-")
    write_json(args.json, result)
    return 0


def _print_probe(result: dict, to_stderr: bool = False) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"copy probe on {result['split']} ({result['tasks']} tasks, "
                  f"{result['without_slot']} without a slot), {result['model']}")
    for col in ("slot", "tasks", "slots", "p(right)", "± se", "chance", "ratio"):
        table.add_column(col, justify="left" if col == "slot" else "right")
    for kind, r in result["by_kind"].items():
        table.add_row(kind, str(r["tasks"]), str(r["slots"]), f"{r['p_correct']:.3f}", f"{r['se']:.3f}",
                      f"{r['chance']:.3f}", f"{r['p_correct'] / r['chance']:.2f}x")
    Console(stderr=to_stderr).print(table)


def _ray_pool(args):
    import ray  # noqa: PLC0415
    from sandbox import Limits  # noqa: PLC0415
    from sandbox.pool import SandboxPool  # noqa: PLC0415

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=max(args.ray_sandbox, 1), include_dashboard=False, log_to_driver=False)
    return SandboxPool(args.ray_sandbox, args.backend, Limits())


def _paired_change(baseline: dict, result: dict, ks: list[int]) -> dict:
    """pass@k of ``result`` minus ``baseline``'s, task by task (same tasks, same seeds)."""
    from evaluation.stats import paired_difference  # noqa: PLC0415

    def counts(r: dict) -> list[tuple[int, int]]:
        return [(t["n"], t["correct"]) for t in r["per_task"]]

    change = {str(k): paired_difference(counts(baseline), counts(result), k) for k in ks}
    return {"pass_at_k": baseline["pass_at_k"], "pass_at_k_se": baseline["pass_at_k_se"],
            "change": {k: e.mean for k, e in change.items()}, "change_se": {k: e.se for k, e in change.items()}}


def _print_summary(runs: list[dict], ks: list[int], to_stderr: bool = False) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"pass@k ± standard error on {runs[0]['split']} ({runs[0]['num_tasks']} tasks, "
                        f"n={runs[0]['n']})")
    for col in ["temperature", "steps", *[f"pass@{k}" for k in ks], "programs run", "gen s", "exec s", "statuses"]:
        table.add_column(col, justify="right" if col != "statuses" else "left")
    for r in runs:
        table.add_row(f"{r['temperature']:g}", f"{r['steps']} ({r['steps_mode']})",
                      *[f"{100 * r['pass_at_k'][str(k)]:.1f}% ± {100 * r['pass_at_k_se'][str(k)]:.1f}" for k in ks],
                      str(r["programs_run"]),
                      f"{r['gen_seconds']:.1f}", f"{r['exec_seconds']:.1f}",
                      ", ".join(f"{s} {c}" for s, c in sorted(r["statuses"].items())))
    Console(stderr=to_stderr).print(table)
    for r in runs:
        if "vs_baseline" in r:
            b = r["vs_baseline"]
            print(f"T={r['temperature']:g}, {r['steps']} steps ({r['steps_mode']}), against {b['model']}: " + "; ".join(
                f"pass@{k} {100 * b['pass_at_k'][str(k)]:.1f}% ± {100 * b['pass_at_k_se'][str(k)]:.1f} -> "
                f"{100 * r['pass_at_k'][str(k)]:.1f}%, change {100 * b['change'][str(k)]:+.1f} points "
                f"(paired se {100 * b['change_se'][str(k)]:.1f})" for k in ks), file=sys.stderr if to_stderr else None)
    limited = sum(r.get("harness_limited", 0) for r in runs)
    if limited:
        print(f"{limited} program(s) failed only because a test needs more than plain data to reach the "
              "program (harness limitation, see docs/sandbox.md): counted as not passed", file=sys.stderr)


