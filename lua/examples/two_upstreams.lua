-- A reverse proxy in front of two backends: /api and everything below it go
-- to the API servers, the rest to the web servers, each a named upstream
-- (edge.upstream.define) with its own balancing, timeouts and health; every
-- response gets security headers on its way out (edge.proxy's on_response).
-- Nothing is cached (no cache_key). Its specs: spec/examples/two_upstreams_spec.lua.
--
--   API_SERVERS=127.0.0.1:8081,127.0.0.1:8083 WEB_SERVERS=127.0.0.1:8082 \
--     ./edge -s lua/examples/two_upstreams.lua
local edge = require "edge"

--- "host:port,host:port" from the environment (or the default) as a list.
local function servers(var, default)
  local list = {}
  for s in (os.getenv(var) or default):gmatch("[^,%s]+") do list[#list + 1] = s end
  return list
end

edge.upstream.define("api", {
  servers = servers("API_SERVERS", "127.0.0.1:8081"),
  timeout = { connect = 1, read = 30 },
  retries = { tries = 2, on = { "connect", "error", "timeout" } },
})

edge.upstream.define("web", {
  servers = servers("WEB_SERVERS", "127.0.0.1:8082"),
  timeout = { connect = 1, read = 60 },
})

local app = {}

--- Headers every response leaves with, whatever the backend said.
function app.secure(res)
  res.headers["strict-transport-security"] = "max-age=31536000; includeSubDomains"
  res.headers["x-content-type-options"] = "nosniff"
end

--- The upstream a path belongs to.
function app.upstream_for(path)
  if path == "/api" or path:sub(1, 5) == "/api/" then return "api" end
  return "web"
end

function app.respond(req)
  return edge.proxy(req, "http://" .. app.upstream_for(req.path), { on_response = app.secure })
end

return app
