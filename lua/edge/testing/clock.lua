-- edge.testing.clock: the controllable clock of `require "edge"` outside the
-- server (busted, with build/lua/edge.so). There edge.sleep(s) does not wait:
-- it advances this clock by s, and edge.now() and the expiry of edge.cache
-- entries read it. So a spec can test TTL and timing logic instantly:
--
--   local clock = require "edge.testing.clock"
--   edge.cache.set("k", { body = "x" }, 30)
--   clock.advance(31)
--   assert.is_nil(edge.cache.get("k"))
--
--   clock.now()        -> the current virtual time (seconds since the epoch)
--   clock.set(t)       -> sets it (e.g. a fixed date for reproducible output)
--   clock.advance(s)   -> moves it forward by s >= 0 seconds; returns the new time
--
-- Advancing runs the edge.timer timers it passes, in time order (then in the
-- order they were made), the clock reading each one's due time while it runs;
-- edge.sleep outside a timer does the same. A timer's fn runs in a coroutine
-- of its own: edge.sleep there suspends that timer until the clock passes its
-- wake-up time, without moving the clock. An error in a timer is logged on
-- stderr, not raised into the spec. clock.set() runs no timers and moves the
-- pending ones with the clock: each keeps the time it had left.
--
-- The clock counts whole nanoseconds, so it advances exactly: edge.sleep(0.01)
-- moves it by 0.01, and a hundred of them by 1. It starts at 0 (1970-01-01,
-- not the wall clock, whose size would make a double lose the last digits:
-- 0.0099999905 instead of 0.01) and is shared by the whole busted process: set
-- it in before_each when a spec needs a known value or a date (clock.set(0),
-- clock.set(os.time())). Inside the server there is no virtual clock, and
-- requiring this module raises an error.
local ok, edge = pcall(require, "edge")
if not ok then
  error("edge.testing.clock: cannot load the edge module (build it with `make lua-module` "
    .. "and put build/lua/?.so on LUA_CPATH): " .. tostring(edge), 2)
end
local vc = type(edge) == "table" and rawget(edge, "_virtual_clock")
if not vc then
  error("edge.testing.clock is for specs run with busted (the edge module from "
    .. "build/lua/edge.so); inside the server edge.sleep really waits and there is "
    .. "no clock to control", 2)
end

local clock = {}

--- The current virtual time, seconds since the epoch (what edge.now() returns).
function clock.now()
  return vc.get()
end

--- Sets the virtual time to t (seconds since the epoch).
function clock.set(t)
  if type(t) ~= "number" then
    error("clock.set: t must be a number, got " .. type(t), 2)
  end
  vc.set(t)
end

--- Moves the virtual time forward by s seconds (s >= 0); returns the new time.
function clock.advance(s)
  if type(s) ~= "number" or s < 0 then
    error("clock.advance: seconds must be a number >= 0, got " .. tostring(s), 2)
  end
  return vc.advance(s)
end

return clock
