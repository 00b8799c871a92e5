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

/// KEYS: the grant's hold (what a release after a lost reply gives back), the buckets (B), then
/// the budgets' current-period keys. ARGV[1] = B; then per bucket the demand's cost in µs (its
/// units at the bucket's rate, rounded up) and the top-up's; then per budget: amount, top-up,
/// limit, key expiry (unix ms). A top-up is taken only if it leaves three times as much room
/// (leases shrink to nothing near a limit). Returns {0, free_us..., granted...} (held; per bucket
/// the µs of room left, then per bucket and budget 1 if its top-up was taken), {1, i, wait_us,
/// free_us} (bucket i lacks room) or {2, j, verdict, used} (budget j: 1 = used up, 0 = held by
/// requests and leases in flight). The hold is a hash: per key what was taken ("t" µs of a
/// bucket, "r" units of a budget).
inline constexpr std::string_view kReserveScript = R"lua(
local window = 60000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[1])
local nj = #KEYS - 1 - nb
local tats, taken, got = {}, {}, {}
for i = 1, nb do
  local tat = math.max(tonumber(redis.call('GET', KEYS[1 + i]) or '0'), now)
  local next = tat + tonumber(ARGV[2 * i])
  if next - now > window then return {1, i, next - now - window, now + window - tat} end
  local extra = tonumber(ARGV[2 * i + 1])
  got[i] = 0
  if extra > 0 and 4 * extra <= window - (next - now) then
    next = next + extra
    got[i] = 1
  end
  tats[i], taken[i] = next, next - tat
end
local base = 1 + 2 * nb
local amounts = {}
for j = 1, nj do
  local a = base + 4 * (j - 1)
  local amount, extra, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local h = redis.call('HMGET', KEYS[1 + nb + j], 'used', 'reserved')
  local used, reserved = tonumber(h[1] or '0'), tonumber(h[2] or '0')
  if amount > limit or used > limit - amount then return {2, j, 1, used} end
  local room = limit - amount - used - reserved
  if room < 0 then return {2, j, 0, used} end
  got[nb + j] = 0
  amounts[j] = amount
  if extra > 0 and 4 * extra <= room then
    amounts[j] = amount + extra
    got[nb + j] = 1
  end
end
local out = {0}
local hold = {}
for i = 1, nb do
  redis.call('SET', KEYS[1 + i], tats[i], 'PX', math.floor((tats[i] - now) / 1000) + 1000)
  out[i + 1] = now + window - tats[i]
  hold[#hold + 1] = KEYS[1 + i]
  hold[#hold + 1] = string.format('t%d', taken[i])
end
for j = 1, nj do
  local a = base + 4 * (j - 1)
  redis.call('HINCRBY', KEYS[1 + nb + j], 'reserved', string.format('%d', amounts[j]))
  redis.call('PEXPIREAT', KEYS[1 + nb + j], ARGV[a + 4])
  hold[#hold + 1] = KEYS[1 + nb + j]
  hold[#hold + 1] = string.format('r%d', amounts[j])
end
if #hold > 0 then
  redis.call('HSET', KEYS[1], unpack(hold))
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
for k = 1, nb + nj do out[1 + nb + k] = got[k] end
return out
)lua";

/// KEYS[1]: a grant's hold whose reply was lost. Gives back what the grant took (its hash says
/// what), once: the hold goes with it. Returns 1, or nil when there was no hold (the grant never
/// ran, or it was released or forgotten before).
inline constexpr std::string_view kReleaseScript = R"lua(
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for k = 1, #h, 2 do
  local key, kind, n = h[k], string.sub(h[k + 1], 1, 1), tonumber(string.sub(h[k + 1], 2))
  if kind == 't' then
    local tat = tonumber(redis.call('GET', key) or '0') - n
    if tat > now then
      redis.call('SET', key, tat, 'PX', math.floor((tat - now) / 1000) + 1000)
    else
      redis.call('DEL', key)
    end
  elseif redis.call('EXISTS', key) == 1 and
         redis.call('HINCRBY', key, 'reserved', string.format('%d', -n)) < 0 then
    redis.call('HSET', key, 'reserved', 0)
  end
end
return 1
)lua";

/// A worker's flush of its leases, applied once and in order. KEYS: the worker's sequence key,
/// the token buckets (B), the budgets (J), then grant holds to forget. ARGV[1] = B, ARGV[2] = J,
/// ARGV[3] = this flush's sequence number (applied only if above the key's); per bucket the
/// change in µs (negative: units given back; positive: use beyond reservations, as debt); per
/// budget: units off `reserved`, units onto `used`, warn level (0 = none), key expiry (unix ms).
/// Returns per budget 1 when this flush crossed its warn level (once per period), else 0; nil
/// when it had been applied before.
inline constexpr std::string_view kFlushScript = R"lua(
if tonumber(ARGV[3]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then return false end
redis.call('SET', KEYS[1], ARGV[3], 'PX', 86400000)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb, nj = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, nb do
  local d = tonumber(ARGV[3 + i])
  local tat = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
  if d > 0 then tat = math.max(tat, now) + d elseif tat > 0 then tat = tat + d end
  if d ~= 0 and tat > now then
    redis.call('SET', KEYS[1 + i], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
  elseif d ~= 0 then
    redis.call('DEL', KEYS[1 + i])
  end
end
local crossed = {}
for j = 1, nj do
  local key, a = KEYS[1 + nb + j], 3 + nb + 4 * (j - 1)
  if ARGV[a + 1] ~= '0' and redis.call('EXISTS', key) == 1 and
     redis.call('HINCRBY', key, 'reserved', '-' .. ARGV[a + 1]) < 0 then
    redis.call('HSET', key, 'reserved', 0)
  end
  local used = 0
  if ARGV[a + 2] ~= '0' or redis.call('EXISTS', key) == 1 then
    used = redis.call('HINCRBY', key, 'used', ARGV[a + 2])
    redis.call('PEXPIREAT', key, ARGV[a + 4])
  end
  local warn = tonumber(ARGV[a + 3])
  crossed[j] = 0
  if warn > 0 and used >= warn and redis.call('HSETNX', key, 'warned', 1) == 1 then crossed[j] = 1 end
end
for k = 2 + nb + nj, #KEYS do redis.call('DEL', KEYS[k]) end
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
