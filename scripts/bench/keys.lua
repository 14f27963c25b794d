-- wrk script (LuaJIT / Lua 5.1): cycles through N paths, PREFIX1 .. PREFIXN, one per request,
-- so that a run spreads over N cache entries (scripts/bench/stale.sh: N entries in keep).
--   wrk -t1 -c400 -d10s --latency -s scripts/bench/keys.lua https://127.0.0.1:PORT/ -- N PREFIX
-- Defaults: N = 100, PREFIX = /keep/.

local n, prefix, i = 100, "/keep/", 0

function init(args)
  n = tonumber(args[1]) or n
  prefix = args[2] or prefix
end

function request()
  i = i % n + 1
  return wrk.format(nil, prefix .. i)
end
