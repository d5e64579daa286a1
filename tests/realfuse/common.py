"""What every part of the check shares: the repo, the CLI, the server's keys, output."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CLI = str(REPO / ".venv" / "bin" / "tracejudge")
# start.sh's headless-initialised project (common.sh's defaults, overridable the same way)
PUBLIC_KEY = os.environ.get("REALFUSE_PUBLIC_KEY") or "pk-lf-realfuse-0001"
SECRET_KEY = os.environ.get("REALFUSE_SECRET_KEY") or "sk-lf-realfuse-0001"
JUDGE_KEY = "local-emulator-key"


class Failed(Exception):
    """A step the check needs could not be done (setup, start, the rubric copy, the fleet)."""


def log(msg: str = "") -> None:
    print(msg, flush=True)
