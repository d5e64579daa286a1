"""Judge cost in USD from token usage and the one price table (prices.json).

Usage counts each token once by kind: ``input_tokens`` are the uncached input tokens
(Anthropic's ``input_tokens``; OpenAI's ``prompt_tokens - cached_tokens``), cache writes and
cache reads are priced apart, and batch calls use the batch columns.
"""
from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from worker.errors import ConfigError
from worker.judges.base import Usage

_TABLE = Path(__file__).with_name("prices.json")
_MILLION = Decimal(1_000_000)
KINDS = ("input", "output", "cache_write", "cache_read")
COLUMNS = KINDS + tuple(f"batch_{k}" for k in KINDS)


@lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, Decimal]]:
    raw = json.loads(_TABLE.read_text())
    table = {model: {k: Decimal(str(v)) for k, v in row.items()}
             for model, row in raw.items() if not model.startswith("_")}
    for model, row in table.items():
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ConfigError(f"{_TABLE}: {model} lacks {', '.join(missing)}")
    return table


def check_priced(model: str) -> None:
    if model not in price_table():
        raise ConfigError(f"judge model {model!r} has no price in {_TABLE}: add its per-million-token prices")


def cost_usd(model: str, usage: Usage, *, batch: bool = False) -> Decimal:
    p = price_table()[model]
    col = "batch_{}".format if batch else "{}".format
    return (usage.input_tokens * p[col("input")] + usage.output_tokens * p[col("output")]
            + usage.cache_write_tokens * p[col("cache_write")]
            + usage.cache_read_tokens * p[col("cache_read")]) / _MILLION
