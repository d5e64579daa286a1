"""Released rubric versions: rubrics/rubrics.lock, the sha256 of every released ``name@vN``.

A released version is immutable: lint fails when its files changed, and ``release`` never
overwrites a recorded hash. Each entry is ``{"sha256": ..., "files": {name: sha256}}``: the
version's sha256 (worker.rubrics.rubric.version_sha256) and the digest of every file it was
hashed from, its own and the shared prompts (``../repair.j2``), so lint names the file that
changed. An entry that is just the sha256 string (the older form) is still read.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TypedDict

from worker.errors import ConfigError
from worker.rubrics.doc import Problems
from worker.rubrics.rubric import file_sha256, version_files, version_sha256

LOCK_FILE = "rubrics.lock"
_LOCK_KEY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)@v(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LockEntry(TypedDict):
    """A released version in the lock file (the older form is the sha256 string alone)."""

    sha256: str  # the version's sha256 (worker.rubrics.rubric.version_sha256)
    files: dict[str, str]  # each file it is hashed from, by the name it is hashed under -> its sha256


def read_lock(root: Path, problems: Problems | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """The released versions (``name@vN`` -> sha256) and each entry's line in the lock file."""
    found = Problems() if problems is None else problems
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return {}, {}
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        found.add(path, exc.lineno, f"invalid JSON: {exc.msg}")
        raw = None
    if raw is not None and not isinstance(raw, dict):
        found.add(path, 1, 'must be a JSON object of "name@vN": "sha256"')
    entries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for key, entry in (raw or {}).items() if isinstance(raw, dict) else ():
        line = next((i for i, l in enumerate(text.splitlines(), 1) if json.dumps(key) in l), 1)
        sha = entry.get("sha256") if isinstance(entry, dict) else entry
        if not _LOCK_KEY.match(key) or not isinstance(sha, str) or not _SHA256.match(sha):
            found.add(path, line, f'entry {key!r} must be "name@vN": "<64 hex digits>"')
            continue
        entries[key], lines[key] = sha, line
    if problems is None:
        found.raise_errors()
    return entries, lines


def locked_files(root: Path) -> dict[str, dict[str, str]]:
    """``name@vN`` -> {file name as hashed: sha256} for entries that record their files."""
    path = Path(root) / LOCK_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: dict(entry["files"]) for key, entry in raw.items()
            if isinstance(entry, dict) and isinstance(entry.get("files"), dict)} if isinstance(raw, dict) else {}


def lock_entry(version_dir: Path) -> LockEntry:
    return {"sha256": version_sha256(version_dir),
            "files": {name: file_sha256(file) for name, file in version_files(version_dir).items()}}


def changed_files(version_dir: Path, recorded: dict[str, str]) -> list[Path]:
    """The files whose digest differs from the lock's (added, edited or removed), as paths."""
    now = {name: file_sha256(file) for name, file in version_files(version_dir).items()}
    return [(Path(version_dir) / name).resolve() if not name.startswith("../") else
            (Path(version_dir).parent.parent / name[3:]) for name in sorted(set(now) | set(recorded))
            if now.get(name) != recorded.get(name)]


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
    write_lock(root, entries, {key: lock_entry(version_dir)})
    return sha, True


def write_lock(root: Path, entries: dict[str, str], new: dict[str, LockEntry] | None = None) -> None:
    """``entries``: name@vN -> sha256; the recorded files of existing entries are kept, and
    ``new`` gives whole entries (sha256 and files) for the ones being released."""
    path = Path(root) / LOCK_FILE
    files = locked_files(root)
    out: dict[str, LockEntry | str] = {
        key: (new or {}).get(key) or (LockEntry(sha256=sha, files=files[key]) if key in files else sha)
        for key, sha in sorted(entries.items())}
    tmp = path.with_name(f".{LOCK_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old lock, never half a file
