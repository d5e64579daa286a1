"""Judge model pinning: a judge must name one fixed snapshot, and not one past end of life."""
from __future__ import annotations

import datetime as dt
import re


from worker.errors import ConfigError

_DATED_OPENAI = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_DATED_ANTHROPIC = re.compile(r"-\d{8}$")
_UNDATED_SNAPSHOT = re.compile(r"^claude-(?:opus|sonnet|haiku)-(\d+)-(\d+)$")
_FLOATING = re.compile(r"(-latest|-chat-latest|^chatgpt-)")
WARN_DAYS = 30


def is_pinned(provider: str, model: str) -> bool:
    if _FLOATING.search(model):
        return False
    if provider == "anthropic":
        if _DATED_ANTHROPIC.search(model):
            return True
        match = _UNDATED_SNAPSHOT.match(model)
        # From the Claude 4.6 generation on, undated ids are fixed snapshots themselves.
        return bool(match) and (int(match[1]), int(match[2])) >= (4, 6)
    return bool(_DATED_OPENAI.search(model))


def end_of_life(model: str) -> dt.date | None:
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:  # an SDK without the table: nothing known
        return None
    raw = DEPRECATED_MODELS.get(model)
    if not raw:
        return None
    cleaned = re.sub(r"(\d+)(st|nd|rd|th)", r"\1", raw)
    for fmt in ("%B %d, %Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def check_judge_model(provider: str, model: str, *, allow_floating: bool,
                      today: dt.date | None = None) -> list[str]:
    """Raises ConfigError for a floating or retired judge; returns start-up warnings."""
    warnings = []
    if not is_pinned(provider, model):
        message = (f"judge model {model!r} is not pinned to a snapshot (use a dated id such as "
                   "'claude-haiku-4-5-20251001' or 'gpt-4o-2024-11-20')")
        if not allow_floating:
            raise ConfigError(message + "; set TRACEJUDGE_ALLOW_FLOATING_MODELS=1 to allow it")
        warnings.append(message)
    eol = end_of_life(model)
    if eol is not None:
        today = today or dt.date.today()
        if today >= eol:
            raise ConfigError(f"judge model {model!r} reached end of life on {eol}: pick a current model")
        if (eol - today).days <= WARN_DAYS:
            warnings.append(f"judge model {model!r} reaches end of life on {eol}: migrate the rubric")
    return warnings
