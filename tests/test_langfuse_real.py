"""Opt-in: the pipeline against the real Langfuse server (``./dev langfuse-test``; CI and ``./dev
test`` skip it).

``python -m tests.realfuse`` (tests/realfuse/) sets up ``../shared/realfuse`` (Langfuse 4.16 built
from source: about 12 minutes once) when it is not set up, starts it, runs ``tracejudge scheduler``
and ``tracejudge worker`` against it behind a counting proxy (the judge emulated), sends a few dozen
traces over OTLP (every target: traces, observations, sessions; the seed's malformed answers), reads
everything back and exits non-zero when a score, queue item or dataset item is missing or doubled.
This test runs it when ``TRACEJUDGE_LANGFUSE_TEST=1``:

    TRACEJUDGE_LANGFUSE_TEST=1 .venv/bin/pytest -q -s -m real_server tests/test_langfuse_real.py
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.real_server,
              pytest.mark.skipif(os.environ.get("TRACEJUDGE_LANGFUSE_TEST") != "1",
                                 reason="opt-in: ./dev langfuse-test (the real Langfuse server of ../shared/realfuse)")]


def test_nothing_missing_nothing_doubled_against_the_real_server():
    run = subprocess.run([sys.executable, "-m", "tests.realfuse"], cwd=REPO)
    assert run.returncode == 0, "see the figures and the FAILED list above"
