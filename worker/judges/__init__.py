"""Judge providers behind one interface (``Judge`` in base.py)."""
from __future__ import annotations

from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import Judge, JudgeReply, Usage
from worker.judges.openai_judge import OpenAIJudge
from worker.settings import Settings

__all__ = ["Judge", "JudgeReply", "Usage", "build_judge"]


def build_judge(provider: str, settings: Settings) -> Judge:
    if provider == "anthropic":
        return AnthropicJudge(settings.anthropic_api_key, settings.anthropic_base_url,
                              settings.judge_timeout_seconds)
    if provider == "openai":
        return OpenAIJudge(settings.openai_api_key, settings.openai_base_url, settings.judge_timeout_seconds)
    raise ValueError(f"unknown judge provider {provider!r}")
