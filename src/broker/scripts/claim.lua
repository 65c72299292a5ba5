-- claim.lua: one step of a reclaim scan (or of a member's drain of its own entries): stale
-- pending entries are taken over by this consumer, except those delivered too often, which are
-- reported as poison instead of being handed out again. The takeover uses JUSTID, so the
-- delivery count is not raised here: begin.lua raises it when the entry actually starts, so a
-- crash only counts against the entry that was running.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the claiming consumer (this member)
-- ARGV[3]  the least idle time, ms (0 when draining one's own entries)
-- ARGV[4]  where the scan starts: '-' or an exclusive '(<id>'
-- ARGV[5]  the most pending entries to examine
-- ARGV[6]  the poison threshold on the delivery count
-- ARGV[7]  '' to scan every consumer's entries, or a consumer name to scan only its entries
-- ARGV[8…] ids to leave alone (entries the member already has in flight)
--
-- Returns {next, claimed, poison, asked}: next is the start of the following step, or '' when
-- the scan is complete; claimed is a flat list id, deliveries, … of entries now owned by the
-- claimer; poison is a flat list id, deliveries, … of entries at or past the threshold (left
-- pending, untouched); asked is how many ids were claimed. Ids asked for but missing from
-- claimed were tombstones (pending, entry deleted): XCLAIM removed them from the PEL.
local p
if ARGV[7] == '' then
  p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
else
  p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5], ARGV[7])
end
local skip = {}
for i = 8, #ARGV do
  skip[ARGV[i]] = true
end
local ids, poison, count = {}, {}, {}
for _, e in ipairs(p) do
  if skip[e[1]] then
    -- in flight at the claimer: neither claimed nor judged
  elseif tonumber(e[4]) >= tonumber(ARGV[6]) then
    poison[#poison + 1] = e[1]
    poison[#poison + 1] = tostring(e[4])
  else
    ids[#ids + 1] = e[1]
    count[e[1]] = e[4]
  end
end
local claimed = {}
if #ids > 0 then
  -- unpack must come last in an argument list (Lua keeps only its first value otherwise).
  local args = {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}
  for _, id in ipairs(ids) do
    args[#args + 1] = id
  end
  args[#args + 1] = 'JUSTID'
  for _, id in ipairs(redis.call('XCLAIM', unpack(args))) do
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = tostring(count[id])
  end
end
local next = ''
if #p >= tonumber(ARGV[5]) then
  next = '(' .. p[#p][1]
end
return {next, claimed, poison, #ids}
