"""The Lua scripts behind the shared limits (``_shared``), each one atomic step in Redis.

Times in the leases set are the Redis server's clock, in milliseconds, so that processes on
machines with skewed clocks agree on when a lease expires. The accepted set holds the leases
whose create the provider accepted (jobs at the provider), with the same expiry: a subset of
the leases, which every script that drops leases drops from both. The probe key names the
one lease that may be above the limit's last cut and not yet accepted: after a cut, the
processes probe upward one create at a time, not one each.
"""

__all__ = ["ACCEPT", "ACCEPTED", "ACQUIRE", "PACE", "RELEASE", "RENEW", "UPDATE"]

# KEYS: leases, state, accepted, probe. ARGV: lease id, ttl ms, limit when no state yet.
# -> 1 taken, 0 full (or above the last cut while another probe is unanswered).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local limit = tonumber(ARGV[3])
local base = 0
local s = redis.call('HGET', KEYS[2], 's')
if s then
  local state = cjson.decode(s)
  limit = math.max(1, math.floor(state['in_flight']))
  if (tonumber(state['in_flight_cut_at']) or 0) > 0 then
    base = math.max(1, math.floor(tonumber(state['in_flight_base']) or 0))
  end
end
local held = redis.call('ZCARD', KEYS[1])
if held < limit then
  if base > 0 and held >= base then
    -- A probe above the last cut: one at a time, until the provider accepts it.
    if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
      return 0
    end
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
  return 1
end
return 0
"""

# The probe among lease ids ARGV[from..]: its token is given back and announced on the
# channel KEYS[channel] (a waiter may take the next probe). Shared by ACCEPT and RELEASE.
_END_PROBE = """
local function end_probe(probe, channel, from)
  local p = redis.call('GET', probe)
  if not p then return end
  for i = from, #ARGV do
    if ARGV[i] == p then
      redis.call('DEL', probe)
      redis.call('PUBLISH', channel, 0)
      return
    end
  end
end
"""

# KEYS: leases, accepted, probe, channel. ARGV: ttl ms, lease ids... -> how many were still
# leases (now accepted: a lease that expired meanwhile is not marked).
ACCEPT = (
    _END_PROBE
    + """
local n = 0
for i = 2, #ARGV do
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if expiry then
    redis.call('ZADD', KEYS[2], expiry, ARGV[i])
    n = n + 1
  end
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]) * 4)
end_probe(KEYS[3], KEYS[4], 2)
return n
"""
)

# KEYS: accepted. -> leases whose create was accepted and whose job has not ended.
ACCEPTED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: leases, channel, accepted, probe. ARGV: lease ids... -> leases removed (announced
# on the channel).
RELEASE = (
    _END_PROBE
    + """
end_probe(KEYS[4], KEYS[2], 1)
redis.call('ZREM', KEYS[3], unpack(ARGV))
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
if n > 0 then redis.call('PUBLISH', KEYS[2], n) end
return n
"""
)

# KEYS: leases, accepted. ARGV: ttl ms, lease ids... -> leases in the set now.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 4)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]) * 4)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: schedule. ARGV: rate (0: unpaced), cooldown seconds to start (0: none), seconds the
# schedule may run ahead of now (a burst allowance, as in _learning).
# -> seconds to wait before sending, as a string (Lua numbers lose their fraction).
PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cool = tonumber(ARGV[2])
local until_ = tonumber(redis.call('HGET', KEYS[1], 'cooldown') or '0')
if cool > 0 then
  until_ = math.max(until_, now + cool)
  redis.call('HSET', KEYS[1], 'cooldown', tostring(until_))
end
local rate = tonumber(ARGV[1])
local slot = math.max(now, until_)
if rate > 0 then
  slot = math.max(slot, tonumber(redis.call('HGET', KEYS[1], 'next') or '0'))
  redis.call('HSET', KEYS[1], 'next', tostring(slot + 1 / rate))
end
redis.call('EXPIRE', KEYS[1], 3600)
if rate > 0 then slot = math.max(math.max(now, until_), slot - tonumber(ARGV[3] or '0')) end
return tostring(slot - now)
"""

# KEYS: state. ARGV: version read, new JSON. -> {version, nil} stored, {version, json} lost.
UPDATE = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return {v, redis.call('HGET', KEYS[1], 's')} end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], 86400)
return {v + 1, false}
"""
