"""The Lua scripts behind :class:`~polyroute.router.shared.SharedState`, one atomic step each.

Each script is one round trip and runs atomically inside Redis, so two replicas can never
both take the last token of a bucket, both keep an older deadline, or both free a probe
lease one of them no longer holds. Times come from Redis's own ``TIME`` (replica clocks
may disagree) unless a test passes its own ``now``.
"""

from __future__ import annotations

__all__ = ["ADMIT", "AUTH", "CLOSE", "LOAD", "OPEN", "RELEASE", "SETTLE"]

#: ``now`` in seconds: ARGV[1] when a test froze it, else Redis's own clock.
_NOW_S = """
local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

#: a token bucket in a hash (l: level, s: stamp), read refilled to ``now`` and written back
#: with an expiry of when it would be full again (a full bucket needs no key).
_BUCKET = """
local function level_of(key, rate, cap)
  local v = redis.call('HMGET', key, 'l', 's')
  local l, s = tonumber(v[1]), tonumber(v[2])
  if not l then l, s = cap, now end
  if now > s then l = math.min(cap, l + (now - s) * rate); s = now end
  return l, s
end
local function store(key, rate, cap, l, s)
  redis.call('HSET', key, 'l', tostring(l), 's', tostring(s))
  redis.call('PEXPIRE', key, math.ceil((cap - l) / rate * 1000) + 1000)
end
"""

#: check-and-consume over an rpm and a tpm bucket (either may be absent: rate 0).
#: KEYS: rpm bucket, tpm bucket. ARGV: now ("" = Redis TIME), rpm rate, rpm capacity,
#: tpm rate, tpm capacity, tokens. Returns "0" (admitted, both debited) or the seconds
#: until both buckets hold enough (nothing debited), as in ``TokenBucket.wait``/``adjust``.
ADMIT = (
    _NOW_S
    + _BUCKET
    + """
local need = {1, tonumber(ARGV[6])}
local level, stamp = {}, {}
local wait = 0
for i = 1, 2 do
  local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if rate > 0 then
    level[i], stamp[i] = level_of(KEYS[i], rate, cap)
    local missing = math.min(need[i], cap) - level[i]
    if missing > 0 and missing / rate > wait then wait = missing / rate end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, 2 do
  if level[i] then
    store(KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]), level[i] - need[i], stamp[i])
  end
end
return '0'
"""
)

#: settle a tpm bucket after the call reported its real token count (``delta`` = real - debited).
#: KEYS: tpm bucket. ARGV: now ("" = Redis TIME), rate, capacity, delta.
SETTLE = (
    _NOW_S
    + _BUCKET
    + """
local rate, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local l, s = level_of(KEYS[1], rate, cap)
store(KEYS[1], rate, cap, math.min(cap, l - tonumber(ARGV[4])), s)
return 1
"""
)

#: open circuits live in one sorted set (deployment -> deadline in Redis ms) plus a hash
#: (deployment -> the replica that opened it), so a starting replica loads them in one call.
_NOW_MS = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: publish an open circuit, keeping the later deadline, and free our probe lease if we held it.
#: KEYS: set, origins, lease. ARGV: deployment, ms, message, channel, origin.
OPEN = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ms = tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not old or old < now + ms then
  redis.call('ZADD', KEYS[1], now + ms, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ms then redis.call('PEXPIRE', KEYS[i], ms) end
end
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""
)

#: give a probe lease back, if it is still ours. KEYS: lease. ARGV: origin.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

#: a probe closed the circuit: forget it (and any refused-key mark), free the lease, tell everyone.
#: KEYS: open set, origins, auth set, lease. ARGV: deployment, message, channel, origin.
CLOSE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

#: a provider refused this deployment's key: remember it for ``ms`` and tell everyone.
#: KEYS: auth set, lease. ARGV: deployment, ms, message, channel, origin.
AUTH = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""
)

#: every circuit still open and every refused key: a flat list of kind ("open" / "auth"),
#: deployment, ms left, origin. KEYS: open set, origins, auth set.
LOAD = (
    _NOW_MS
    + """
local out = {}
local function collect(kind, set, origins)
  local rows = redis.call('ZRANGEBYSCORE', set, '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #rows, 2 do
    out[#out + 1] = kind
    out[#out + 1] = rows[i]
    out[#out + 1] = tostring(tonumber(rows[i + 1]) - now)
    out[#out + 1] = origins and (redis.call('HGET', origins, rows[i]) or '') or ''
  end
end
collect('open', KEYS[1], KEYS[2])
collect('auth', KEYS[3], nil)
return out
"""
)
