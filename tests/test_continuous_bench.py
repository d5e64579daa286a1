"""The continuous-mode benchmark's smallest run: its figures (the JSON it writes beside its
printed table) are well formed and add up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # two worker fleets, about two minutes


def test_quick_continuous_run_is_consistent(tmp_path):
    out, figures = tmp_path / "continuous.txt", tmp_path / "continuous.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.continuous", "--quick", "--parts", "continuous",
                           "--processes", "1", "--threads", "8", "--out", str(out), "--json", str(figures)],
                          cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "listings per trace (mean)" in out.read_text()  # the printed table is still there
    runs = json.loads(figures.read_text())["schedules"]
    today, new = runs["today"], runs["new"]
    for run in (today, new):
        assert run["problems"] == []  # every request the emulator answered is in the endpoint counts
        assert run["drained"]
        assert run["judged_traces"] > 0
        assert run["scores"] == 3 * run["judged_traces"]  # three rubrics each
        assert run["requests_per_judged_trace"] == pytest.approx(run["requests_total"] / run["judged_traces"])
        # the endpoint counts add up to the total, and to what the emulator itself counted
        assert sum(run["requests_by_endpoint"].values()) == run["requests_total"] == run["requests_counted_by_emulator"]
    # overlap 3600 at 60 s ticks re-lists ~61 times; new: once per pass
    assert today["listings_per_trace_mean"] > 30 and new["listings_per_trace_mean"] <= 3
