"""The Lua scripts of the Redis rate-limit store (backends/redis.py describes the keys).

Every script reads Redis's own clock (``TIME``), so limiters on different hosts share one
timeline. Outcomes are counted per 100 ms of response time in two hashes (``ok``, ``thr``); the
pace is a GCRA (a theoretical next-send time, ``tat``) with a small burst, on top of the strict
sliding window of a configured limit.
"""
from __future__ import annotations

BUCKET_MS = 100
# Outcome counts older than this are dropped (the longest span the scripts look at is 10 s).
OUTCOME_TTL_MS = 120_000

# Shared prologue: Redis time in ms, expiry of the window's old entries (token sums included),
# and the key's effective pace: the learned one (grown back along a cubic since the last
# decrease, once a call succeeded) under the configured one.
_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local log, tok, amt, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local window = tonumber(ARGV[3])
local cutoff = now - window
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
-- ARGV[1] configured requests per window (0: none), ARGV[7] recovery seconds (cubic time constant)
local function effective()
  local cfg = tonumber(ARGV[1])
  local rate = nil
  if cfg > 0 then rate = cfg end
  local base = num('base')
  if base then
    local grown = base
    local wmax = num('wmax') or base
    if num('oks') then
      -- CUBIC: concave back up to the rate that drew the refusal (reached after ARGV[7] s),
      -- so the pace spends most of its time just under it, then convex beyond it (doubled
      -- after another ARGV[7] s) to find a lifted limit.
      local x = (now - num('t0')) / (tonumber(ARGV[7]) * 1000)
      if x < 1 then
        grown = wmax - (wmax - base) * (1 - x) ^ 3
      else
        grown = wmax * (1 + (x - 1) ^ 3)
      end
    end
    local ceiling = math.min(rate or math.huge, 16 * wmax)
    if grown >= ceiling then
      redis.call('HDEL', state, 'base', 't0', 'oks', 'verify', 'wmax', 'suspect')
    else
      rate = grown
    end
  end
  return rate
end
local function active() return (num('active_until') or 0) > now and 1 or 0 end
"""

# ARGV: rpm, tpm (0 = none), window ms, tokens, member, horizon ms, recovery s
# Returns {admitted, ms until the slot (or until one may be reserved), adaptive, slot time ms}.
ACQUIRE = _PROLOGUE + """
local tokens, member, horizon = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local pause = num('pause_until') or 0
if pause > now then return {0, pause - now, active(), 0} end
local cfg, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local rate = effective()
local slot, interval = now, nil
if rate then
  interval = window / rate
  -- A burst of about half a second of the pace (at least 3 calls for a small limit): a
  -- provider's bucket holds at least that much.
  local burst = math.max(1, math.ceil(rate * 500 / window), math.min(math.floor(rate), 3))
  local tat = math.max(num('tat') or now, now)
  slot = math.max(now, tat - (burst - 1) * interval)
end
-- Slots never go back in time, so every reserved slot lies before the one being checked.
slot = math.max(slot, num('last_slot') or 0)
if cfg > 0 then
  local allowed = math.max(1, math.floor(cfg))
  local c = redis.call('ZCOUNT', log, '(' .. (slot - window), '+inf')
  if c >= allowed then
    local e = redis.call('ZRANGEBYSCORE', log, '(' .. (slot - window), '+inf', 'WITHSCORES', 'LIMIT', c - allowed, 1)
    slot = math.max(slot, tonumber(e[2]) + window)
  end
end
if tpm > 0 and tokens > 0 then
  local used = num('tokens') or 0
  -- A single request larger than the whole limit is let through on an empty window.
  if used > 0 and used + tokens > tpm then
    local need, freed, at = used + tokens - tpm, 0, nil
    local entries = redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', amt, entries[i])) or 0)
      if freed >= need then at = tonumber(entries[i + 1]) + window break end
    end
    slot = math.max(slot, at or (now + window))
  end
end
if slot - now > horizon then return {0, math.max(1, slot - now), active(), 0} end
if cfg > 0 then
  redis.call('ZADD', log, slot, member)
  redis.call('PEXPIRE', log, window * 2)
end
redis.call('HSET', state, 'last_slot', slot)
if interval then redis.call('HSET', state, 'tat', math.max(num('tat') or now, slot) + interval) end
if tokens > 0 then
  redis.call('ZADD', tok, slot, member)
  redis.call('HSET', amt, member, tokens)
  redis.call('HINCRBY', state, 'tokens', tokens)
  redis.call('PEXPIRE', tok, window * 2)
  redis.call('PEXPIRE', amt, window * 2)
end
return {1, slot - now, active(), slot}
"""

# KEYS: tok, amt, state; ARGV: member, real tokens
SETTLE = """
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if not old then return 0 end
local real = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], real)
redis.call('HINCRBY', KEYS[3], 'tokens', real - old)
return real - old
"""

# KEYS: state, ok
SUCCEEDED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[2], math.floor(now / %(bucket)d), 1)
redis.call('PEXPIRE', KEYS[2], %(ttl)d)
if redis.call('HEXISTS', KEYS[1], 'base') == 1 then redis.call('HSET', KEYS[1], 'oks', 1) end
return 1
""" % {"bucket": BUCKET_MS, "ttl": OUTCOME_TTL_MS}

# KEYS: log, tok, amt, state, ok, thr
# ARGV: rpm, tpm, window ms, retry_after ms, factor, evidence ms, recovery s, floor, latency ms
# Returns 0 (no change), 1 (decreased), 2 (found to be background: undone).
THROTTLED = _PROLOGUE + """
local ok_h, thr_h = KEYS[5], KEYS[6]
local retry_after, factor, evidence = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local floor, latency = tonumber(ARGV[8]), tonumber(ARGV[9])
local B, W = %(bucket)d, 10000
local b_now = math.floor(now / B)
redis.call('HINCRBY', state, 'throttled', 1)
redis.call('HSET', state, 'active_until', now + %(ttl)d)
redis.call('HINCRBY', thr_h, b_now, 1)
redis.call('PEXPIRE', thr_h, %(ttl)d)
local function sum(h, from)
  from = math.max(from, b_now - W / B)
  if from > b_now then return 0 end
  local fields = {}
  for b = from, b_now do fields[#fields + 1] = b end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', h, unpack(fields))) do total = total + (tonumber(v) or 0) end
  return total
end
-- Retry-After stops the key fleet-wide only when most of its recent answers are refusals: the
-- provider refuses nearly everything, so others would only draw more. An isolated refusal
-- among successes delays just the call that drew it (its retry honours the header).
local x_w = sum(thr_h, b_now - W / B + 1)
local n_w = x_w + sum(ok_h, b_now - W / B + 1)
-- The refusals of calls sent before the pause do not extend it (they say nothing new).
if retry_after > 0 and 2 * x_w >= n_w and (num('pause_until') or 0) <= now then
  redis.call('HSET', state, 'pause_until', now + retry_after, 'pause_from', now)
end
local bg = num('bg') or 0
local lag = math.max(500, 2 * latency)
if num('verify') and num('t0') then
  local t0 = num('t0')
  if now < t0 + math.max(3000, 2 * lag) then return 0 end
  redis.call('HDEL', state, 'verify')
  local from = math.floor((t0 + lag) / B) + 1
  local x1 = sum(thr_h, from)
  local n1 = x1 + sum(ok_h, from)
  local span1 = (now - from * B) / 1000
  if n1 >= 10 and span1 > 0 then
    local f0, f1 = num('pre_x') / math.max(1, num('pre_n')), x1 / n1
    local a0, a1 = num('pre_rate') or 0, (n1 - x1) / span1
    if x1 >= 3 and f1 >= 0.5 * f0 and a1 < 0.93 * a0 then
      -- Slowing below what the provider admitted neither made refusals rarer nor kept the
      -- admitted rate: the provider admits a share of whatever we send, so the refusals are
      -- not caused by our rate. Learn them as background and drop the learned pace, once two
      -- decreases in a row say so: the first one's "admitted" rate may include the provider's
      -- full bucket at the start (a burst above its limit), so that decrease can leave the pace
      -- above the limit and look like it changed nothing. Taken as background, that sent a
      -- fleet with twice the limit's demand at full speed: 787 429s a minute at 1,200/min.
      if not num('suspect') then
        redis.call('HSET', state, 'suspect', 1)
      else
        redis.call('HSET', state, 'bg', f1)
        redis.call('HDEL', state, 'base', 't0', 'oks', 'ep', 'wmax', 'suspect')
        return 2
      end
    else
      redis.call('HDEL', state, 'suspect')
      bg = math.min(bg, f1)
      redis.call('HSET', state, 'bg', bg)
    end
  end
end
-- The evidence span: from the first refusal since the last decrease (or in the last 10 s).
local ep = num('ep')
if not ep or now - ep > W then
  redis.call('HSET', state, 'ep', now)
  ep = now
end
if now - ep < evidence then return 0 end
local from = math.floor(ep / B) + 1
-- The span's paused time admitted nothing of ours: it is not part of the admitted rate.
local paused = 0
if num('pause_from') then
  paused = math.max(0, math.min(num('pause_until'), now) - math.max(num('pause_from'), from * B))
end
local span = (now - from * B - paused) / 1000
local xs = sum(thr_h, from)
local oks = sum(ok_h, from)
local ns = xs + oks
if ns < 20 or span < 0.5 then return 0 end
if bg > 0 and xs <= ns * bg + 3 * math.sqrt(ns * bg * (1 - bg)) then return 0 end
-- Our own rate: the pace drops to a share of what the provider admitted over the span
-- (background refusals added back), never above the pace it had.
local eff = effective()
local wmax = (oks / span) * (window / 1000) / (1 - bg)
if eff then wmax = math.min(wmax, eff) end
local rate = math.max(floor, factor * wmax)
wmax = math.max(wmax, rate)
redis.call('HSET', state, 'base', rate, 'wmax', wmax, 't0', now, 'verify', 1, 'pre_x', xs, 'pre_n', ns,
           'pre_rate', oks / span, 'last_decrease', now)
redis.call('HDEL', state, 'oks', 'ep')
redis.call('HSET', state, 'lowest_rpm', math.min(num('lowest_rpm') or rate, rate))
return 1
""" % {"bucket": BUCKET_MS, "ttl": OUTCOME_TTL_MS}
