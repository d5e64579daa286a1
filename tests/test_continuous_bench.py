"""The continuous-mode benchmark's smallest run: well-formed output, counts that add up."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_continuous_run_is_consistent(tmp_path):
    out = tmp_path / "continuous.txt"
    done = subprocess.run([sys.executable, "-m", "benchmarks.continuous", "--quick", "--parts", "continuous",
                           "--processes", "1", "--threads", "8", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "COUNT MISMATCH" not in text  # every request the emulator answered is in the endpoint counts
    assert "NOT drained" not in text

    def values(label):
        line = next(line for line in text.splitlines() if line.strip().startswith(label))
        return re.findall(r"\d+(?:\.\d+)?", line[len(label) + line.index(label):])

    today, new = map(float, values("listings per trace (mean)"))
    assert today > 30 and new <= 3  # overlap 3600 at 60 s ticks re-lists ~61 times; new: once per pass
    total_today, total_new = map(int, values("Langfuse requests (all)"))
    judged = values("judged traces / scores")
    assert int(judged[0]) > 0 and int(judged[2]) > 0
    assert int(judged[1]) == 3 * int(judged[0]) and int(judged[3]) == 3 * int(judged[2])  # three rubrics each
    per = list(map(float, values("requests per judged trace")))
    assert abs(per[0] - total_today / int(judged[0])) < 0.01 and abs(per[1] - total_new / int(judged[2])) < 0.01
    # the endpoint rows add up to the total
    rows = re.findall(r"^  (?:GET|POST|PATCH|DELETE) .*?([\d.]+) \((\d+)\)\s+([\d.]+) \((\d+)\)$", text, re.M)
    assert sum(int(r[1]) for r in rows) == total_today and sum(int(r[3]) for r in rows) == total_new
