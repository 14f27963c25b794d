-- wrk script (LuaJIT / Lua 5.1): every request gets a path never used before,
-- /u/<run>-<thread>-<counter>, so every request misses any cache and pays the full backend cost.
--   wrk -t1 -c400 -d10s --latency -s scripts/bench/unique.lua https://127.0.0.1:PORT/ -- RUN_ID
-- RUN_ID (optional) keeps paths unique across runs against the same server; default: the clock.

local threads = 0

-- Runs in wrk's main Lua state once per thread, before the threads start: number the threads.
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix, counter = "/u/", 0

-- Runs in each thread's own Lua state; `tid` was set there by setup().
function init(args)
  local run = args[1] or tostring(os.time())
  prefix = "/u/" .. run .. "-" .. tostring(tid or 1) .. "-"
end

function request()
  counter = counter + 1
  return wrk.format(nil, prefix .. counter)
end
