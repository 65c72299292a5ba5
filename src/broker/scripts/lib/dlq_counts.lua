-- lib/dlq_counts.lua: a prelude the script registry prepends to every script that adds or
-- removes dead letters, so a tenant's dead-letter counts change in the same atomic step as its
-- dead letters and `health`, `dlq stats` and the console read counts instead of scanning.
--
-- The counts are the HASH 'redrive:{t}:dlq:counts' (the tenant's hash tag, so the same slot
-- as its dead-letter stream): 'n' (dead letters counted), one field per group of dead letters
-- with the same fingerprint, class and kind, 'g:<fingerprint>\31<class>\31<kind>' → how many,
-- and 's:<fingerprint>' → the error of one of them (a sample). They are exact while every
-- writer is a redrive script; whoever changes the stream by hand (XADD, XDEL, XTRIM) makes
-- 'n' disagree with XLEN, which the upkeep (dlq_counts.lua) notices and repairs by counting
-- the stream again, and which readers notice too (they scan until it is repaired).
--
-- The recount is a rebuild in bounded steps while the stream keeps changing: it starts with
-- 'rebuild_to' = the stream's last id and 'rebuilt' = '0-0', and each step counts the next
-- page of entries after 'rebuilt' up to 'rebuild_to'. Meanwhile an entry is *counted* when its
-- id is after 'rebuild_to' (added since the rebuild began: the scripts count it as they add
-- it) or not after 'rebuilt' (the rebuild reached it); a removal takes back only counted
-- entries, and one the rebuild has not reached yet is simply never counted. Without the hash
-- at all nothing is counted: the first dead letter of a tenant creates it, and a stream that
-- held dead letters before counts existed waits for the upkeep to start a rebuild.

-- Compares two digit strings as numbers (ids are 64-bit: too long for Lua numbers).
local function dlc_num_cmp(x, y)
  if #x ~= #y then
    return #x < #y and -1 or 1
  end
  if x == y then
    return 0
  end
  return x < y and -1 or 1
end

-- Compares two stream ids 'ms-seq' numerically: -1, 0 or 1.
local function dlc_cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then
    return a == b and 0 or (a < b and -1 or 1)
  end
  local c = dlc_num_cmp(am, bm)
  if c ~= 0 then
    return c
  end
  return dlc_num_cmp(as, bs)
end

-- The group field and fingerprint of a dead letter's fields (a name → value table).
local function dlc_group(f)
  local fp = f['fingerprint'] or ''
  return 'g:' .. fp .. '\31' .. (f['class'] or '') .. '\31' .. (f['kind'] or ''), fp
end

-- A flat field, value, … list as a name → value table.
local function dlc_fields(flat)
  local f = {}
  for j = 1, #flat, 2 do
    f[flat[j]] = flat[j + 1]
  end
  return f
end

-- Counts dead letter `f` (a name → value table) just appended to a stream now `len` long.
-- Without counts, only a stream's first dead letter starts them (any other waits for the
-- upkeep's rebuild, which will count it).
local function dlc_add(key, f, len)
  if redis.call('HEXISTS', key, 'n') == 0 then
    if len ~= 1 then
      return
    end
  end
  local g, fp = dlc_group(f)
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('HINCRBY', key, g, 1)
  redis.call('HSETNX', key, 's:' .. fp, f['error'] or '')
end

-- Whether dead letter `id` is in the counts (see above).
local function dlc_counted(key, id)
  local r = redis.call('HMGET', key, 'n', 'rebuild_to', 'rebuilt')
  if not r[1] then
    return false
  end
  if not r[2] then
    return true
  end
  return dlc_cmp(id, r[2]) > 0 or dlc_cmp(id, r[3] or '0-0') <= 0
end

-- Takes dead letter `id` (fields `f`) out of the counts before it leaves the stream, if it is
-- counted.
local function dlc_remove(key, id, f)
  if not dlc_counted(key, id) then
    return
  end
  local g, fp = dlc_group(f)
  redis.call('HINCRBY', key, 'n', -1)
  if redis.call('HINCRBY', key, g, -1) <= 0 then
    redis.call('HDEL', key, g, 's:' .. fp)
  end
end

-- Takes dead letter `id` out of the counts, reading its fields from the stream `dlq` first.
-- Returns whether the entry exists.
local function dlc_remove_entry(key, dlq, id)
  local e = redis.call('XRANGE', dlq, id, id)
  if #e == 0 then
    return false
  end
  dlc_remove(key, id, dlc_fields(e[1][2]))
  return true
end
