-- The default edge script: emulates a backend that takes 2 ms and answers
-- "Hello from edge!" (16 bytes, so benchmarks compare like with like).
--
-- A script is a module returning a table of hooks:
--   cache_key(req) -> string, or nil to bypass the cache
--   respond(req)   -> { status = 200, headers = { ... }, body = "...", ttl = seconds }
local edge = require "edge"

local app = {}

local BODY = "Hello from edge!"
local HEADERS = { ["content-type"] = "text/plain" }

-- GET and HEAD are cached by path alone: this script answers one greeting
-- whatever the host and the query, so they select nothing. A script whose
-- response depends on req.host or the query must put them in its key (see
-- edge.router's default key). Everything else goes to respond every time.
function app.cache_key(req)
  local m = req.method
  if m == "GET" or m == "HEAD" then
    return req.path
  end
end

function app.respond(req)
  edge.sleep(0.002)           -- the emulated backend: yields to the event loop, never blocks it
  return { status = 200, headers = HEADERS, body = BODY, ttl = 60 }
end

return app
