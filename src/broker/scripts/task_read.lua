-- task_read.lua: a task's record as readers show it (the CLI, the HTTP API, both SDKs: the
-- SDKs ship this file byte for byte; their tests compare it with this one). Read-only.
--
-- KEYS[1]  the task's record (HASH redrive:{t}:task:<task_id>, see lib/record.lua)
-- KEYS[2]  the tenant's lane stream
-- KEYS[3]  the prefix of the tenant's done logs ('redrive:{t}:done:')
-- ARGV[1]  the fleet's consumer group
--
-- Returns {fields, ttl}: the record's fields as a flat list (empty when there is no record)
-- and its time to live in ms (-1 kept, -2 none). A record that says queued, replayed or
-- running on a lane entry is shown as the entry's place tells:
-- - pending in the group, for a record that says queued or replayed: `running` on the
--   consumer holding it (its `started` and `ended`, of an earlier run, dropped);
-- - still in the lane: as the record says;
-- - gone from the lane: `done` (no other path removes a lane entry without writing its
--   record), with `ended`, `member`, `started` and the output from the done log of the
--   entry's window (100 s: its milliseconds without the last five digits, '0' for fewer than
--   six; lib/record.lua), read from a minute before the entry's own time on until the entry
--   is found.
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then
  return {flat, -2}
end
local ttl = redis.call('PTTL', KEYS[1])
local at = {}
for i = 1, #flat, 2 do
  at[flat[i]] = i + 1
end
local function get(name)
  local i = at[name]
  return i and flat[i]
end
local function set(name, value)
  local i = at[name]
  if i then
    flat[i] = value
  else
    flat[#flat + 1] = name
    flat[#flat + 1] = value
    at[name] = #flat
  end
end
local function drop(name)
  local i = at[name]
  if i then
    -- Replaced by the last pair (order does not matter).
    local last = #flat - 1
    if i - 1 ~= last then
      at[flat[last]] = i
      flat[i - 1], flat[i] = flat[last], flat[last + 1]
    end
    flat[last + 1] = nil
    flat[last] = nil
    at[name] = nil
  end
end

local state, entry = get('state'), get('entry')
if not (entry and entry ~= '' and (state == 'queued' or state == 'replayed' or state == 'running')) then
  return {flat, ttl}
end
local p = redis.pcall('XPENDING', KEYS[2], ARGV[1], entry, entry, 1)
if type(p) == 'table' and p.err == nil and #p > 0 then
  if state ~= 'running' then
    set('state', 'running')
    set('member', p[1][2])
    drop('started')
    drop('ended')
  end
  return {flat, ttl}
end
local here = redis.pcall('XRANGE', KEYS[2], entry, entry)
if type(here) ~= 'table' or here.err ~= nil or #here > 0 then
  return {flat, ttl}
end
-- Gone from the lane: done. Its facts are in the done log of its window.
set('state', 'done')
local dash = string.find(entry, '-', 1, true) or (#entry + 1)
local ms = string.sub(entry, 1, dash - 1)
local window = '0'
if #ms > 5 then
  window = string.sub(ms, 1, #ms - 5)
end
local log = KEYS[3] .. window
-- Appended when it was acked: not before it was appended to the lane (a minute of slack for
-- a server clock set back in between).
local from = string.format('%d', math.max(0, (tonumber(ms) or 0) - 60000)) .. '-0'
for _ = 1, 100000 do
  local page = redis.call('XRANGE', log, from, '+', 'COUNT', 100)
  for _, e in ipairs(page) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == entry then
        -- The batch's member and end, and this entry's output (the outputs follow the
        -- batch's entry/start pairs).
        local member, ended = '', ''
        local whole, cut = entry .. 'o', entry .. 't'
        local output, truncated = nil, false
        for j = 1, #f, 2 do
          local name = f[j]
          if name == '_m' then
            member = f[j + 1]
          elseif name == '_e' then
            ended = f[j + 1]
          elseif name == whole then
            output = f[j + 1]
          elseif name == cut then
            output, truncated = f[j + 1], true
          end
        end
        set('member', member)
        set('ended', ended)
        set('updated', ended)
        set('started', f[i + 1])
        if output then
          set('output', output)
          if truncated then
            set('output_truncated', '1')
          else
            drop('output_truncated')
          end
        end
        return {flat, ttl}
      end
    end
    from = '(' .. e[1]
  end
  if #page < 100 then
    break
  end
end
return {flat, ttl}
