-- An API-style script: JSON routes with per-route caching, built on
-- edge.router. Serve it with `./edge -s lua/examples/api.lua`; its specs are
-- spec/examples/api_spec.lua (in-process and against a real server).
--
--   GET    /health            never cached (cache = false)
--   GET    /users/:id         one cache entry per id (the default key: host, path
--                             and query), 30 s
--   GET    /u/:id             301 to /users/:id
--   GET    /search?q=...      keyed by the q argument only (other arguments ignored), 10 s
--   POST   /users             creates a user from a JSON body: 201, never cached
--   DELETE /cache/users/:id   purges /users/:id (this host's) from edge's shared cache
--                             (needs the header X-Purge-Token: $EDGE_PURGE_TOKEN,
--                             default "dev-token")
-- The users are a fixed table here; a real script would ask a backend, which
-- edge.sleep emulates.
local edge = require "edge"
local cjson = require "cjson"
local router = require "edge.router"
local request = require "edge.request"
local response = require "edge.response"

local PURGE_TOKEN = os.getenv("EDGE_PURGE_TOKEN") or "dev-token"
local BACKEND_DELAY = 0.005   -- what a backend round trip costs, in seconds

local USERS = {
  ["1"] = { id = 1, name = "Ada Lovelace" },
  ["2"] = { id = 2, name = "Alan Turing" },
  ["3"] = { id = 3, name = "Grace Hopper" },
}

local app = router.new {
  not_found = function(req)
    return response.json({ error = "not found" }, 404)
  end,
}

app:get("/health", function(req)
  return response.json { status = "ok", worker = edge.worker_id, time = edge.now() }
end, { cache = false })

app:get("/users/:id", function(req, params)
  if not params.id:match("^%d+$") then
    return response.json({ error = "id must be a number" }, 400)
  end
  edge.sleep(BACKEND_DELAY)                       -- the backend lookup
  local user = USERS[params.id]
  if not user then
    return response.json({ error = "no user " .. params.id }, 404)
  end
  -- generated_at shows whether a response came from the cache.
  return response.json { id = user.id, name = user.name, generated_at = edge.now() }
end, { ttl = 30 })

app:get("/u/:id", function(req, params)
  return response.redirect("/users/" .. params.id, 301)
end)

-- One entry per host and q, whatever else the query holds (?q=lua&utm_source=x
-- is ?q=lua): the key is built from the argument, not from req.query.
local function search_key(req)
  local q = request.arg(req, "q")
  if type(q) ~= "string" or q == "" then return nil end   -- a 400: not cached
  return router.default_key { host = req.host, path = req.path, query = "q=" .. q }
end

app:get("/search", function(req)
  local q = request.arg(req, "q")
  if type(q) ~= "string" or q == "" then
    return response.json({ error = "missing q" }, 400)
  end
  edge.sleep(BACKEND_DELAY)
  local results = {}
  local needle = q:lower()
  for _, id in ipairs { "1", "2", "3" } do
    local user = USERS[id]
    if user.name:lower():find(needle, 1, true) then results[#results + 1] = user end
  end
  -- (lua-cjson encodes an empty table as {}, so no results: no "results".)
  return response.json { query = q, count = #results, generated_at = edge.now(),
                         results = #results > 0 and results or nil }
end, { cache_key = search_key, ttl = 10 })

local next_id = 100

app:post("/users", function(req)
  local ok, data = pcall(cjson.decode, req.body or "")
  if not ok or type(data) ~= "table" then
    return response.json({ error = "expected a JSON object" }, 400)
  end
  if type(data.name) ~= "string" or data.name == "" then
    return response.json({ error = "name is required" }, 422)
  end
  -- A real script would store the user in a backend. This one only counts,
  -- and the count is per worker: each worker runs its own Lua VM.
  next_id = next_id + 1
  local id = next_id
  return response.json({ id = id, name = data.name }, 201, { location = "/users/" .. id })
end)

app:delete("/cache/users/:id", function(req, params)
  if request.header(req, "X-Purge-Token") ~= PURGE_TOKEN then
    return response.json({ error = "forbidden" }, 403)
  end
  -- The key edge stored GET /users/:id under (the router's default key).
  local purged = edge.cache.purge(router.default_key { host = req.host, path = "/users/" .. params.id })
  return response.json { purged = purged }
end)

return app:hooks()
