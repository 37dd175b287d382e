"""The program process: loads the untrusted program, then answers the judge's calls.

This is the only process in which model-written code runs. It never receives a test: it
gets the program source, runs it, says how loading went, and then serves requests from
the judge (``sandbox/_judge.py``) over a pair of pipes: "call function NAME with these
arguments" and "what are these names". Every answer is plain data (``sandbox/_plain.py``)
or the type and message of an exception. Nothing here is trusted: the program can replace
any of this code, write anything to any descriptor it holds, or exit at any time; the
judge decodes what arrives with bounds and treats anything unexpected as a failure.

Frames, program -> judge (each answer preceded by a ``c`` frame: its CPU seconds so far):
``R`` set up and waiting; ``I`` set-up failed (text); ``L``
loaded; ``E`` raised while loading (type, message); ``X`` exited while loading (code);
``M`` MemoryError while loading; then per request ``g`` name kinds, ``v`` value, ``e``
exception (type, builtin base, message), ``n`` not plain data (type), ``t`` too large
(reason), ``x`` exited during the call (code), ``m`` MemoryError.
Judge -> program: ``G`` names, ``C`` (name, args, kwargs).
"""

from __future__ import annotations

import builtins
import os
import resource
import sys

from sandbox import _plain

READY, SETUP_FAILED, LOADED, RAISED, EXITED, MEMORY, CPU = b"R", b"I", b"L", b"E", b"X", b"M", b"c"


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def answer(fd: int, tag: bytes, body: bytes = b"") -> None:
    """One answer frame, preceded in the same write by a ``c`` frame with this process's
    CPU seconds so far (the judge reports them; informational, never part of a verdict)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    _plain.send(fd, CPU, _plain.encode(cpu), (tag, body))


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """(type name, nearest builtin exception type, message), never raising."""
    kind = type(exc)
    base = next((c.__name__ for c in kind.__mro__ if getattr(builtins, c.__name__, None) is c),
                "Exception")
    try:
        message = str(exc)[:1000]
    except BaseException:
        message = "<unprintable message>"
    return str(getattr(kind, "__name__", "?"))[:100], base, message


def load(program: str, namespace: dict, answers: int) -> None:
    """Run the program; report how it went; exit here unless it loaded."""
    import traceback

    try:
        exec(compile(program, "program.py", "exec"), namespace)
    except SystemExit as exc:
        code = exit_code(exc)
        flush_output()
        answer(answers, EXITED, _plain.encode(code))
        os._exit(code)
    except MemoryError:
        answer(answers, MEMORY)
        os._exit(1)
    except BaseException as exc:  # the program's own error: shown to the user
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        flush_output()
        name, _base, message = _describe(exc)
        answer(answers, RAISED, _plain.encode((name, message)))
        os._exit(1)
    flush_output()
    answer(answers, LOADED)


def _name_kind(namespace: dict, name: str) -> tuple:
    if name not in namespace:
        return ("missing",)
    value = namespace[name]
    if callable(value):
        return ("call",)
    try:
        _plain.encode(value)
    except (_plain.NotPlain, _plain.TooLarge):
        return ("other", type(value).__name__)
    return ("data", value)


def _names(namespace: dict, request: bytes) -> bytes:
    try:
        return _plain.encode([_name_kind(namespace, str(n)) for n in _plain.decode(request)])
    except (_plain.Malformed, _plain.TooLarge, TypeError):
        return _plain.encode([])


def _call(namespace: dict, request: bytes) -> tuple[bytes, bytes]:
    """Run one call; return the answer frame (tag, body)."""
    try:
        name, args, kwargs = _plain.decode(request)
        fn = namespace[name]
    except (_plain.Malformed, ValueError, TypeError, KeyError) as exc:
        return b"e", _plain.encode(("LookupError", "LookupError", f"no function for this call: {exc}"))
    try:
        value = fn(*args, **kwargs)
    except SystemExit as exc:
        return b"x", _plain.encode(exit_code(exc))
    except MemoryError:
        return b"m", b""
    except BaseException as exc:
        return b"e", _plain.encode(_describe(exc))
    try:
        return b"v", _plain.encode(value)
    except _plain.NotPlain as exc:
        return b"n", _plain.encode(str(exc))
    except _plain.TooLarge as exc:
        return b"t", _plain.encode(str(exc))
    except MemoryError:
        return b"m", b""
    except BaseException as exc:  # a subclass whose iteration raised, say
        return b"e", _plain.encode(_describe(exc))


def serve(program: str, requests: int, answers: int) -> None:
    """Load the program, then answer until the judge closes the request pipe."""
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "program.py"}
    load(program, namespace, answers)
    while True:
        try:
            tag, body = _plain.receive(requests)
        except (_plain.Closed, _plain.Malformed, OSError):
            break
        if tag == b"G":
            answer(answers, b"g", _names(namespace, body))
        elif tag == b"C":
            reply, payload = _call(namespace, body)
            flush_output()
            answer(answers, reply, payload)
            if reply == b"x":
                os._exit(_plain.decode(payload))
        else:
            break
    flush_output()
    os._exit(0)
