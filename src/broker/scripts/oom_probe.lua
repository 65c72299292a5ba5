#!lua
-- oom_probe.lua: answers 1, writes nothing. The shebang without `no-writes` or `allow-oom`
-- flags makes Redis treat the script as a command that may grow memory, so it refuses to run
-- it (an OOM error) exactly while it would refuse such a write: over `maxmemory` with
-- `noeviction`, or with nothing left to evict. No keys.
--
-- Returns 1.
return 1
