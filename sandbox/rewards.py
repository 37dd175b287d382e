"""Rewards for one completion: run its tests in the sandbox, then weigh code and format.

DESIGN's default is DiffuCoder's recipe: ``reward = 2.0 * code + 0.5 * format`` where
``code`` is the fraction of the task's asserts that passed (or 1/0 all-pass when
``all_pass`` is set) and ``format`` is 1 when the completion holds code that parses.

Two rules keep the reward honest:
* a completion with no extractable code (empty, or an empty code fence) scores 0 with
  reason ``"no code"``, and is never sent to the sandbox;
* only a program that ran within its limits (status ``passed`` or ``failed``) earns any
  reward: one that did not load, timed out or had to be killed gets 0, format included,
  so neither junk that merely parses nor a hostile program is ever paid.

A *task* is anything with ``prompt``, ``entry_point`` and ``test`` attributes (the
``Task`` record of :mod:`tasks`); this module does not import it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sandbox.errors import SandboxError
from sandbox.harness import task_tests
from sandbox.limits import Limits
from sandbox.result import ExecResult

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
MAX_CODE_CHARS = 200_000


@dataclass(frozen=True)
class RewardConfig:
    """Weights and switches of the reward (the job's ``sandbox.rewards``).

    code_weight             weight of the code reward (fraction of tests passed, DiffuCoder: 2.0)
    format_weight           weight of the format reward (the completion holds code that parses: 0.5)
    all_pass                code reward 1 only when every test passes (else the fraction passed)
    format_needs_clean_run  format reward only for programs that ran within their limits
    """

    code_weight: float = 2.0
    format_weight: float = 0.5
    all_pass: bool = False
    format_needs_clean_run: bool = True

    def __post_init__(self) -> None:
        for name in ("code_weight", "format_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise SandboxError(f"reward {name}={value!r} must be a number >= 0")


@dataclass
class RewardResult:
    reward: float
    pass_fraction: float
    all_passed: bool
    format_ok: bool
    reason: str  # the execution status, or "no code" / "syntax error"
    result: ExecResult | None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["result"] = self.result.to_dict() if self.result else None
        return out


def extract_code(completion: str) -> tuple[str, bool]:
    """Return (code, fenced) from a completion.

    A completion with a fenced block (```python ... ```; an unclosed fence runs to the
    end) yields its last non-empty Python block, a whole program; otherwise the completion
    itself is the code: a function body that continues the prompt.
    """
    if "```" in completion:
        blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(completion)]
        python = [b for lang, b in blocks if lang in ("", "python", "py", "python3") and b.strip()]
        return (python[-1] if python else ""), True
    return completion, False


def build_program(task: Any, completion: str) -> tuple[str, str] | None:
    """The (program, tests) pair for a completion, or None when it holds no code.

    Unfenced: ``prompt + completion`` (docs/contracts.md). Fenced: the prompt (for its
    imports; its stub function is valid Python) followed by the block, which redefines
    the entry point. Tests: the prompt's helpers, the task's ``check`` plus
    ``check(entry_point)`` (``sandbox.harness.task_tests``).
    """
    code, fenced = extract_code(completion)
    if not code.strip():
        return None
    program = (task.prompt.rstrip("\n") + "\n\n" + code) if fenced else task.prompt + code
    return program, task_tests(task.prompt, task.test, task.entry_point)


def parses(source: str) -> str | None:
    """None when ``source`` parses as Python, else the reason. Parsing only, never running."""
    if len(source) > MAX_CODE_CHARS:
        return f"code longer than {MAX_CODE_CHARS} characters"
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def combine(result: ExecResult, format_ok: bool, config: RewardConfig) -> RewardResult:
    """Pure: turn one execution into a reward under ``config``."""
    clean = result.status in ("passed", "failed")
    fraction = result.pass_fraction if clean else 0.0
    all_passed = result.status == "passed" and result.tests_passed == result.tests_total
    code = (1.0 if all_passed else 0.0) if config.all_pass else fraction
    fmt = 1.0 if format_ok and (clean or not config.format_needs_clean_run) else 0.0
    reward = config.code_weight * code + config.format_weight * fmt
    return RewardResult(reward=reward, pass_fraction=fraction, all_passed=all_passed,
                        format_ok=format_ok, reason=result.status, result=result)


def no_code() -> RewardResult:
    return RewardResult(0.0, 0.0, False, False, "no code", None)


Runner = Callable[[str, str, Limits], ExecResult]


def score_completion(task: Any, completion: str, *, config: RewardConfig | None = None,
                     limits: Limits | None = None, backend: Any = "auto",
                     runner: Runner | None = None) -> RewardResult:
    """Score one completion of ``task``: extract, check format, run tests, weigh.

    ``backend`` is a backend name (``auto``/``jail``/``docker``, the process-wide warm
    executor) or a backend instance (what pool workers pass); ``runner`` overrides both.
    """
    config = config or RewardConfig()
    limits = limits or Limits()
    built = build_program(task, completion or "")
    if built is None:
        return no_code()
    program, tests = built
    syntax = parses(program)
    if syntax is not None:
        # Known outcome without running: a program that does not parse cannot load.
        from sandbox.harness import count_tests, split_tests

        total = count_tests(split_tests(tests))
        result = ExecResult(status="error", tests_total=total, backend="none",
                            detail=f"program does not parse ({syntax})",
                            outcomes=["not run"] * total)
        out = combine(result, False, config)
        out.reason = "syntax error"
        return out
    if runner is None:
        if isinstance(backend, str):
            from sandbox import run_program

            def runner(p, t, lim):
                return run_program(p, t, limits=lim, backend=backend)
        else:
            def runner(p, t, lim):
                return backend.run(p, t, limits=lim)
    return combine(runner(program, tests, limits), True, config)
