"""Cached, parallel diffusion decoding against today's sampler: rollout speed, and what it costs.

Each setting is a set of ``dllm.generate`` options (block-wise decoding, Fast-dLLM's prefix
or dual KV cache, threshold or factor parallel commits, fewer steps), fixed below before
anything was measured. Two measurements, side by side in one run:

* **speed**: generated tokens/s of today's sampler (one full pass per token) and of each
  setting, 256-token completions for a batch of 8 prompts at the rollout temperature (no
  top-p, see ``SPEED_SAMPLING``), on a seeded random Dream-layout model big enough that the
  model's passes, not the sampler's bookkeeping, take the time (``--speed-model`` times a
  real checkpoint instead). A random model is never confident, so on it the threshold and
  factor rules commit only their scheduled token per step: their speed-up there is the
  cache's alone (the quality table shows how many passes they need on a trained model).
* **quality**: held-out pass@1 of ``--model`` (default the shipped model, its 48-token
  completions) at T=0.2, every setting paired against today's sampler on the same tasks
  and seeds, scored in the sandbox by the project's evaluation code; standard errors from
  the per-task pass rates (the paired one from their per-task differences).

The best setting is chosen by a rule fixed in advance (the held-out run checks, it does not
tune): the fastest setting whose pass@1 is not below today's by more than one standard
error of the paired difference. Speed is compared on process CPU time (all threads) by
default, wall time with ``--clock wall``; both are printed, and on an idle machine they
agree. Run the speed part on a quiet machine: the load average is printed before and after,
with a warning when it exceeds the cores (under a load of 4-25 on 2 cores the dual cache
measured 2.24x instead of 6.2x by CPU time: its many small operations lose more to waiting
for cores than a full pass does). Each part can be
reused from an earlier ``--json`` (``--speed-from``, ``--quality-from``), so measuring a new
model's quality, or speed on an idle machine, costs only that part.

    python bench/rollout_speed.py [--quick] [--model DIR] [--json OUT] [--speed-from OUT] [--quality-from OUT]

Last line: ``cached_parallel_speedup: X.XX`` (generated tokens per CPU-second, or per second
with ``--clock wall``, of the best setting over today's sampler).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dllm  # noqa: E402
from bench._common import SHIPPED, ordinary_token_ids  # noqa: E402

TODAY = "today"
# name -> (generate options, steps per generated token). Fixed before the first measurement.
SETTINGS: dict[str, tuple[dict, float]] = {
    TODAY: ({}, 1.0),
    "block16": ({"block_size": 16}, 1.0),
    "block16 prefix-cache": ({"block_size": 16, "cache": "prefix"}, 1.0),
    "block16 dual-cache": ({"block_size": 16, "cache": "dual"}, 1.0),
    "block16 dual threshold0.9": ({"block_size": 16, "cache": "dual", "alg": "maskgit_plus", "threshold": 0.9}, 1.0),
    "block16 dual factor1": ({"block_size": 16, "cache": "dual", "alg": "maskgit_plus", "factor": 1.0}, 1.0),
    "block16 dual half-steps": ({"block_size": 16, "cache": "dual"}, 0.5),
}
# The rollout config's temperature and order. No top-p: on random weights every row's nucleus
# spans most of the vocabulary and takes top-p's slow path (a full sort), a cost a trained
# model rarely pays, and one that today's sampler pays on many more rows than a cached block.
SPEED_SAMPLING = {"temperature": 1.2, "top_p": None, "alg": "entropy"}
EVAL_SAMPLING = {"temperature": 0.2, "top_p": 0.95, "alg": "entropy"}  # `cgrpo eval`'s


def options_for(name: str, new_tokens: int, sampling: dict) -> dict:
    options, steps_per_token = SETTINGS[name]
    return {**sampling, **options, "max_new_tokens": new_tokens, "steps": max(1, int(new_tokens * steps_per_token))}


# --- speed ---------------------------------------------------------------------------------
def speed_model(path: str | None):
    if path:
        return dllm.load_model(path).eval(), path
    config = dllm.dream_config(1024, 1023, 1022, 1021, hidden_size=192, num_layers=4, num_heads=6, num_kv_heads=2,
                               intermediate_size=576, max_position_embeddings=1024)
    model = dllm.init_model(config, seed=0).eval()
    size = sum(p.numel() for p in model.parameters()) / 1e6
    return model, f"random Dream-layout model, hidden 192, 4 layers, {size:.1f}M parameters"


def load_note(when: str) -> str:
    """The 1-minute load average, and a warning when other work competes for the cores: with
    torch's threads waiting for cores, the many small operations of a cached step lose more
    than a full pass does, and neither clock measures the sampler any more."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    note = f"load average {load:.1f} on {cores} cores {when} the speed run"
    if load > cores:
        note += " -- WARNING: the machine is busy; speed-ups measured now are unreliable, rerun on a quiet one"
    return note


def measure_speed(args) -> dict:
    print(load_note("before"), flush=True)
    model, what = speed_model(args.speed_model)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(48, 80, (args.batch,), generator=gen).tolist()
    prompts = [ordinary_token_ids(model, n, gen) for n in lengths]
    tokens = args.batch * args.new_tokens
    rows: dict[str, dict] = {}
    print(f"speed: {what}; batch {args.batch}, prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"{args.new_tokens}-token completions, T={SPEED_SAMPLING['temperature']}, {args.rounds} round(s)", flush=True)
    for name in SETTINGS:  # warm-up
        dllm.generate(model, prompts[:2], **options_for(name, 32, SPEED_SAMPLING), seed=0)
    for round_ in range(args.rounds):  # settings interleaved, each keeps its best round
        for name in SETTINGS:
            start, cpu = time.perf_counter(), time.process_time()
            out = dllm.generate(model, prompts, **options_for(name, args.new_tokens, SPEED_SAMPLING), seed=0)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            best = rows.setdefault(name, {"wall": 0.0, "cpu": 0.0, "passes": out.steps_run})
            best["wall"], best["cpu"] = max(best["wall"], tokens / seconds), max(best["cpu"], tokens / cpu)
            print(f"  {round_ + 1}: {name:28s} {tokens / seconds:8.1f} tokens/s ({seconds:6.1f} s)  "
                  f"{tokens / cpu:8.1f} tokens/cpu-s ({cpu:6.1f} s)  {out.steps_run:4d} passes", flush=True)
    print(load_note("after"), flush=True)
    return {"model": what, "batch": args.batch, "new_tokens": args.new_tokens, "rounds": args.rounds,
            "settings": rows}


# --- quality -------------------------------------------------------------------------------
def sample(model, tokenizer, tasks, n: int, options: dict, seed: int) -> tuple[list[list[str]], dict]:
    """``n`` completions per task, batched by prompt length with seed ``seed + batch`` (as
    ``cgrpo eval`` batches them), plus the decoding statistics of the setting."""
    from evaluation.evaluate import encode_prompt

    requests = sorted(((i, encode_prompt(tokenizer, t.prompt)) for i, t in enumerate(tasks) for _ in range(n)),
                      key=lambda r: len(r[1]))
    out: list[list[str]] = [[] for _ in tasks]
    passes = batches = 0
    parallel, arness = [], []
    for b, start in enumerate(range(0, len(requests), 32)):
        batch = requests[start:start + 32]
        gen = dllm.generate(model, [ids for _, ids in batch], **options, seed=seed + b)
        passes += gen.steps_run
        batches += 1
        for row, ((i, _), ids) in enumerate(zip(batch, gen.completions)):
            out[i].append(tokenizer.decode(ids, skip_special_tokens=True))
            parallel.append(float(gen.parallel_fraction[row]))
            arness.append(dllm.local_arness(gen.order[row, :max(len(ids), 1)]))
    return out, {"passes_per_token": passes / batches / options["max_new_tokens"],
                 "parallel_fraction": sum(parallel) / len(parallel), "arness_local": sum(arness) / len(arness)}


def measure_quality(args) -> dict:
    from evaluation.evaluate import evaluate_completions
    from evaluation.stats import mean_and_se
    from tasks import load_tasks

    model_dir = Path(args.model)
    model, tokenizer = dllm.load_model(model_dir), dllm.load_tokenizer(model_dir)
    tasks = load_tasks("builtin", "heldout", limit=args.tasks)
    print(f"quality: {model_dir}, {len(tasks)} held-out tasks x {args.samples} samples, "
          f"{args.quality_tokens}-token completions, T={EVAL_SAMPLING['temperature']}", flush=True)
    rates: dict[str, list[float]] = {}
    rows = {}
    for name in SETTINGS:
        options = options_for(name, args.quality_tokens, EVAL_SAMPLING)
        completions, stats = sample(model, tokenizer, tasks, args.samples, options, seed=args.seed)
        result = evaluate_completions(tasks, completions, k_list=(1,), workers=2)
        rates[name] = [t["correct"] / t["n"] for t in result["per_task"]]
        score = mean_and_se(rates[name])
        change = mean_and_se([a - b for a, b in zip(rates[name], rates[TODAY])])
        pass1, se, delta, se_delta = score.mean, score.se, change.mean, change.se
        rows[name] = {"pass1": pass1, "se": se, "delta": delta, "se_delta": se_delta, **stats}
        print(f"  {name:28s} pass@1 {pass1:6.1%} ± {se:.1%}   vs today {delta:+6.1%} ± {se_delta:.1%}   "
              f"passes/token {stats['passes_per_token']:.2f}  parallel {stats['parallel_fraction']:.2f}", flush=True)
    return {"model": str(model_dir), "tasks": len(tasks), "samples": args.samples,
            "new_tokens": args.quality_tokens, "settings": rows}


def keeps_quality(row: dict) -> bool:
    """The rule fixed in advance: pass@1 not below today's by more than one paired standard error."""
    return row["delta"] >= -row["se_delta"]


def summary(speed: dict, quality: dict, clock: str = "cpu") -> tuple[str, float]:
    """Print the joint table; return the best setting by the fixed rule and its speed-up on ``clock``."""
    base = {c: speed["settings"][TODAY][c] for c in ("wall", "cpu")}
    print()
    print(f"{'setting':28s} {'speed-up cpu':>12s} {'wall':>6s} {'pass@1':>14s} {'vs today':>15s} "
          f"{'passes/tok':>10s} {'parallel':>8s} {'AR-ness':>7s}  keeps quality")
    best, best_speedup = TODAY, 1.0
    for name in SETTINGS:
        s, q = speed["settings"][name], quality["settings"][name]
        speedup = {c: s[c] / base[c] for c in base}
        kept = keeps_quality(q)
        if name != TODAY and kept and speedup[clock] > best_speedup:
            best, best_speedup = name, speedup[clock]
        print(f"{name:28s} {speedup['cpu']:11.2f}x {speedup['wall']:5.2f}x {q['pass1']:7.1%} ± {q['se']:4.1%} "
              f"{q['delta']:+7.1%} ± {q['se_delta']:4.1%} {q['passes_per_token']:10.2f} "
              f"{q['parallel_fraction']:8.2f} {q['arness_local']:7.2f}  {'yes' if kept else 'NO'}")
    print(f"speed: {speed['model']}, batch {speed['batch']}, {speed['new_tokens']} tokens; "
          f"quality: {quality['model']}, {quality['tasks']} tasks x {quality['samples']} samples")
    print(f"best setting (fastest whose pass@1 is within one paired standard error below today's): {best}")
    return best, best_speedup


def reused(path: str, part: str) -> dict:
    """The ``part`` table of an earlier run's ``--json``, if it covers today's settings."""
    table = json.loads(Path(path).read_text())[part]
    missing = set(SETTINGS) - set(table["settings"])
    if missing:
        raise ValueError(f"{path} lacks the {part} of settings {sorted(missing)}; measure {part} again")
    print(f"{part}: reused from {path}")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED), help="model whose quality is measured (default: shipped)")
    parser.add_argument("--quality-tokens", type=int, default=None,
                        help="completion length for quality (default: the model's pretrain.json, else 48)")
    parser.add_argument("--tasks", type=int, default=None, help="held-out tasks (default all 228)")
    parser.add_argument("--samples", type=int, default=None, help="completions per task (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-model", default=None, help="checkpoint to time instead of the random model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=None, help="completion length for speed (default 256)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="speed rounds, settings interleaved; each keeps its best (a busy machine: 3)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="speed-up from process CPU time (default: robust on a shared machine) or wall time")
    parser.add_argument("--speed-from", default=None, help="reuse the speed table of an earlier --json")
    parser.add_argument("--quality-from", default=None, help="reuse the quality table of an earlier --json")
    parser.add_argument("--json", default=None, help="write both tables here")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 57 tasks x 2 samples, 128-token speed run (explicit values win)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quick = {"tasks": 57, "samples": 2, "new_tokens": 128} if args.quick else {}
    for name, default in {"tasks": None, "samples": 4, "new_tokens": 256}.items():
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    for name in ("samples", "new_tokens", "batch", "threads", "rounds"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.quality_tokens is None:
        try:
            args.quality_tokens = int(json.loads((Path(args.model) / "pretrain.json").read_text())["max_new_tokens"])
        except (OSError, ValueError, KeyError, TypeError):
            args.quality_tokens = 48
    torch.set_num_threads(args.threads)
    try:
        speed = reused(args.speed_from, "speed") if args.speed_from else measure_speed(args)
        quality = reused(args.quality_from, "quality") if args.quality_from else measure_quality(args)
    except (OSError, ValueError, KeyError, dllm.CgrpoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best, speedup = summary(speed, quality, args.clock)
    if args.json:
        Path(args.json).write_text(json.dumps({"speed": speed, "quality": quality, "best": best}, indent=2) + "\n")
        print(f"tables written to {args.json}")
    print(f"cached_parallel_speedup: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
