"""The estimator-variance bench runs end to end and ends with its ratio line."""

from __future__ import annotations

import re
import subprocess
import sys


def test_estimator_variance_bench_prints_the_ratio_last(repo_root):
    out = subprocess.run(
        [sys.executable, "bench/estimator_variance.py", "--synthetic", "--train-steps", "5", "--seeds", "3",
         "--batch", "3", "--completion-len", "6", "--pairs", "1"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"coupled_over_decoupled_variance: \d+\.\d\d", lines[-1]), lines[-3:]
    table = "\n".join(lines)
    for name in ("coupled", "decoupled", "d1"):
        assert re.search(rf"^{name}\s+1\s+3\s", table, re.MULTILINE), table
