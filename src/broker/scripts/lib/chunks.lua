-- lib/chunks.lua: a prelude the script registry prepends to the scripts that write over a
-- batch of ids (ack.lua, fast_ack.lua, retry.lua). Lua's unpack fails beyond a few thousand
-- values and a flush may carry fleet.ack_batch = 5000 entries, so commands over many ids go
-- in chunks.
--
-- chunks(cmd, head, list, per): calls `cmd head… list[i..i+per-1]` for each chunk of `list`
-- and returns the sum of the integer replies.
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

