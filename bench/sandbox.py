"""Executions/s of a tiny passing program: the jail's warm executor vs. a bare interpreter spawn.

Every side runs the same program (a function and one assert) with the same concurrency
(``--workers``, default 2: one per core here), interleaved round by round so machine
noise hits all alike; the best round of each counts. Two bare baselines, no isolation
at all: ``subprocess.run([python, "-c", program])`` with this project's interpreter (the
issue's definition, the headline ratio), and ``[python, "-I", "-S", "-c", program]`` with
the interpreter and flags the jail's executor uses (the cheapest cold start: no
site-packages, no .pth hooks; printed as ``ratio_vs_isolated_spawn``). Where a Docker
engine and the sandbox image answer, it also measures the Docker backend (warm container,
programs over stdin), one ``docker run`` per program and one ``docker exec`` per program.

    python bench/sandbox.py [--programs 200] [--workers 2] [--rounds 3]

Last line: ``ratio_vs_bare_spawn: X.XX`` (jail executions/s over ``python -c`` spawns/s;
target >= 3).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import Limits, container
from sandbox.jail import JailBackend, interpreter

PROGRAM = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\n"


def rate(n: int, workers: int, one) -> float:
    """Executions/s of ``one(worker_index)`` called ``n`` times over ``workers`` threads."""
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]

    def loop(i: int) -> None:
        for _ in range(per[i]):
            one(i)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(loop, range(workers)))
    return n / (time.perf_counter() - start)


def bare_spawn(*cmd: str):
    src = PROGRAM + TESTS

    def one(_i: int) -> None:
        out = subprocess.run([*cmd, src], capture_output=True)
        assert out.returncode == 0, out.stderr

    return one


def backend_runner(backends):
    limits = Limits()

    def one(i: int) -> None:
        res = backends[i].run(PROGRAM, TESTS, limits=limits)
        assert res.status == "passed", res

    return one


def docker_per_program(args, python_src: str) -> tuple[float, float]:
    """(docker run per program, docker exec per program) executions/s, sequential."""
    cli = container.docker_cli()
    base = ["--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--read-only", "--user", "65534:65534"]
    n_run = max(3, args.programs // 40)
    start = time.perf_counter()
    for _ in range(n_run):
        subprocess.run([cli, "run", "--rm", *base, container.IMAGE, "-c", python_src],
                       check=True, capture_output=True)
    run_rate = n_run / (time.perf_counter() - start)
    name = f"cgrpo-bench-{int(time.time())}"
    subprocess.run([cli, "run", "-d", "--rm", "--name", name, *base, "--entrypoint", "sleep",
                    container.IMAGE, "300"], check=True, capture_output=True)
    try:
        n_exec = max(5, args.programs // 10)
        start = time.perf_counter()
        for _ in range(n_exec):
            subprocess.run([cli, "exec", name, "python3", "-c", python_src], check=True,
                           capture_output=True)
        exec_rate = n_exec / (time.perf_counter() - start)
    finally:
        subprocess.run([cli, "rm", "-f", name], capture_output=True)
    return run_rate, exec_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=200, help="programs per round and side")
    ap.add_argument("--workers", type=int, default=2, help="concurrent executors / spawners")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    args = ap.parse_args()
    python = interpreter()[0]
    print(f"program: {PROGRAM.strip()!r} + {TESTS.strip()!r}; {args.programs} programs x "
          f"{args.rounds} rounds, {args.workers} workers")
    print(f"bare spawn: {sys.executable} -c; isolated spawn: {python} -I -S -c")

    jails = [JailBackend() for _ in range(args.workers)]
    for j in jails:
        j.start()
    sides = {"bare spawn": bare_spawn(sys.executable, "-c"),
             "isolated spawn": bare_spawn(python, "-I", "-S", "-c"),
             "jail (warm executor)": backend_runner(jails)}
    dockers = []
    reason = container.why_unavailable()
    if reason is None:
        dockers = [container.DockerBackend() for _ in range(args.workers)]
        for d in dockers:
            d.start()
        sides["docker (warm container)"] = backend_runner(dockers)
    best: dict[str, float] = {}
    try:
        for side, one in sides.items():  # warm-up: page cache, executors' first fork
            rate(args.workers * 4, args.workers, one)
        for r in range(args.rounds):
            for side, one in sides.items():
                got = rate(args.programs, args.workers, one)
                best[side] = max(best.get(side, 0.0), got)
                print(f"round {r + 1}: {side:24s} {got:8.1f} exec/s")
    finally:
        for b in jails + dockers:
            b.close()
    print()
    for side, got in best.items():
        print(f"{side:24s} {got:8.1f} exec/s  ({1000 / got * args.workers:6.1f} ms per program per worker)")
    if reason is None:
        run_rate, exec_rate = docker_per_program(args, PROGRAM + TESTS)
        print(f"{'docker run per program':24s} {run_rate:8.1f} exec/s  ({1000 / run_rate:6.1f} ms per program, sequential)")
        print(f"{'docker exec per program':24s} {exec_rate:8.1f} exec/s  ({1000 / exec_rate:6.1f} ms per program, sequential)")
        print(f"docker_warm_vs_docker_run: {best['docker (warm container)'] / run_rate:.2f}")
    else:
        print(f"docker: skipped ({reason})")
    print(f"ratio_vs_isolated_spawn: {best['jail (warm executor)'] / best['isolated spawn']:.2f}")
    print(f"ratio_vs_bare_spawn: {best['jail (warm executor)'] / best['bare spawn']:.2f}")


if __name__ == "__main__":
    main()
