"""Judge model pinning: a judge must name one fixed snapshot, and not one past end of life."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

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
        return match is not None and (int(match[1]), int(match[2])) >= (4, 6)
    return bool(_DATED_OPENAI.search(model))


# Retirement dates we know of. The anthropic SDK's table (anthropic._data) lists only models
# still to be retired and drops a model once it is gone, so a judge pinned to a retired model
# would pass the check unless we keep the dates ourselves.
KNOWN_END_OF_LIFE = {
    "claude-sonnet-4-5": dt.date(2026, 11, 30),
    "claude-sonnet-4-5-20250929": dt.date(2026, 11, 30),
}


def end_of_life_table() -> dict[str, dt.date]:
    """Model -> end-of-life date: ours, updated by the installed anthropic SDK's table."""
    table = dict(KNOWN_END_OF_LIFE)
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:  # an SDK without the table: ours only
        return table
    for model, raw in DEPRECATED_MODELS.items():
        parsed = _parse_date(raw)
        if parsed is not None:
            table[model] = parsed
    return table


def _parse_date(raw: object) -> dt.date | None:
    cleaned = re.sub(r"(\d+)(st|nd|rd|th)", r"\1", str(raw or ""))
    for fmt in ("%B %d, %Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def check_judge_model(provider: str, model: str, *, allow_floating: bool, today: dt.date,
                      end_of_life: Mapping[str, dt.date] | None = None,
                      identity: tuple[str, str] | None = None) -> list[str]:
    """Raises ConfigError for a floating judge or one retired by ``today``; returns start-up
    warnings. ``end_of_life`` defaults to ``end_of_life_table()``.

    A self-hosted judge (``*-compatible``) is pinned by its ``identity`` (digest, tag or
    revision of the served weights; checked against the server at start-up), whatever its name:
    TRACEJUDGE_ALLOW_FLOATING_MODELS is for hosted aliases only."""
    warnings: list[str] = []
    if provider.endswith("-compatible"):
        if identity is None:
            raise ConfigError(f"self-hosted judge {model!r} declares no judge.identity: pin the served weights "
                              "with one of digest: sha256:..., tag: <name:tag or GGUF file>, revision: <commit> "
                              "(TRACEJUDGE_ALLOW_FLOATING_MODELS does not cover self-hosted models)")
        return warnings
    if not is_pinned(provider, model):
        message = (f"judge model {model!r} is not pinned to a snapshot (use a dated id such as "
                   "'claude-haiku-4-5-20251001' or 'gpt-4o-2024-11-20')")
        if not allow_floating:
            raise ConfigError(message + "; set TRACEJUDGE_ALLOW_FLOATING_MODELS=1 to allow it")
        warnings.append(message)
    eol = (end_of_life_table() if end_of_life is None else end_of_life).get(model)
    if eol is not None:
        if today >= eol:
            raise ConfigError(f"judge model {model!r} reached end of life on {eol}: pick a current model")
        if (eol - today).days <= WARN_DAYS:
            warnings.append(f"judge model {model!r} reaches end of life on {eol}: migrate the rubric")
    return warnings


# Model families, for the self-preference check: a judge tends to rate its own family's
# answers higher (Panickssery et al. 2024, "LLM Evaluators Recognize and Favor Their Own
# Generations"). Ids arrive in many spellings: "anthropic/claude-...", "us.anthropic.claude-...",
# "ft:gpt-4o-...", "meta-llama/Llama-3.1-70B", "models/gemini-2.5-pro", so a family is found by
# a token anywhere in the id, not by its prefix.
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((family, re.compile(pattern, re.I)) for family, pattern in (
    ("anthropic", r"claude"),
    ("openai", r"(?:^|[/.:_])(?:gpt-|chatgpt|o[1-9](?:-|$)|davinci|babbage|text-embedding)"),
    ("google", r"gemini|gemma|palm-?2|bison"),
    ("meta", r"llama"),
    ("mistral", r"mistral|mixtral|codestral|ministral|magistral|pixtral|devstral"),
    ("cohere", r"(?:^|[/.])command(?:-|$)|cohere"),
    ("xai", r"(?:^|[/.])grok"),
    ("deepseek", r"deepseek"),
    ("alibaba", r"qwen|qwq"),
    ("amazon", r"(?:^|[/.])(?:amazon\.)?(?:nova|titan)-"),
    ("microsoft", r"(?:^|[/.])phi-\d"),
))


def model_family(model_id: str | None) -> str | None:
    """The vendor family of a model id, or None when it is not recognised."""
    if not model_id:
        return None
    name = model_id.strip().lower()
    for family, pattern in _FAMILIES:
        if pattern.search(name):
            return family
    return None


def same_family_producers(judge_model: str, producer_models: Iterable[str] | None) -> list[str]:
    """The producer models of the judge's own family (empty when the family is unknown)."""
    family = model_family(judge_model)
    if family is None:
        return []
    return sorted({m for m in producer_models or () if model_family(m) == family})


def self_preference_risk(judge_model: str, producer_models: Iterable[str] | None) -> bool:
    """True when the judge shares a family with any model that produced the judged trace."""
    return bool(same_family_producers(judge_model, producer_models))
