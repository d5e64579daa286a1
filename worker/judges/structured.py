"""Structured-output modes per endpoint: which way of getting a schema-shaped verdict a server
takes, learned once and remembered for the fleet.

OpenAI protocol, strongest first: ``json_schema`` (strict ``response_format``) → ``tool`` (a
forced function call) → ``json_object`` (JSON mode, the schema in the prompt). Anthropic
protocol: ``tool`` (forced tool use) → ``output_config`` (``output_config.format`` JSON schema)
→ ``json_text`` (the schema in the prompt, the answer's text parsed as JSON). Every mode ends
in the same strict parse: an answer not in the required form is unscored with a reason.

A server *refuses* a mode when it answers 4xx/5xx naming the parameter (llama-cpp-python's
server answers ``json_schema`` with a 500), or *ignores* it: a forced tool that is not called,
a constrained answer that is not JSON at all. Either way the judge moves one step down, asks
again, and records the step in Redis (``ModeMemory``) under the endpoint's judge key, so the
fleet learns it once instead of once per process.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from worker.judges.base import JudgeReply, Usage

log = logging.getLogger("tracejudge.judges")

CHAINS = {
    "openai": ("json_schema", "tool", "json_object"),
    "anthropic": ("tool", "output_config", "json_text"),
}
# The request parameters each mode adds: a refusal naming one of them means "not supported".
PARAMETERS = {
    "json_schema": ("response_format", "json_schema"),
    "json_object": ("response_format", "json_object"),
    "tool": ("tools", "tool_choice", "tool", "function"),
    "output_config": ("output_config", "output_format"),
    "json_text": (),
}
MEMORY_KEY = "tracejudge:judge:structured_output"  # Redis hash: judge key -> mode
# A judge key with nothing learned is asked about again this much later: another process that
# learns a fallback meanwhile costs this process at most one refused call of its own.
UNLEARNED_RECHECK_SECONDS = 30.0


class ModeMemory:
    """The learned mode per judge key: a Redis hash shared by the fleet (``redis_client``), or
    this process only (None: author tools without Redis, unit tests)."""

    def __init__(self, redis_client: redis.Redis | None = None) -> None:
        self.redis = redis_client
        self._local: dict[str, str] = {}
        self._unlearned_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            if key in self._local:
                return self._local[key]
            if time.monotonic() < self._unlearned_until.get(key, 0.0):
                return None  # asked the fleet a moment ago: nothing learned yet
        if self.redis is None:
            return None
        raw = self.redis.hget(MEMORY_KEY, key)
        mode = raw.decode() if isinstance(raw, bytes) else raw
        with self._lock:
            if mode:
                self._local[key] = mode
            else:
                self._unlearned_until[key] = time.monotonic() + UNLEARNED_RECHECK_SECONDS
        return mode

    def set(self, key: str, mode: str) -> None:
        with self._lock:
            self._local[key] = mode
        if self.redis is not None:
            self.redis.hset(MEMORY_KEY, key, mode)

    def forget(self, key: str) -> None:
        with self._lock:
            self._local.pop(key, None)
        if self.redis is not None:
            self.redis.hdel(MEMORY_KEY, key)


def _status_code(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)  # the SDKs' APIStatusError has one
    return status if isinstance(status, int) else None


def refuses(exc: Exception, mode: str) -> bool:
    """A 4xx/5xx (not 429) whose message names one of ``mode``'s parameters."""
    status = _status_code(exc)
    if status is None or status < 400 or status == 429:
        return False
    text = f"{getattr(exc, 'message', '')} {getattr(exc, 'body', '')}".lower()
    return any(param in text for param in PARAMETERS[mode])


class ModeChain:
    """One endpoint's chain: the current mode, and stepping down (remembered) when it fails."""

    def __init__(self, protocol: str, key: str, memory: ModeMemory | None) -> None:
        self.modes = CHAINS[protocol]
        self.key = key
        self.memory = memory or ModeMemory()

    @property
    def current(self) -> str:
        mode = self.memory.get(self.key)
        return mode if mode in self.modes else self.modes[0]

    def next_after(self, mode: str, why: str) -> str | None:
        """Step below ``mode`` (None at the end of the chain), remembered for the fleet."""
        index = self.modes.index(mode)
        if index + 1 >= len(self.modes):
            return None
        lower = self.modes[index + 1]
        stored = self.memory.get(self.key)
        if stored in self.modes and self.modes.index(stored) > index:
            return stored  # another worker already stepped further down: never climb back
        if stored != lower:
            log.warning("judge endpoint does not support %s (%s): using %s from now on", mode, why[:200], lower,
                        extra={"judge_key": self.key, "structured_output": lower})
            self.memory.set(self.key, lower)
        return lower


# What an unparseable answer's detail says when a self-hosted server ignored the mode's parameter.
_IGNORED = {"tool": (("no ",), "the forced tool was not called"),
            "json_schema": (("not JSON",), "the schema-constrained answer is not JSON"),
            "output_config": (("not JSON", "empty"), "the output_config answer is not JSON")}


# A truncated answer's detail ends so when it wrote text but never began the mode's form (no
# tool call, no "{"): prose up to max_tokens, as from a server that ignored the mode. No text
# at all (a reasoning model that spent the budget thinking) says nothing about the mode.
IN_PROSE = " in prose"


def truncated_in_prose(max_tokens: int, text: str, began: bool) -> str:
    return f"stopped at max_tokens={max_tokens}" + (IN_PROSE if text.strip() and not began else "")


def ignored_mode(reply: JudgeReply, mode: str) -> str | None:
    """Why the answer shows the server ignored ``mode`` (None when it did not)."""
    prefixes, why = _IGNORED.get(mode, ((), ""))
    if reply.problem == "truncated" and why and reply.detail.endswith(IN_PROSE):
        return why
    return why if reply.problem == "unparseable" and reply.detail.startswith(prefixes) else None


def ask_down_the_chain(chain: ModeChain, call: Callable[[str], JudgeReply], *, learn_from_answers: bool) -> JudgeReply:
    """``call(mode)`` in the endpoint's learned mode, stepping down the chain when the server
    refuses the mode's parameter (a 4xx/5xx naming it) or, when ``learn_from_answers`` (a
    self-hosted server), answers as if it ignored it; the calls made on the way are paid for."""
    mode, spent = chain.current, Usage()
    while True:
        try:
            reply = call(mode)
        except Exception as exc:  # the SDK's status error: ``refuses`` reads its status and message
            lower = chain.next_after(mode, f"HTTP {_status_code(exc)}") if refuses(exc, mode) else None
            if lower is None:
                raise
            mode = lower
            continue
        reply.usage = spent + reply.usage
        why = ignored_mode(reply, mode) if learn_from_answers else None
        lower = chain.next_after(mode, why) if why else None
        if lower is None:
            return reply
        mode, spent = lower, reply.usage
