"""Type names for data that crosses the wire as JSON (Langfuse replies, judge replies, Redis
records): the shapes are the server's, checked where they are read, not declared here.

``JSONDict`` is what a JSON object decodes to. Its values are ``Any`` on purpose: a reply is
walked with ``.get`` and checked field by field (worker/langfuse_io/text.py cleans it first),
and a precise TypedDict for every Langfuse and provider body would restate their OpenAPI specs.
"""
from __future__ import annotations

from typing import Any, TypeAlias

JSONDict: TypeAlias = dict[str, Any]
JSONList: TypeAlias = list[Any]
JSONValue: TypeAlias = JSONDict | JSONList | str | int | float | bool | None
