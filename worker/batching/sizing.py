"""Cutting pending requests into batches the provider accepts: by count, by bytes (Anthropic
takes at most 256 MB per Message Batches request, OpenAI a 200 MB input file) and by estimated
input tokens (OpenAI's enqueued-token limit per model; ``TRACEJUDGE_BATCH_MAX_TOKENS``).

A batch over a limit is refused as a whole, every cycle, and nothing would say why; a request
that alone exceeds a limit can never be sent in a batch and is returned apart.
"""
from __future__ import annotations

from collections.abc import Callable

from worker.batching.store import Item

# The providers' limits with a margin for the envelope around the lines (JSON array, multipart).
MAX_BYTES = {"anthropic": int(256 * 1024 * 1024 * 0.95), "openai": int(200 * 1024 * 1024 * 0.95)}
BYTES_PER_TOKEN = 4  # a conservative average for English text and JSON


def estimated_tokens(line_bytes: int) -> int:
    return -(-line_bytes // BYTES_PER_TOKEN)


def cut(items: list[Item], size_of: Callable[[Item], int], *, max_count: int, max_bytes: int,
        max_tokens: int | None) -> tuple[list[list[Item]], list[tuple[Item, str]]]:
    """Consecutive groups within every limit, and the items too large for any batch (with why)."""
    groups: list[list[Item]] = []
    too_large: list[tuple[Item, str]] = []
    current: list[Item] = []
    size = tokens = 0
    for item in items:
        line = size_of(item) + 1  # the newline (OpenAI) or comma (Anthropic) between requests
        line_tokens = estimated_tokens(line)
        if line > max_bytes:
            too_large.append((item, f"request of {line:,} bytes exceeds the batch limit of {max_bytes:,} bytes"))
            continue
        if max_tokens is not None and line_tokens > max_tokens:
            too_large.append((item, f"request of ~{line_tokens:,} tokens exceeds the batch limit of "
                                    f"{max_tokens:,} enqueued tokens"))
            continue
        if current and (len(current) >= max_count or size + line > max_bytes
                        or (max_tokens is not None and tokens + line_tokens > max_tokens)):
            groups.append(current)
            current, size, tokens = [], 0, 0
        current.append(item)
        size += line
        tokens += line_tokens
    if current:
        groups.append(current)
    return groups, too_large
