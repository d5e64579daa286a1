"""Lint of released versions: a version in rubrics.lock whose files changed is an error that
names each changed file (its own, or a shared prompt such as ``rubrics/repair.j2``)."""
from __future__ import annotations

from pathlib import Path

from worker.authoring.lock import LOCK_FILE, changed_files, locked_files, read_lock
from worker.rubrics.doc import Problems
from worker.rubrics.rubric import version_sha256


def lint_released(root: Path, dirs: list[Path], problems: Problems) -> dict[str, str]:
    lock_path = root / LOCK_FILE
    entries, lines = read_lock(root, problems)
    recorded = locked_files(root)
    present = {f"{d.parent.name}@{d.name}": d for d in dirs}
    for key, sha in sorted(entries.items()):
        version_dir = present.get(key)
        if version_dir is None:
            problems.add(lock_path, lines[key], f"{key} is released but its folder is gone: scores that name "
                         "it can no longer be reproduced", "warning")
            continue
        now = version_sha256(version_dir)
        if now != sha:
            problems.add(lock_path, lines[key], f"{key} was released with sha256 {sha}, but {version_dir}/ now "
                         f"hashes to {now}{_changed(version_dir, recorded.get(key))}: a released version is immutable; "
                         f"restore it and add v{int(version_dir.name[1:]) + 1} instead")
    for key, version_dir in present.items():
        if key not in entries:
            problems.add(version_dir, None, f"{key} is not released: it runs as a shadow version beside the "
                         f"others; `tracejudge rubrics release {key}` freezes it", "note")
    return entries


def _changed(version_dir: Path, files: dict[str, str] | None) -> str:
    """Which files changed, when the lock recorded them: a shared prompt such as
    rubrics/repair.j2 is named with the advice to give a new version its own copy."""
    if files is None:
        return ""
    changed = changed_files(version_dir, files)
    return f" (changed: {', '.join(map(str, changed))})" if changed else ""
