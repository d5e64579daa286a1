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

import functools
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from worker import process_state
from worker.errors import ConfigError
from worker.judges.base import Usage

SHIPPED = Path(__file__).with_name("prices.json")
_MILLION = Decimal(1_000_000)
KINDS = ("input", "output", "cache_write", "cache_read")
COLUMNS = KINDS + tuple(f"batch_{k}" for k in KINDS)


class PriceTable:
    """Model (or judge key) -> column -> USD per million tokens (``rows``): the shipped rows, the
    user's file's merged over them (``user_file``; None: the shipped ones only). The files are
    read on first use, so a malformed one is a ConfigError where a price is first needed."""

    def __init__(self, user_file: Path | None = None) -> None:
        self.user_file = Path(user_file) if user_file else None

    @functools.cached_property
    def rows(self) -> Mapping[str, Mapping[str, Decimal]]:
        rows = _read(SHIPPED, partial=False)
        if self.user_file is not None and self.user_file.is_file():
            rows.update(_read(self.user_file, partial=True))
        return rows

    def key_for(self, model: str, judge_key: str | None = None) -> str | None:
        """The row that prices a judge: its judge key's own row, else its model's; None if neither."""
        for key in (judge_key, model):
            if key and key in self.rows:
                return key
        return None

    def check_priced(self, model: str, judge_key: str | None = None) -> None:
        if self.key_for(model, judge_key) is None:
            where = self.user_file or "rubrics/prices.json (or the file TRACEJUDGE_PRICES_FILE names)"
            raise ConfigError(f"judge model {model!r} has no price: add it to {where}, e.g. "
                              f'"{model}": {{"input": 0, "output": 0}} (USD per million tokens; 0 for a '
                              f"self-hosted model), merged over the shipped {SHIPPED.name}")

    def cost_usd(self, model: str, usage: Usage, *, batch: bool = False, judge_key: str | None = None) -> Decimal:
        """``model`` may also be a judge key (``endpoint:model``): its row, else the model's."""
        key = self.key_for(model, judge_key) or self.key_for(model.rsplit(":", 1)[-1]) or model
        p = self.rows[key]
        col = "batch_{}".format if batch else "{}".format
        return (usage.input_tokens * p[col("input")] + usage.output_tokens * p[col("output")]
                + usage.cache_write_tokens * p[col("cache_write")]
                + usage.cache_read_tokens * p[col("cache_read")]) / _MILLION


# The process's table (worker/process_state.py): None until first asked for (then the shipped
# one) or installed; a Runtime installs its own at start-up.
_PRICES: process_state.Slot[PriceTable | None] = process_state.slot("prices", lambda: None)


def use_prices(table: PriceTable) -> None:
    """Make ``table`` the process's (the Runtime does, with the table it built)."""
    with _PRICES.lock:
        _PRICES.value = table


def use_price_file(path: Path | None) -> None:
    """The user's price table for this process (None: the shipped one only), read again."""
    use_prices(PriceTable(path))


def prices() -> PriceTable:
    """The process's price table: the one installed, else the shipped one."""
    with _PRICES.lock:
        if _PRICES.value is None:
            _PRICES.value = PriceTable()
        return _PRICES.value


def user_price_file() -> Path | None:
    return prices().user_file


def price_table(user_file: Path | None = None) -> Mapping[str, Mapping[str, Decimal]]:
    """Model (or judge key) -> column -> USD per million tokens; the user's rows win. Without
    ``user_file``: the process's table."""
    return (prices() if user_file is None else PriceTable(user_file)).rows


def _read(path: Path, *, partial: bool) -> dict[str, Mapping[str, Decimal]]:
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: must be a JSON object of "model": {{"input": ..., "output": ...}}')
    table: dict[str, Mapping[str, Decimal]] = {}
    for model, row in raw.items():
        if model.startswith("_"):
            continue
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: {model} must map price columns to USD per million tokens")
        try:
            found = {k: Decimal(str(v)) for k, v in row.items() if k in COLUMNS and not isinstance(v, bool)}
        except InvalidOperation:
            raise ConfigError(f"{path}: {model} has a price that is not a number") from None
        if any(not p.is_finite() or p < 0 for p in found.values()):
            raise ConfigError(f"{path}: {model} has a negative or non-finite price")
        if partial:
            for kind in KINDS:
                if kind in ("input", "output"):
                    continue
                found.setdefault(kind, found.get("input", Decimal(0)))
            for kind in KINDS:
                if kind in found:
                    found.setdefault(f"batch_{kind}", found[kind])
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            raise ConfigError(f"{path}: {model} lacks {', '.join(missing)}")
        table[model] = found
    return table


def price_key(model: str, judge_key: str | None = None) -> str | None:
    """The row of the process's table that prices a judge (see ``PriceTable.key_for``)."""
    return prices().key_for(model, judge_key)


def check_priced(model: str, judge_key: str | None = None) -> None:
    prices().check_priced(model, judge_key)


def cost_usd(model: str, usage: Usage, *, batch: bool = False, judge_key: str | None = None) -> Decimal:
    """The cost by the process's table (see ``PriceTable.cost_usd``)."""
    return prices().cost_usd(model, usage, batch=batch, judge_key=judge_key)
