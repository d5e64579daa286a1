"""Text read from Langfuse made safe to keep, encode and send on: the one place it is cleaned.

Langfuse keeps what an application sent, and the real server (4.16) returns an observation's
``input``/``output`` as the raw string it stored. An application written in JavaScript stores
lone surrogates (a string cut inside an emoji, ``JSON.stringify`` writes them as ``\\udcc3``),
so decoding the reply, or the JSON text inside ``input``/``output``, gives Python strings that
no UTF-8 encoder accepts: the Redis copy of a trace read, the judge request, a score's metadata
and a dataset item would each raise ``UnicodeEncodeError`` and the job would retry forever.
NUL characters are kept by JSON too, and refused by some stores and providers.

So text from the server is cleaned where it becomes Python text, and nowhere later:

- ``loads``: every JSON reply of the server (``client.raw_request``), and the JSON text inside a
  raw ``input``/``output`` (``traces.parse_io``). Invalid UTF-8 bytes, lone surrogates and NUL
  become U+FFFD, in values and in object keys alike. A part nested deeper than ``MAX_DEPTH``
  becomes a visible marker (the encoders and renderers after the read recurse, and would hit
  Python's recursion limit); text too deep to decode at all is a ``ValueError`` (``parse_io``
  keeps it as text).
- ``clean``: the same for a value already decoded.

Walking a decoded document costs time, so it is walked only when its text holds an escape that
can produce such a code point (``\\ud800``-``\\udfff``, ``\\u0000``) or enough brackets to
nest that deep: almost never.
"""
from __future__ import annotations

import json
import re
from typing import overload

from worker.json_types import JSONDict, JSONList, JSONValue

REPLACEMENT = "\ufffd"
MAX_DEPTH = 200
TOO_DEEP = f"[… nested deeper than {MAX_DEPTH} levels: not kept by tracejudge's trace reader …]"
_BAD = re.compile("[\ud800-\udfff\x00]")
# JSON escapes that decode to a surrogate or NUL (a literal NUL cannot appear in JSON text).
_SUSPECT = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


@overload
def clean(value: str) -> str: ...


@overload
def clean(value: JSONValue) -> JSONValue: ...


def clean(value: JSONValue) -> JSONValue:
    """``value`` with every lone surrogate and NUL, in strings and dict keys, replaced by U+FFFD,
    and every list or object deeper than MAX_DEPTH replaced by the TOO_DEEP marker."""
    return _clean(value, 0)


def loads(raw: str | bytes | bytearray) -> JSONValue:
    """``json.loads`` of server text, cleaned (see the module). ValueError when ``raw`` is not
    JSON (or too deep to decode)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    try:
        value: JSONValue = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep to decode") from None
    if _has_bad(text) or _SUSPECT.search(text) or (
            text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH)):
        return clean(value)
    return value


def _has_bad(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate or NUL (a few times faster than a regex search)."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _clean_text(value: str) -> str:
    return _BAD.sub(REPLACEMENT, value) if _has_bad(value) else value


def _clean(value: JSONValue, depth: int) -> JSONValue:
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {_clean_text(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


def _deeper_than(value: JSONValue, limit: int) -> bool:
    """Whether ``value`` has a list or object ``limit`` levels down (level by level: no recursion)."""
    level: list[JSONDict | JSONList] = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        if depth >= limit:
            return True
        below: list[JSONDict | JSONList] = []
        for item in level:
            for child in (item.values() if isinstance(item, dict) else item):
                if isinstance(child, (dict, list)):
                    below.append(child)
        level, depth = below, depth + 1
    return False
