-- records_sweep.lua: one bounded step of the sweep over a tenant's record index (run by the
-- recovery loop of any member, one tenant per call). A record expires by itself (PEXPIRE), but
-- its index entry does not: this step removes the index entries whose record is gone. And a
-- dead letter's record lives as long as its dead letter (no expiry): when the dead-letter
-- stream's length cap trimmed the dead letter away, this step gives the record the tenant's
-- retention, so it ends too.
--
-- The pass goes by creation time (the index's score) and looks only at entries created longer
-- ago than the shortest retention: a younger record cannot have expired (every expiry a
-- record gets is at least a retention from its creation), so a tenant whose records are all
-- young costs one ZRANGEBYSCORE that finds nothing, however many records it has. The record
-- of a dead letter trimmed young gets its retention once it is that old: it lives at most the
-- shortest retention longer than it would have.
--
-- KEYS[1]  the tenant's record index (ZSET: task_id scored by when its record was created)
-- KEYS[2]  the prefix of the tenant's task records ('redrive:{t}:task:')
-- KEYS[3]  the tenant's dead-letter stream
-- KEYS[4]  the sweep's cursor (STRING: `<score>:<offset>`, the creation time the pass has
--          reached and how many entries kept at that very score it has passed; absent between
--          passes, so a tenant without records has no sweep key; any other value starts a pass)
-- KEYS[5]  the tenant's lane stream
-- KEYS[6]  the lane look's cursor (STRING: the last old lane entry looked at; absent between
--          passes)
-- KEYS[7]  the fleet's pace mark (STRING, expires after ARGV[3]): a step while it lives does
--          nothing, so a fleet of members steps each tenant once per pace, not once per member
-- ARGV[1]  how many index entries to look at (bounded work per call)
-- ARGV[2]  the tenant's retention of finished records, ms (when no kind rule below matches)
-- ARGV[3]  the pace, ms: the least time between two steps of this tenant by any member (0:
--          no mark, every call steps)
-- ARGV[4…] kind rules in order, first match wins: a kind glob ('*' any run, '?' one
--          character) and its retention, ms
--
-- The cursor is kept in Redis, so steps by any member continue one pass: a full pass (the
-- cursor back at '0') looks once at every entry created before the shortest retention ago
-- (in score order, ties by member; an entry removed by another step meanwhile may let one
-- entry at the cursor's own score wait for the next pass, which is harmless).
--
-- A record whose state is dead_lettered or expired, with a `dlq` id older than the first
-- dead letter left in the stream (or the stream empty), and without an expiry, gets the
-- retention of its kind. Dead letters removed by a replay, resolve, discard or purge are not
-- its business: those scripts write the record themselves.
--
-- The lane look: a record that enqueue.lua gave an expiry (its retention plus an eighth, so
-- that a task done soon needs no second write: the done log, lib/record.lua) must not expire
-- while its task waits or runs. Each step reads up to ARGV[1] lane entries older than half the
-- shortest retention (by entry id: usually none, one XRANGE that finds nothing), from the
-- lane look's cursor, and gives each such entry's record with less than half its retention
-- left its retention plus an eighth again. A pass over the old entries takes far less than
-- half a retention (enqueue.lua sets an expiry only for retentions of an hour or more). A
-- task done that late is written in full at its done: its entry's `recorded` expiry no
-- longer covers the retention.
--
-- Returns {cursor, looked, removed, retained}: the next cursor ('0': a pass ended), the index
-- entries looked at, the entries removed (record expired) and the records given a retention.
-- A step within the pace returns the cursor as it is ('' between passes) and zeros.
local function glob_pattern(g)
  local p = {'^'}
  for c in string.gmatch(g, '.') do
    if c == '*' then
      p[#p + 1] = '.*'
    elseif c == '?' then
      p[#p + 1] = '.'
    elseif string.match(c, '%w') then
      p[#p + 1] = c
    else
      p[#p + 1] = '%' .. c
    end
  end
  p[#p + 1] = '$'
  return table.concat(p)
end
local rules = {}
for i = 4, #ARGV - 1, 2 do
  rules[#rules + 1] = {glob_pattern(ARGV[i]), ARGV[i + 1]}
end
local function retention(kind)
  for _, r in ipairs(rules) do
    if kind and string.match(kind, r[1]) then
      return r[2]
    end
  end
  return ARGV[2]
end
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then
    return false
  end
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then
    return am < bm
  end
  return tonumber(as) < tonumber(bs)
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  -- No records: nothing to sweep, nothing written.
  redis.call('DEL', KEYS[4])
  return {'0', 0, 0, 0}
end
if tonumber(ARGV[3]) > 0
    and not redis.call('SET', KEYS[7], '1', 'PX', ARGV[3], 'NX') then
  -- Another member stepped this tenant within the pace: the pass goes on at its next step.
  return {redis.call('GET', KEYS[4]) or '', 0, 0, 0}
end
local batch = tonumber(ARGV[1])
local shortest = tonumber(ARGV[2])
for i = 5, #ARGV, 2 do
  shortest = math.min(shortest, tonumber(ARGV[i]))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The index pass (see the header): entries created before `cutoff`, from the cursor.
local cutoff = string.format('%d', now - shortest)
local from, skip = '-inf', 0
local cursor = redis.call('GET', KEYS[4])
if cursor then
  local score, offset = string.match(cursor, '^(%d+):(%d+)$')
  if score then
    from, skip = score, tonumber(offset)
  end
end
local page = redis.call('ZRANGEBYSCORE', KEYS[1], from, cutoff, 'WITHSCORES', 'LIMIT', skip, batch)
local first_id = nil
if #page > 0 then
  local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
  if #first == 1 then
    first_id = first[1][1]
  end
end
local looked, removed, retained = 0, 0, 0
local last, kept_at_last = nil, 0
for i = 1, #page, 2 do
  local task_id, score = page[i], page[i + 1]
  local key = KEYS[2] .. task_id
  looked = looked + 1
  if score ~= last then
    last, kept_at_last = score, 0
  end
  local r = redis.call('HMGET', key, 'state', 'dlq', 'kind')
  if not r[1] and redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], task_id)
    removed = removed + 1
  else
    kept_at_last = kept_at_last + 1
    if (r[1] == 'dead_lettered' or r[1] == 'expired') and r[2]
        and (first_id == nil or id_lt(r[2], first_id))
        and redis.call('PTTL', key) == -1 then
      redis.call('PEXPIRE', key, retention(r[3]))
      retained = retained + 1
    end
  end
end
local next_cursor = '0'
if looked < batch then
  redis.call('DEL', KEYS[4])
else
  -- Past the entries kept at the last score (those at the cursor's own score counted on).
  local offset = kept_at_last
  if from ~= '-inf' and tonumber(last) == tonumber(from) then
    offset = skip + kept_at_last
  end
  next_cursor = string.format('%d:%d', tonumber(last), offset)
  redis.call('SET', KEYS[4], next_cursor)
end

-- The lane look (see the header).
local upto = string.format('%d', now - math.floor(shortest / 2))
local from = redis.call('GET', KEYS[6])
if from then
  from = '(' .. from
else
  from = '-'
end
local old = redis.pcall('XRANGE', KEYS[5], from, upto, 'COUNT', tonumber(ARGV[1]))
if type(old) ~= 'table' or old.err ~= nil then
  old = {}
end
for _, e in ipairs(old) do
  local f = e[2]
  local tid, kind = nil, nil
  for j = 1, #f, 2 do
    if f[j] == 'task_id' then
      tid = f[j + 1]
    elseif f[j] == 'kind' then
      kind = f[j + 1]
    end
  end
  if tid then
    local key = KEYS[2] .. tid
    local keep = tonumber(retention(kind))
    local left = redis.call('PTTL', key)
    if left > 0 and left < keep / 2 then
      redis.call('PEXPIRE', key, string.format('%d', keep + math.floor(keep / 8)))
      retained = retained + 1
    end
  end
end
if #old < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[6])
else
  redis.call('SET', KEYS[6], old[#old][1])
end
return {next_cursor, looked, removed, retained}
