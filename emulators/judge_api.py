"""Judge API emulator: the Anthropic Messages and OpenAI Chat Completions wire protocols.

The real SDKs talk to it over HTTP (``anthropic.Anthropic(base_url=url)``,
``openai.OpenAI(base_url=url + "/v1")``). It answers structured verdicts for the requested
schema (see judge_verdicts.py for the quality and fault conventions), with fixed latency,
random or triggered faults, prompt-cache accounting as the real APIs do it, the two batch
APIs (judge_batches.py) and statistics.

Prompt caching, as documented by the providers:
- Anthropic: a prefix (tools, then system, then messages) up to a block marked
  ``cache_control`` is written to the cache (``cache_creation_input_tokens``) when it is at
  least the model's minimum cacheable length, and read (``cache_read_input_tokens``) by a later
  request with the identical prefix within the TTL (5 minutes from last use, or ``ttl: 1h``);
  ``input_tokens`` counts only the tokens after the last breakpoint or not cached.
- OpenAI: automatic for prompts of 1024+ tokens; ``prompt_tokens_details.cached_tokens`` is the
  longest previously seen prefix (within the TTL) in steps of 128 tokens from 1024.

    python -m emulators.judge_api --port 8788 --latency-ms 300
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict

from emulators.http_base import Emulator, Reply, Server, is_invalid, serve_until_signalled
from emulators.judge_batches import BatchRoutes, RawBodyHandler
from emulators.judge_structured import (
    JSON_SCHEMA_500,
    NO_JINJA,
    STRUCTURED_DEFAULTS,
    output_config_schema,
    schema_in_text,
)
from emulators.judge_verdicts import all_text, quality, tokens, triggers, verdict_for

DEFAULTS = {"latency_ms": 0, "latency_jitter_ms": 0, "fault_rate_429": 0.0, "fault_rate_500": 0.0,
            "fault_rate_529": 0.0, "garbage_rate": 0.0, "retry_after": 1, "openai_json_schema": True,
            "cache_ttl_seconds": 300.0, "batch_delay_seconds": 0.2, "batch_expire_rate": 0.0,
            # The providers' limits: Anthropic's 256 MB per batch request, OpenAI's 200 MB per
            # batch input file and its enqueued-token limit per model (None: not enforced).
            "batch_max_request_bytes": 256 * 1024 * 1024, "batch_max_file_bytes": 200 * 1024 * 1024,
            "batch_enqueued_token_limit": None,
            # Keys answered 401 (revoked) and models answered 404 (retired), to test the breakers.
            "revoked_keys": [], "retired_models": []}
DEFAULTS.update(STRUCTURED_DEFAULTS)  # how servers treat structured-output parameters (judge_structured.py)
# Minimum cacheable prefix per Anthropic model family, in tokens (first matching prefix wins;
# the documented floors, taking the higher one where sources disagree).
ANTHROPIC_MIN_CACHE = (("claude-opus-4-7", 2048), ("claude-opus-4-6", 4096), ("claude-opus-4-5", 4096),
                       ("claude-haiku-4-5", 4096), ("claude-sonnet-4-6", 2048), ("claude-3-5-haiku", 2048),
                       ("claude-3-haiku", 2048), ("claude-", 1024))
OPENAI_MIN_CACHE, OPENAI_CACHE_STEP = 1024, 128


class JudgeEmulator(Emulator):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency_ms: int = 0, seed: int = 0):
        super().__init__(host, port)
        self.seed = seed
        self.config = dict(DEFAULTS, latency_ms=latency_ms)
        self._lock = threading.Lock()
        self.batches = BatchRoutes(self)
        self.reset()

    def start(self) -> str:
        # The JSON handler plus raw bodies (multipart file uploads) and raw answers (JSONL).
        handler = type("Handler", (RawBodyHandler,), {"app": self})
        self._server = Server((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.base_url

    # -- admin --------------------------------------------------------------------------
    def configure(self, **cfg) -> None:
        unknown = set(cfg) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown judge emulator settings: {sorted(unknown)}")
        with self._lock:
            self.config.update(cfg)

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.rng = random.Random(self.seed)
            self.seen_bodies: set[str] = set()
            self.cache: dict[str, float] = {}  # prefix key -> expiry (time.time())
            if hasattr(self, "batches"):
                self.batches.reset()
            self.counts: Counter = Counter()
            self.in_flight = 0
            self.max_in_flight = 0
            self.request_times: dict[str, list[float]] = defaultdict(list)
            self.paid_at: list[float] = []  # arrival time of every call answered 200 (billed)

    def stats(self) -> dict:
        with self._lock:
            return {"total_requests": self.counts["total"], "counts": dict(self.counts),
                    "max_in_flight": self.max_in_flight,
                    "request_times": {k: list(v) for k, v in self.request_times.items()},
                    "paid_at": list(self.paid_at),
                    "input_tokens": self.counts["input_tokens"], "output_tokens": self.counts["output_tokens"],
                    "cache_read_tokens": self.counts["cache_read_tokens"],
                    "cache_write_tokens": self.counts["cache_write_tokens"]}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # -- HTTP -----------------------------------------------------------------------------
    def handle(self, method, path, query, headers, body, raw: bytes = b""):
        if path == "/_emulator/stats" and method == "GET":
            return 200, self.stats(), {}
        if path == "/_emulator/config" and method == "POST":
            try:
                self.configure(**(body or {}))
            except ValueError as exc:
                raise Reply(400, {"error": str(exc)}) from None
            return 200, self.config, {}
        if path == "/_emulator/reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}, {}
        batch_answer = self.batches.route(method, path, headers, body, raw)
        if batch_answer is not None:
            return batch_answer
        if method == "GET" and path == "/v1/models" and self.config["served_models"] is not None:
            return 200, {"object": "list", "data": self.config["served_models"]}, {}
        if method == "GET" and path == "/props" and self.config["props"] is not None:
            return 200, self.config["props"], {}
        if method == "POST" and path == "/v1/messages":
            return self._provider("anthropic", headers, body, self._anthropic)
        if method == "POST" and path == "/v1/chat/completions":
            return self._provider("openai", headers, body, self._openai)
        raise Reply(404, {"error": {"message": f"no route {method} {path}", "type": "not_found_error"}})

    def _provider(self, provider, headers, body, answer):
        arrived = time.time()
        with self._lock:
            self.counts["total"] += 1
            self.counts[provider] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            cfg = dict(self.config)
        try:
            latency = cfg["latency_ms"] + (self.rng.uniform(0, cfg["latency_jitter_ms"]) if cfg["latency_jitter_ms"] else 0)
            if latency:
                time.sleep(latency / 1000)
            self._auth(provider, headers)
            self._revoked(provider, headers, cfg)
            if is_invalid(body) or not isinstance(body, dict):
                raise _error(provider, 400, "invalid_request_error", "request body is not a JSON object")
            model = body.get("model")
            if model in cfg["retired_models"]:
                with self._lock:
                    self.counts[f"retired:{model}"] += 1
                raise _error(provider, 404, "not_found_error", f"model: {model} (the model does not exist)")
            with self._lock:
                self.request_times[f"{provider}:{model}"].append(arrived)
            if getattr(self, "provider_limits", None) is not None:  # emulators/judge_limits.py
                self.provider_limits.admit(provider, body)
            status, payload, extra = answer(body, cfg)
            with self._lock:
                self.counts[f"status:{status}"] += 1
                if status == 200:
                    self.paid_at.append(arrived)
            return status, payload, extra
        except Reply as reply:
            with self._lock:
                self.counts[f"status:{reply.status}"] += 1
            raise
        finally:
            with self._lock:
                self.in_flight -= 1

    def _revoked(self, provider, headers, cfg) -> None:
        key = (headers.get("x-api-key") or (headers.get("Authorization") or "").removeprefix("Bearer ")).strip()
        if key and key in cfg["revoked_keys"]:
            with self._lock:
                self.counts[f"revoked:{provider}"] += 1
            raise _error(provider, 401, "authentication_error", "invalid x-api-key")

    def _auth(self, provider, headers):
        if provider == "anthropic":
            bearer = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if not (headers.get("x-api-key") or "").strip() and not bearer:
                raise _error(provider, 401, "authentication_error", "x-api-key or Authorization header is required")
            if not headers.get("anthropic-version"):
                raise _error(provider, 400, "invalid_request_error", "anthropic-version header is required")
        else:
            auth = headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                raise _error(provider, 401, "invalid_api_key", "Incorrect API key provided")

    def _faults(self, provider, body, text, cfg) -> set[str]:
        """HTTP faults raise; returns the answer faults to apply."""
        first_turn = not any(m.get("role") in ("assistant", "tool") for m in body.get("messages") or [])
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            first_body = digest not in self.seen_bodies
            self.seen_bodies.add(digest)
            roll = self.rng.random()
        answer_faults = set()
        for kind, once in triggers(text):
            if kind in ("500", "529", "429"):
                if not once or first_body:
                    self._http_fault(provider, int(kind), cfg)
            elif not once or first_turn:
                answer_faults.add(kind)
        edge = 0.0
        for status, rate in ((429, cfg["fault_rate_429"]), (500, cfg["fault_rate_500"]), (529, cfg["fault_rate_529"])):
            edge += rate
            if roll < edge:
                self._http_fault(provider, status, cfg)
        if self.rng.random() < cfg["garbage_rate"]:
            answer_faults.add("garbage")
        return answer_faults

    def _http_fault(self, provider, status, cfg):
        with self._lock:
            self.counts[f"fault:{status}"] += 1
        kinds = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
        headers = {"retry-after": str(cfg["retry_after"])} if status == 429 else {}
        if provider == "openai" and status == 529:
            status = 503
        raise _error(provider, status, kinds.get(status, "api_error"), f"emulated {status}", headers)

    # -- Anthropic ------------------------------------------------------------------------
    def _anthropic(self, body, cfg):
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                raise _error("anthropic", 400, "invalid_request_error", f"{key}: Field required")
        text = all_text(body.get("system")) + "\n" + all_text(body["messages"])
        faults = self._faults("anthropic", body, text, cfg)
        q = quality(text)
        usage = self._anthropic_usage(body, cfg)
        tool = _forced_tool(body)
        if tool is not None and cfg["anthropic_tools"] == "refuse":
            raise _error("anthropic", 500, "api_error", NO_JINJA)
        if tool is not None and cfg["anthropic_tools"] == "ignore":
            tool = None
        text_schema = None if tool else (output_config_schema(body, cfg) or schema_in_text(all_text(body["messages"])))
        content, stop = [], "end_turn"
        if "refusal" in faults:
            content, stop = [], "refusal"
        elif text_schema is not None and "garbage" not in faults:
            verdict = verdict_for(text_schema, q, "offscale" in faults)
            content = [{"type": "text", "text": json.dumps(verdict)}]
        elif "garbage" in faults or tool is None:
            content = [{"type": "text", "text": f"I think this answer is decent, maybe {round(q * 10)}/10."}]
        elif "truncated" in faults:
            content, stop = [{"type": "tool_use", "id": _id("toolu_"), "name": tool["name"], "input": {}}], "max_tokens"
        else:
            verdict = verdict_for(tool.get("input_schema") or {}, q, "offscale" in faults)
            content, stop = [{"type": "tool_use", "id": _id("toolu_"), "name": tool["name"], "input": verdict}], "tool_use"
        prefill = _prefill(body["messages"])
        if prefill and content and content[0]["type"] == "text" and content[0]["text"].startswith(prefill):
            content[0]["text"] = content[0]["text"][len(prefill):]  # a prefilled answer is continued, not repeated
        stopped_at = None
        if content and content[0]["type"] == "text":
            cuts = [(content[0]["text"].find(s), s) for s in body.get("stop_sequences") or [] if s in content[0]["text"]]
            if cuts:  # the API ends at the first stop sequence and leaves it out of the text
                at, stopped_at = min(cuts)
                content[0]["text"], stop = content[0]["text"][:at], "stop_sequence"
        usage["output_tokens"] = tokens(json.dumps(content))
        self._count_tokens(usage["input_tokens"], usage["output_tokens"])
        return 200, {"id": _id("msg_"), "type": "message", "role": "assistant", "model": body["model"],
                     "content": content, "stop_reason": stop, "stop_sequence": stopped_at, "usage": usage}, \
            {"request-id": _id("req_")}

    def _anthropic_usage(self, body, cfg) -> dict:
        """Tokens by kind, with the cache read/written as the Messages API accounts them."""
        blocks = [(json.dumps(t, sort_keys=True), t.get("cache_control")) for t in body.get("tools") or []]
        blocks += [(all_text(b), b.get("cache_control") if isinstance(b, dict) else None)
                   for b in _blocks(body.get("system"))]
        for message in body["messages"]:
            blocks += [(all_text(b), b.get("cache_control") if isinstance(b, dict) else None)
                       for b in _blocks(message.get("content"))]
        if body.get("cache_control") and blocks:  # automatic caching: a breakpoint on the last block
            blocks[-1] = (blocks[-1][0], body["cache_control"])
        prefix, breakpoints = "", []
        for text, control in blocks:
            prefix += text + "\n"
            if control:
                breakpoints.append((prefix, 3600.0 if control.get("ttl") == "1h" else cfg["cache_ttl_seconds"]))
        total = tokens(prefix)
        floor = next(n for p, n in ANTHROPIC_MIN_CACHE if body["model"].startswith(p) or p == "claude-")
        now = time.time()
        read = written = 0
        with self._lock:
            for text, ttl in reversed(breakpoints):  # the longest cached prefix is read
                n = tokens(text)
                if n < floor:
                    continue
                key = "anthropic:" + hashlib.sha256((body["model"] + "\0" + text).encode()).hexdigest()
                if self.cache.get(key, 0) > now:
                    self.cache[key] = now + ttl  # a hit refreshes the TTL
                    read = n
                    break
            for text, ttl in breakpoints:  # longer prefixes than the one read are written
                n = tokens(text)
                if n < floor or n <= read:
                    continue
                key = "anthropic:" + hashlib.sha256((body["model"] + "\0" + text).encode()).hexdigest()
                self.cache[key] = now + ttl
                written = n - read
            self.counts["cache_read_tokens"] += read
            self.counts["cache_write_tokens"] += written
        return {"input_tokens": max(0, total - read - written), "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read}

    # -- OpenAI ---------------------------------------------------------------------------
    def _openai(self, body, cfg):
        for key in ("model", "messages"):
            if key not in body:
                raise _error("openai", 400, "invalid_request_error", f"Missing required parameter: '{key}'.")
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema" and not cfg["openai_json_schema"]:
            if cfg["openai_json_schema_status"] == 500:
                raise _error("openai", 500, "internal_server_error", JSON_SCHEMA_500)
            raise _error("openai", cfg["openai_json_schema_status"], "invalid_request_error",
                         "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
                         param="response_format")
        if body.get("tools") and not cfg["openai_tools"]:
            raise _error("openai", 500, "server_error", NO_JINJA)
        text = all_text(body["messages"])
        faults = self._faults("openai", body, text, cfg)
        q = quality(text)
        schema, tool_name = None, None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        elif fmt.get("type") == "json_object":
            schema = schema_in_text(text)
        choice_tool = body.get("tool_choice")
        if isinstance(choice_tool, dict) and choice_tool.get("type") == "function":
            tool_name = choice_tool["function"]["name"]
            for tool in body.get("tools") or []:
                if tool.get("function", {}).get("name") == tool_name:
                    schema = tool["function"].get("parameters") or {}
        message = {"role": "assistant", "content": None, "refusal": None}
        finish = "stop"
        if "refusal" in faults:
            message["refusal"] = "I'm sorry, I can't help with evaluating this content."
        elif "garbage" in faults or schema is None:
            message["content"] = f"Overall a solid answer, I'd say {round(q * 10)} out of 10."
        else:
            payload = json.dumps(verdict_for(schema, q, "offscale" in faults))
            if "truncated" in faults:
                payload, finish = payload[: max(1, len(payload) // 2)], "length"
            if tool_name:
                message["tool_calls"] = [{"id": _id("call_"), "type": "function",
                                          "function": {"name": tool_name, "arguments": payload}}]
                finish = "tool_calls" if finish == "stop" else finish
            else:
                message["content"] = payload
        # Tools and the response schema come first in the prompt, so they are part of the prefix.
        prompt_text = json.dumps([body.get("tools"), fmt], sort_keys=True) + "\n" + text
        prompt = tokens(prompt_text)
        completion = tokens(json.dumps(message))
        cached = self._openai_cached(body["model"], prompt_text, prompt, cfg)
        self._count_tokens(prompt, completion)
        return 200, {"id": _id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
                     "model": body["model"], "system_fingerprint": "fp_emulator",
                     "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion,
                               "prompt_tokens_details": {"cached_tokens": cached}}}, {}

    def _openai_cached(self, model: str, text: str, prompt: int, cfg) -> int:
        """The longest prefix seen within the TTL, in 128-token steps from 1024; all are stored."""
        if prompt < OPENAI_MIN_CACHE:
            return 0
        now, cached = time.time(), 0
        steps = range(OPENAI_MIN_CACHE, prompt + 1, OPENAI_CACHE_STEP)
        keys = {n: "openai:" + hashlib.sha256((model + "\0" + text[: n * 4]).encode()).hexdigest() for n in steps}
        with self._lock:
            for n, key in keys.items():
                if self.cache.get(key, 0) > now:
                    cached = n
            for key in keys.values():
                self.cache[key] = now + cfg["cache_ttl_seconds"]
            self.counts["cache_read_tokens"] += cached
        return cached

    def answer_offline(self, provider: str, body) -> tuple[int, dict]:
        """One batch request, answered as the online endpoint would (faults included)."""
        with self._lock:
            cfg = dict(self.config)
            self.counts[f"batch:{provider}:answered"] += 1
        try:
            if not isinstance(body, dict):
                raise _error(provider, 400, "invalid_request_error", "request body is not a JSON object")
            status, payload, _ = (self._anthropic if provider == "anthropic" else self._openai)(body, cfg)
        except Reply as reply:
            status, payload = reply.status, reply.body
        with self._lock:
            self.counts[f"batch:{provider}:status:{status}"] += 1
        return status, payload

    def _count_tokens(self, inp, out):
        with self._lock:
            self.counts["input_tokens"] += inp
            self.counts["output_tokens"] += out


def _prefill(messages: list) -> str:
    """A final assistant message's text: the Messages API (and llama.cpp) continue it."""
    last = messages[-1] if messages else {}
    return all_text(last.get("content")) if isinstance(last, dict) and last.get("role") == "assistant" else ""


def _forced_tool(body) -> dict | None:
    choice = body.get("tool_choice") or {}
    for tool in body.get("tools") or []:
        if choice.get("type") == "tool" and tool.get("name") == choice.get("name"):
            return tool
        if choice.get("type") == "any":
            return tool
    return None


def _blocks(content) -> list:
    if isinstance(content, str):
        return [content]
    return list(content or [])


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _error(provider, status, kind, message, headers=None, param=None) -> Reply:
    if provider == "anthropic":
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": _id("req_")}
    else:
        body = {"error": {"message": message, "type": kind, "param": param, "code": kind}}
    return Reply(status, body, headers or {})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Anthropic + OpenAI judge API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-delay-seconds", type=float, default=DEFAULTS["batch_delay_seconds"],
                        help="how long a submitted batch stays in progress")
    args = parser.parse_args(argv)
    emulator = JudgeEmulator(args.host, args.port, latency_ms=args.latency_ms, seed=args.seed)
    emulator.configure(batch_delay_seconds=args.batch_delay_seconds)
    serve_until_signalled(emulator)


if __name__ == "__main__":
    main()
