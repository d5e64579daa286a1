"""A judge behind the fleet-wide limiter, with the same ``ask(request, repair)`` as any Judge.

A judge's limiter key is ``judge_limit_key(judge_key)``: ``judge:`` and its judge key
(worker.judges.judge_key, "endpoint:model"), so the two name one endpoint × model alike.
"""
from __future__ import annotations

from worker.judges.base import Judge, JudgeReply, JudgeRequest
from worker.rate_limits.limiter import Limit, RateLimiter
from worker.retrying import is_throttle, retry_after_of


def judge_limit_key(judge_key: str) -> str:
    """The limiter key of the judge ``judge_key`` ("endpoint:model"): ``judge:anthropic:claude-...``."""
    return f"judge:{judge_key}"


def estimate_tokens(request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> int:
    """Reserved before the call: about 4 characters a token for the prompt, plus the whole
    ``max_tokens`` answer (what the providers themselves count against output limits)."""
    chars = len(request.system or "") + len(request.user) + len(str(request.schema))
    if repair is not None:
        previous, text = repair
        chars += len(str(previous.assistant_turn or "")) + len(text)
    return chars // 4 + request.max_tokens


def counted_tokens(provider: str, reply: JudgeReply) -> int:
    u = reply.usage
    # Anthropic does not count cache reads against its input-tokens limit; OpenAI does.
    cache_reads = u.cache_read_tokens if provider == "openai" else 0
    return u.input_tokens + u.cache_write_tokens + cache_reads + u.output_tokens


class RateLimitedJudge:
    """Waits for a slot of ``judge:<endpoint>:<model>`` before each call; tells the limiter
    about 429/529 answers and successes.

    Only ``ask`` is limited. ``inner`` is the wrapped judge itself, for what does not go
    through the online limiter: a provider's batch API (worker/batching), the SDK client in
    tests. Nothing else of it is reachable through the wrapper."""

    def __init__(self, inner: Judge, limiter: RateLimiter, limit: Limit, key: str | None = None) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.limiter = limiter
        self.limit = limit
        # ``key``: worker.judges.judge_key(rubric), "endpoint:model" (a hosted provider's is
        # "provider:model", so its limiter key is unchanged); without it, provider × model.
        self.key = key

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        limiter_key = judge_limit_key(self.key or f"{self.provider}:{request.model}")
        # Tokens are reserved (and settled to the real count) only against a configured token
        # limit: unconfigured, the fleet learns the request pace alone, and the round trip is saved.
        tokens = estimate_tokens(request, repair) if self.limit.tokens_per_minute else 0
        ticket = self.limiter.acquire(limiter_key, self.limit, tokens=tokens)
        try:
            reply = self.inner.ask(request, repair)
        except Exception as exc:
            if is_throttle(exc):
                self.limiter.settle(ticket, 0)  # a refused request used no tokens
                self.limiter.throttled(ticket, retry_after_of(exc))
            raise
        self.limiter.settle(ticket, counted_tokens(self.provider, reply))
        self.limiter.succeeded(ticket)
        return reply
