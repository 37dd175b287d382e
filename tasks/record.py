"""The task record every source is converted to, and the row-level validation all loaders share.

One record format (HumanEval's) for every source means the sampler, the sandbox and the
evaluator never care where a problem came from. Validation lives here, once, so a row is
accepted or rejected by the same rules whatever file it came from, and every rejection
names its file and line so the user can fix the row.
"""

from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from errors import CgrpoError

REPO_ROOT = Path(__file__).resolve().parents[1]


class TaskError(CgrpoError):
    """A task source is unknown, missing or unreadable, or a split name is wrong."""


@dataclass(frozen=True)
class Task:
    task_id: str  # "builtin/train/17", "HumanEval/0", ...
    prompt: str  # HumanEval style: imports + def signature + docstring
    entry_point: str  # function name
    test: str  # HumanEval style: defines check(candidate) with asserts
    canonical_solution: str | None = None  # body that completes the prompt
    source: str = ""  # "builtin", "humaneval", "mbpp", "codeio", "jsonl:<path>"


@dataclass(frozen=True)
class Rejection:
    """One row a loader refused, with where it came from and why."""

    source: str
    where: str  # "path:line" or "path item N"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class LoadReport:
    """What one source yielded: the accepted tasks, the rejected rows, and extra counts
    (for CodeI/O: raw rows, standard-library-only rows, built rows)."""

    source: str
    tasks: list[Task] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def data_dir() -> Path:
    """Folder of the fetched data files (``data/``; ``CGRPO_DATA_DIR`` overrides)."""
    return Path(os.environ.get("CGRPO_DATA_DIR") or REPO_ROOT / "data")


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (shorter rejection messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def program_for(task: Task, completion: str) -> tuple[str, str]:
    """The (program, tests) pair the sandbox runs for one completion (docs/contracts.md):
    ``prompt + completion`` is the program; the prompt's helpers, the task's ``check`` and
    the call are the tests (``sandbox.harness.task_tests``)."""
    from sandbox.harness import task_tests  # noqa: PLC0415

    return task.prompt + completion, task_tests(task.prompt, task.test, task.entry_point)


def _defined_functions(tree: ast.AST) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def validate_row(row: object) -> str | None:
    """Return why ``row`` (a dict with the Task fields) is not a usable task, or None if it is.

    Checks what the rest of the system relies on: the fields are strings, the prompt defines
    the entry point, the test parses and defines ``check(candidate)`` with at least one
    assert, and a given canonical solution completes the prompt into valid Python.
    """
    if not isinstance(row, dict):
        return f"row is a {type(row).__name__}, not a JSON object"
    for name in ("task_id", "prompt", "entry_point", "test"):
        value = row.get(name)
        if value is None or value == "":
            return f"missing field {name!r}" + (" (no tests)" if name == "test" else "")
        if not isinstance(value, str):
            return f"field {name!r} is a {type(value).__name__}, not a string"
    entry, prompt, test = row["entry_point"], row["prompt"], row["test"]
    if not entry.isidentifier():
        return f"entry_point {entry!r} is not a Python identifier"
    canonical = row.get("canonical_solution")
    if canonical is not None and not isinstance(canonical, str):
        return f"field 'canonical_solution' is a {type(canonical).__name__}, not a string"
    try:
        with warnings.catch_warnings():  # third-party code: "invalid escape sequence" is not our concern
            warnings.simplefilter("ignore")
            prompt_tree = ast.parse(prompt + (canonical or "    pass\n"))
    except SyntaxError as exc:
        what = "prompt + canonical_solution" if canonical else "prompt"
        return f"{what} is not valid Python ({exc.msg}, line {exc.lineno})"
    if entry not in _defined_functions(prompt_tree):
        return f"prompt does not define the entry point {entry}()"
    try:
        test_tree = ast.parse(test)
    except SyntaxError as exc:
        return f"test is not valid Python ({exc.msg}, line {exc.lineno})"
    checks = [n for n in test_tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        return "test does not define check(candidate)"
    if not any(isinstance(n, ast.Assert) for n in ast.walk(checks[0])):
        return "check(candidate) contains no assert (no tests)"
    return None


def task_from_row(row: dict, source: str) -> Task:
    """Build a Task from a row that passed :func:`validate_row`."""
    return Task(
        task_id=row["task_id"],
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        test=row["test"],
        canonical_solution=row.get("canonical_solution"),
        source=source,
    )
