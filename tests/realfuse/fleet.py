"""tracejudge as a user runs it: a rubric folder, the environment, ``tracejudge scheduler`` and
``tracejudge worker`` as subprocesses of the real CLI, ``tracejudge status --json``."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.realfuse.common import CLI, JUDGE_KEY, PUBLIC_KEY, REPO, SECRET_KEY, Failed, log

REVIEWED = "helpfulness"  # the starter rubric given a review: section in the copy
CALIBRATION_SHARE = 0.25
REVIEW_SECTION = f"""
# Added by tests/realfuse (a copy of the starter rubric): the review loop against the real server.
review:
  bottom_per_week: 2
  calibration_share: {CALIBRATION_SHARE}
  boundary: true
  dataset:
    below: 3
calibration:
  min_kappa: 0.6
  min_pairs: 30
"""
SESSION_RUBRIC, SESSION_IDLE_MINUTES = "conversation_resolution", 0.5
# the starter rubric given a detection target in the copy (power-aware sampling, issue 27)
TARGETED = "groundedness"
TARGET_LINES = """  detection_target: {drop_points: 5, within_hours: 72}
  daily_budget_judged: 2000
"""
SETTLE_SECONDS, SAMPLE_INTERVAL = 40, 3
# tracejudge's own Redis keys read here (the check's own Redis)
CURSOR_KEY, REVIEW_LAST_RUN = "tracejudge:sampler:cursor", "tracejudge:review:last_run"


def environment(langfuse_url: str, redis_url: str, judge_url: str) -> dict[str, str]:
    """The fleet's environment: ours without any LANGFUSE_* / TRACEJUDGE_* of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "TRACEJUDGE_"))}
    env.update({
        "LANGFUSE_BASE_URL": langfuse_url, "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "REDIS_URL": redis_url, "ANTHROPIC_API_KEY": JUDGE_KEY, "ANTHROPIC_BASE_URL": judge_url,
        "OPENAI_API_KEY": JUDGE_KEY, "OPENAI_BASE_URL": judge_url + "/v1",
        "TRACEJUDGE_SETTLE_SECONDS": str(SETTLE_SECONDS), "TRACEJUDGE_SAMPLE_INTERVAL_SECONDS": str(SAMPLE_INTERVAL),
        "TRACEJUDGE_SAMPLE_RATE": "1", "TRACEJUDGE_METRICS_PORT": "0",
    })
    return env


def prepare_rubrics(into: Path, env: dict) -> Path:
    """The starter rubrics with a review: section on one, a 30 s session idle time and a
    detection target on another, each released again in the copy's lock (``rubrics release``),
    checked by ``rubrics lint``."""
    root = into / "rubrics"
    shutil.copytree(REPO / "rubrics", root)
    reviewed = root / REVIEWED / "v1" / "rubric.yaml"
    if "\nreview:" not in reviewed.read_text():
        reviewed.write_text(reviewed.read_text().rstrip("\n") + "\n" + REVIEW_SECTION)
    session = root / SESSION_RUBRIC / "v1" / "rubric.yaml"
    text, n = re.subn(r"(?m)^(\s*idle_minutes:)\s*[0-9.]+", rf"\g<1> {SESSION_IDLE_MINUTES}", session.read_text())
    if n != 1:
        raise Failed(f"{session}: no session.idle_minutes line to shorten")
    session.write_text(text)
    targeted = root / TARGETED / "v1" / "rubric.yaml"
    text, n = re.subn(r"(?m)^(sampling:\n(?:  .*\n)*)", lambda m: m.group(1) + TARGET_LINES, targeted.read_text(), 1)
    if n != 1:
        raise Failed(f"{targeted}: no sampling: section to give a detection target")
    targeted.write_text(text)
    lock_path = root / "rubrics.lock"
    lock = json.loads(lock_path.read_text())
    for name in (REVIEWED, SESSION_RUBRIC, TARGETED):
        lock.pop(f"{name}@v1", None)
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    for name in (REVIEWED, SESSION_RUBRIC, TARGETED):
        out = subprocess.run([CLI, "rubrics", "release", f"{name}@v1", "--dir", str(root)], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise Failed(f"tracejudge rubrics release {name}@v1 failed:\n{out.stdout}{out.stderr}")
    lint = subprocess.run([CLI, "rubrics", "lint", "--dir", str(root)], env=env, capture_output=True, text=True)
    if lint.returncode != 0:
        raise Failed(f"tracejudge rubrics lint failed on the rubric copy:\n{lint.stdout}{lint.stderr}")
    log("rubrics: " + ", ".join(line.split()[1] for line in lint.stdout.splitlines() if line.startswith("ok ")))
    return root


def start(env: dict, work: Path, client: redis.Redis) -> list[subprocess.Popen]:
    """The scheduler and a 1 x 8 worker, each in its own process group; returns once the
    scheduler made its first tick."""
    procs = []
    for name, argv in (("scheduler", [CLI, "scheduler"]),
                       ("worker", [CLI, "worker", "--processes", "1", "--threads", "8"])):
        with open(work / f"{name}.log", "ab") as out:
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + 60
    while not client.get(CURSOR_KEY):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise Failed(f"the scheduler made no first tick in 60 s (see {work}/scheduler.log, {work}/worker.log)")
        time.sleep(0.5)
    return procs


def run_review_tick(client: redis.Redis, wait_seconds: float = 90) -> bool:
    """The scheduler runs the review loop at its first tick and then every 15 minutes (no
    setting shortens that): clear its last-run mark in our Redis so the next tick runs it over
    the run's confirmed scores. True once it ran."""
    cleared = time.time()
    client.delete(REVIEW_LAST_RUN)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        mark = client.get(REVIEW_LAST_RUN)
        if mark and float(mark) >= cleared:
            return True
        time.sleep(1)
    return False


def status(env: dict) -> dict:
    out = subprocess.run([CLI, "status", "--json"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise Failed(f"tracejudge status --json failed: {out.stderr[-500:]}")
    return json.loads(out.stdout)
