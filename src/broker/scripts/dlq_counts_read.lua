-- dlq_counts_read.lua: a tenant's dead-letter counts (lib/dlq_counts.lua) and its stream's
-- length, read together in one atomic step so a dead letter arriving in between cannot make
-- whole counts look stale. Read-only.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's dead-letter counts
--
-- Returns {XLEN, HGETALL of the counts (flat)}.
return {redis.call('XLEN', KEYS[1]), redis.call('HGETALL', KEYS[2])}
