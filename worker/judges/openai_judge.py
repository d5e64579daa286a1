"""OpenAI judge (and OpenAI-compatible servers): strict JSON schema, or a forced tool call
on servers that lack ``response_format: json_schema``."""
from __future__ import annotations

import json
import re

import openai

from worker.judges.base import JudgeReply, JudgeRequest, Usage


class OpenAIJudge:
    provider = "openai"

    def __init__(self, api_key: str, base_url: str | None, timeout: float):
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self.use_tool = False  # set once a server refused json_schema

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        if not self.use_tool:
            try:
                params = self.request_params(request, repair, tool=False)
                return self.reply_from(self.client.chat.completions.create(**params), request, tool=False)
            except openai.BadRequestError as exc:
                if "response_format" not in str(exc) and "json_schema" not in str(exc):
                    raise
                self.use_tool = True
        params = self.request_params(request, repair, tool=True)
        return self.reply_from(self.client.chat.completions.create(**params), request, tool=True)

    def request_params(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None,
                       *, tool: bool | None = None) -> dict:
        """The chat.completions body: also one line's ``body`` in an OpenAI Batch input file.

        OpenAI caches prompt prefixes of 1024+ tokens on its own; the system message comes
        first so the rubric's static text is the shared prefix."""
        tool = self.use_tool if tool is None else tool
        messages: list[dict] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        if repair is not None:
            previous, text = repair
            messages += _repair_turns(previous.assistant_turn, text)
        params = dict(model=request.model, messages=messages, max_completion_tokens=request.max_tokens)
        if accepts_temperature(request.model):
            params["temperature"] = 0
        if tool:
            params["tools"] = [{"type": "function", "function": {
                "name": request.tool_name, "description": request.tool_description,
                "parameters": request.schema, "strict": True}}]
            params["tool_choice"] = {"type": "function", "function": {"name": request.tool_name}}
        else:
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": request.tool_name, "strict": True, "schema": request.schema}}
        return params

    def reply_from(self, response, request: JudgeRequest, *, tool: bool) -> JudgeReply:
        choice = response.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if not tool:
            content = choice.message.content
            turn = {"role": "assistant", "content": content or "-"}
            return _reply(_usage(response), choice.finish_reason, refusal, content, turn, request)
        calls = choice.message.tool_calls or []
        arguments = calls[0].function.arguments if calls else None
        turn = {"role": "assistant", "content": choice.message.content or "-"}
        if calls:
            turn = {"role": "assistant", "content": None, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": c.function.arguments}} for c in calls]}
        return _reply(_usage(response), choice.finish_reason, refusal, arguments, turn, request)


def _usage(response) -> Usage:
    u = response.usage
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", 0) or 0) if details else 0
    return Usage(max(0, (u.prompt_tokens or 0) - cached), u.completion_tokens or 0, cached, 0)


def _reply(usage: Usage, finish: str | None, refusal: str | None, text: str | None, turn: dict,
           request: JudgeRequest) -> JudgeReply:
    if refusal:
        return JudgeReply(None, usage, "refused", refusal[:200], turn)
    if finish == "length":
        return JudgeReply(None, usage, "truncated", f"stopped at max_tokens={request.max_tokens}", turn)
    if not text:
        return JudgeReply(None, usage, "unparseable", "empty answer", turn)
    try:
        return JudgeReply(json.loads(text), usage, assistant_turn=turn)
    except ValueError:
        return JudgeReply(None, usage, "unparseable", f"not JSON: {text[:200]!r}", turn)


def _repair_turns(turn: dict, text: str) -> list[dict]:
    if turn.get("tool_calls"):
        return [turn] + [{"role": "tool", "tool_call_id": c["id"], "content": text} for c in turn["tool_calls"]]
    return [turn, {"role": "user", "content": text}]


_REASONING_MODELS = re.compile(r"^(?:o\d|gpt-5)")


def accepts_temperature(model: str) -> bool:
    """Reasoning models (o-series, gpt-5.x) answer 400 to any temperature but the default."""
    return not _REASONING_MODELS.match(model.rsplit("/", 1)[-1].removeprefix("ft:"))
