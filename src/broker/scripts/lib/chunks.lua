-- lib/chunks.lua: a prelude the script registry prepends to the scripts that write over a
-- batch of ids (ack.lua, fast_ack.lua, retry.lua). Lua's unpack fails beyond a few thousand
-- values and a flush may carry fleet.ack_batch = 5000 entries, so commands over many ids go
-- in chunks.
--
-- chunks(cmd, head, list, per): calls `cmd head… list[i..i+per-1]` for each chunk of `list`
-- and returns the sum of the integer replies.
-- ackdel(lane, group, ids): acks `ids` in `group` and deletes them from `lane`, in chunks of
-- 1000; returns how many were pending (acked). The registry builds each script that includes
-- this prelude twice, with `ACKDEL` (a local it puts before the prelude) true for servers that
-- have XACKDEL (Redis >= 8.2: one command per chunk) and false for the others (XACK, then
-- XDEL). XACKDEL deletes only the ids it acked, XACK + XDEL every id: the callers pass ids
-- that are pending or already gone, for which the two are the same. Neither command is
-- refused while Redis is over maxmemory.
local function chunks(cmd, head, list, per)
  local n = 0
  for i = 1, #list, per do
    local args = {cmd}
    for _, a in ipairs(head) do
      args[#args + 1] = a
    end
    for j = i, math.min(i + per - 1, #list) do
      args[#args + 1] = list[j]
    end
    n = n + redis.call(unpack(args))
  end
  return n
end


local function ackdel(lane, group, ids)
  if not ACKDEL then
    local n = chunks('XACK', {lane, group}, ids, 1000)
    chunks('XDEL', {lane}, ids, 1000)
    return n
  end
  local n = 0
  for i = 1, #ids, 1000 do
    local last = math.min(i + 999, #ids)
    local args = {'XACKDEL', lane, group, 'IDS', last - i + 1}
    for j = i, last do
      args[#args + 1] = ids[j]
    end
    for _, code in ipairs(redis.call(unpack(args))) do
      if code == 1 then
        n = n + 1
      end
    end
  end
  return n
end
