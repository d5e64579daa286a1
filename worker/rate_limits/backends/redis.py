"""The Redis rate-limit store: a sliding-window log per key, updated by atomic Lua scripts
that read Redis's own clock (``TIME``), so no host's clock skew can let a window overflow.

Keys (the ``{key}`` hash tag keeps one limit's keys on one cluster slot):
  tracejudge:ratelimit:{K}:log    ZSET request id -> admit time (ms)
  tracejudge:ratelimit:{K}:tok    ZSET request id -> admit time (ms), requests that reserved tokens
  tracejudge:ratelimit:{K}:amt    HASH request id -> tokens reserved (settled to real usage later)
  tracejudge:ratelimit:{K}:state  HASH rpm/tpm (adaptive limits), ceiling, pause_until, tokens (sum
                                  in window), last_decrease, lowest_rpm, throttled
  tracejudge:ratelimit:keys       SET of every K seen (for status)
  tracejudge:ratelimit:waits      HASH K -> number of waits;  ...:wait_seconds  HASH K -> seconds
"""
from __future__ import annotations

import redis

from worker.rate_limits.backend import Grant, RateLimitBackend

PREFIX = "tracejudge:ratelimit:"
KEYS_SET = PREFIX + "keys"
WAITS = PREFIX + "waits"
WAIT_SECONDS = PREFIX + "wait_seconds"

# Shared prologue: Redis time in ms, and expiry of the window's old entries (token sums included).
_NOW_AND_EXPIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local log, tok, amt, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff = now - tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
local expired = redis.call('ZRANGEBYSCORE', tok, '-inf', cutoff)
if #expired > 0 then
  local gone = 0
  for _, m in ipairs(expired) do
    gone = gone + (tonumber(redis.call('HGET', amt, m)) or 0)
    redis.call('HDEL', amt, m)
  end
  redis.call('ZREMRANGEBYSCORE', tok, '-inf', cutoff)
  redis.call('HINCRBY', state, 'tokens', -gone)
end
if redis.call('ZCARD', tok) == 0 then redis.call('HSET', state, 'tokens', 0) end
local function num(field) return tonumber(redis.call('HGET', state, field)) end
local function limit_of(field, configured)
  local adaptive = num(field)
  if adaptive and configured > 0 then return math.min(adaptive, configured), true end
  if adaptive then return adaptive, true end
  if configured > 0 then return configured, false end
  return nil, false
end
"""

# ARGV: rpm, tpm (0 = none), window ms, tokens, member
_ACQUIRE = _NOW_AND_EXPIRE + """
local window, tokens, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local pause = num('pause_until') or 0
if pause > now then return {0, pause - now, 1} end
local rpm, rpm_adaptive = limit_of('rpm', tonumber(ARGV[1]))
local tpm, tpm_adaptive = limit_of('tpm', tonumber(ARGV[2]))
local adaptive = (rpm_adaptive or tpm_adaptive) and 1 or 0
local wait = 0
if rpm then
  local allowed = math.max(1, math.floor(rpm))
  local count = redis.call('ZCARD', log)
  if count >= allowed then
    local frees = redis.call('ZRANGE', log, count - allowed, count - allowed, 'WITHSCORES')
    wait = math.max(wait, tonumber(frees[2]) + window - now)
  end
end
if tpm and tokens > 0 then
  local used = num('tokens') or 0
  -- A single request larger than the whole limit is let through on an empty window.
  if used > 0 and used + tokens > tpm then
    local need, freed, at = used + tokens - tpm, 0, nil
    local entries = redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', amt, entries[i])) or 0)
      if freed >= need then at = tonumber(entries[i + 1]) + window - now break end
    end
    wait = math.max(wait, at or window)
  end
end
if wait > 0 then return {0, math.max(1, wait), adaptive} end
redis.call('ZADD', log, now, member)
redis.call('PEXPIRE', log, window * 2)
if tokens > 0 then
  redis.call('ZADD', tok, now, member)
  redis.call('HSET', amt, member, tokens)
  redis.call('HINCRBY', state, 'tokens', tokens)
  redis.call('PEXPIRE', tok, window * 2)
  redis.call('PEXPIRE', amt, window * 2)
end
return {1, 0, adaptive}
"""

# KEYS: tok, amt, state; ARGV: member, real tokens
_SETTLE = """
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if not old then return 0 end
local real = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], real)
redis.call('HINCRBY', KEYS[3], 'tokens', real - old)
return real - old
"""

# ARGV: rpm, tpm, window ms, retry_after ms, factor, cooldown ms, lowest rpm allowed
_THROTTLED = _NOW_AND_EXPIRE + """
local cfg_rpm, cfg_tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local factor, cooldown = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HINCRBY', state, 'throttled', 1)
local retry_after = tonumber(ARGV[4])
if retry_after > 0 then
  local pause = math.max(num('pause_until') or 0, now + retry_after)
  redis.call('HSET', state, 'pause_until', pause)
end
-- One decrease per cooldown: a burst of 429s from one overload is one signal, not ten.
if now - (num('last_decrease') or 0) < cooldown then return 0 end
redis.call('HSET', state, 'last_decrease', now)
local rpm = limit_of('rpm', cfg_rpm)
local floor = tonumber(ARGV[7])
if cfg_rpm > 0 then floor = math.min(floor, cfg_rpm) end
if not rpm then
  -- No configured limit: the rate that drew the 429 (over the window's last sixth, as a burst
  -- is what trips a limit) becomes the ceiling to climb back to.
  local recent = redis.call('ZCOUNT', log, now - tonumber(ARGV[3]) / 6, '+inf')
  rpm = math.max(floor, recent * 6)
  redis.call('HSET', state, 'ceiling', rpm)
end
rpm = math.max(floor, rpm * factor)
redis.call('HSET', state, 'rpm', rpm)
redis.call('HSET', state, 'lowest_rpm', math.min(num('lowest_rpm') or rpm, rpm))
local tpm = limit_of('tpm', cfg_tpm)
if tpm then redis.call('HSET', state, 'tpm', math.max(1, tpm * factor)) end
return 1
"""

# KEYS: state; ARGV: rpm, tpm, step (fraction of the ceiling added per success)
_SUCCEEDED = """
local state = KEYS[1]
local step = tonumber(ARGV[3])
for i, field in ipairs({'rpm', 'tpm'}) do
  local current = tonumber(redis.call('HGET', state, field))
  if current then
    local ceiling = tonumber(ARGV[i])
    if ceiling <= 0 and field == 'rpm' then ceiling = tonumber(redis.call('HGET', state, 'ceiling')) or 0 end
    local raised = current + math.max(ceiling * step, 0.01)
    if ceiling <= 0 or raised >= ceiling then
      redis.call('HDEL', state, field)
      if field == 'rpm' then redis.call('HDEL', state, 'ceiling') end
    else
      redis.call('HSET', state, field, raised)
    end
  end
end
return 1
"""


def _keys(key: str) -> list[str]:
    base = f"{PREFIX}{{{key}}}:"
    return [base + "log", base + "tok", base + "amt", base + "state"]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class RedisBackend(RateLimitBackend):
    def __init__(self, client: redis.Redis):
        self.client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._throttled = client.register_script(_THROTTLED)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._known: set[str] = set()

    def acquire(self, key, *, rpm, tpm, tokens, member, window) -> Grant:
        if key not in self._known:  # listed for status; outside the script, as it is another slot
            self.client.sadd(KEYS_SET, key)
            self._known.add(key)
        admitted, wait_ms, adaptive = self._acquire(
            keys=_keys(key), args=[rpm or 0, tpm or 0, _ms(window), int(tokens), member])
        return Grant(bool(admitted), int(wait_ms) / 1000, bool(adaptive))

    def settle(self, key, member, tokens) -> None:
        self._settle(keys=_keys(key)[1:], args=[member, int(tokens)])

    def throttled(self, key, *, rpm, tpm, retry_after, factor, cooldown, window, floor) -> None:
        self._throttled(keys=_keys(key), args=[rpm or 0, tpm or 0, _ms(window), _ms(retry_after or 0),
                                               factor, _ms(cooldown), floor])

    def succeeded(self, key, *, rpm, tpm, step) -> None:
        self._succeeded(keys=_keys(key)[3:], args=[rpm or 0, tpm or 0, step])

    def record_wait(self, key, seconds) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(WAITS, key, 1)
        pipe.hincrbyfloat(WAIT_SECONDS, key, seconds)
        pipe.execute()

    def snapshot(self) -> dict[str, dict]:
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        waits = _decoded(self.client.hgetall(WAITS))
        wait_seconds = _decoded(self.client.hgetall(WAIT_SECONDS))
        result = {}
        for raw in sorted(self.client.smembers(KEYS_SET)):
            key = raw.decode() if isinstance(raw, bytes) else raw
            state = _decoded(self.client.hgetall(_keys(key)[3]))
            pause = float(state.get("pause_until", 0))
            result[key] = {
                "adaptive_rpm": _maybe_float(state.get("rpm")),
                "adaptive_tpm": _maybe_float(state.get("tpm")),
                "lowest_rpm": _maybe_float(state.get("lowest_rpm")),
                "throttled": int(state.get("throttled", 0)),
                "paused_for": max(0.0, (pause - now_ms) / 1000),
                "waits": int(waits.get(key, 0)),
                "wait_seconds": float(wait_seconds.get(key, 0.0)),
            }
        return result


def _decoded(mapping: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in mapping.items()}


def _maybe_float(value: str | None) -> float | None:
    return None if value is None else float(value)
