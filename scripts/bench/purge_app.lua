-- The edge script scripts/bench/purge.sh serves (not a wrk script):
--   GET /hit                        a cached page (Cache-Control max-age=3600): what wrk asks for
--   GET /fill?from=I&n=N&tag=T      stores N entries /bench/I .. /bench/I+N-1 with edge.cache.set,
--                                   each tagged T (Surrogate-Key), and answers how many it stored
-- /fill is how the benchmark gets 100,000 entries fast and exactly: edge.cache.set is the same
-- C store a response goes through (edge_cache_put: the tag index is filled from the
-- Surrogate-Key field), without 100,000 HTTP round trips.
local edge = require "edge"

local app = {}

function app.cache_key(req)
  if req.path == "/hit" then return "/hit" end
  return nil
end

local function fill(a)
  local from, n = tonumber(a.from) or 1, tonumber(a.n) or 0
  local entry = { status = 200, headers = { ["content-type"] = "text/plain", ["surrogate-key"] = a.tag or "bench" },
                  body = "a purge benchmark entry\n" }
  local stored = 0
  for i = from, from + n - 1 do
    if edge.cache.set("/bench/" .. i, entry, 3600) then stored = stored + 1 end
  end
  return { status = 200, headers = { ["content-type"] = "text/plain" }, body = stored .. "\n" }
end

function app.respond(req)
  if req.path == "/hit" then
    return { status = 200, headers = { ["content-type"] = "text/plain", ["cache-control"] = "max-age=3600" },
             body = "hit\n" }
  elseif req.path == "/fill" then
    return fill(req.args or {})
  end
  return { status = 404, body = "no\n" }
end

return app
