"""bench/soak.py in short: mixed requests (good and bad photos, submissions, withdrawals) at
concurrency 8 against the served app. Every answer is the expected one or 503 with Retry-After, file
descriptors and database connections stay flat, and the rows stored are the 201s less the
withdrawals. (Memory is judged by the full run of 20,000 requests; this one is too short for it, so
its allowance is wide.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from api.core.settings import REPO_ROOT

pytestmark = pytest.mark.slow


def test_a_short_soak_answers_everything_as_expected_and_leaks_nothing():
    command = [sys.executable, "-m", "bench.soak", "--requests", "600", "--every", "100", "--rss-slack", "100"]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "ok: no 5xx but 503 with Retry-After" in run.stdout
