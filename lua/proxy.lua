-- A ready reverse proxy: every request goes to the origin named by the
-- environment, GET and HEAD are cached as the origin's Cache-Control says.
--
--   EDGE_ORIGIN=127.0.0.1:8080 ./edge -s lua/proxy.lua
--
-- EDGE_ORIGIN is host:port (plain HTTP) or a URL (http://host:port,
-- https://host). Responses carry X-Cache (HIT or MISS) and, on hits, Age.
local edge = require "edge"
local router = require "edge.router"

local origin = os.getenv("EDGE_ORIGIN")
if origin == nil or origin == "" then
  error("lua/proxy.lua: set EDGE_ORIGIN to the origin, e.g. EDGE_ORIGIN=127.0.0.1:8080", 0)
end
if not origin:find("^https?://") then origin = "http://" .. origin end

local app = {}

-- The cache key of a GET or HEAD: host, path and query (a HEAD miss is sent
-- as GET so that its entry can answer both). Other methods pass through.
function app.cache_key(req)
  local m = req.method
  if m == "GET" or m == "HEAD" then return router.default_key(req) end
end

function app.respond(req)
  return edge.proxy(req, origin)
end

return app
