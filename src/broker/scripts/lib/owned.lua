-- lib/owned.lua: a prelude the script registry prepends to the scripts that settle a batch of
-- entries after checking that this member still owns them (retry.lua, defer.lua).
--
-- owned(key, group, consumer, ids): the set ({[id] = true}) of `ids` pending in `group` of the
-- stream `key` for `consumer`. One XPENDING over [smallest, largest] filtered to the consumer
-- (paged by 1000) instead of one call per id, as ack.lua does: the consumer's PEL is bounded
-- by its unsettled limit, so the range holds few entries besides the batch. An id that is not
-- a stream id (`ms-seq`) is in no PEL: it is left out of the set, never an error.
local function owned_id_parts(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if not ms then
    return nil
  end
  return tonumber(ms), tonumber(seq)
end

local function owned(key, group, consumer, ids)
  local set = {}
  local lo, hi, lo_ms, lo_seq, hi_ms, hi_seq = nil, nil, 0, 0, 0, 0
  for _, id in ipairs(ids) do
    local ms, seq = owned_id_parts(id)
    if ms then
      if not lo or ms < lo_ms or (ms == lo_ms and seq < lo_seq) then
        lo, lo_ms, lo_seq = id, ms, seq
      end
      if not hi or ms > hi_ms or (ms == hi_ms and seq > hi_seq) then
        hi, hi_ms, hi_seq = id, ms, seq
      end
    end
  end
  if not lo then
    return set
  end
  local start = lo
  while true do
    local p = redis.call('XPENDING', key, group, start, hi, 1000, consumer)
    for _, e in ipairs(p) do
      set[e[1]] = true
    end
    if #p < 1000 then
      break
    end
    start = '(' .. p[#p][1]
  end
  return set
end
