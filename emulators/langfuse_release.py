"""``release="4.16"``: the Langfuse emulator as harsh as the real server 4.16.0, where the spec
(and the emulator's other modes) are kinder. What the real server did, call by call, is in
shared/realfuse/README.md ("Real server vs spec: what smoke.py saw"); the source is
langfuse/langfuse @ v4.16.0. In this mode:

- ``POST /api/public/scores`` with a JSON array answers 400 with the server's zod issue and
  stores nothing (``ARRAY_REFUSED``; web/src/pages/api/public/scores/index.ts takes one object).
- v2 observations serve ``input``/``output`` as the raw string stored: a string loaded into the
  emulator is served verbatim (so ``'{"a":"\\udcc3"}'`` decodes, on the client, to a lone
  surrogate, as on the real server); anything else is stored as a JavaScript application's
  ``JSON.stringify`` writes it (non-ASCII kept, lone surrogates escaped), see ``js_stringify``.
- Metadata values are stored as strings and parsed back on every read
  (packages/shared/src/server/utils/metadata_conversion.ts ``parseMetadataCHRecordToDomain`` →
  ``parseJsonPrioritised``): a score's or an observation's metadata string that is JSON comes
  back as that JSON (``{"rubric_version": "1"}`` → ``{"rubric_version": 1}``, ``"true"`` →
  ``true``), integers beyond 2^53 stay strings (``parse_metadata``).
- A route the server does not have answers 404 with Next.js's HTML page (``text/html``), not
  JSON, before authentication; a known route with another method answers 405 JSON.
- (``GET /api/public/v3/scores`` items carry no traceId/comment/configId/metadata unless
  ``fields=details,subject``: every mode of the emulator already answers so.)

The release also picks the server's defaults for the other modes unless they are named:
generation ``v4-events`` (``LANGFUSE_MIGRATION_V4_WRITE_MODE=events_only``, v4's default: the
legacy trace reads answer 404) and score_checks ``async`` (config checks after the 200, a failing
score silently dropped).
"""
from __future__ import annotations

import json
import re

from emulators.http_base import Page, Reply

RELEASES = ("4.16",)
# The modes each release implies when a caller does not name them.
RELEASE_DEFAULTS = {"4.16": {"generation": "v4-events", "score_checks": "async"}}

# What the real 4.16 answered to POST /api/public/scores with [ {…} ] (shared/realfuse/README.md).
ARRAY_REFUSED = {"message": "Invalid request data",
                 "error": [{"expected": "object", "code": "invalid_type", "path": [],
                            "message": "Invalid input: expected object, received array"}]}
METHOD_NOT_ALLOWED = {"message": "Method not allowed", "error": "MethodNotAllowedError"}
# Next.js's 404 page (pages router), what web/server.js answers for a path it has no page for.
NOT_FOUND_HTML = (
    '<!DOCTYPE html><html><head><meta charSet="utf-8"/><meta name="viewport" content="width=device-width"/>'
    '<title>404: This page could not be found</title></head><body><div id="__next"><div style="font-family:'
    'system-ui,&quot;Segoe UI&quot;,Roboto,Helvetica,Arial,sans-serif;height:100vh;text-align:center;display:'
    'flex;flex-direction:column;align-items:center;justify-content:center"><div><h1 class="next-error-h1" '
    'style="display:inline-block;margin:0 20px 0 0;padding:0 23px 0 0;font-size:24px;font-weight:500;'
    'vertical-align:top;line-height:49px">404</h1><div style="display:inline-block"><h2 style="font-size:14px;'
    'font-weight:400;line-height:49px;margin:0">This page could not be found.</h2></div></div></div></div>'
    '</body></html>')

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_SAFE_INTEGER = 2 ** 53 - 1


def release_modes(release: str | None, named: dict) -> dict:
    """The modes ``release`` implies among those ``named`` leaves unset (None or absent)."""
    if release not in RELEASE_DEFAULTS:
        return {}  # none, or unknown (Modes refuses it)
    return {k: v for k, v in RELEASE_DEFAULTS[release].items() if named.get(k) is None}


def array_refused() -> dict:
    return json.loads(json.dumps(ARRAY_REFUSED))  # a fresh copy per reply


def not_found() -> Reply:
    return Reply(404, Page(NOT_FOUND_HTML, "text/html; charset=utf-8"))


def js_stringify(value) -> str:
    """What ``JSON.stringify`` (Node, well-formed) writes: non-ASCII as is, a lone surrogate as
    its ``\\uXXXX`` escape, compact separators."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def raw_io(value):
    """An observation's input/output as v2 serves it: the stored string itself."""
    if value is None or isinstance(value, str):
        return value
    return js_stringify(value)


def parse_metadata(metadata):
    """A metadata object as the server reads it back: every value was stored as a string
    (non-strings as their JSON) and is parsed with parseJsonPrioritised."""
    if not isinstance(metadata, dict):
        return metadata
    return {key: _parse_json_prioritised(value if isinstance(value, str) else js_stringify(value))
            for key, value in metadata.items()}


def _parse_json_prioritised(text: str):
    try:  # NaN/Infinity: Python's json takes them, JSON.parse does not
        return json.loads(text, parse_int=_int_or_text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return text


def _int_or_text(token: str):
    number = int(token)
    return number if abs(number) <= _MAX_SAFE_INTEGER else token  # preserveUnsafeNumbers


def _refuse(token: str):
    raise ValueError(f"{token} is not JSON")
