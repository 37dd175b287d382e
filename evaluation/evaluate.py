"""pass@k evaluation: sample ``n`` completions per task with the diffusion sampler, run every
program in the sandbox, and estimate pass@k without bias.

``evaluate`` is what ``cgrpo eval`` and the experiment call (a running job evaluates through its
own rollout and sandbox pools: ``orchestrator.recipe.evaluate``);
``evaluate_completions`` is the half that needs no model (completions in, pass@k out), so
the scoring can be tested and reused alone. Model output is only ever executed through
``sandbox.run_program`` (or a ``SandboxPool``), never in this process.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

from evaluation.stats import mean_pass_at_k, pass_at_k_estimate
from tasks.execute import HARNESS_LIMITED, progress_bar, run_completions
from tasks.record import Task, TaskError


def truncate_completion(text: str) -> str:
    """Cut a completion where the function body ends: at the first non-empty line that starts
    at column 0 after the first line (a new top-level ``def``, ``print``, test code ...).
    The completion is a function body, so anything top-level after it is not part of the
    answer and must not run (HumanEval's stop sequences, generalised)."""
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line and not line[0].isspace():
            return "\n".join(lines[:i]) + "\n"
    return text


def _check_k(k_list: Sequence[int], n: int) -> list[int]:
    ks = sorted({int(k) for k in k_list})
    if not ks or ks[0] < 1:
        raise TaskError(f"--k values must be >= 1 (got {list(k_list)})")
    if ks[-1] > n:
        raise TaskError(f"pass@{ks[-1]} needs at least {ks[-1]} samples per task; raise --n to >= {ks[-1]}")
    return ks


def evaluate_completions(tasks: Sequence[Task], completions: Sequence[Sequence[str]], *,
                         k_list: Sequence[int] = (1,), workers: int = 2, limits=None, backend: str = "auto",
                         pool=None, progress: bool = False) -> dict[str, Any]:
    """pass@k for given completions (``completions[i]`` are the samples for ``tasks[i]``)."""
    if len(tasks) != len(completions):
        raise TaskError(f"{len(tasks)} tasks but {len(completions)} completion lists")
    n_min = min((len(c) for c in completions), default=0)
    ks = _check_k(k_list, n_min) if tasks else sorted(set(k_list))
    flat = [(task, truncate_completion(c)) for task, cs in zip(tasks, completions) for c in cs]
    t0 = time.monotonic()
    outcomes = run_completions(flat, workers=workers, limits=limits, backend=backend, pool=pool, progress=progress)
    exec_s = time.monotonic() - t0
    per_task, statuses, pos = [], Counter(), 0
    for task, cs in zip(tasks, completions):
        mine = outcomes[pos: pos + len(cs)]
        pos += len(cs)
        statuses.update(status for _, status in mine)
        per_task.append({"task_id": task.task_id, "n": len(cs), "correct": sum(ok for ok, _ in mine)})
    counts = [(t["n"], t["correct"]) for t in per_task]
    return {
        "pass_at_k": {str(k): mean_pass_at_k(counts, k) for k in ks},
        "pass_at_k_se": {str(k): pass_at_k_estimate(counts, k).se for k in ks},
        "num_tasks": len(tasks),
        "n": n_min,
        "statuses": dict(statuses),
        "harness_limited": statuses.get(HARNESS_LIMITED, 0),
        "programs_run": len({(t.task_id, c) for t, c in flat}),
        "exec_seconds": exec_s,
        "per_task": per_task,
    }


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids as the sampler, the rollout workers and pre-training see them: the prompt's
    own tokens, no special tokens added."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def generate_completions(model, tokenizer, tasks: Sequence[Task], *, n: int, temperature: float, steps: int,
                         max_new_tokens: int, top_p: float | None = 0.95, top_k: int | None = None,
                         alg: str = "entropy", alg_temp: float = 0.0, block_size: int | None = None,
                         cache: str = "none", threshold: float | None = None, factor: float | None = None,
                         batch_size: int = 32, seed: int = 0,
                         progress: bool = False) -> tuple[list[list[str]], dict[str, float]]:
    """``n`` decoded completions per task with ``dllm.generate``, batched by prompt length;
    deterministic for a seed (batch ``b`` uses ``seed + b``). Returns (completions, timing stats).
    The sampler arguments are those of ``dllm.generate``, so a job's ``SamplingConfig`` passes
    as ``**sampling.model_dump()`` (evaluation samples the way the rollouts do)."""
    import dllm  # noqa: PLC0415 (torch is heavy; only evaluation with a model needs it)

    requests = [(i, encode_prompt(tokenizer, task.prompt)) for i, task in enumerate(tasks) for _ in range(n)]
    # Batch prompts of similar length: every step runs the whole padded batch, so less padding
    # is less compute (~25% on the built-in held-out split). Stable sort keeps it deterministic.
    requests.sort(key=lambda r: len(r[1]))
    out: list[list[str]] = [[] for _ in tasks]
    batches = [requests[i: i + batch_size] for i in range(0, len(requests), batch_size)]
    bar = progress_bar(len(batches), "generating", progress)
    tokens, t0 = 0, time.monotonic()
    try:
        for b, batch in enumerate(batches):
            gen = dllm.generate(model, [ids for _, ids in batch], max_new_tokens=max_new_tokens, steps=steps,
                                temperature=temperature, top_p=top_p, top_k=top_k, alg=alg, alg_temp=alg_temp,
                                block_size=block_size, cache=cache, threshold=threshold, factor=factor,
                                seed=seed + b)
            for (i, _), ids in zip(batch, gen.completions):
                out[i].append(tokenizer.decode(ids, skip_special_tokens=True))
                tokens += len(ids)
            bar.update(1)
    finally:
        bar.close()
    gen_s = time.monotonic() - t0
    return out, {"gen_seconds": gen_s, "completion_tokens": tokens,
                 "sequences_per_s": len(requests) / gen_s if gen_s > 0 else 0.0}


def evaluate(model, tokenizer, tasks: Sequence[Task], *, k_list: Sequence[int] = (1,), temperature: float = 0.2,
             steps: int | None = None, n: int | None = None, max_new_tokens: int = 48, top_p: float | None = 0.95,
             top_k: int | None = None, alg: str = "entropy", alg_temp: float = 0.0, block_size: int | None = None,
             cache: str = "none", threshold: float | None = None, factor: float | None = None,
             batch_size: int = 32, seed: int = 0, workers: int = 2, limits=None,
             backend: str = "auto", pool=None, progress: bool = False, keep_samples: int = 0) -> dict[str, Any]:
    """Sample, run in the sandbox, and report pass@k for every k in ``k_list``.

    ``n`` defaults to ``max(k_list)``; ``steps`` to ``max_new_tokens`` (one token per step).
    The result holds ``pass_at_k`` ({"1": 0.31, ...}), settings, timings, per-task counts
    and (``keep_samples``) the first completions of that many tasks for inspection.
    """
    n = n or max(k_list)
    _check_k(k_list, n)
    steps = steps or max_new_tokens
    if not tasks:
        raise TaskError("no tasks to evaluate (check --split and --limit)")
    completions, gen_stats = generate_completions(
        model, tokenizer, tasks, n=n, temperature=temperature, steps=steps, max_new_tokens=max_new_tokens,
        top_p=top_p, top_k=top_k, alg=alg, alg_temp=alg_temp, block_size=block_size, cache=cache,
        threshold=threshold, factor=factor, batch_size=batch_size, seed=seed, progress=progress)
    result = evaluate_completions(tasks, completions, k_list=k_list, workers=workers, limits=limits,
                                  backend=backend, pool=pool, progress=progress)
    result.update(gen_stats)
    result.update({"temperature": temperature, "steps": steps, "max_new_tokens": max_new_tokens, "top_p": top_p,
                   "alg": alg, "block_size": block_size, "cache": cache, "seed": seed})
    if keep_samples:
        result["samples"] = [{"task_id": t.task_id, "prompt": t.prompt, "completion": c[0]}
                             for t, c in list(zip(tasks, completions))[:keep_samples]]
    return result
