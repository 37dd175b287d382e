"""The judge: runs a task's tests in a process of its own and is the only writer of the verdict.

The tests are trusted (they come from the task, not from the model), but they run
confined like the program: another uid, no capabilities, seccomp, rlimits. The program
runs in a separate process (``sandbox/_candidate.py``). Where a test names a function of
the program (``candidate``, ``add``), the judge binds a :class:`RemoteFunction` that sends
the arguments over a pipe and rebuilds the answer from plain data (``sandbox/_plain.py``);
the expected values never leave this process, and the report pipe is held by this process
alone. So the only thing a program can influence is the values its functions return.

What cannot cross is refused, not trusted: a function that returns a generator or an
instance of its own class, a test that passes a callable or reads an attribute of the
program's function, fails that test as a *harness limitation* (report line ``H``), which
the host counts separately so a task source that needs more than plain data is visible.

Report (judge -> executor, one line each; free text has every line-breaking character
replaced and is cut to a bounded length): ``L`` loaded; ``E text`` raised while loading;
``X code`` exited while loading; ``M`` MemoryError while loading; ``P i`` / ``F i text`` /
``H i text`` test unit i passed / failed / hit a harness limitation; ``S i text`` set-up
unit i raised; ``Q code`` the program exited during the tests; ``K signal cpu_s`` the
program process was killed by a signal; ``V text`` the program broke the protocol; ``I
text`` sandbox set-up failed; ``D cpu_s`` the judge finished (written last).
"""

from __future__ import annotations

import ast
import builtins
import operator
import os
import reprlib
import resource
import select
import signal
import symtable

from sandbox import _plain

LINE_MAX = 600
# every character str.splitlines() breaks on, and the other C0/C1 controls
_NO_BREAKS = {c: " " for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}


# The judge's own incidents derive from BaseException, not Exception: a test written as
# ``try: candidate(-1) except Exception: pass`` (expecting the program to raise) must not
# pass because the program exited, broke the protocol or answered with a refused value.
# A test that catches even these is still failed: see ProgramLink.incident.

class HarnessLimitation(BaseException):
    """The test needs more than plain data to cross between it and the program."""


class ProgramEnded(BaseException):
    """The program process is gone (exited or killed); its calls cannot be answered."""


class ProtocolViolation(BaseException):
    """The program process sent something that is not a well-formed answer."""


class RefusedValue(BaseException):
    """The program answered with a value past the size or nesting bounds."""


class SetupFailed(Exception):
    """The program process could not be confined."""


def clean(text: str, limit: int = 300) -> str:
    return str(text).translate(_NO_BREAKS)[:limit]


class Reporter:
    """Writes the verdict lines; only from this process (a test's forked child is silent)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.me = os.getpid()

    def __call__(self, tag: str, *parts) -> None:
        if os.getpid() != self.me:
            return
        text = clean(" ".join(str(p) for p in parts), LINE_MAX - 4)
        line = (tag + " " + text if text else tag) + "\n"
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError:
            pass


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# ---------------------------------------------------------------------------------------
# The link to the program process
# ---------------------------------------------------------------------------------------

class ProgramLink:
    """Requests to and answers from the program process, which is this process's child."""

    def __init__(self, requests: int, answers: int, pid: int):
        self.requests, self.answers, self.pid = requests, answers, pid
        self.pidfd = os.pidfd_open(pid)
        self.gone: ProgramEnded | ProtocolViolation | None = None
        self.fate: tuple[str, int, float] | None = None  # ("exit", code, cpu) | ("signal", sig, cpu)
        self.reported_cpu = 0.0
        self.incident: BaseException | None = None  # the first harness incident of the current unit
        self._classes: dict[tuple[str, str], type] = {}

    def _incident(self, exc: BaseException) -> BaseException:
        """Remember ``exc`` for the unit being run (it fails even if the test catches it)."""
        if self.incident is None:
            self.incident = exc
        return exc

    # -- the program process's end -----------------------------------------------------
    def reap(self, wait_s: float) -> tuple | None:
        """The program's exit status once it has ended (waiting up to ``wait_s``)."""
        if self.fate is None:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if poller.poll(wait_s * 1000):
                try:
                    pid, status, ru = os.wait4(self.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if pid == self.pid:
                    cpu = ru.ru_utime + ru.ru_stime
                    if os.WIFSIGNALED(status):
                        self.fate = ("signal", os.WTERMSIG(status), cpu)
                    else:
                        self.fate = ("exit", os.WEXITSTATUS(status), cpu)
        return self.fate

    def _ended(self) -> ProgramEnded:
        fate = self.reap(1.0)
        if fate is None:
            err = ProgramEnded("closed its end of the harness pipe")
        elif fate[0] == "signal":
            err = ProgramEnded(f"was killed by {_signame(fate[1])}")
        else:
            err = ProgramEnded(f"exited (code {fate[1]})")
        self.gone = err
        return self._incident(err)

    def receive(self) -> tuple[bytes, bytes]:
        if self.gone:
            raise self._incident(self.gone)
        try:
            while True:
                tag, body = _plain.receive(self.answers, self.pidfd)
                if tag != b"c":
                    return tag, body
                cpu = _plain.decode(body)  # the program's own word: informational only
                if isinstance(cpu, float) and 0.0 <= cpu < 1e6:
                    self.reported_cpu = cpu
        except (_plain.Closed, OSError):
            raise self._ended() from None
        except _plain.Malformed as exc:
            raise self.violation(str(exc)) from None

    def violation(self, what: str) -> ProtocolViolation:
        self.gone = ProtocolViolation(f"the program broke the harness protocol: {what}")
        return self._incident(self.gone)

    def decode(self, body: bytes):
        try:
            return _plain.decode(body)
        except _plain.Malformed as exc:
            raise self.violation(str(exc)) from None

    def request(self, tag: bytes, body: bytes) -> tuple[bytes, bytes]:
        if self.gone:
            raise self._incident(self.gone)
        try:
            _plain.send(self.requests, tag, body)
        except OSError:
            raise self._ended() from None
        return self.receive()

    def close(self) -> None:
        try:
            os.close(self.requests)
        except OSError:
            pass

    # -- set-up and loading ------------------------------------------------------------
    def wait_ready(self) -> None:
        try:
            tag, body = _plain.receive(self.answers, self.pidfd, max_len=4096)
        except (_plain.Closed, _plain.Malformed, OSError) as exc:
            raise SetupFailed(f"the program process ended during set-up ({exc})") from None
        if tag != b"R":
            raise SetupFailed(body.decode("utf-8", "replace") if tag == b"I" else "unexpected frame")

    def ask_names(self, names: list[str]) -> None:
        """Sent before the program has loaded (it answers once loaded): no round trip
        waits. A program already gone is noticed when its load report is read."""
        try:
            _plain.send(self.requests, b"G", _plain.encode(names))
        except OSError:
            pass

    def names(self, names: list[str]) -> list[tuple]:
        tag, body = self.receive()
        kinds = self.decode(body) if tag == b"g" else None
        if not isinstance(kinds, list) or len(kinds) != len(names) or not all(
                isinstance(k, tuple) and k and isinstance(k[0], str) for k in kinds):
            raise self.violation("a malformed answer to the name lookup")
        return kinds

    # -- calls ---------------------------------------------------------------------------
    def call(self, name: str, args: tuple, kwargs: dict):
        try:
            body = _plain.encode((name, args, kwargs))
        except _plain.NotPlain as exc:
            raise self._incident(HarnessLimitation(
                f"the test passes a {exc} to the program's {name}(); only plain data crosses to the program"))
        except _plain.TooLarge as exc:
            raise self._incident(HarnessLimitation(f"the arguments of {name}() are {exc}"))
        tag, body = self.request(b"C", body)
        if tag == b"v":
            return self.decode(body)
        if tag == b"e":
            raise self._exception(self.decode(body))
        if tag == b"n":
            kind = self.decode(body)
            raise self._incident(HarnessLimitation(
                f"{name}() returned a {clean(kind, 80)}, which is not plain data "
                "(None, bool, int, float, complex, str, bytes, list, tuple, dict, set)"))
        if tag == b"t":
            raise self._incident(RefusedValue(
                f"{name}() returned a value the judge refuses: {clean(self.decode(body), 120)}"))
        if tag == b"m":
            exc = MemoryError(f"raised by the program's {name}()")
            exc._cgrpo_from_program = True
            raise exc
        if tag == b"x":
            raise self._ended()
        raise self.violation(f"unknown answer {tag!r}")

    def _exception(self, described) -> BaseException:
        """The program's exception, rebuilt as a plain exception of the same type name and
        nearest builtin base, so a test that expects e.g. ValueError still catches it."""
        if not (isinstance(described, tuple) and len(described) == 3
                and all(isinstance(x, str) for x in described)):
            return self.violation("a malformed exception")
        name, base_name, message = described
        base = getattr(builtins, base_name, None)
        if not (isinstance(base, type) and issubclass(base, Exception)):
            base = Exception
        name = name if name.isidentifier() and len(name) <= 100 else "ProgramError"
        if name == base.__name__:
            cls = base
        else:
            cls = self._classes.get((name, base.__name__))
            if cls is None:
                cls = self._classes[(name, base.__name__)] = type(name, (base,), {"__module__": "program"})
        try:
            exc = cls(message[:1000])
        except Exception:  # a builtin base with another constructor (UnicodeError...)
            exc = Exception(message[:1000])
        exc._cgrpo_from_program = True
        return exc


class RemoteFunction:
    """Stands in the judge for a function of the program: calling it calls the program."""

    def __init__(self, link: ProgramLink, name: str):
        self._link = link
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        return self._link.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<program function {self.__name__}>"

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise self._link._incident(HarnessLimitation(
            f"the test reads {self.__name__}.{attr}; only calls cross to the program"))


class Unavailable:
    """A name of the program whose value is neither plain data nor a function."""

    def __init__(self, link: ProgramLink, name: str, kind: str):
        self._link = link
        self._what = f"the program's {name!r} (a {clean(kind, 80)})"

    def _refuse(self, *_args, **_kwargs):
        raise self._link._incident(HarnessLimitation(
            f"the test uses {self._what}: only plain data and calls cross"))

    __call__ = __getattr__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __iter__ = __len__ = __bool__ = __getitem__ = __contains__ = __hash__ = _refuse


# ---------------------------------------------------------------------------------------
# Tests: names, explanations, running
# ---------------------------------------------------------------------------------------

def free_names(units: list) -> list[str]:
    """Global names the tests read but never bind themselves (nor are builtins): those are
    the program's, looked up there once it has loaded."""
    source = "\n".join(src for _kind, src in units)
    try:
        top = symtable.symtable(source, "tests", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    bound = {s.get_name() for s in top.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_namespace()}
    read: set[str] = set()
    stack = [top]
    while stack:
        table = stack.pop()
        for sym in table.get_symbols():
            if sym.is_referenced() and (table is top or sym.is_global()):
                read.add(sym.get_name())
        stack.extend(table.get_children())
    return sorted(read - bound - set(dir(builtins)))


_OPS = {"Eq": (operator.eq, ""), "NotEq": (operator.ne, "!= "), "Lt": (operator.lt, "< "),
        "LtE": (operator.le, "<= "), "Gt": (operator.gt, "> "), "GtE": (operator.ge, ">= "),
        "Is": (operator.is_, "is "), "IsNot": (operator.is_not, "is not "),
        "In": (lambda a, b: a in b, "in "), "NotIn": (lambda a, b: a not in b, "not in ")}
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = 12
_SHORT.maxdict = 8
_SHORT.maxlevel = 4


def short(value) -> str:
    try:
        return _SHORT.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


class Explainer:
    """What the last failed assert compared: asserts are rewritten to call these, so a
    failure reads "got 4, expected 3" instead of a bare AssertionError."""

    def __init__(self):
        self.last: str | None = None

    def compare(self, left, right, op: str):
        fn, symbol = _OPS[op]
        ok = fn(left, right)
        if not ok:
            self.last = f"got {short(left)}, expected {symbol}{short(right)}"
        return ok

    def truthy(self, value):
        if not value:
            self.last = f"got {short(value)}"
        return value

    def falsy(self, value):
        if value:
            self.last = f"got {short(value)}, expected a false value"
        return not value


class _ExplainAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            call = ast.Call(ast.Name("_cgrpo_compare", ast.Load()),
                            [test.left, test.comparators[0], ast.Constant(type(test.ops[0]).__name__)], [])
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            call = ast.Call(ast.Name("_cgrpo_falsy", ast.Load()), [test.operand], [])
        else:
            call = ast.Call(ast.Name("_cgrpo_truthy", ast.Load()), [test], [])
        node.test = ast.copy_location(call, test)
        return node


def compile_unit(source: str, index: int):
    tree = _ExplainAsserts().visit(ast.parse(source, f"test_{index}.py"))
    return compile(ast.fix_missing_locations(tree), f"test_{index}.py", "exec")


def _failure(exc: BaseException, explainer: Explainer) -> str:
    if getattr(exc, "_cgrpo_from_program", False):
        return f"{type(exc).__name__}: {exc} (raised by the program)"
    if isinstance(exc, ProgramEnded):
        return f"the program {exc} during this test"
    if isinstance(exc, (HarnessLimitation, ProtocolViolation, RefusedValue)):
        return str(exc)
    if isinstance(exc, AssertionError) and explainer.last:
        return f"AssertionError: {explainer.last}" + (f" ({exc})" if str(exc) else "")
    return f"{type(exc).__name__}: {exc}"


def _load(link: ProgramLink, report: Reporter) -> bool:
    """Wait for the program to load; report how it went. True when it loaded."""
    try:
        tag, body = link.receive()
    except ProgramEnded:
        fate = link.fate
        if fate is None:
            report("V", "the program closed the harness pipe while loading")
        elif fate[0] == "signal":
            report("K", fate[1], f"{fate[2]:.4f}")
        else:
            report("X", fate[1])
        return False
    except ProtocolViolation as exc:
        report("V", exc)
        return False
    if tag == b"L":
        return True
    if tag == b"E":
        described = link.decode(body) if body else None
        if isinstance(described, tuple) and len(described) == 2:
            report("E", f"{clean(described[0], 100)}: {described[1]}")
        else:
            report("V", "a malformed load report")
    elif tag == b"X":
        code = link.decode(body)
        report("X", code if isinstance(code, int) and 0 <= code <= 255 else 1)
    elif tag == b"M":
        report("M")
    else:
        report("V", f"an unexpected frame {tag!r} while loading")
    return False


def run(req: dict, report: Reporter, link: ProgramLink) -> None:
    """Judge one program: wait for it to load, bind its names, run every unit, report."""
    units = req.get("units") or []
    names = req.get("names")
    if names is None:
        names = free_names(units) if units else []
    if names:
        link.ask_names(names)
    try:
        loaded = _load(link, report)
    except ProtocolViolation as exc:
        report("V", exc)
        loaded = False
    if not loaded:
        return
    report("L")
    explainer = Explainer()
    namespace = {"__name__": "__main__", "__builtins__": builtins, "_cgrpo_compare": explainer.compare,
                 "_cgrpo_truthy": explainer.truthy, "_cgrpo_falsy": explainer.falsy}
    if names:
        try:
            for name, kind in zip(names, link.names(names)):
                if kind[0] == "call":
                    namespace[name] = RemoteFunction(link, name)
                elif kind[0] == "data" and len(kind) == 2:
                    namespace[name] = kind[1]
                elif kind[0] == "other":
                    namespace[name] = Unavailable(link, name, str(kind[1]) if len(kind) > 1 else "?")
        except (ProgramEnded, ProtocolViolation):
            pass  # every unit that calls the program reports it
    for i, (kind, source) in enumerate(units):
        explainer.last = link.incident = None
        failure = None
        try:
            exec(compile_unit(source, i), namespace)
        except BaseException as exc:  # a failed assert, the program's exception, anything
            failure = exc
        if link.incident is not None:  # counts even when the test caught it
            failure = link.incident
        if failure is None:
            if kind == "test":
                report("P", i)
        elif kind != "test":
            report("S", i, _failure(failure, explainer))
        else:
            report("H" if isinstance(failure, HarnessLimitation) else "F", i, _failure(failure, explainer))
    _finish(link, report)


def _finish(link: ProgramLink, report: Reporter) -> None:
    """Close the program's request pipe and say how it ended (when it ended on its own
    during the tests, or was killed at any point)."""
    if isinstance(link.gone, ProtocolViolation):
        report("V", link.gone)
    link.close()
    # Not waiting for it to exit: every test was judged on an answer it gave; a program
    # that is still running is killed with its judge.
    fate = link.reap(0.0)
    if fate and fate[0] == "signal":
        report("K", fate[1], f"{fate[2]:.4f}")
    elif fate and (isinstance(link.gone, ProgramEnded) or fate[1] != 0):
        report("Q", fate[1])  # it left while the tests still talked to it


def cpu_seconds(link: ProgramLink | None) -> float:
    """The judge's CPU time plus the program's (its processes, once reaped, are children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return total + (link.reported_cpu if link is not None and link.fate is None else 0.0)
