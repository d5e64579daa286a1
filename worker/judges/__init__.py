"""Judge providers behind one interface (``Judge`` in base.py), one judge per endpoint × model.

``judge_key(rubric)`` names that pair ("endpoint:model"): rate limits (under the limiter key
``judge_limit_key(judge_key)``, worker/rate_limits/judge.py), the learned structured-output
mode, per-endpoint prices and circuit breaking are keyed by it.
"""
from __future__ import annotations

from typing import TypeAlias

from worker.errors import ConfigError
from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import Judge, JudgeReply, Usage
from worker.judges.openai_judge import OpenAIJudge
from worker.judges.structured import ModeMemory
from worker.logs import register_secrets
from worker.rubrics.judge_spec import JudgeSpec
from worker.rubrics.rubric import Rubric
from worker.settings import Settings

__all__ = ["AnthropicJudge", "Judge", "JudgeReply", "ModeMemory", "OpenAIJudge", "ProviderJudge", "Usage",
           "api_key_for", "build_judge", "judge_key"]
NO_KEY = "no-key"  # the SDKs insist on a key; a local server without auth ignores it
# A judge that calls a provider's API itself (not the limiter's wrapper): what ``build_judge`` makes.
ProviderJudge: TypeAlias = AnthropicJudge | OpenAIJudge


def judge_key(judge: Rubric | JudgeSpec) -> str:
    """A stable "endpoint:model" for a rubric (or its JudgeSpec): ``openai:gpt-4.1-2025-04-14``,
    ``openai@llama.internal:8080/v1:smollm2-135m-instruct``."""
    spec = judge if isinstance(judge, JudgeSpec) else judge.judge
    return f"{spec.endpoint}:{spec.model}"


def api_key_for(spec: JudgeSpec, settings: Settings) -> str | None:
    """The judge's key: the global provider key, or the variable a compatible endpoint names."""
    if spec.provider == "anthropic":
        return settings.anthropic_api_key
    if spec.provider == "openai":
        return settings.openai_api_key
    if spec.api_key_env is None:
        return NO_KEY
    key = settings.named_secret(spec.api_key_env)
    register_secrets(key)  # a key a rubric names is masked in every log line like the global ones
    return key


def build_judge(judge: JudgeSpec | str, settings: Settings, *, memory: ModeMemory | None = None) -> ProviderJudge:
    """The judge for a rubric's ``judge`` section (or a hosted provider's name, for tools)."""
    spec = judge if isinstance(judge, JudgeSpec) else JudgeSpec(judge, "")
    if spec.provider not in ("anthropic", "openai", "anthropic-compatible", "openai-compatible"):
        raise ValueError(f"unknown judge provider {spec.provider!r}")
    key = api_key_for(spec, settings)
    if key is None and spec.self_hosted:
        raise ConfigError(f"judge endpoint {spec.base_url}: {spec.api_key_env} (judge.api_key_env) is not set")
    name = judge_key(spec) if spec.model else spec.provider
    if spec.protocol == "anthropic":
        base_url = spec.base_url if spec.self_hosted else settings.anthropic_base_url
        return AnthropicJudge(key, base_url, settings.judge_timeout_seconds, key=name, memory=memory,
                              self_hosted=spec.self_hosted)
    base_url = spec.base_url if spec.self_hosted else settings.openai_base_url
    return OpenAIJudge(key, base_url, settings.judge_timeout_seconds, key=name, memory=memory,
                       self_hosted=spec.self_hosted)
