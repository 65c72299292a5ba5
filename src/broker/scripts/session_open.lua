-- session_open.lua: starts a browser session of the HTTP API's console. The session id itself
-- never reaches Redis: the key is named by its SHA-256.
--
-- KEYS[1]  the session (HASH)
-- ARGV[1]  the name of the token it was opened with
-- ARGV[2]  a check of that token (a digest of its configured hash): a token replaced under the
--          same name ends the sessions of the old one
-- ARGV[3]  the session's CSRF token
-- ARGV[4]  the idle timeout, ms (the key's PEXPIRE)
--
-- Returns the server's time of the start, ms. An existing hash of that name (a 256-bit random
-- id colliding) is replaced whole.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'token_check', ARGV[2], 'csrf', ARGV[3],
  'created', now, 'seen', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return now
