-- Specs for lua/examples/api.lua, the way a user tests a script: first
-- in-process (plain busted: load the script, call its hooks with plain
-- request tables; edge.sleep and edge.cache come from build/lua/edge.so, the
-- clock from edge.testing.clock), then against the real server (#e2e, with
-- edge.testing.server).
--
-- Copy this file and the script, change a route, and run
--   busted spec/examples/api_spec.lua             (both)
--   busted --exclude-tags=e2e spec/examples/...   (in-process only)
-- with LUA_PATH / LUA_CPATH as scripts/test.sh sets them.
local cjson = require "cjson"
local edge = require "edge"
local clock = require "edge.testing.clock"
local fake = require "edge.testing.request"

local SCRIPT = "lua/examples/api.lua"

describe("examples/api.lua in-process", function()
  local app

  before_each(function()
    app = dofile(SCRIPT)     -- a fresh copy of the script's state for each test
  end)

  --- Runs the script's hooks as edge does for a request: cache_key, then respond.
  local function call(opts)
    local req = fake.new(opts)
    local key = app.cache_key(req)
    local res = app.respond(req)
    local body = res.body
    local json = res.headers and res.headers["content-type"] == "application/json"
      and cjson.decode(body) or nil
    return res, key, json
  end

  it("returns the hooks", function()
    assert.is_function(app.cache_key)
    assert.is_function(app.respond)
  end)

  it("GET /health answers JSON and is never cached", function()
    local res, key, json = call { path = "/health" }
    assert.are.equal(200, res.status)
    assert.are.equal("ok", json.status)
    assert.is_nil(key)
  end)

  it("GET /users/:id is cached per id, for 30 s", function()
    local res, key, json = call { path = "/users/1" }
    assert.are.equal(200, res.status)
    assert.are.equal("Ada Lovelace", json.name)
    assert.are.equal("GET localhost/users/1", key)
    assert.are.equal(30, res.ttl)
    local _, key2 = call { path = "/users/2" }
    assert.are.equal("GET localhost/users/2", key2)
    local _, key3 = call { path = "/users/2", host = "other.example" }
    assert.are.equal("GET other.example/users/2", key3)
  end)

  it("GET /users/:id waits for the backend on the virtual clock, not for real", function()
    local t0 = clock.now()
    local _, _, json = call { path = "/users/2" }
    assert.is_true(clock.now() - t0 >= 0.005 - 1e-9, "edge.sleep did not advance the clock")
    -- (lua-cjson writes 14 significant digits: about 0.1 ms here.)
    assert.is_true(math.abs(clock.now() - json.generated_at) < 0.001)
  end)

  it("GET /users/:id answers 404 for an unknown id and 400 for a non-number", function()
    local res, _, json = call { path = "/users/99" }
    assert.are.equal(404, res.status)
    assert.are.equal("no user 99", json.error)
    res = call { path = "/users/abc" }
    assert.are.equal(400, res.status)
  end)

  it("HEAD is keyed like GET (edge serves both from one entry)", function()
    local res, key = call { method = "HEAD", path = "/users/3" }
    assert.are.equal(200, res.status)
    assert.are.equal("GET localhost/users/3", key)
  end)

  it("GET /search is keyed by the host and the q argument only", function()
    local _, k1, json = call { path = "/search?q=ada" }
    assert.are.equal("GET localhost/search?q=ada", k1)
    assert.are.equal(1, json.count)
    assert.are.equal("Ada Lovelace", json.results[1].name)
    local _, k2 = call { path = "/search?utm_source=x&q=ada" }
    assert.are.equal(k1, k2)
    local _, k3 = call { path = "/search?q=Grace+Hopper" }
    assert.are.equal("GET localhost/search?q=Grace Hopper", k3)
    local res, k4 = call { path = "/search?q=nobody" }
    assert.are.equal(0, cjson.decode(res.body).count)
    assert.are.equal("GET localhost/search?q=nobody", k4)
  end)

  it("GET /search without q is a 400 that is not cached", function()
    local res, key = call { path = "/search" }
    assert.are.equal(400, res.status)
    assert.is_nil(key)
    res, key = call { path = "/search?q" }
    assert.are.equal(400, res.status)
    assert.is_nil(key)
  end)

  it("POST /users creates from JSON: 201 + Location, never cached", function()
    local res, key, json = call { method = "POST", path = "/users", body = '{"name":"Edsger"}' }
    assert.are.equal(201, res.status)
    assert.is_nil(key)
    assert.are.equal("Edsger", json.name)
    -- lua-cjson 2.1.0 decodes every number as a float: 101.0
    assert.are.equal(("/users/%d"):format(json.id), res.headers.location)
    assert.are.equal(400, (call { method = "POST", path = "/users", body = "{oops" }).status)
    assert.are.equal(400, (call { method = "POST", path = "/users" }).status)
    assert.are.equal(422, (call { method = "POST", path = "/users", body = '{"name":""}' }).status)
  end)

  it("a wrong method is 405 with Allow; an unknown path a JSON 404", function()
    local res = call { method = "PUT", path = "/users/1" }
    assert.are.equal(405, res.status)
    assert.are.equal("GET, HEAD", res.headers.allow)
    local _, key, json = call { path = "/nope" }
    assert.are.equal("not found", json.error)
    assert.is_nil(key)
  end)

  it("GET /u/:id redirects", function()
    local res = call { path = "/u/2" }
    assert.are.equal(301, res.status)
    assert.are.equal("/users/2", res.headers.location)
  end)

  it("DELETE /cache/users/:id purges edge.cache (the real C cache) with the token", function()
    -- Store what edge would store for GET /users/1, with the route's ttl.
    local res, key = call { path = "/users/1" }
    assert.is_true(edge.cache.set(key, res))
    assert.is_table(edge.cache.get(key))
    local denied = call { method = "DELETE", path = "/cache/users/1" }
    assert.are.equal(403, denied.status)
    assert.is_table(edge.cache.get(key))
    local _, _, json = call { method = "DELETE", path = "/cache/users/1",
                              headers = { ["X-Purge-Token"] = "dev-token" } }
    assert.is_true(json.purged)
    assert.is_nil(edge.cache.get(key))
    _, _, json = call { method = "DELETE", path = "/cache/users/1",
                        headers = { ["X-Purge-Token"] = "dev-token" } }
    assert.is_false(json.purged)
  end)

  it("a /users entry expires after the route's 30 s ttl (virtual clock)", function()
    local res, key = call { path = "/users/2" }
    assert.is_true(edge.cache.set(key, res))     -- ttl: res.ttl, the route's 30 s
    clock.advance(29)
    assert.is_table(edge.cache.get(key))
    clock.advance(2)
    assert.is_nil(edge.cache.get(key))
  end)
end)

describe("examples/api.lua against the real server #e2e", function()
  local server = require "edge.testing.server"
  local srv

  lazy_setup(function()
    srv = server.start { script = SCRIPT }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function json_of(res)
    assert.are.equal("application/json", res.headers["content-type"])
    return cjson.decode(res.body)
  end

  it("GET /health is never cached", function()
    for _ = 1, 2 do
      local res = srv:get("/health")
      assert.are.equal(200, res.status, res.error)
      assert.are.equal("ok", json_of(res).status)
      assert.is_nil(res.headers["x-cache"])
    end
  end)

  it("GET /users/:id: MISS, then HIT with the same body, per id, over HTTP/1.1 and HTTP/2", function()
    local first = srv:get("/users/1")
    assert.are.equal(200, first.status, first.error)
    assert.are.equal("MISS", first.headers["x-cache"])
    assert.are.equal("Ada Lovelace", json_of(first).name)
    local again = srv:get("/users/1", { http2 = true })
    assert.are.equal("2", again.http_version)
    assert.are.equal("HIT", again.headers["x-cache"])
    assert.are.equal(first.body, again.body)
    assert.is_not_nil(again.headers["age"])
    local other = srv:get("/users/2")
    assert.are.equal("MISS", other.headers["x-cache"])
    assert.are.equal("Alan Turing", json_of(other).name)
  end)

  it("HEAD /users/:id answers from the GET entry, without a body; a HEAD miss stores nothing", function()
    local res = srv:request { method = "HEAD", path = "/users/3" }
    assert.are.equal(200, res.status)
    assert.are.equal("", res.body)
    res = srv:get("/users/3")
    assert.are.equal("MISS", res.headers["x-cache"])
    assert.are.equal("Grace Hopper", json_of(res).name)
    res = srv:request { method = "HEAD", path = "/users/3" }
    assert.are.equal("HIT", res.headers["x-cache"])
    assert.are.equal("", res.body)
  end)

  it("GET /search is cached by q only", function()
    local a = srv:get("/search?q=ada")
    assert.are.equal("MISS", a.headers["x-cache"])
    local b = srv:get("/search?q=ada&utm_source=mail")
    assert.are.equal("HIT", b.headers["x-cache"])
    assert.are.equal(a.body, b.body)
    local c = srv:get("/search?q=alan")
    assert.are.equal("MISS", c.headers["x-cache"])
    assert.are.equal("Alan Turing", json_of(c).results[1].name)
    local bad = srv:get("/search")
    assert.are.equal(400, bad.status)
    assert.is_nil(bad.headers["x-cache"])
  end)

  it("POST /users answers 201 with Location, and is not cached", function()
    local res = srv:post("/users", '{"name":"Barbara"}',
      { headers = { ["content-type"] = "application/json" }, http2 = true })
    assert.are.equal(201, res.status, res.error)
    local json = json_of(res)
    assert.are.equal("Barbara", json.name)
    assert.are.equal(("/users/%d"):format(json.id), res.headers["location"])
    assert.is_nil(res.headers["x-cache"])
    assert.are.equal(400, srv:post("/users", "not json").status)
  end)

  it("a wrong method is 405 with Allow, an unknown path 404, a '..' path 400", function()
    local res = srv:request { method = "PUT", path = "/users/1", body = "{}" }
    assert.are.equal(405, res.status)
    assert.are.equal("GET, HEAD", res.headers["allow"])
    res = srv:get("/nope", { http2 = true })
    assert.are.equal(404, res.status)
    assert.are.equal("not found", json_of(res).error)
    res = srv:get("/users/../users/1")
    assert.are.equal(400, res.status)
  end)

  it("GET /u/:id redirects with 301", function()
    local res = srv:get("/u/2")
    assert.are.equal(301, res.status)
    assert.are.equal("/users/2", res.headers["location"])
  end)

  it("DELETE /cache/users/:id purges the entry from edge's cache", function()
    assert.are.equal(200, srv:get("/users/3").status)
    assert.are.equal("HIT", srv:get("/users/3").headers["x-cache"])
    assert.are.equal(403, srv:request { method = "DELETE", path = "/cache/users/3" }.status)
    local res = srv:request { method = "DELETE", path = "/cache/users/3",
                              headers = { ["X-Purge-Token"] = "dev-token" } }
    assert.are.equal(200, res.status)
    assert.is_true(json_of(res).purged)
    assert.are.equal("MISS", srv:get("/users/3").headers["x-cache"])
  end)

  it("logs no script error", function()
    assert.is_nil(srv:log():find("lua error", 1, true), srv:log())
  end)
end)
