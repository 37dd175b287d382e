"""CodeI/O problems (reasoning-gym 0.1.25) turned into RL training tasks with executable tests.

Each raw item has a description, an I/O spec, a reference ``main_solution`` and a
``generate_inputs(rng)`` (or ``generate_input``) function, but no tests. Tests are made by
running the reference on generated inputs — untrusted third-party code, so *only in the
sandbox*, never in this process — and recording input/output pairs as asserts. That takes
two sandbox runs per item (~3.5 minutes for all ~2,200 on 2 cores), so it is a separate,
incremental step (``cgrpo data build-codeio``) that appends to ``data/codeio/built.jsonl``;
the loader only reads what was built.

Filtering, each with a rejection reason: no ``main_solution`` or input generator, imports
outside the standard library (numpy, scipy, ...), duplicates across the two files, and at
build time: the reference crashes, is non-deterministic, returns values that are not Python
literals, or fails its own tests when run again in a fresh sandbox (it read a file the
generator wrote, or is too slow for the normal limits).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tasks.record import (LoadReport, Rejection, TaskError, data_dir, display_path, task_from_row,
                                       validate_row)
from tasks.sources import iter_json_rows, require_file

RAW_FILES = ("codeio.jsonl.gz", "codeio-hq.jsonl.gz")
BUILT_FILE = "built.jsonl"
N_CASES = 5  # asserts per task
N_TRIES = 12  # generated inputs tried to get N_CASES usable ones
MIN_CASES = 3
MAX_CASE_CHARS = 1500  # input+output literal size per assert: keeps prompts/tests short
_MARK = "@@CODEIO-CASES@@"


@dataclass(frozen=True)
class RawItem:
    """One stdlib-only CodeI/O item, ready to build."""

    key: str  # stable id from the reference code
    where: str  # "path:line" of its first occurrence
    task_description: str
    io_spec: str
    code: str  # reference program defining main_solution
    input_generator: str


def codeio_dir() -> Path:
    return data_dir() / "codeio"


_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)
_FROM = re.compile(r"^[ \t]*from[ \t]+([\w.]+)[ \t]+import\b", re.M)
_DEF = re.compile(r"^def[ \t]+(\w+)[ \t]*\(", re.M)


def _imports(code: str) -> set[str]:
    """Top-level module names imported anywhere in ``code`` (line-based, so fast enough to scan
    all ~5,800 raw rows on every load; an import-looking line inside a string only makes the
    check stricter)."""
    names = {m.split(".")[0] for g in _FROM.findall(code) for m in [g] if not m.startswith(".")}
    for group in _IMPORT.findall(code):
        for part in group.split(","):
            words = part.split()
            if words:
                names.add(words[0].split(".")[0])
    return names


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _classify(row: object) -> tuple[RawItem | None, str | None]:
    """(item, None) for a usable stdlib-only row, else (None, reason). Syntax is checked at
    build time (parsing every raw row would make each load take seconds)."""
    if not isinstance(row, dict):
        return None, "row is not a JSON object"
    fields = {}
    for name in ("task_description", "input_output_spec", "code_sample", "input_generator"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            return None, f"missing field {name!r}"
        fields[name] = value
    if "main_solution" not in _DEF.findall(fields["code_sample"]):
        return None, "code_sample defines no top-level main_solution()"
    if not {"generate_inputs", "generate_input"} & set(_DEF.findall(fields["input_generator"])):
        return None, "input_generator defines no generate_inputs()/generate_input()"
    imported = _imports(fields["code_sample"]) | _imports(fields["input_generator"])
    foreign = sorted(m for m in imported if m not in sys.stdlib_module_names)
    if foreign:
        return None, f"imports non-standard-library module(s) {', '.join(foreign)}"
    key = hashlib.sha1(fields["code_sample"].encode()).hexdigest()[:12]  # same reference = same task
    return RawItem(key, "", fields["task_description"], fields["input_output_spec"],
                   fields["code_sample"], fields["input_generator"]), None


def scan_raw(directory: Path | None = None) -> tuple[list[RawItem], list[Rejection], int]:
    """Classify every row of both raw files: (stdlib-only unique items, rejections, raw rows)."""
    directory = directory or codeio_dir()
    items: dict[str, RawItem] = {}
    seen: dict[str, str] = {}  # reference-code hash -> where it first appeared
    rejected: list[Rejection] = []
    raw = 0
    for name in RAW_FILES:
        path = require_file(directory / name, "CodeI/O")
        for line, row, error in iter_json_rows(path):
            raw += 1
            where = f"{display_path(path)}:{line}"
            code = row.get("code_sample") if isinstance(row, dict) else None
            first = seen.get(hashlib.sha1(code.encode()).hexdigest()[:12]) if isinstance(code, str) else None
            if first:
                item, reason = None, f"duplicate of {first}"
            else:
                item, reason = (None, error) if error else _classify(row)
                if isinstance(code, str):
                    seen[hashlib.sha1(code.encode()).hexdigest()[:12]] = where
            if item is None:
                rejected.append(Rejection("codeio", where, reason or "unusable"))
                continue
            items[item.key] = RawItem(item.key, where, item.task_description, item.io_spec, item.code,
                                      item.input_generator)
    return list(items.values()), rejected, raw


# ---------------------------------------------------------------- converting one item to a Task

def _docstring(item: RawItem) -> str:
    text = item.task_description.strip() + "\n\n" + item.io_spec.strip()
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    wrapped = "\n".join(
        textwrap.fill(p, width=88, subsequent_indent="") if not p.startswith(" ") else p
        for p in text.splitlines()
    )
    return textwrap.indent(f'"""{wrapped}\n"""', "    ").lstrip() + "\n"


def prompt_and_solution(item: RawItem) -> tuple[str, str | None]:
    """The prompt (reference imports + ``def main_solution(<same args>):`` + docstring with the
    description and I/O spec) and, when ``main_solution`` needs nothing else from its module,
    its body as the canonical solution."""
    with warnings.catch_warnings():  # "invalid escape sequence" in third-party code is not ours to fix
        warnings.simplefilter("ignore")
        tree = ast.parse(item.code)
    fn = _functions(tree)["main_solution"]
    imports = [ast.get_source_segment(item.code, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    header = "\n".join(i for i in imports if i) + ("\n\n" if imports else "")
    prompt = f"{header}def main_solution({ast.unparse(fn.args)}):\n    {_docstring(item)}"
    others = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Expr))]
    helpers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name != "main_solution"]
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
        getattr(fn.body[0], "value", None), ast.Constant) and isinstance(fn.body[0].value.value, str) else fn.body
    if others or helpers or not body:
        return prompt, None
    lines = item.code.splitlines()
    solution = "\n".join(lines[body[0].lineno - 1: fn.end_lineno]) + "\n"
    return prompt, solution


def driver_program(item: RawItem) -> str:
    """Reference + generator + a driver that prints literal (input, output) pairs as JSON.
    A case is kept only if its input and output survive ``repr``/``literal_eval`` and the
    reference gives the same output twice under different ``random`` seeds."""
    return f"""{item.code}

from random import Random
{item.input_generator}

def _cgrpo_cases():
    make = globals().get("generate_inputs") or globals()["generate_input"]
    import ast as _ast, copy as _copy, json as _json, random as _random
    cases, why = [], {{}}
    for seed in range({N_TRIES}):
        try:
            inp = make(Random(seed))
            lit = repr(inp)
            if not isinstance(inp, dict) or _ast.literal_eval(lit) != inp:
                why["input not a literal dict"] = why.get("input not a literal dict", 0) + 1
                continue
            _random.seed(seed)
            out = main_solution(**_copy.deepcopy(inp))
            _random.seed(seed + 1000)
            again = main_solution(**_copy.deepcopy(inp))
            olit = repr(out)
            if olit != repr(again):
                why["non-deterministic"] = why.get("non-deterministic", 0) + 1
            elif _ast.literal_eval(olit) != out:
                why["output not a literal"] = why.get("output not a literal", 0) + 1
            elif len(lit) + len(olit) > {MAX_CASE_CHARS}:
                why["case too large"] = why.get("case too large", 0) + 1
            else:
                cases.append([lit, olit])
        except Exception as exc:
            key = "raised " + type(exc).__name__
            why[key] = why.get(key, 0) + 1
        if len(cases) >= {N_CASES}:
            break
    print({_MARK!r} + _json.dumps({{"cases": cases, "why": why}}))

_cgrpo_cases()
"""


_CLOSE = '''def _close(a, b):
    """Equal, with floats compared to a relative tolerance and tuples equal to lists."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
        except TypeError:
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b

'''


def tests_from_cases(cases: list[list[str]]) -> str:
    asserts = "\n".join(f"    assert _close(candidate(**{inp}), {out})" for inp, out in cases)
    return f"{_CLOSE}\ndef check(candidate):\n{asserts}\n"


# ---------------------------------------------------------------- building (sandbox) and loading

def built_path() -> Path:
    return codeio_dir() / BUILT_FILE


def read_built(path: Path | None = None) -> dict[str, dict]:
    """key -> built record ({"key", "where", "task": {...}} or {"key", "where", "rejected": reason})."""
    path = path or built_path()
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    for _, row, error in iter_json_rows(path):
        if not error and isinstance(row, dict) and "key" in row:
            out[row["key"]] = row
    return out


def _reject(item: RawItem, reason: str) -> dict:
    return {"key": item.key, "where": item.where, "rejected": reason}


def build_one(item: RawItem, run_program: Callable[..., object], build_limits=None, check_limits=None) -> dict:
    """Make one Task row (or a rejection) with two sandbox runs: the driver collects
    (input, output) cases from the reference; then, in a fresh run, the reference (its
    extracted body when there is one) must pass the new tests under the normal limits —
    which rejects references that depend on files or state the generator left behind, or
    that are too slow to score. ``run_program`` has ``sandbox.run_program``'s signature."""
    result = run_program(driver_program(item), limits=build_limits)
    stdout = getattr(result, "stdout", "") or ""
    marker = [ln for ln in stdout.splitlines() if ln.startswith(_MARK)]
    if not marker:
        detail = (getattr(result, "stderr", "") or getattr(result, "detail", "") or "").strip().splitlines()
        return _reject(item, f"reference run ended with status {getattr(result, 'status', '?')}"
                       + (f": {detail[-1][:200]}" if detail else ""))
    payload = json.loads(marker[-1][len(_MARK):])
    cases, why = payload["cases"], payload["why"]
    if len(cases) < MIN_CASES:
        causes = ", ".join(f"{k} x{v}" for k, v in sorted(why.items(), key=lambda kv: -kv[1]))
        return _reject(item, f"only {len(cases)} usable case(s) from generated inputs (need {MIN_CASES}): {causes}")
    try:
        prompt, solution = prompt_and_solution(item)
    except SyntaxError as exc:
        return _reject(item, f"code does not parse ({exc.msg}, line {exc.lineno})")
    row = {"task_id": f"codeio/{item.key}", "prompt": prompt, "entry_point": "main_solution",
           "test": tests_from_cases(cases), "canonical_solution": solution}
    if solution is not None and validate_row(row) is not None:
        row["canonical_solution"] = None  # body did not fit the prompt's indentation
    reason = validate_row(row)
    if reason:
        return _reject(item, reason)
    program = prompt + row["canonical_solution"] if row["canonical_solution"] else item.code
    check = run_program(program, "\n\n" + row["test"] + "\ncheck(main_solution)\n", limits=check_limits)
    if getattr(check, "status", None) != "passed":
        return _reject(item, f"reference fails its own tests in a fresh run ({getattr(check, 'status', '?')}, "
                             f"{getattr(check, 'tests_passed', 0)}/{getattr(check, 'tests_total', 0)} passed): it "
                             "depends on state outside its inputs or exceeds the time limit")
    return {"key": item.key, "where": item.where, "task": row}


def build_codeio(limit: int | None = None, *, workers: int = 2, run_program: Callable[..., object] | None = None,
                 progress: bool = True) -> dict[str, int]:
    """Build tests for up to ``limit`` not-yet-built stdlib-only items, appending to built.jsonl.

    Incremental: items already in the file (built or rejected) are skipped, so repeated calls
    with ``--limit`` extend the set. Returns counts of this call's outcome.
    """
    from sandbox import Limits  # noqa: PLC0415 (the sandbox is only needed to build)

    if run_program is None:
        from sandbox import run_program  # noqa: PLC0415
    build_limits = Limits(wall_s=10.0, cpu_s=10.0, memory_mb=512)
    check_limits = Limits()  # what training and evaluation will use
    items, _, _ = scan_raw()
    done = read_built()
    todo = [i for i in items if i.key not in done]
    if limit is not None:
        todo = todo[:limit]
    counts = {"built": 0, "rejected": 0, "already": len(done)}
    path = built_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, path.open("a", encoding="utf-8") as out:
        records = pool.map(lambda item: build_one(item, run_program, build_limits, check_limits), todo)
        for record in _progress(records, len(todo), "building CodeI/O tests", progress):
            out.write(json.dumps(record) + "\n")
            out.flush()
            counts["rejected" if "rejected" in record else "built"] += 1
    return counts


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=desc, unit="item")


def load_codeio() -> LoadReport:
    """Built CodeI/O tasks; every raw row is counted as rejected (with its reason), built,
    build-rejected, or not built yet (``counts``)."""
    items, rejected, raw = scan_raw()
    built = read_built()
    report = LoadReport("codeio", rejected=list(rejected))
    pending = 0
    for item in items:
        record = built.get(item.key)
        if record is None:
            pending += 1
        elif "rejected" in record:
            report.rejected.append(Rejection("codeio", item.where, f"build: {record['rejected']}"))
        else:
            row = record["task"]
            reason = validate_row(row)
            if reason:
                report.rejected.append(Rejection("codeio", item.where, f"built row: {reason}"))
            else:
                report.tasks.append(task_from_row(row, "codeio"))
    report.counts = {"raw": raw, "stdlib": len(items), "built": len(report.tasks), "not_built": pending}
    return report


def require_built(report: LoadReport) -> None:
    if not report.tasks:
        raise TaskError("no CodeI/O tasks are built yet; run `cgrpo data build-codeio` "
                        "(runs each reference solution in the sandbox)")
