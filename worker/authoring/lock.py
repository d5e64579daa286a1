"""Released rubric versions: rubrics/rubrics.lock, the sha256 of every released ``name@vN``.

A released version is immutable: lint fails when its files changed, and ``release`` never
overwrites a recorded hash.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from worker.errors import ConfigError
from worker.rubrics.doc import Problems
from worker.rubrics.rubric import version_sha256

LOCK_FILE = "rubrics.lock"
_LOCK_KEY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)@v(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def read_lock(root: Path, problems: Problems | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """The released versions (``name@vN`` -> sha256) and each entry's line in the lock file."""
    own = problems is None
    problems = Problems() if own else problems
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return {}, {}
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(path, exc.lineno, f"invalid JSON: {exc.msg}")
        raw = None
    if raw is not None and not isinstance(raw, dict):
        problems.add(path, 1, 'must be a JSON object of "name@vN": "sha256"')
    entries, lines = {}, {}
    for key, sha in (raw or {}).items() if isinstance(raw, dict) else ():
        line = next((i for i, l in enumerate(text.splitlines(), 1) if json.dumps(key) in l), 1)
        if not _LOCK_KEY.match(key) or not isinstance(sha, str) or not _SHA256.match(sha):
            problems.add(path, line, f'entry {key!r} must be "name@vN": "<64 hex digits>"')
            continue
        entries[key], lines[key] = sha, line
    if own:
        problems.raise_errors()
    return entries, lines


def release(root: Path, key: str) -> tuple[str, bool]:
    """Record ``name@vN``'s sha256 in the lock; (sha256, newly released). Never overwrites a sha."""
    match = _LOCK_KEY.match(key)
    if not match:
        raise ConfigError(f"{key!r}: give a version as name@vN, e.g. helpfulness@v2")
    version_dir = Path(root) / match[1] / f"v{match[2]}"
    if not version_dir.is_dir():
        raise ConfigError(f"{version_dir}: no such version folder")
    sha = version_sha256(version_dir)
    entries, _ = read_lock(root)
    if key in entries:
        if entries[key] != sha:
            raise ConfigError(f"{key} was released with sha256 {entries[key]} but {version_dir} now hashes to "
                              f"{sha}: a released version is immutable, restore it and add "
                              f"v{int(match[2]) + 1} instead")
        return sha, False
    entries[key] = sha
    write_lock(root, entries)
    return sha, True


def write_lock(root: Path, entries: dict[str, str]) -> None:
    path = Path(root) / LOCK_FILE
    tmp = path.with_name(f".{LOCK_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old lock, never half a file
