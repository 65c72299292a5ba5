-- lib/steps.lua: a prelude the script registry prepends to the scripts that read the steps
-- recorded for a lane entry (begin.lua, retry.lua, dead_letter.lua, defer.lua). step.lua writes
-- them into the entry's hash redrive:{t}:steps:<entry id>: one field per step name, whose value
-- is '<seq>:<state>:<step JSON>' — seq the order the record was written in (from the counter
-- kept in the field '': a step name is never empty), state 'd' (done) or 's' (a side-effecting
-- step started and not done), then the step as redrive serialised it. Texts are moved as they
-- are, never decoded, so no number in a step's output is rounded.
--
-- recorded_steps(key): the records of hash `key` as one JSON array text, in the order they
-- were written; nil when there are none.
-- join_steps(earlier, later): two JSON array texts as one, earlier's items first (an earlier
-- text that is not an array is kept in front, so nothing is lost: the reader refuses it).
-- fold_steps(flat, rec): adds the records `rec` (a text from recorded_steps) to the field list
-- `flat` (field, value, …) as the field 'recorded_steps' — joined after an existing one, else
-- inserted before a last 'from_entry' pair (which stays last), else appended.
local function recorded_steps(key)
  local h = redis.call('HGETALL', key)
  local items = {}
  for i = 1, #h, 2 do
    if h[i] ~= '' then
      local seq, json = string.match(h[i + 1], '^(%d+):%a:(.*)$')
      if seq then
        items[#items + 1] = {tonumber(seq), json}
      end
    end
  end
  if #items == 0 then
    return nil
  end
  table.sort(items, function(a, b) return a[1] < b[1] end)
  local texts = {}
  for i, item in ipairs(items) do
    texts[i] = item[2]
  end
  return '[' .. table.concat(texts, ',') .. ']'
end

local function join_steps(earlier, later)
  if earlier == nil or string.match(earlier, '^%s*%[%s*%]%s*$') then
    return later
  end
  local head = string.match(earlier, '^(.*)%]%s*$')
  if head == nil then
    return earlier .. later
  end
  return head .. ',' .. string.sub(later, 2)
end

local function fold_steps(flat, rec)
  for j = 1, #flat, 2 do
    if flat[j] == 'recorded_steps' then
      flat[j + 1] = join_steps(flat[j + 1], rec)
      return
    end
  end
  if #flat >= 2 and flat[#flat - 1] == 'from_entry' then
    table.insert(flat, #flat - 1, rec)
    table.insert(flat, #flat - 2, 'recorded_steps')
  else
    flat[#flat + 1] = 'recorded_steps'
    flat[#flat + 1] = rec
  end
end

