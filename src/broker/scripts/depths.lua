-- depths.lua: read-only figures of one tenant for the gauges (one call per tenant, pipelined).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's retry schedule
-- KEYS[3]  the tenant's dead-letter stream
-- KEYS[4]  the tenant's deferred set (tasks held back by its breaker)
-- ARGV[1]  the consumer group
--
-- Returns {lane length, pending, lag, scheduled retries, overdue retries, dead letters}; the
-- retry figures include held-back tasks (both wait in a schedule for the recovery loop).
-- Lag (entries not yet delivered to the group) is 0 when Redis cannot tell.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending, lag = 0, 0
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(p) == 'table' and p.err == nil and type(p[1]) == 'number' then
  pending = p[1]
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and groups.err == nil then
  for _, g in ipairs(groups) do
    local name, l = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then
        name = g[i + 1]
      elseif g[i] == 'lag' then
        l = g[i + 1]
      end
    end
    if name == ARGV[1] and type(l) == 'number' then
      lag = l
    end
  end
end
return {
  redis.call('XLEN', KEYS[1]),
  pending,
  lag,
  redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[4]),
  redis.call('ZCOUNT', KEYS[2], '-inf', now) + redis.call('ZCOUNT', KEYS[4], '-inf', now),
  redis.call('XLEN', KEYS[3]),
}
