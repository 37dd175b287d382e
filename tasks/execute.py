"""Run (task, completion) programs in the sandbox: the one way task code meets model output.

Used by ``cgrpo data stats --run-canonical`` (every canonical solution), ``cgrpo eval`` and
the experiment. Model output is only ever executed through ``sandbox.run_program`` or a
``SandboxPool``, never in this process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed

from tasks.record import Task, program_for


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, unit="prog" if "run" in desc else "batch", disable=not enabled,
                dynamic_ncols=True)


HARNESS_LIMITED = "harness-limited"


def _status(result) -> str:
    if result.status == "failed" and getattr(result, "harness_limitations", 0):
        return HARNESS_LIMITED
    return result.status


def run_completions(items: list[tuple[Task, str]], *, workers: int = 2, limits=None, backend: str = "auto",
                    pool=None, progress: bool = False) -> list[tuple[bool, str]]:
    """Run each (task, completion) program in the sandbox; return (passed, status) in order.

    Identical (task, completion) pairs run once. ``pool`` (a ``sandbox.pool.SandboxPool``)
    sends the work to Ray actors; otherwise a thread pool calls ``sandbox.run_program``.
    A program that did not pass because a test needed more than plain data to reach it (a
    generator, an object of its own class: docs/sandbox.md) has the status
    ``HARNESS_LIMITED``, so such tasks show up in every count instead of hiding among failures.
    """
    unique: dict[tuple[str, str], int] = {}
    order: list[int] = []
    jobs: list[tuple[Task, str]] = []
    for task, completion in items:
        key = (task.task_id, completion)
        if key not in unique:
            unique[key] = len(jobs)
            jobs.append((task, completion))
        order.append(unique[key])
    results: list[tuple[bool, str]] = [(False, "")] * len(jobs)
    bar = progress_bar(len(jobs), "running programs", progress)
    try:
        if pool is not None:
            for i, reward in enumerate(pool.score(jobs)):
                result = getattr(reward, "result", None)
                status = _status(result) if result is not None else reward.reason or "?"
                results[i] = (bool(reward.all_passed), "passed" if reward.all_passed else status)
            bar.update(len(jobs))
        else:
            from sandbox import Limits, run_program  # noqa: PLC0415

            limits = limits or Limits()

            def run_one(job: tuple[Task, str]) -> tuple[bool, str]:
                program, tests = program_for(job[0], job[1])
                result = run_program(program, tests, limits=limits, backend=backend)
                return result.status == "passed", _status(result)

            with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
                futures = {executor.submit(run_one, job): i for i, job in enumerate(jobs)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
    finally:
        bar.close()
    return [results[i] for i in order]
