"""Judge cost in USD from token usage and the one price table (prices.json)."""
from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from worker.errors import ConfigError
from worker.judges.base import Usage

_TABLE = Path(__file__).with_name("prices.json")
_MILLION = Decimal(1_000_000)


@lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, Decimal]]:
    raw = json.loads(_TABLE.read_text())
    return {model: {k: Decimal(str(v)) for k, v in row.items()}
            for model, row in raw.items() if not model.startswith("_")}


def check_priced(model: str) -> None:
    if model not in price_table():
        raise ConfigError(f"judge model {model!r} has no price in {_TABLE}: add its per-million-token prices")


def cost_usd(model: str, usage: Usage, *, batch: bool = False) -> Decimal:
    p = price_table()[model]
    total = (usage.input_tokens * p["input"] + usage.output_tokens * p["output"]
             + usage.cache_write_tokens * p["cache_write"] + usage.cache_read_tokens * p["cache_read"]) / _MILLION
    if batch:
        total *= p["batch_discount"]
    return total
