"""Anthropic judge: forced tool use, the static system prompt marked for prompt caching.

The cache prefix is tools + system (the API's order), both fixed per rubric version, so every
call for a rubric version after the first reads it from the cache (when it is at least the
model's minimum cacheable length; shorter prefixes are simply not cached, never an error).
``request_params`` and ``reply_from`` are shared with Message Batches, which carry the same
params per request and return the same Message per result.
"""
from __future__ import annotations

import anthropic

from worker.judges.base import JudgeReply, JudgeRequest, Usage

CACHE_CONTROL = {"type": "ephemeral"}  # the default 5-minute TTL: priced at 1.25x input to write


class AnthropicJudge:
    provider = "anthropic"
    cache_prefix = True  # mark the static prefix for caching (off only to measure without it)

    def __init__(self, api_key: str, base_url: str | None, timeout: float):
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=0)

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        return self.reply_from(self.client.messages.create(**self.request_params(request, repair)), request)

    def request_params(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> dict:
        messages: list[dict] = [{"role": "user", "content": request.user}]
        if repair is not None:
            previous, text = repair
            messages += _repair_turns(previous.assistant_turn, text)
        params = dict(
            model=request.model,
            max_tokens=request.max_tokens,
            # No temperature: anthropic SDK 2.x dropped sampling parameters from messages.create
            # (the current models don't take them); determinism comes from the forced tool schema.
            messages=messages,
            tools=[{"name": request.tool_name, "description": request.tool_description,
                    "input_schema": request.schema}],
            tool_choice={"type": "tool", "name": request.tool_name},
        )
        if request.system:
            block = {"type": "text", "text": request.system}
            if self.cache_prefix:
                block["cache_control"] = CACHE_CONTROL
            params["system"] = [block]
        return params

    def reply_from(self, response, request: JudgeRequest) -> JudgeReply:
        u = response.usage
        usage = Usage(u.input_tokens or 0, u.output_tokens or 0,
                      getattr(u, "cache_read_input_tokens", 0) or 0,
                      getattr(u, "cache_creation_input_tokens", 0) or 0)
        turn = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]}
        if response.stop_reason == "max_tokens":
            return JudgeReply(None, usage, "truncated", f"stopped at max_tokens={request.max_tokens}", turn)
        if response.stop_reason == "refusal":
            return JudgeReply(None, usage, "refused", "the judge declined to answer", turn)
        for block in response.content:
            if block.type == "tool_use" and block.name == request.tool_name:
                return JudgeReply(block.input, usage, assistant_turn=turn)
        text = " ".join(getattr(b, "text", "") for b in response.content)[:200]
        return JudgeReply(None, usage, "unparseable", f"no {request.tool_name} tool call; said: {text!r}", turn)


def _repair_turns(turn: dict, text: str) -> list[dict]:
    tool_uses = [b for b in turn["content"] if b.get("type") == "tool_use"]
    if tool_uses:
        return [turn, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b["id"], "is_error": True, "content": text}
            for b in tool_uses]}]
    if not turn["content"]:  # the API refuses an empty assistant turn
        turn = {"role": "assistant", "content": "-"}
    return [turn, {"role": "user", "content": text}]
