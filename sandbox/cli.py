"""``cgrpo sandbox run`` and ``cgrpo sandbox info``: run one program the way rewards do.

For users debugging a reward ("why did this completion score 0?") and for scripted
checks: prints exactly one JSON object and exits 0 whatever the program did; exit 2 only
for this command's own usage errors (missing file, bad limit, unavailable backend).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from sandbox.errors import SandboxError

_EPILOG = """\
The JSON object has: status (passed|failed|error|timeout|killed), tests_passed,
tests_total, outcomes (per test), failures (each failed test's source and why, e.g.
"AssertionError: got 4, expected 5"), harness_limitations, stdout, stderr (truncated to
the output limit), duration_s, backend, backend_note, detail, exit_code.

Tests run in a process of their own (the judge), not in the program's: names the tests
read without defining them (the function under test) are the program's, and calling one
calls the program, which answers with plain data only (None, bool, int, float, complex,
str, bytes, list, tuple, dict, set). A test that needs more (a generator, an instance of
the program's class) fails as a "harness limitation". A HumanEval-style
`def check(candidate): assert ...` followed by `check(fn)` is split into its asserts, so
tests_passed counts asserts. A program with no tests that exits 0 is "passed".

examples:
  cgrpo sandbox run solution.py --tests tests.py
  cgrpo sandbox run bomb.py --backend jail --timeout 2 --memory-mb 256
  cgrpo sandbox info
"""


def _read(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise SandboxError(f"{what} file {path} does not exist; give the path of a Python file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxError(f"cannot read {what} file {path}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from sandbox import Limits
    from sandbox.backends import make_backend
    from sandbox.harness import split_tests
    from sandbox.result import infra_error

    program = _read(args.program, "program")
    tests = _read(args.tests, "tests") if args.tests else None
    limits = Limits(wall_s=args.timeout, cpu_s=args.cpu_timeout or args.timeout,
                    memory_mb=args.memory_mb, max_procs=args.max_procs,
                    output_bytes=args.output_bytes)
    units = split_tests(tests)  # bad tests: a usage error (exit 2), before anything starts
    backend = make_backend(args.backend)
    try:
        result = backend.run(program, tests, limits=limits, units=units)
    except Exception as exc:  # whatever happened, the answer is still one JSON object
        result = infra_error(f"{type(exc).__name__}: {exc}", backend.name)
    finally:
        backend.close()
    out = result.to_dict()
    out["backend_note"] = backend.note
    print(strict_json(out, indent=2 if args.pretty else None))
    return 0


def strict_json(value, indent: int | None = None) -> str:
    """JSON that every parser accepts: no NaN or Infinity (they become null)."""
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _info(args: argparse.Namespace) -> int:
    from sandbox import container
    from sandbox.backends import resolve

    name, note = resolve("auto")
    print(json.dumps({"auto": name, "note": note, "docker_engine": container.engine_version(),
                      "docker_image": container.IMAGE,
                      "docker_unavailable_because": container.why_unavailable()}))
    return 0


def register(subparsers) -> None:
    sp = subparsers.add_parser("sandbox", help="run untrusted programs in the sandbox",
                               description="Run programs and their tests in the sandbox "
                               "the reward path uses (jail or Docker).")
    sub = sp.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="run PROGRAM.py (and its tests); print one JSON result",
                         description="Run PROGRAM.py in the sandbox and judge it with TESTS.py "
                         "(run in a process of their own); print one JSON object. Exits 0 "
                         "whatever the program did.",
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("program", metavar="PROGRAM.py", help="the program to run")
    run.add_argument("--tests", metavar="TESTS.py", help="tests that judge the program")
    run.add_argument("--backend", choices=["auto", "jail", "docker"], default="auto",
                     help="auto (default): Docker when an engine and the image are there, "
                     "else the jail; the JSON says which and why")
    run.add_argument("--timeout", type=float, default=5.0, metavar="S",
                     help="wall-clock limit in seconds (default 5)")
    run.add_argument("--cpu-timeout", type=float, default=None, metavar="S",
                     help="CPU-time limit in seconds (default: same as --timeout)")
    run.add_argument("--memory-mb", type=int, default=512, metavar="M",
                     help="memory (address space) limit in MB (default 512)")
    run.add_argument("--max-procs", type=int, default=16, metavar="N",
                     help="processes + threads limit (default 16)")
    run.add_argument("--output-bytes", type=int, default=64_000, metavar="B",
                     help="stdout+stderr kept; more kills the program (default 64000)")
    run.add_argument("--pretty", action="store_true", help="indent the JSON")
    run.set_defaults(func=_run)
    info = sub.add_parser("info", help="which backend `auto` picks here, and why")
    info.set_defaults(func=_info)
    sp.set_defaults(func=lambda args: (sp.print_help(), 2)[1])
