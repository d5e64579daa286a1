"""Anthropic judge (and Anthropic-compatible servers): forced tool use, else an
``output_config`` JSON schema, else JSON text with the schema in the prompt (structured.py).

The static system prompt is marked for prompt caching. The cache prefix is tools + system (the
API's order), both fixed per rubric version, so every call for a rubric version after the first
reads it from the cache (when it is at least the model's minimum cacheable length; shorter
prefixes are simply not cached, never an error). ``request_params`` and ``reply_from`` are
shared with Message Batches, which carry the same params per request and return the same
Message per result.
"""
from __future__ import annotations

import json

import anthropic
from anthropic.types import Message

from worker.json_types import JSONDict
from worker.judges.base import JudgeReply, JudgeRequest, Usage, repair_turn, reply_json
from worker.judges.structured import ModeChain, ModeMemory, ask_down_the_chain, truncated_in_prose

CACHE_CONTROL: dict[str, str] = {"type": "ephemeral"}  # the default 5-minute TTL: priced at 1.25x input to write
# JSON-text mode (a server that honours neither tools nor a schema) prefills the answer with the
# object's opening up to its first string property's value (``{"reasoning": "``), Anthropic's
# documented way to get JSON without tools (llama.cpp continues a final assistant message too,
# and echoes it), and stops at the object's end: the verdict is one flat object, so its first
# "}" outside a string ends it, and a "}" inside a string leaves the cut text invalid JSON
# (unparseable, never another verdict). A small model then neither copies the schema back nor
# runs on to max_tokens after the object (SmolLM2-135M on llama.cpp: ~70 s a call before).
JSON_END = "}"


def json_prefill(schema: JSONDict) -> str:
    properties: JSONDict = schema.get("properties") or {}
    for first, spec in properties.items():  # the first property only
        return f'{{"{first}": "' if first and spec.get("type") == "string" else "{"
    return "{"


class AnthropicJudge:
    provider = "anthropic"
    cache_prefix = True  # mark the static prefix for caching (off only to measure without it)

    def __init__(self, api_key: str | None, base_url: str | None, timeout: float, *, key: str = "anthropic",
                 memory: ModeMemory | None = None, self_hosted: bool = False) -> None:
        # ``api_key`` None (no key configured): the SDK's own environment variable, else its error.
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=0)
        self.chain = ModeChain("anthropic", key, memory)
        # A hosted API enforces a forced tool or a schema itself: an answer without it is the
        # model's slip (one repair turn). A self-hosted server may silently ignore the parameter,
        # so there such an answer also means "not supported here".
        self.learn_from_answers = self_hosted

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        return ask_down_the_chain(
            self.chain, lambda mode: self.reply_from(self._create(self.request_params(request, repair, mode=mode)),
                                                     request, mode=mode),
            learn_from_answers=self.learn_from_answers)

    def _create(self, params: JSONDict) -> JSONDict:
        """The Message as the server sent it (plain JSON): the SDK builds, sends and checks the
        request (a non-2xx raises its APIStatusError as usual), but its typed parse of the reply,
        which reply_from does not need, is skipped (a tenth of a judge call's client CPU)."""
        return reply_json(self.client.messages.with_raw_response.create(**params))

    def request_params(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None,
                       *, mode: str | None = None) -> JSONDict:
        """The messages.create body (also one request's ``params`` in a Message Batch)."""
        mode = mode or self.chain.current
        user = request.user
        if mode == "json_text" and request.json_instructions:
            user = f"{user}\n\n{request.json_instructions}"
        messages: list[JSONDict] = [{"role": "user", "content": user}]
        if repair is not None:
            previous, text = repair
            messages += _repair_turns(repair_turn(previous), text)
        if mode == "json_text":
            messages.append({"role": "assistant", "content": json_prefill(request.schema)})
        params: JSONDict = dict(
            model=request.model,
            max_tokens=request.max_tokens,
            # No temperature: anthropic SDK 2.x dropped sampling parameters from messages.create
            # (the current models don't take them); determinism comes from the forced tool schema.
            messages=messages,
        )
        if mode == "json_text":
            params["stop_sequences"] = [JSON_END]
        if mode == "tool":
            params["tools"] = [{"name": request.tool_name, "description": request.tool_description,
                                "input_schema": request.schema}]
            params["tool_choice"] = {"type": "tool", "name": request.tool_name}
        elif mode == "output_config":
            params["extra_body"] = {"output_config": {"format": {"type": "json_schema", "schema": request.schema}}}
        if request.system:
            block: JSONDict = {"type": "text", "text": request.system}
            if self.cache_prefix:
                block["cache_control"] = CACHE_CONTROL
            params["system"] = [block]
        return params

    def reply_from(self, response: JSONDict | Message, request: JudgeRequest, *,
                   mode: str | None = None) -> JudgeReply:
        """``response``: a Message, as plain JSON (online calls) or the SDK's model (batch results)."""
        mode = mode or self.chain.current
        message = response if isinstance(response, dict) else response.model_dump()
        u = message.get("usage") or {}
        usage = Usage(u.get("input_tokens") or 0, u.get("output_tokens") or 0,
                      u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0)
        blocks = [{k: v for k, v in b.items() if v is not None} for b in message.get("content") or []]
        turn: JSONDict = {"role": "assistant", "content": blocks}
        text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
        stop_reason = message.get("stop_reason")
        if stop_reason == "max_tokens":
            began = (any(b.get("type") == "tool_use" for b in blocks) if mode == "tool"
                     else mode == "json_text" or text.lstrip().startswith("{"))
            return JudgeReply(None, usage, "truncated", truncated_in_prose(request.max_tokens, text, began), turn)
        if stop_reason == "refusal":
            return JudgeReply(None, usage, "refused", "the judge declined to answer", turn)
        if mode == "json_text":
            prefill = json_prefill(request.schema)
            if not text.lstrip().startswith(prefill):
                text = prefill + text  # the API answers the continuation; llama.cpp echoes the prefill
            if message.get("stop_sequence") == JSON_END:  # llama.cpp says end_turn, the API stop_sequence
                text += JSON_END
            turn["content"] = [{"type": "text", "text": text}]
        if mode != "tool":
            if not text.strip():
                return JudgeReply(None, usage, "unparseable", "empty answer", turn)
            try:
                return JudgeReply(json.loads(text), usage, assistant_turn=turn)
            except ValueError:
                return JudgeReply(None, usage, "unparseable", f"not JSON: {text[:200]!r}", turn)
        for block in blocks:
            if block.get("type") == "tool_use" and block.get("name") == request.tool_name:
                return JudgeReply(block.get("input"), usage, assistant_turn=turn)
        return JudgeReply(None, usage, "unparseable", f"no {request.tool_name} tool call; said: {text[:200]!r}", turn)


def _repair_turns(turn: JSONDict, text: str) -> list[JSONDict]:
    tool_uses = [b for b in turn["content"] if b.get("type") == "tool_use"]
    if tool_uses:
        return [turn, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b["id"], "is_error": True, "content": text}
            for b in tool_uses]}]
    if not turn["content"]:  # the API refuses an empty assistant turn
        turn = {"role": "assistant", "content": "-"}
    return [turn, {"role": "user", "content": text}]
