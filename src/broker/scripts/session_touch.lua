-- session_touch.lua: a request presents a browser session. A live session is marked seen and
-- its idle timeout starts again, never past its absolute end (created + the maximum age); a
-- session past that end is deleted. By the server's clock, so every serving process agrees.
--
-- KEYS[1]  the session (HASH)
-- ARGV[1]  the idle timeout, ms
-- ARGV[2]  the maximum age, ms
--
-- Returns false when there is no such session (never opened, logged out, idle too long) or it
-- is past its maximum age; else {token, token_check, csrf, created, now}.
local s = redis.call('HMGET', KEYS[1], 'token', 'token_check', 'csrf', 'created')
if not s[1] or not s[2] or not s[3] or not s[4] then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local created = tonumber(s[4])
if not created then
  redis.call('DEL', KEYS[1])
  return false
end
local left = created + tonumber(ARGV[2]) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'seen', now)
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[1]), left))
return {s[1], s[2], s[3], s[4], tostring(now)}
