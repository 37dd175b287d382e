"""bench/learning.py: a user's mistake is one line before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, says", [
    (["--set", "learner.lrr=1"], "lrr"),
    (["--set", "run.steps"], "SECTION.FIELD=VALUE"),
    (["--steps", "0"], "--steps"),
    (["--split", "train"], "--split"),
])
def test_bad_arguments_fail_in_one_line_without_starting_ray(argv, says):
    proc = subprocess.run([sys.executable, "bench/learning.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert "training:" not in proc.stdout  # nothing was trained
