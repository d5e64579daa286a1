"""Judge cost in USD from token usage and the price table: the shipped prices.json, with the
user's own table merged over it (``<rubrics_dir>/prices.json`` or TRACEJUDGE_PRICES_FILE).

Usage counts each token once by kind: ``input_tokens`` are the uncached input tokens
(Anthropic's ``input_tokens``; OpenAI's ``prompt_tokens - cached_tokens``), cache writes and
cache reads are priced apart, and batch calls use the batch columns.

A user row is keyed by model id, or by a judge key (``endpoint:model``, see
worker.judges.judge_key) when one model name is served at different prices; it may give only
``input`` and ``output`` (cache columns default to ``input``, batch columns to online), and
``0`` is a valid price (a self-hosted model).
"""
from __future__ import annotations

import json
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path

from worker.errors import ConfigError
from worker.judges.base import Usage

SHIPPED = Path(__file__).with_name("prices.json")
_MILLION = Decimal(1_000_000)
KINDS = ("input", "output", "cache_write", "cache_read")
COLUMNS = KINDS + tuple(f"batch_{k}" for k in KINDS)

_lock = threading.Lock()
_user_file: Path | None = None
_tables: dict[Path | None, dict[str, dict[str, Decimal]]] = {}


def use_price_file(path: Path | None) -> None:
    """The user's price table for this process (None: the shipped one only); set at start-up."""
    global _user_file
    with _lock:
        _user_file = Path(path) if path else None
        _tables.pop(_user_file, None)  # re-read: the file may have changed since


def user_price_file() -> Path | None:
    return _user_file


def price_table(user_file: Path | None = None) -> dict[str, dict[str, Decimal]]:
    """Model (or judge key) -> column -> USD per million tokens; the user's rows win."""
    user_file = _user_file if user_file is None else Path(user_file)
    with _lock:
        if user_file not in _tables:
            table = _read(SHIPPED, partial=False)
            if user_file is not None and user_file.is_file():
                table.update(_read(user_file, partial=True))
            _tables[user_file] = table
        return _tables[user_file]


def _read(path: Path, *, partial: bool) -> dict[str, dict[str, Decimal]]:
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: must be a JSON object of "model": {{"input": ..., "output": ...}}')
    table = {}
    for model, row in raw.items():
        if model.startswith("_"):
            continue
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: {model} must map price columns to USD per million tokens")
        try:
            prices = {k: Decimal(str(v)) for k, v in row.items() if k in COLUMNS and not isinstance(v, bool)}
        except InvalidOperation:
            raise ConfigError(f"{path}: {model} has a price that is not a number") from None
        if any(not p.is_finite() or p < 0 for p in prices.values()):
            raise ConfigError(f"{path}: {model} has a negative or non-finite price")
        if partial:
            for kind in KINDS:
                if kind in ("input", "output"):
                    continue
                prices.setdefault(kind, prices.get("input", Decimal(0)))
            for kind in KINDS:
                if kind in prices:
                    prices.setdefault(f"batch_{kind}", prices[kind])
        missing = [c for c in COLUMNS if c not in prices]
        if missing:
            raise ConfigError(f"{path}: {model} lacks {', '.join(missing)}")
        table[model] = prices
    return table


def price_key(model: str, judge_key: str | None = None) -> str | None:
    """The row that prices a judge: its judge key's own row, else its model's; None if neither."""
    table = price_table()
    for key in (judge_key, model):
        if key and key in table:
            return key
    return None


def check_priced(model: str, judge_key: str | None = None) -> None:
    if price_key(model, judge_key) is None:
        where = _user_file or "rubrics/prices.json (or the file TRACEJUDGE_PRICES_FILE names)"
        raise ConfigError(f"judge model {model!r} has no price: add it to {where}, e.g. "
                          f'"{model}": {{"input": 0, "output": 0}} (USD per million tokens; 0 for a '
                          f"self-hosted model), merged over the shipped {SHIPPED.name}")


def cost_usd(model: str, usage: Usage, *, batch: bool = False, judge_key: str | None = None) -> Decimal:
    """``model`` may also be a judge key (``endpoint:model``): its row, else the model's."""
    key = price_key(model, judge_key) or price_key(model.rsplit(":", 1)[-1]) or model
    p = price_table()[key]
    col = "batch_{}".format if batch else "{}".format
    return (usage.input_tokens * p[col("input")] + usage.output_tokens * p[col("output")]
            + usage.cache_write_tokens * p[col("cache_write")]
            + usage.cache_read_tokens * p[col("cache_read")]) / _MILLION
