"""Task sources: built-in generator, HumanEval/MBPP/CodeI/O/JSONL loaders and their row validation.

The data files are the real ones fetched by scripts/fetch_data.py (scripts/setup.sh runs it).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tasks import (Task, TaskError, builtin_problems, builtin_tasks, data_dir, difficulty, load_report,
                                load_tasks, resolve_split, validate_row)
from tasks import codeio

REPO = Path(__file__).resolve().parent.parent


def _fingerprint(tasks: list[Task]) -> str:
    return hashlib.sha256(json.dumps([t.__dict__ for t in tasks], sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- built-in generator

def test_builtin_is_deterministic_by_seed_across_processes():
    train = builtin_tasks("train", seed=0)
    code = ("import hashlib, json\nfrom tasks import builtin_tasks\n"
            "t = builtin_tasks('train', seed=0)\n"
            "print(hashlib.sha256(json.dumps([x.__dict__ for x in t], sort_keys=True).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == _fingerprint(train)
    other = builtin_tasks("train", seed=1)
    assert _fingerprint(other) != _fingerprint(train)  # the seed really matters


def test_builtin_splits_are_large_and_share_no_problem_text():
    splits = {name: builtin_tasks(name) for name in ("train", "validation", "heldout")}
    train, validation, heldout = splits.values()
    assert len(train) >= 2000 and 200 <= len(heldout) <= 400
    assert 0.05 <= len(validation) / (len(train) + len(validation)) <= 0.10  # carved from train
    doc = re.compile(r'"""(.*)"""')
    for a, b in (("train", "validation"), ("train", "heldout"), ("validation", "heldout")):
        assert not {t.prompt for t in splits[a]} & {t.prompt for t in splits[b]}, (a, b)
        docs_a = {doc.search(t.prompt).group(1) for t in splits[a]}
        assert not docs_a & {doc.search(t.prompt).group(1) for t in splits[b]}, (a, b)
    assert len({t.task_id for t in train + validation + heldout}) == len(train) + len(validation) + len(heldout)
    for name, tasks in splits.items():
        assert all(t.task_id == f"builtin/{name}/{i}" for i, t in enumerate(tasks))
    assert {difficulty(t.task_id) for t in validation} == {1, 2, 3, 4}


def test_validation_is_carved_from_train_and_leaves_heldout_alone(monkeypatch):
    """Without the validation carve-out the generator gives the same held-out problems, and
    train is exactly today's train plus validation: validation only ever takes from train."""
    from tasks import builtin

    with_validation = {s: builtin_tasks(s, seed=3) for s in builtin.SPLITS}
    monkeypatch.setattr(builtin, "VALIDATION_FRACTION", 0.0)
    builtin._generate.cache_clear()
    try:
        without = {s: builtin_tasks(s, seed=3) for s in builtin.SPLITS}
    finally:
        builtin._generate.cache_clear()
    assert without["validation"] == []
    assert without["heldout"] == with_validation["heldout"]
    assert ({t.prompt for t in without["train"]}
            == {t.prompt for t in with_validation["train"] + with_validation["validation"]})


def test_builtin_problems_are_short_regular_and_graded():
    for split in ("train", "validation", "heldout"):
        problems = builtin_problems(split)
        levels = Counter(p.difficulty for p in problems)
        assert set(levels) == {1, 2, 3, 4}, levels
        for p in problems:
            t = p.task
            assert validate_row(t.__dict__) is None, t.task_id
            assert t.prompt.count("\n") == 2 and t.prompt.startswith(f"def {t.entry_point}(")
            assert 1 <= t.canonical_solution.count("\n") <= 5
            assert 3 <= t.test.count("assert candidate(") <= 5
            assert difficulty(t.task_id) == p.difficulty
    names = {t.entry_point for t in builtin_tasks("train")}
    assert len(names) <= 20  # small vocabulary of function names
    assert difficulty("HumanEval/0") is None and difficulty("builtin/train/999999") is None


def test_heldout_recombines_parts_seen_in_training():
    """A held-out solution's shape (names and constants abstracted) is seen in training."""
    def shape(solution: str) -> str:
        s = re.sub(r"\b\d+\b", "N", solution)
        return re.sub(r"\b(a|b|x|y|m|n|xs|nums|vals|s|text|word)\b", "V", s)

    seen = {shape(t.canonical_solution) for t in builtin_tasks("train")}
    heldout = builtin_tasks("heldout")
    recombined = sum(shape(t.canonical_solution) in seen for t in heldout)
    assert recombined / len(heldout) >= 0.9


def test_builtin_tests_distinguish_a_constant_answer():
    for t in builtin_tasks("heldout"):
        outputs = {line.split(" == ", 1)[1] for line in t.test.splitlines() if "assert" in line}
        assert len(outputs) >= 2, t.prompt + t.test


def _sandbox_run():
    sandbox = pytest.importorskip("sandbox")
    run = getattr(sandbox, "run_program", None)
    if run is None:
        pytest.skip("sandbox.run_program is not available yet")
    return run


def test_builtin_canonical_solutions_pass_their_tests_in_the_sandbox():
    from tasks.execute import run_completions

    _sandbox_run()
    by_family: dict[str, list] = {}
    for split in ("train", "validation", "heldout"):
        for p in builtin_problems(split):
            by_family.setdefault(p.family, []).append(p.task)
    sample = [t for tasks in by_family.values() for t in tasks[:3]]  # every family, 3 each
    good = run_completions([(t, t.canonical_solution) for t in sample], workers=2)
    assert all(ok for ok, _ in good), [(t.task_id, s) for t, (ok, s) in zip(sample, good) if not ok]
    bad = run_completions([(t, "    return None\n") for t in sample[:6]], workers=2)
    assert not any(ok for ok, _ in bad)


# ---------------------------------------------------------------- HumanEval, MBPP

def test_humaneval_every_row_loaded_or_rejected():
    path = data_dir() / "humaneval" / "HumanEval.jsonl.gz"
    rows = [ln for ln in gzip.decompress(path.read_bytes()).decode().splitlines() if ln.strip()]
    report = load_report("humaneval")
    assert len(report.tasks) + len(report.rejected) == len(rows) == 164
    assert len(report.tasks) == 164
    t = report.tasks[0]
    assert (t.task_id, t.entry_point, t.source) == ("HumanEval/0", "has_close_elements", "humaneval")
    assert t.canonical_solution and "def check(candidate)" in t.test


def test_mbpp_every_row_loaded_or_rejected():
    rows = json.loads((data_dir() / "mbpp" / "mbpp-py-reworded.json").read_text())
    report = load_report("mbpp")
    assert len(report.tasks) + len(report.rejected) == len(rows) == 397
    assert len(report.tasks) == 397
    for t in report.tasks:
        assert re.fullmatch(r"MBPP/\d+", t.task_id)
        assert f"def {t.entry_point}(" in t.prompt
        assert "test_check" not in t.test and t.canonical_solution is None
    assert report.tasks[0].task_id == "MBPP/464" and report.tasks[0].entry_point == "check_value"


# ---------------------------------------------------------------- CodeI/O

def test_codeio_every_raw_row_is_an_item_or_rejected_with_a_reason():
    d = data_dir() / "codeio"
    jsonl_rows = sum(1 for ln in gzip.decompress((d / "codeio.jsonl.gz").read_bytes()).decode().splitlines()
                     if ln.strip())
    array_rows = len(json.loads(gzip.decompress((d / "codeio-hq.jsonl.gz").read_bytes())))
    items, rejected, raw = codeio.scan_raw()
    assert raw == jsonl_rows + array_rows
    assert len(items) + len(rejected) == raw
    assert 2000 <= len(items) <= 3300  # "about 3,200 unique items", two-thirds standard-library-only
    reasons = Counter(r.reason.split(" ")[0] for r in rejected)
    assert set(reasons) <= {"duplicate", "imports", "code_sample", "input_generator", "missing", "invalid", "row"}
    assert all(re.search(r"codeio(-hq)?\.jsonl\.gz:\d+$", r.where) for r in rejected)
    assert any("numpy" in r.reason for r in rejected)
    for item in items:
        assert not re.search(r"^\s*(import|from)\s+(numpy|scipy|sympy|pandas)\b", item.code, re.M)
    report = load_report("codeio")
    c = report.counts
    assert c["raw"] == raw and c["stdlib"] == len(items)
    assert c["built"] + c["not_built"] + sum("build" in r.reason for r in report.rejected) == c["stdlib"]


def test_codeio_build_runs_references_in_the_sandbox(tmp_path, monkeypatch):
    run = _sandbox_run()
    from tasks.execute import run_completions

    (tmp_path / "codeio").mkdir()
    for name in codeio.RAW_FILES:
        (tmp_path / "codeio" / name).symlink_to(data_dir() / "codeio" / name)
    monkeypatch.setenv("CGRPO_DATA_DIR", str(tmp_path))
    counts = codeio.build_codeio(6, workers=2, progress=False)
    assert counts["built"] + counts["rejected"] == 6
    again = codeio.build_codeio(2, workers=2, progress=False)  # incremental: the next 2 items
    assert again["already"] == 6
    report = load_report("codeio")
    assert report.counts["built"] == counts["built"] + again["built"] >= 3
    assert report.counts["not_built"] == report.counts["stdlib"] - 8
    tasks = load_tasks("codeio")
    for t in tasks:
        assert t.entry_point == "main_solution" and t.source == "codeio"
        assert t.test.count("assert _close(candidate(") >= codeio.MIN_CASES
    with_solution = [t for t in tasks if t.canonical_solution]
    if with_solution:
        results = run_completions([(t, t.canonical_solution) for t in with_solution], workers=2)
        assert all(ok for ok, _ in results), results
    assert run is not None


# ---------------------------------------------------------------- user JSONL and errors

def test_jsonl_bad_rows_are_rejected_with_line_numbers(tmp_path):
    good = {"task_id": "t/0", "prompt": "def f(a):\n    \"\"\"Return a.\"\"\"\n", "entry_point": "f",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n", "canonical_solution": "    return a\n"}
    rows = [
        json.dumps(good),                                               # 1 ok
        json.dumps({**good, "task_id": "t/1", "test": ""}),              # 2 no tests
        json.dumps({k: v for k, v in good.items() if k != "entry_point"} | {"task_id": "t/2"}),  # 3
        "{not json",                                                     # 4
        "",                                                              # 5 blank: skipped
        json.dumps({**good, "task_id": "t/3", "entry_point": "g"}),      # 6 prompt lacks g
        json.dumps({**good, "task_id": "t/4", "test": "def helper():\n    pass\n"}),  # 7 no check
        json.dumps(good),                                                # 8 duplicate id
        json.dumps({**good, "task_id": "t/5", "test": "def check(candidate):\n    pass\n"}),  # 9 no assert
        json.dumps({**good, "task_id": "t/6", "canonical_solution": "  return a\n  x = (\n"}),  # 10 bad python
        json.dumps([1, 2]),                                              # 11 not an object
        json.dumps({**good, "task_id": "t/7"}),                           # 12 ok
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(rows) + "\n")
    report = load_report(f"jsonl:{path}")
    assert [t.task_id for t in report.tasks] == ["t/0", "t/7"]
    assert all(t.source == f"jsonl:{path}" for t in report.tasks)
    got = {int(r.where.rsplit(":", 1)[1]): r.reason for r in report.rejected}
    assert sorted(got) == [2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert "no tests" in got[2] and "entry_point" in got[3] and "invalid JSON" in got[4]
    assert "does not define the entry point g()" in got[6] and "check(candidate)" in got[7]
    assert "duplicate task_id 't/0'" in got[8] and "no assert" in got[9] and "not valid Python" in got[10]
    assert "not a JSON object" in got[11]
    assert load_tasks(f"jsonl:{path}") == report.tasks


def test_loader_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(TaskError, match="split 'dev' is unknown"):
        resolve_split("dev")
    with pytest.raises(TaskError, match="unknown"):
        load_tasks("kaggle")
    with pytest.raises(TaskError, match="does not exist"):
        load_tasks(f"jsonl:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(TaskError, match="built-in split 'test'"):
        load_tasks("builtin", "test")
    with pytest.raises(TaskError, match="no split"):
        load_tasks("humaneval", "train")
    monkeypatch.setenv("CGRPO_DATA_DIR", str(tmp_path))
    with pytest.raises(TaskError, match="fetch_data.py"):
        load_tasks("humaneval")
    with pytest.raises(TaskError, match="fetch_data.py"):
        load_tasks("codeio")
    assert resolve_split("heldout") == ("builtin", "heldout")
    assert load_tasks("heldout", limit=3) == builtin_tasks("heldout")[:3]
    assert resolve_split("validation") == ("builtin", "validation")
    assert load_tasks("validation", limit=3) == builtin_tasks("validation")[:3]


def test_fetch_data_is_idempotent_and_fast_when_done():
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "scripts/fetch_data.py"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ready" in out.stdout and "fetched" not in out.stdout
    assert time.monotonic() - t0 < 10
