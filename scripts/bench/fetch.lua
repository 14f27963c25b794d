-- The fetch benchmark's edge script (scripts/bench.sh --scenarios fetch): every request is answered
-- by an edge.fetch to the origin nginx (EDGE_BENCH_ORIGIN, e.g. http://127.0.0.1:8080) with the
-- request's path and query. No cache_key hook: nothing is cached. The keep-alive pool is as large as
-- the peer's `keepalive 64`; max_requests keeps its default (1000), as nginx's keepalive_requests.
local edge = require "edge"

local ORIGIN = assert(os.getenv("EDGE_BENCH_ORIGIN"), "EDGE_BENCH_ORIGIN is not set")
local OPTS = { keepalive = { size = 64 } }

local app = {}

function app.respond(req)
  local target = ORIGIN .. req.path
  if req.query and req.query ~= "" then target = target .. "?" .. req.query end
  local res, err = edge.fetch(target, OPTS)
  if not res then
    edge.log(edge.ERR, "fetch: ", err)
    return { status = 502, body = "bad gateway\n" }
  end
  return { status = res.status, headers = { ["content-type"] = res.headers["content-type"] },
           body = res.body }
end

return app
