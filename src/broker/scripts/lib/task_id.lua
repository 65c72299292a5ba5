-- lib/task_id.lua: a prelude the script registry prepends to the scripts that name a task's
-- record from a lane entry's own fields (begin.lua, defer.lua), the way src/task reads them.
--
-- entry_task_id(fields, id): the task_id of lane entry `id` whose fields are the flat list
-- `fields` (field, value, …): its 'task_id' field (the last one, as the member reads it) when
-- valid — 1 to 128 bytes of A-Z a-z 0-9 _ - . : / @ + = (src/task validate_task_id) —,
-- 'x-<entry id>' when it has none (the name the contract gives such an entry), and nil when it
-- is invalid (or not a string, in a decoded schedule item): a malformed entry gets no record.
local function entry_task_id(fields, id)
  local tid = nil
  for j = 1, #fields, 2 do
    if fields[j] == 'task_id' then
      tid = fields[j + 1]
    end
  end
  if tid == nil then
    return 'x-' .. id
  end
  if type(tid) == 'string' and #tid >= 1 and #tid <= 128 and not string.find(tid, '[^A-Za-z0-9_%-%.:/@%+=]') then
    return tid
  end
  return nil
end
