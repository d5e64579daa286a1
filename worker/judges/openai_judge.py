"""OpenAI judge (and OpenAI-compatible servers): strict JSON schema, else a forced function
call, else JSON mode with the schema in the prompt (the chain in structured.py)."""
from __future__ import annotations

import json

import openai
from openai.types.chat import ChatCompletion

from worker.json_types import JSONDict
from worker.judges.base import JudgeReply, JudgeRequest, Usage, repair_turn, reply_json
from worker.judges.structured import ModeChain, ModeMemory, ask_down_the_chain, truncated_in_prose
from worker.rubrics.judge_spec import is_reasoning_model


class OpenAIJudge:
    provider = "openai"

    def __init__(self, api_key: str | None, base_url: str | None, timeout: float, *, key: str = "openai",
                 memory: ModeMemory | None = None, self_hosted: bool = False) -> None:
        # ``api_key`` None (no key configured): the SDK's own environment variable, else its error.
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self.chain = ModeChain("openai", key, memory)
        # A hosted API enforces a forced tool or a schema itself: an answer without it is the
        # model's slip (one repair turn). A self-hosted server may silently ignore the parameter,
        # so there such an answer also means "not supported here".
        self.learn_from_answers = self_hosted

    @property
    def use_tool(self) -> bool:  # batch mode carries the mode per item (worker/batching)
        return self.chain.current == "tool"

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        return ask_down_the_chain(
            self.chain, lambda mode: self.reply_from(self._create(self.request_params(request, repair, mode=mode)),
                                                     request, mode=mode),
            learn_from_answers=self.learn_from_answers)

    def _create(self, params: JSONDict) -> JSONDict:
        """The completion as the server sent it (plain JSON): the SDK builds, sends and checks the
        request (a non-2xx raises its APIStatusError), without its typed parse of the reply."""
        return reply_json(self.client.chat.completions.with_raw_response.create(**params))

    def request_params(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None,
                       *, tool: bool | None = None, mode: str | None = None) -> JSONDict:
        """The chat.completions body: also one line's ``body`` in an OpenAI Batch input file.

        OpenAI caches prompt prefixes of 1024+ tokens on its own; the system message comes
        first so the rubric's static text is the shared prefix."""
        mode = mode or ({True: "tool", False: "json_schema"}[tool] if tool is not None else self.chain.current)
        messages: list[JSONDict] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        user = request.user
        if mode == "json_object" and request.json_instructions:
            user = f"{user}\n\n{request.json_instructions}"
        messages.append({"role": "user", "content": user})
        if repair is not None:
            previous, text = repair
            messages += _repair_turns(repair_turn(previous), text)
        # max_completion_tokens counts a reasoning model's hidden reasoning too (see judge_spec.py).
        params: JSONDict = dict(model=request.model, messages=messages, max_completion_tokens=request.max_tokens)
        if accepts_temperature(request.model):
            params["temperature"] = 0
        if mode == "tool":
            params["tools"] = [{"type": "function", "function": {
                "name": request.tool_name, "description": request.tool_description,
                "parameters": request.schema, "strict": True}}]
            params["tool_choice"] = {"type": "function", "function": {"name": request.tool_name}}
        elif mode == "json_schema":
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": request.tool_name, "strict": True, "schema": request.schema}}
        else:
            params["response_format"] = {"type": "json_object"}
        return params

    def reply_from(self, response: JSONDict | ChatCompletion, request: JudgeRequest, *, tool: bool | None = None,
                   mode: str | None = None) -> JudgeReply:
        """``response``: a chat completion, as plain JSON (online calls, batch result lines) or the SDK's model."""
        mode = mode or ({True: "tool", False: "json_schema"}[tool] if tool is not None else self.chain.current)
        completion = response if isinstance(response, dict) else response.model_dump()
        choice = (completion.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        refusal, content, finish = message.get("refusal"), message.get("content"), choice.get("finish_reason")
        usage = _usage(completion.get("usage"))
        if mode != "tool":
            turn: JSONDict = {"role": "assistant", "content": content or "-"}
            reply = _reply(usage, finish, refusal, content, turn, request)
            if reply.problem == "truncated" and mode == "json_schema":
                reply.detail = truncated_in_prose(request.max_tokens, content or "", began=(content or "").lstrip().startswith("{"))
            return reply
        calls = [(c.get("id"), c.get("function") or {}) for c in message.get("tool_calls") or []]
        arguments = calls[0][1].get("arguments") if calls else None
        turn = {"role": "assistant", "content": content or "-"}
        if calls:
            turn = {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": f.get("name"), "arguments": f.get("arguments")}}
                for call_id, f in calls]}
        reply = _reply(usage, finish, refusal, arguments, turn, request)
        if not calls and reply.problem == "unparseable":
            reply.detail = f"no {request.tool_name} tool call; said: {(content or '')[:200]!r}"
        if not calls and reply.problem == "truncated":
            reply.detail = truncated_in_prose(request.max_tokens, content or "", began=False)
        return reply


def _usage(u: JSONDict | None) -> Usage:
    if not u:
        return Usage()
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(max(0, (u.get("prompt_tokens") or 0) - cached), u.get("completion_tokens") or 0, cached, 0)


def _reply(usage: Usage, finish: str | None, refusal: str | None, text: str | None, turn: JSONDict,
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


def _repair_turns(turn: JSONDict, text: str) -> list[JSONDict]:
    if turn.get("tool_calls"):
        return [turn] + [{"role": "tool", "tool_call_id": c["id"], "content": text} for c in turn["tool_calls"]]
    return [turn, {"role": "user", "content": text}]


def accepts_temperature(model: str) -> bool:
    """Reasoning models (o-series, gpt-5.x) answer 400 to any temperature but the default."""
    return not is_reasoning_model(model)
