"""Built-in Python function-writing problems, small and regular enough for a tiny dLLM.

Why this exists: the demo, the tests and the "RL helps" experiment need problems a
~1–5M-parameter model trained for minutes on 2 CPU cores can partly solve. So every
problem is a short signature plus a one-line docstring in a small English vocabulary
("Return a plus b times 3.") and a 1–4 line solution. Problems come in *families*
(templates with slots: operator, constant, comparison, argument names); every slot
combination is one problem. A problem goes to ``heldout`` or ``train`` by a seeded hash of
its prompt text, so the splits share no prompt, and a held-out problem recombines operator,
constant and name choices that training shows in other combinations. A second seeded hash
carves ``validation`` out of what is left: problems no training run sees either, on which
settings and checkpoints are chosen, so that ``heldout`` is only ever measured, never tuned on.

Difficulty levels (``difficulty(task_id)``):
  1. an arithmetic expression of the arguments;
  2. one builtin call, string method, slice or index;
  3. a conditional or a list comprehension with a filter;
  4. a loop with an accumulator, or a string/word loop.

Expected test outputs are computed by executing the generator's *own* canonical solution
(trusted text this module wrote), never model output.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Callable, Iterator

from tasks.record import Task, TaskError

SPLITS = ("train", "validation", "heldout")
DEFAULT_SEED = 0
HELDOUT_FRACTION = 0.09
VALIDATION_FRACTION = 0.07  # of the problems left after held-out
N_ASSERTS = 4

OPS = {"plus": "+", "minus": "-", "times": "*"}
CMPS = {"greater than": ">", "less than": "<", "equal to": "=="}
INT_NAMES = [("a", "b"), ("x", "y"), ("m", "n")]
LIST_NAMES = ["xs", "nums", "vals"]
STR_NAMES = ["s", "text", "word"]
LETTERS = "aeiot"
CONSTS = range(1, 10)

WORDS = ["apple", "banana", "cat", "data", "tea", "moon", "otto", "idea", "toast", "eat", "radar",
         "kite", "sea", "lemon", "tomato", "io", "pizza", "art", "kiwi", "taxi", "elephant",
         "notebook", "sunshine", "oat", "level", "ice"]


@dataclass(frozen=True)
class Spec:
    """One problem before rendering: the signature, the docstring sentence and the body."""

    family: str
    difficulty: int
    name: str
    args: tuple[str, ...]
    kinds: tuple[str, ...]  # "int" | "list" | "str" | "text" (several words) per argument
    doc: str
    body: tuple[str, ...]  # solution lines without the 4-space function indent

    @property
    def prompt(self) -> str:
        return f"def {self.name}({', '.join(self.args)}):\n    \"\"\"{self.doc}\"\"\"\n"

    @property
    def solution(self) -> str:
        return "".join(f"    {line}\n" for line in self.body)


@dataclass(frozen=True)
class BuiltinProblem:
    task: Task
    difficulty: int
    family: str


# ---------------------------------------------------------------- families (templates)

def _arith(rng: random.Random) -> Iterator[Spec]:
    """Level 1: ``a OP k``, ``a OP b``, ``a OP b OP k``, ``a OP k OP b``."""
    for (a, _), (w, op), k in product(INT_NAMES, OPS.items(), CONSTS):
        yield Spec("arith1", 1, "calc", (a,), ("int",), f"Return {a} {w} {k}.", (f"return {a} {op} {k}",))
    for (a, b), (w, op) in product(INT_NAMES, OPS.items()):
        for p, q in ((a, b), (b, a)):
            yield Spec("arith2", 1, "calc", (a, b), ("int", "int"), f"Return {p} {w} {q}.", (f"return {p} {op} {q}",))
    for (a, b), (w1, o1), (w2, o2), k in product(INT_NAMES, OPS.items(), OPS.items(), CONSTS):
        for p, q in ((a, b), (b, a)):
            yield Spec("arith3", 1, "calc", (a, b), ("int", "int"),
                       f"Return {p} {w1} {q} {w2} {k}.", (f"return {p} {o1} {q} {o2} {k}",))
            yield Spec("arith3", 1, "calc", (a, b), ("int", "int"),
                       f"Return {p} {w1} {k} {w2} {q}.", (f"return {p} {o1} {k} {o2} {q}",))


def _builtins(rng: random.Random) -> Iterator[Spec]:
    """Level 2: one builtin call, string method, slice or index."""
    big = {"larger": "max", "smaller": "min"}
    for (a, b), (w, f) in product(INT_NAMES, big.items()):
        yield Spec("minmax", 2, "pick", (a, b), ("int", "int"), f"Return the {w} of {a} and {b}.",
                   (f"return {f}({a}, {b})",))
        for (w2, op), k in product(OPS.items(), CONSTS):
            yield Spec("minmax", 2, "pick", (a, b), ("int", "int"),
                       f"Return the {w} of {a} and {b}, {w2} {k}.", (f"return {f}({a}, {b}) {op} {k}",))
    for (a, b), (w, op) in product(INT_NAMES, OPS.items()):
        yield Spec("absval", 2, "size", (a, b), ("int", "int"), f"Return the absolute value of {a} {w} {b}.",
                   (f"return abs({a} {op} {b})",))
        for k in CONSTS:
            yield Spec("absval", 2, "size", (a,), ("int",), f"Return the absolute value of {a} {w} {k}.",
                       (f"return abs({a} {op} {k})",))
    for s in STR_NAMES:
        one = [
            (f"Return {s} in upper case.", f"return {s}.upper()"),
            (f"Return {s} in lower case.", f"return {s}.lower()"),
            (f"Return {s} reversed.", f"return {s}[::-1]"),
            (f"Return the length of {s}.", f"return len({s})"),
            (f"Return the first character of {s}.", f"return {s}[0]"),
            (f"Return the last character of {s}.", f"return {s}[-1]"),
        ]
        for k in CONSTS:
            one.append((f"Return {s} repeated {k} times.", f"return {s} * {k}"))
        for k in range(1, 6):
            one += [
                (f"Return the first {k} characters of {s}.", f"return {s}[:{k}]"),
                (f"Return the last {k} characters of {s}.", f"return {s}[-{k}:]"),
                (f"Return {s} without its first {k} characters.", f"return {s}[{k}:]"),
            ]
        for c in LETTERS:
            one += [
                (f"Return the number of times '{c}' appears in {s}.", f"return {s}.count('{c}')"),
                (f"Return True if {s} starts with '{c}'.", f"return {s}.startswith('{c}')"),
                (f"Return True if {s} ends with '{c}'.", f"return {s}.endswith('{c}')"),
            ]
            for d in LETTERS:
                if d != c:
                    one.append((f"Return {s} with '{c}' replaced by '{d}'.", f"return {s}.replace('{c}', '{d}')"))
        for doc, line in one:
            yield Spec("string1", 2, "edit", (s,), ("str",), doc, (line,))
    for xs in LIST_NAMES:
        one = [
            (f"Return the sum of {xs}.", f"return sum({xs})"),
            (f"Return the largest item of {xs}.", f"return max({xs})"),
            (f"Return the smallest item of {xs}.", f"return min({xs})"),
            (f"Return the number of items in {xs}.", f"return len({xs})"),
            (f"Return the first item of {xs}.", f"return {xs}[0]"),
            (f"Return the last item of {xs}.", f"return {xs}[-1]"),
            (f"Return {xs} sorted.", f"return sorted({xs})"),
            (f"Return {xs} reversed.", f"return {xs}[::-1]"),
        ]
        for k in range(1, 5):
            one += [
                (f"Return the first {k} items of {xs}.", f"return {xs}[:{k}]"),
                (f"Return the sum of the first {k} items of {xs}.", f"return sum({xs}[:{k}])"),
            ]
        for k in CONSTS:
            one.append((f"Return the sum of {xs} times {k}.", f"return sum({xs}) * {k}"))
        for doc, line in one:
            yield Spec("list1", 2, "take", (xs,), ("list",), doc, (line,))


def _conditionals(rng: random.Random) -> Iterator[Spec]:
    """Level 3: if/else on two numbers, and list comprehensions with a filter."""
    for (a, b), (cw, cmp), (w, op), k in product(INT_NAMES, CMPS.items(), OPS.items(), CONSTS):
        if op == "*" and k == 1:
            continue  # "a times 1" would make both branches agree
        yield Spec("cond2", 3, "choose", (a, b), ("int", "int"),
                   f"Return {a} {w} {k} if {a} is {cw} {b}, otherwise {b}.",
                   (f"if {a} {cmp} {b}:", f"    return {a} {op} {k}", f"return {b}"))
    for (a, _), (cw, cmp), t, (w, op) in product(INT_NAMES, CMPS.items(), CONSTS, OPS.items()):
        k = rng.randint(2, 9)
        yield Spec("cond1", 3, "choose", (a,), ("int",),
                   f"Return {a} {w} {k} if {a} is {cw} {t}, otherwise {a}.",
                   (f"if {a} {cmp} {t}:", f"    return {a} {op} {k}", f"return {a}"))
    for xs in LIST_NAMES:
        for (w, op), k in product(OPS.items(), CONSTS):
            yield Spec("listmap", 3, "each", (xs,), ("list",), f"Return each item of {xs} {w} {k}.",
                       (f"return [x {op} {k} for x in {xs}]",))
        conds = [(f"{cw} {k}", f"x {cmp} {k}") for (cw, cmp), k in product(CMPS.items(), CONSTS)]
        conds += [("even", "x % 2 == 0"), ("odd", "x % 2 == 1")]
        for cw, cond in conds:
            yield Spec("listfilter", 3, "keep", (xs,), ("list",), f"Return the items of {xs} that are {cw}.",
                       (f"return [x for x in {xs} if {cond}]",))
            yield Spec("listcount", 3, "count", (xs,), ("list",),
                       f"Return the number of items of {xs} that are {cw}.",
                       (f"return len([x for x in {xs} if {cond}])",))
            yield Spec("listsum", 3, "total", (xs,), ("list",), f"Return the sum of the items of {xs} that are {cw}.",
                       (f"return sum([x for x in {xs} if {cond}])",))


def _loops(rng: random.Random) -> Iterator[Spec]:
    """Level 4: loops with an accumulator over a list, a range or a string."""
    for xs in LIST_NAMES:
        yield Spec("loop", 4, "product", (xs,), ("list",), f"Return the product of the items of {xs}.",
                   ("result = 1", f"for x in {xs}:", "    result *= x", "return result"))
        for (w, op), k in product(OPS.items(), CONSTS):
            yield Spec("loop", 4, "total", (xs,), ("list",), f"Return the sum of each item of {xs} {w} {k}.",
                       ("total = 0", f"for x in {xs}:", f"    total += x {op} {k}", "return total"))
        for (cw, cmp), k in product(CMPS.items(), CONSTS):
            yield Spec("loop", 4, "first", (xs,), ("list",),
                       f"Return the first item of {xs} that is {cw} {k}, or -1 if there is none.",
                       (f"for x in {xs}:", f"    if x {cmp} {k}:", "        return x", "return -1"))
    for (n, _), (w, op), k in product(INT_NAMES, OPS.items(), CONSTS):
        yield Spec("range", 4, "series", (n,), ("int",),
                   f"Return the sum of i {w} {k} for i from 0 to {n} - 1.",
                   ("total = 0", f"for i in range({n}):", f"    total += i {op} {k}", "return total"))
    for s in STR_NAMES:
        one = [
            (f"Return the number of vowels in {s}.",
             ("count = 0", f"for c in {s}:", "    if c in 'aeiou':", "        count += 1", "return count")),
            (f"Return {s} without its vowels.", (f"return ''.join(c for c in {s} if c not in 'aeiou')",)),
            (f"Return the characters of {s} at even positions.", (f"return {s}[::2]",)),
            (f"Return the number of words in {s}.", (f"return len({s}.split())",)),
            (f"Return the words of {s} in reverse order.", (f"return ' '.join({s}.split()[::-1])",)),
            (f"Return the longest word in {s}.", (f"return max({s}.split(), key=len)",)),
        ]
        for k in range(2, 5):
            one.append((f"Return {s} with each character repeated {k} times.",
                        (f"return ''.join(c * {k} for c in {s})",)))
        for c in LETTERS:
            one.append((f"Return the position of the first '{c}' in {s}, or -1 if there is none.",
                        (f"return {s}.find('{c}')",)))
        for doc, body in one:
            yield Spec("string2", 4, "scan", (s,), ("text",), doc, body)
        yield Spec("string2", 4, "scan", (s,), ("str",), f"Return True if {s} reads the same backwards.",
                   (f"return {s} == {s}[::-1]",))


FAMILIES: list[Callable[[random.Random], Iterator[Spec]]] = [_arith, _builtins, _conditionals, _loops]

# Level-1 arithmetic has ~1000 combinations; keep it from swamping the harder levels.
FAMILY_CAPS = {"arith3": 700}


# ---------------------------------------------------------------- test inputs

def _value(kind: str, rng: random.Random, hints: list[int]):
    """A random argument of one kind; ints lean towards the docstring's constants (``hints``)
    so comparisons like "equal to 4" are exercised on both branches."""
    def number(lo: int, hi: int) -> int:
        if hints and rng.random() < 0.35:
            return min(hi, max(lo, rng.choice(hints) + rng.choice((-1, 0, 0, 1))))
        return rng.randint(lo, hi)

    if kind == "int":
        return number(-3, 12)
    if kind == "list":
        return [number(-3, 12) for _ in range(rng.randint(3, 6))]
    if kind == "str":
        return rng.choice(WORDS)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))  # "text"


def _compile(spec: Spec) -> Callable:
    namespace: dict = {}
    exec(compile(spec.prompt + spec.solution, f"<builtin {spec.family}>", "exec"), namespace)  # noqa: S102 (own text)
    return namespace[spec.name]


def _tests(spec: Spec, rng: random.Random) -> str:
    """``check(candidate)`` with N_ASSERTS asserts, chosen to have as many different outputs
    as the sampled inputs allow (a constant answer must fail); inputs come from ``rng``."""
    fn = _compile(spec)
    hints = [int(w) for w in re.findall(r"\b\d+\b", spec.doc)]
    cases: list[tuple[tuple, object]] = []
    seen_inputs: set[str] = set()
    for _ in range(80):
        args = tuple(_value(kind, rng, hints) for kind in spec.kinds)
        if repr(args) in seen_inputs:
            continue
        seen_inputs.add(repr(args))
        cases.append((args, fn(*[list(a) if isinstance(a, list) else a for a in args])))
        if len(cases) >= 12 and len({repr(out) for _, out in cases}) >= 2:
            break
    chosen: list[tuple[tuple, object]] = []
    outputs: set[str] = set()
    for case in cases:  # greedily prefer cases whose output is new: a weak answer fails more
        if repr(case[1]) not in outputs and len(chosen) < N_ASSERTS:
            chosen.append(case)
            outputs.add(repr(case[1]))
    chosen += [c for c in cases if c not in chosen][: N_ASSERTS - len(chosen)]
    lines = [f"    assert candidate({', '.join(repr(a) for a in args)}) == {out!r}" for args, out in chosen]
    return "def check(candidate):\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------- generation and splits

def _hash_fraction(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key`` (the same in every process)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def split_of(prompt: str, seed: int) -> str:
    """Held-out first (its hash is unchanged since the two-split days, so held-out stays the
    same problems), then validation from the rest by an independent hash, the rest train."""
    if _hash_fraction(f"{seed}\n{prompt}") < HELDOUT_FRACTION:
        return "heldout"
    if _hash_fraction(f"validation-{seed}\n{prompt}") < VALIDATION_FRACTION:
        return "validation"
    return "train"


@lru_cache(maxsize=4)
def _generate(seed: int) -> dict[str, tuple[BuiltinProblem, ...]]:
    rng = random.Random(f"cgrpo-builtin-{seed}")
    specs: dict[str, Spec] = {}
    for family in FAMILIES:
        by_family: dict[str, list[Spec]] = {}
        for spec in family(rng):
            by_family.setdefault(spec.family, []).append(spec)
        for name, group in by_family.items():
            cap = FAMILY_CAPS.get(name)
            if cap and len(group) > cap:
                group = rng.sample(group, cap)
            for spec in group:
                specs.setdefault(spec.prompt, spec)  # identical prompt text -> one problem
    ordered = list(specs.values())
    rng.shuffle(ordered)  # mix levels so any prefix (--limit) spans difficulties
    out: dict[str, list[BuiltinProblem]] = {s: [] for s in SPLITS}
    for spec in ordered:
        split = split_of(spec.prompt, seed)
        task = Task(
            task_id=f"builtin/{split}/{len(out[split])}",
            prompt=spec.prompt,
            entry_point=spec.name,
            test=_tests(spec, random.Random(f"{seed}-{spec.prompt}")),
            canonical_solution=spec.solution,
            source="builtin",
        )
        out[split].append(BuiltinProblem(task, spec.difficulty, spec.family))
    return {s: tuple(v) for s, v in out.items()}


def builtin_problems(split: str = "train", seed: int = DEFAULT_SEED) -> list[BuiltinProblem]:
    """All built-in problems of a split, with difficulty and family (deterministic by seed)."""
    if split not in SPLITS:
        raise TaskError(f"built-in split {split!r} does not exist; use one of {', '.join(SPLITS)}")
    return list(_generate(seed)[split])


def builtin_tasks(split: str = "train", seed: int = DEFAULT_SEED) -> list[Task]:
    return [p.task for p in builtin_problems(split, seed)]


def difficulty(task_id: str, seed: int = DEFAULT_SEED) -> int | None:
    """Difficulty level 1–4 of a built-in task id, or None for other sources."""
    parts = task_id.split("/")
    if len(parts) != 3 or parts[0] != "builtin" or parts[1] not in SPLITS or not parts[2].isdigit():
        return None
    problems = _generate(seed)[parts[1]]
    index = int(parts[2])
    return problems[index].difficulty if index < len(problems) else None
