-- breaker_record.lua: a member's batch of attempt outcomes of one tenant enters the tenant's
-- failure window, and a closed breaker whose window crosses both thresholds opens
-- (closed → open, reason failure_threshold). Members call it once per tenant per refresh, never
-- per task. All keys share the tenant's hash tag.
--
-- KEYS[1]  the tenant's breaker (HASH)
-- KEYS[2]  the tenant's failure window (HASH: n<bucket> outcomes, f<bucket> failures)
-- KEYS[3]  the tenant's transition log (STREAM, capped)
-- ARGV[1]  failed attempts to add (classes that say nothing about the tenant's health are
--          left out by the caller)
-- ARGV[2]  outcomes to add (successes + counted failures)
-- ARGV[3]  the window, ms (ten buckets of a tenth each, by the server's clock)
-- ARGV[4]  the fewest failures in the window that open the breaker
-- ARGV[5]  the lowest failure rate (failures / outcomes, 0..1) that opens it
-- ARGV[6]  the cool-down, ms: how long it stays open before a probe may run
-- ARGV[7]  who records (the member id, kept with a transition)
-- ARGV[8]  the transition log's approximate cap
--
-- Returns {state, until, opened, failures, outcomes}: the breaker's state after the call, the
-- end of its cool-down (ms, 0 when closed or held by an operator), 1 when this call opened it,
-- and the window's totals (0, 0 when the breaker was not closed: outcomes are only counted
-- while it is closed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'closed' then
  local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
  return {state, u, 0, 0, 0}
end
local window = tonumber(ARGV[3])
local bucket_ms = math.max(1, math.floor(window / 10))
local bucket = math.floor(now / bucket_ms)
local failures, outcomes = tonumber(ARGV[1]), tonumber(ARGV[2])
if outcomes > 0 then
  redis.call('HINCRBY', KEYS[2], 'n' .. bucket, outcomes)
  if failures > 0 then
    redis.call('HINCRBY', KEYS[2], 'f' .. bucket, failures)
  end
  redis.call('PEXPIRE', KEYS[2], window + bucket_ms)
end
local oldest = bucket - 9
local flat = redis.call('HGETALL', KEYS[2])
local f, n, stale = 0, 0, {}
for i = 1, #flat, 2 do
  local b = tonumber(string.sub(flat[i], 2))
  local v = tonumber(flat[i + 1]) or 0
  if b == nil or b < oldest then
    stale[#stale + 1] = flat[i]
  elseif string.sub(flat[i], 1, 1) == 'f' then
    f = f + v
  else
    n = n + v
  end
end
if #stale > 0 then
  redis.call('HDEL', KEYS[2], unpack(stale))
end
if f >= tonumber(ARGV[4]) and n > 0 and f >= tonumber(ARGV[5]) * n then
  local untl = now + tonumber(ARGV[6])
  local detail = string.format('%d of %d attempts failed within %d ms', f, n, window)
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', string.format('%d', now),
    'until', string.format('%d', untl), 'reason', 'failure_threshold', 'detail', detail,
    'by', ARGV[7])
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  redis.call('HINCRBY', KEYS[1], 'transitions', 1)
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'from', 'closed', 'to', 'open',
    'reason', 'failure_threshold', 'detail', detail, 'by', ARGV[7])
  return {'open', untl, 1, f, n}
end
return {'closed', 0, 0, f, n}
