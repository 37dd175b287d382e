"""The compose stack for real: a multi-node Ray cluster of containers on this host trains a
job across its nodes and survives a lost rollout node, a Redis restart and a lost learner
node (deploy/drill.py, in its own compose project with fresh volumes and free loopback
ports, removed at the end).

``bash scripts/test.sh`` runs it (it sets ``CGRPO_STACK_TEST=1`` unless told otherwise, and
its setup builds the stack's images first); a bare ``pytest`` skips it unless the variable
is set. Measured on 2 shared cores (docs/deploy.md): the drill takes about 4 minutes when
the images are current; an image built from other sources than the checkout's is rebuilt
first (``bash deploy/build.sh``, about 2 minutes after a code change), and images that do
not exist yet are built from nothing (about 10 minutes: two debootstraps, the wheelhouse,
the image) — setup does that before the suite starts.

Without the switch the test is a plain skip that says how to turn it on; with it, it is a
Docker test, skipped only when no Docker engine answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
from stack import docker_answers, image_is_current, missing_images  # noqa: E402

DRILL_S = 900  # the drill took 3 min 47 s on 2 shared cores (docs/deploy.md)
BUILD_S = 1500
OPTED_IN = os.environ.get("CGRPO_STACK_TEST") == "1"
# Marked a Docker test only when asked for: the suite turns a Docker test's skip into a
# failure where an engine answers (tests/conftest.py), which is right once opted in.
pytestmark = [pytest.mark.slow, *([pytest.mark.docker] if OPTED_IN else [])]


@pytest.mark.skipif(not OPTED_IN, reason="about 4 min, more to build the images; scripts/test.sh sets CGRPO_STACK_TEST=1, which "
                                         "runs the compose stack's fault drill (docs/deploy.md)")
@pytest.mark.timeout(BUILD_S + DRILL_S + 240)
def test_compose_stack_trains_across_nodes_and_survives_lost_nodes():
    if not docker_answers():
        pytest.skip("no Docker engine answers (scripts/setup.sh starts dockerd where it can)")
    if missing_images() or not image_is_current():
        build = subprocess.run(["bash", "deploy/build.sh"], capture_output=True, text=True, timeout=BUILD_S, cwd=REPO)
        assert build.returncode == 0, "building the stack's images failed:\n" + build.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "deploy/drill.py", "--project", f"cgrpo-test-{os.getpid()}", "--timeout", str(DRILL_S)],
        capture_output=True, text=True, timeout=DRILL_S + 200, cwd=REPO)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    passed = {" ".join(line.split()[1:3]) for line in proc.stdout.splitlines() if line.startswith("  ok  ")}
    assert {"placement rollout", "placement learner", "placement sandbox", "rollout node", "redis restarted",
            "learner node", "job completed"} <= passed, report
