"""Split a task's tests into units so the sandbox can count passed asserts one by one.

A HumanEval test is ``def check(candidate): assert ...; assert ...`` followed by
``check(entry_point)``. Run as one script, the first failing assert hides all the others,
so the reward could only be 0 or 1. Here the test source is parsed (on the host: it is
trusted data, never model output) and each call ``check(x)`` is expanded into
``candidate = x`` plus the statements of ``check``'s body, each its own unit. A unit that
contains an ``assert`` is a test; the others (imports, helper variables) are set-up.
Inside the sandbox the judge (``sandbox/_judge.py``) executes the units in order in a
namespace of its own, in which the program's functions are stand-ins that call the
program process, and reports each test as passed or failed, so ``tests_passed /
tests_total`` is per assert.

Constructs that only make sense inside a function (``return``, ``yield``, ``nonlocal``)
make that call fall back to a single unit: the call itself, one test.
"""

from __future__ import annotations

import ast
import functools

from sandbox.errors import SandboxError

Unit = tuple[str, str]  # (kind: "setup" | "test", python source)


def _has_assert(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert) and not _trivial_assert(sub):
            return True
    return False


def _trivial_assert(node: ast.Assert) -> bool:
    """``assert True, "..."`` (HumanEval has a few): not a test of the candidate."""
    return isinstance(node.test, ast.Constant) and bool(node.test.value) is True


class _FunctionOnly(ast.NodeVisitor):
    """Finds statements that cannot leave their function (outside nested defs)."""

    def __init__(self) -> None:
        self.found = False

    def visit_Return(self, node):
        self.found = True

    def visit_Yield(self, node):
        self.found = True

    def visit_YieldFrom(self, node):
        self.found = True

    def visit_Await(self, node):
        self.found = True

    def visit_Nonlocal(self, node):
        self.found = True

    def visit_FunctionDef(self, node):
        pass  # a nested def may return: that is fine

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef
    visit_ClassDef = visit_FunctionDef


def _expandable(fn: ast.FunctionDef) -> bool:
    args = fn.args
    if len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        return False
    if fn.decorator_list:
        return False
    visitor = _FunctionOnly()
    for stmt in fn.body:
        visitor.visit(stmt)
    return not visitor.found


@functools.lru_cache(maxsize=4096)
def _split_cached(tests: str) -> tuple[Unit, ...]:
    return tuple(_split(tests))


def split_tests(tests: str | None) -> list[Unit] | None:
    """Return the units of ``tests`` (None when there are no tests); cached per text, since
    every completion of a task shares its tests.

    Raises :class:`SandboxError` when the tests themselves do not parse: that is a bad
    task or tests file, not something the program under test did.
    """
    if tests is None or not tests.strip():
        return None
    return list(_split_cached(tests))


def _split(tests: str) -> list[Unit]:
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        raise SandboxError(f"the tests do not parse (line {exc.lineno}: {exc.msg}); "
                           "fix the task's test code or the --tests file") from None
    checks: dict[str, ast.FunctionDef] = {}
    units: list[Unit] = []
    for node in tree.body:
        src = ast.unparse(node)
        if isinstance(node, ast.FunctionDef):
            if _has_assert(node):
                checks[node.name] = node
            units.append(("setup", src))
            continue
        call = node.value if isinstance(node, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in checks and len(call.args) == 1 and not call.keywords):
            fn = checks[call.func.id]
            if _expandable(fn):
                units.append(("setup", f"{fn.args.args[0].arg} = {ast.unparse(call.args[0])}"))
                for stmt in fn.body:
                    units.append(("test" if _has_assert(stmt) else "setup", ast.unparse(stmt)))
                continue
            units.append(("test", src))
            continue
        units.append(("test" if _has_assert(node) else "setup", src))
    if not any(kind == "test" for kind, _ in units):
        if checks:
            name = next(iter(checks))
            raise SandboxError(f"the tests define {name}() but never call it; append a line "
                               f"`{name}(<function under test>)` to the tests")
        return [("test", tests)]  # no assert to split on: the whole tests are one test
    return units


@functools.lru_cache(maxsize=4096)
def _names_cached(units: tuple) -> tuple[str, ...]:
    from sandbox._judge import free_names

    return tuple(free_names(list(units)))


def program_names(units: list[Unit] | None) -> list[str]:
    """The global names the tests read without binding them: the program's, looked up in
    the program once it has loaded (computed here, once per tests text, not per program)."""
    return list(_names_cached(tuple(tuple(u) for u in units))) if units else []


def _is_stub(node: ast.AST) -> bool:
    """A function the task leaves to the program: only a docstring, ``pass`` or ``...``."""
    body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return all(isinstance(n, ast.Pass) for n in body)


@functools.lru_cache(maxsize=4096)
def trusted_helpers(prompt: str, entry_point: str) -> str:
    """The prompt's own code that the tests may use (imports, helper functions, constants),
    without the entry point and without the stubs the program is to write.

    A test such as HumanEval's ``assert abs(poly(xs, candidate(xs))) < 1e-6`` calls a helper
    from the prompt. The program also defines it (the prompt is part of the program), but
    that copy is the program's to change: a program that redefines ``poly`` to return 0
    would pass. Run in the judge from the task's own text, the helper is the task's.
    """
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    def left_to_the_program(node: ast.AST) -> bool:  # the entry point, a stub, or a class holding one
        return any(isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and (f.name == entry_point or _is_stub(f))
                   for f in ast.walk(node))

    kept = [node for node in tree.body
            if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and left_to_the_program(node))
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    return "\n".join(ast.unparse(node) for node in kept)


def task_tests(prompt: str, test: str, entry_point: str) -> str:
    """The tests the sandbox runs for a task: the prompt's helpers (trusted task text, see
    :func:`trusted_helpers`), the task's ``check``, and ``check(<entry point>)``."""
    helpers = trusted_helpers(prompt, entry_point)
    return (helpers + "\n\n" if helpers else "\n\n") + test + f"\ncheck({entry_point})\n"


def count_tests(units: list[Unit] | None) -> int:
    return sum(1 for kind, _ in units or () if kind == "test")
