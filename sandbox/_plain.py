"""Plain data across the boundary between a program and the process that judges it.

The judge (the process that runs a task's tests) never holds an object of the program:
every value crosses a pipe as bytes in this format and is rebuilt on the other side from
builtin types only: None, bool, int, float, complex, str, bytes, bytearray, list, tuple,
dict, set, frozenset. So an object whose ``__eq__`` is always true, an ``int`` subclass or
anything else with behaviour of its own arrives as the plain value it holds, or not at
all (:class:`NotPlain`).

Decoding is the security-relevant half (the judge decodes what the program sends): every
length is checked against the bytes that are really there before anything is allocated,
nesting depth and item count are bounded, and any inconsistency is :class:`Malformed`.
Encoding is a convenience for the honest side; a hostile program can write any bytes it
likes, which is why only the decoder is trusted.

Messages on the pipes are framed as ``tag (1 byte) + length (4 bytes, big-endian) + body``.
Standard library only: this file is shipped into the sandbox as source.
"""

from __future__ import annotations

import os
import select
import struct

MAX_BYTES = 4 << 20  # one value, encoded
MAX_DEPTH = 100
MAX_ITEMS = 1 << 20  # objects rebuilt from one value
MAX_FRAME = MAX_BYTES + 4096

_FLOAT, _COMPLEX, _HEADER = struct.Struct(">d"), struct.Struct(">dd"), struct.Struct(">cI")


class NotPlain(Exception):
    """The value is not plain data (a generator, a function, an instance of a class...)."""


class TooLarge(Exception):
    """The value exceeds the size or nesting bounds."""


class Malformed(Exception):
    """The bytes are not a well-formed value, or not the message expected."""


# ---------------------------------------------------------------------------------- encode

def _varint(n: int, out: bytearray) -> None:
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return


def _plain_base(value):
    """(tag, value as its exact builtin type), converting subclasses through the base type's
    own C methods (an override in the subclass is never called), or raise NotPlain."""
    kind = type(value)
    if kind is bool or value is None:
        return None, value
    for base, tag, _convert in _BASES:
        if kind is base:
            return tag, value
    for base, tag, convert in _BASES:
        if isinstance(value, base):  # a subclass, or an object that only claims to be one
            try:
                return tag, convert(value)
            except TypeError:
                break
    raise NotPlain(getattr(kind, "__name__", "object"))


_BASES = (
    (int, b"i", int.__int__),
    (str, b"s", str.__str__),
    (float, b"f", float.__float__),
    (list, b"l", lambda v: list(list.__iter__(v))),
    (tuple, b"t", lambda v: tuple(tuple.__iter__(v))),
    (dict, b"d", lambda v: dict(dict.items(v))),
    (bytes, b"b", lambda v: bytes.__add__(b"", v)),
    (set, b"S", lambda v: set(set.__iter__(v))),
    (frozenset, b"z", lambda v: frozenset(frozenset.__iter__(v))),
    (bytearray, b"a", lambda v: bytearray(memoryview(v))),
    (complex, b"c", lambda v: complex(complex.real.__get__(v), complex.imag.__get__(v))),
)


def encode(value, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> bytes:
    """``value`` as bytes; NotPlain for anything but plain data, TooLarge past the bounds."""
    out = bytearray()

    def put(v, depth: int) -> None:
        nonlocal out
        if depth > max_depth:
            raise TooLarge(f"nested deeper than {max_depth} levels")
        if len(out) > max_bytes:
            raise TooLarge(f"larger than {max_bytes} bytes")
        tag, v = _plain_base(v)
        if tag is None:
            out += b"N" if v is None else (b"T" if v else b"F")
        elif tag == b"i":
            size = (v.bit_length() + 8) // 8
            if size > max_bytes:
                raise TooLarge(f"an int larger than {max_bytes} bytes")
            out += tag
            _varint(size, out)
            out += v.to_bytes(size, "big", signed=True)
        elif tag == b"f":
            out += tag + _FLOAT.pack(v)
        elif tag == b"c":
            out += tag + _COMPLEX.pack(v.real, v.imag)
        elif tag in (b"s", b"b", b"a"):
            raw = v.encode("utf-8", "surrogatepass") if tag == b"s" else bytes(v)
            if len(raw) > max_bytes:
                raise TooLarge(f"a {type(v).__name__} larger than {max_bytes} bytes")
            out += tag
            _varint(len(raw), out)
            out += raw
        elif tag == b"d":
            out += tag
            _varint(len(v), out)
            for key, item in v.items():
                put(key, depth + 1)
                put(item, depth + 1)
        else:  # list, tuple, set, frozenset
            out += tag
            _varint(len(v), out)
            for item in v:
                put(item, depth + 1)

    put(value, 0)
    if len(out) > max_bytes:
        raise TooLarge(f"larger than {max_bytes} bytes")
    return bytes(out)


# ---------------------------------------------------------------------------------- decode

def decode(data: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS):
    """Rebuild one value from ``data`` (untrusted): builtin types only, or Malformed."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    items = 0

    def varint() -> int:
        nonlocal pos
        n = shift = 0
        for _ in range(5):  # < 2**35: more than any bounded length
            if pos >= end:
                raise Malformed("truncated length")
            byte = view[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return n
            shift += 7
        raise Malformed("length too long")

    def take(n: int) -> memoryview:
        nonlocal pos
        if n > end - pos:
            raise Malformed("length past the end")
        chunk = view[pos:pos + n]
        pos += n
        return chunk

    def get(depth: int):
        nonlocal items
        if depth > max_depth:
            raise Malformed(f"nested deeper than {max_depth} levels")
        items += 1
        if items > max_items:
            raise Malformed(f"more than {max_items} items")
        tag = bytes(take(1))
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"i":
            return int.from_bytes(take(varint()), "big", signed=True)
        if tag == b"f":
            return _FLOAT.unpack(take(8))[0]
        if tag == b"c":
            return complex(*_COMPLEX.unpack(take(16)))
        if tag == b"s":
            try:
                return str(take(varint()), "utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise Malformed("invalid UTF-8") from None
        if tag == b"b":
            return bytes(take(varint()))
        if tag == b"a":
            return bytearray(take(varint()))
        if tag in (b"l", b"t", b"S", b"z", b"d"):
            count = varint()
            if count > end - pos:  # every item takes at least one byte
                raise Malformed("more items than bytes")
            if tag == b"d":
                pairs = [(get(depth + 1), get(depth + 1)) for _ in range(count)]
                try:
                    return dict(pairs)
                except TypeError:
                    raise Malformed("unhashable dict key") from None
            seq = [get(depth + 1) for _ in range(count)]
            if tag == b"l":
                return seq
            if tag == b"t":
                return tuple(seq)
            try:
                return set(seq) if tag == b"S" else frozenset(seq)
            except TypeError:
                raise Malformed("unhashable set item") from None
        raise Malformed(f"unknown tag {tag!r}")

    try:
        value = get(0)
    except RecursionError:
        raise Malformed("nested too deeply") from None
    if pos != end:
        raise Malformed("bytes after the value")
    return value


# ---------------------------------------------------------------------------------- frames

class Closed(Exception):
    """The other side closed the pipe (or died) before a whole frame arrived."""


def send(fd: int, tag: bytes, body: bytes = b"", *more: tuple[bytes, bytes]) -> None:
    """Write one frame, or several in one write (blocking until all is in the pipe)."""
    data = b"".join(_HEADER.pack(t, len(b)) + b for t, b in ((tag, body), *more))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd: int, peer_pidfd: int | None = None, max_len: int = MAX_FRAME) -> tuple[bytes, bytes]:
    """Read one frame: (tag, body). Closed at EOF, or when ``peer_pidfd`` says the writer
    died and nothing more is in the pipe (its own children may hold the pipe open);
    Malformed when the announced length exceeds ``max_len``."""
    head = _read_exact(fd, _HEADER.size, peer_pidfd)
    tag, length = _HEADER.unpack(head)
    if length > max_len:
        raise Malformed(f"a frame of {length} bytes (limit {max_len})")
    return tag, _read_exact(fd, length, peer_pidfd)


def _read_exact(fd: int, n: int, peer_pidfd: int | None) -> bytes:
    chunks, got = [], 0
    poller = None
    if peer_pidfd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(peer_pidfd, select.POLLIN)
    while got < n:
        if poller is not None:
            ready = dict(poller.poll())
            if fd not in ready:  # only the pidfd: the writer is gone
                if _readable_now(fd):
                    continue
                raise Closed("the other process died")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise Closed("the pipe was closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _readable_now(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
