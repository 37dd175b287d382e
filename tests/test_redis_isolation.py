"""Tests never write into the user's Redis: $CGRPO_REDIS_URL points at the session's private
server (tests/conftest.py), and what a test starts (a CLI, a job driver) inherits it."""

from __future__ import annotations

import os
import subprocess
import sys

import jobstate as st
from tests.conftest import REPO, USER_REDIS_URL, job_ids


def test_a_job_registered_by_a_test_process_lands_in_the_session_redis_only(session_redis):
    assert st.redis_url() == session_redis.url != USER_REDIS_URL
    job_id = f"isolation-{os.getpid()}"
    probe = ("import sys, jobstate as st\n"
             "js = st.JobState(sys.argv[1])\n"  # the default URL, as a job driver or `cgrpo submit` uses it
             "js.create(name='isolation probe')\n"
             "assert js.close()\n")
    proc = subprocess.run([sys.executable, "-c", probe, job_id], cwd=REPO, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert st.read_job(st.connect(session_redis.url), job_id)["name"] == "isolation probe"
    user_after = job_ids(USER_REDIS_URL)  # None: no Redis answers at the user's URL
    assert user_after is None or job_id not in user_after, f"{job_id} reached the user's Redis"
