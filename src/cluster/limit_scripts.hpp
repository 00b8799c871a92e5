#pragma once
// The Lua scripts that reserve and settle a request's units in Redis: every bucket and budget of
// one request in one script, so a reservation is all or nothing across them and atomic against
// every other replica's. Time is Redis's own (TIME, microseconds): all replicas read one clock.
// The bucket is the same GCRA as ratelimit::Bucket (a theoretical arrival time per key, a burst
// of one minute's worth); a budget is a hash {used, reserved, warned} per period. Lua numbers are
// doubles: exact to 2^53 (arrival times in µs until the year 2255; amounts to 9e15, i.e. tokens,
// or $9,000,000 in nano-USD). A script that fails midway keeps what it wrote (Redis does not roll
// back), so each checks everything before its first write and passes only valid integers.
// See docs/design/cluster.md.

#include <string_view>

namespace tollgate::cluster {

/// KEYS: the request's hold (set while its reservation is outstanding: what makes a settle or a
/// release apply once), the buckets (B), then the budgets' current-period keys. ARGV[1] = B; then
/// per bucket its cost in µs (the units at its rate, rounded up); then per budget: amount, limit,
/// key expiry (unix ms). Returns {0, free_us...} (held; per bucket the µs of room left),
/// {1, i, wait_us, free_us} (bucket i lacks room) or {2, j, verdict, used} (budget j: 1 = used
/// up, 0 = held by requests in flight).
inline constexpr std::string_view kReserveScript = R"lua(
local window = 60000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[1])
local tats = {}
for i = 1, nb do
  local tat = math.max(tonumber(redis.call('GET', KEYS[1 + i]) or '0'), now)
  local next = tat + tonumber(ARGV[1 + i])
  if next - now > window then return {1, i, next - now - window, now + window - tat} end
  tats[i] = next
end
local base = 1 + nb
for j = 1, #KEYS - 1 - nb do
  local amount, limit = tonumber(ARGV[base + 3 * j - 2]), tonumber(ARGV[base + 3 * j - 1])
  local h = redis.call('HMGET', KEYS[1 + nb + j], 'used', 'reserved')
  local used, reserved = tonumber(h[1] or '0'), tonumber(h[2] or '0')
  if amount > limit or used > limit - amount then return {2, j, 1, used} end
  if reserved > limit - amount - used then return {2, j, 0, used} end
end
local free = {0}
for i = 1, nb do
  redis.call('SET', KEYS[1 + i], tats[i], 'PX', math.floor((tats[i] - now) / 1000) + 1000)
  free[i + 1] = now + window - tats[i]
end
for j = 1, #KEYS - 1 - nb do
  redis.call('HINCRBY', KEYS[1 + nb + j], 'reserved', ARGV[base + 3 * j - 2])
  redis.call('PEXPIREAT', KEYS[1 + nb + j], ARGV[base + 3 * j])
end
redis.call('SET', KEYS[1], 1, 'PX', 86400000)
return free
)lua";

/// KEYS: the settlement's gate, the token buckets (B), then per budget the key it was reserved
/// in and the current period's key. The gate is the request's hold when it reserved here (the
/// settle applies only if it deletes the hold: a replay, or a release after a reserve that timed
/// out, finds none), else a `settled:` marker set once (a use admitted by this replica alone while
/// Redis was away). ARGV[1] = B, ARGV[2] = "held" or "use"; per bucket the change in µs
/// (negative: unused units given back; positive: a use beyond the reservation, as debt); per
/// budget: reserved, used, warn level (0 = none), the current key's expiry (unix ms). Returns per
/// budget 1 when this settle crossed its warn level (once per period), else 0; nil when it did
/// not apply.
inline constexpr std::string_view kSettleScript = R"lua(
if ARGV[2] == 'held' then
  if redis.call('DEL', KEYS[1]) == 0 then return false end
elseif not redis.call('SET', KEYS[1], 1, 'NX', 'PX', 86400000) then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[1])
for i = 1, nb do
  local d = tonumber(ARGV[2 + i])
  local tat = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
  if d > 0 then tat = math.max(tat, now) + d elseif tat > 0 then tat = tat + d end
  if d ~= 0 and tat > now then
    redis.call('SET', KEYS[1 + i], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
  elseif d ~= 0 then
    redis.call('DEL', KEYS[1 + i])
  end
end
local crossed = {}
local base = 2 + nb
for j = 1, (#KEYS - 1 - nb) / 2 do
  local held, cur, a = KEYS[1 + nb + 2 * j - 1], KEYS[1 + nb + 2 * j], base + 4 * (j - 1)
  if ARGV[a + 1] ~= '0' and redis.call('EXISTS', held) == 1 and
     redis.call('HINCRBY', held, 'reserved', '-' .. ARGV[a + 1]) < 0 then
    redis.call('HSET', held, 'reserved', 0)
  end
  local used = 0
  if ARGV[a + 2] ~= '0' or redis.call('EXISTS', cur) == 1 then
    used = redis.call('HINCRBY', cur, 'used', ARGV[a + 2])
    redis.call('PEXPIREAT', cur, ARGV[a + 4])
  end
  local warn = tonumber(ARGV[a + 3])
  crossed[j] = 0
  if warn > 0 and used >= warn and redis.call('HSETNX', cur, 'warned', 1) == 1 then crossed[j] = 1 end
end
return crossed
)lua";

/// KEYS[1]: the replicas' sorted set. ARGV[1]: this replica's id. Marks it seen now, forgets
/// replicas not seen for a minute, and returns how many remain.
inline constexpr std::string_view kHeartbeatScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('PEXPIRE', KEYS[1], 120000)
return redis.call('ZCARD', KEYS[1])
)lua";

}  // namespace tollgate::cluster
