-- The fuzz harness script for the h1-phases and h2-phases targets (scripts/fuzz.sh):
-- every phase, waits inside coroutines the script makes and inside pcall, request
-- rewrites in access, an answer from access, on_response waiting, and a log phase
-- that waits (a task that outlives its connection). edge.sleep is 0 s under the fuzzer.
local edge = require "edge"
local app = {}
function app.access(req)
  if req.path == "/deny" then return { status = 403, body = "no" } end
  if req.headers["x-rewrite"] then req.path = "/rewritten"; req:set_header("x-seen", "1") end
  req:clear_header("cookie")
  coroutine.wrap(function() edge.sleep(0.001) end)()
end
function app.cache_key(req)
  local k = coroutine.wrap(function() edge.sleep(0.001); return req.path end)()
  if req.method == "GET" then return k end
end
function app.respond(req)
  local ok = pcall(function() edge.sleep(0.002) end)
  return { status = 200, headers = { ["content-type"] = "text/plain" }, body = "hi " .. tostring(ok), ttl = 60 }
end
function app.on_response(req, res)
  edge.sleep(0.001)
  res.headers["x-phase"] = req.path
end
function app.log(req, res)
  edge.sleep(0.001)
end
return app
