"""The Langfuse emulator's /_emulator/... admin hooks: load data, set faults and modes, inspect."""
from __future__ import annotations

from emulators import langfuse_review as review
from emulators.http_base import Reply
from emulators.langfuse_store import Invalid


def admin_route(emu, method: str, path: str, body):
    route = (method, path)
    if route == ("POST", "/_emulator/observations"):
        try:
            return 200, {"loaded": emu.store.load(body if isinstance(body, list) else [])}, {}
        except Invalid as exc:
            raise Reply(400, {"message": str(exc)}) from None
    if route == ("POST", "/_emulator/annotations"):  # a reviewer's score (emulators/langfuse_review.py)
        try:
            return 200, review.annotate(emu.store, body), {}
        except Invalid as exc:
            raise Reply(400, {"message": str(exc)}) from None
    if route == ("GET", "/_emulator/review"):
        return 200, review.snapshot(emu.store), {}
    if route == ("POST", "/_emulator/config"):
        try:
            emu.configure(**(body or {}))
        except ValueError as exc:
            raise Reply(400, {"message": str(exc)}) from None
        return 200, emu.faults, {}
    if route == ("POST", "/_emulator/reset"):
        emu.reset()
        return 200, {"ok": True}, {}
    if route == ("POST", "/_emulator/modes"):
        try:
            return 200, emu.set_modes(**(body or {})), {}
        except (TypeError, ValueError) as exc:
            raise Reply(400, {"message": str(exc)}) from None
    if route == ("POST", "/_emulator/drain-scores"):
        return 200, {"drained": emu.drain_scores(), "dropped": emu.dropped_score_counts()}, {}
    if method == "POST" and path.startswith("/_emulator/score-configs/") and path.endswith("/archive"):
        return 200, emu.archive_config(path.split("/")[3]), {}
    views = {"/_emulator/scores": emu.scores, "/_emulator/score-writes": emu.score_writes,
             "/_emulator/requests": emu.requests, "/_emulator/violations": emu.violations,
             "/_emulator/stats": emu.stats, "/_emulator/modes": emu.modes.view,
             "/_emulator/dropped-scores": emu.dropped_scores, "/_emulator/endpoints": emu.endpoint_counts,
             "/_emulator/listings": emu.listing_appearances}
    if method == "GET" and path in views:
        return 200, views[path](), {}
    raise Reply(404, {"message": "no such admin route"})

