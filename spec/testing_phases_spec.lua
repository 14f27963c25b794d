-- Unit specs for lua/edge/testing/phases.lua: a script's hooks run in the
-- server's order (access, cache_key, look-up, respond, on_response, log) on
-- a plain request from edge.testing.request, in plain busted.
local edge = require "edge"
local clock = require "edge.testing.clock"
local fake = require "edge.testing.request"
local phases = require "edge.testing.phases"

--- A script whose hooks append their names to `calls`; `over` replaces hooks.
local function recording_app(calls, over)
  local app = {
    access = function(req) calls[#calls + 1] = "access " .. req.path end,
    cache_key = function(req) calls[#calls + 1] = "cache_key " .. req.path return "k " .. req.path end,
    respond = function(req)
      calls[#calls + 1] = "respond " .. req.path
      return { status = 200, headers = { ["Content-Type"] = "text/plain", ["x-app"] = "1" },
               body = "hello " .. req.path }
    end,
    on_response = function(req, res) calls[#calls + 1] = "on_response " .. res.status end,
    log = function(req, res) calls[#calls + 1] = "log " .. res.status end,
  }
  for k, v in pairs(over or {}) do app[k] = v end
  return app
end

describe("edge.testing.phases.run", function()
  it("runs the hooks in the server's order and returns what the client would get", function()
    local calls = {}
    local res, info = phases.run(recording_app(calls), fake.get("/a"))
    assert.are.same({ "access /a", "cache_key /a", "respond /a", "on_response 200", "log 200" }, calls)
    assert.are.same({ "access", "cache_key", "respond", "on_response", "log" }, info.ran)
    assert.are.equal(200, res.status)
    assert.are.equal("hello /a", res.body)
    assert.are.equal("text/plain", res.headers["content-type"])   -- names lower-cased
    assert.are.equal("k /a", info.key)
    assert.are.equal("respond", info.ended_by)
    assert.is_nil(info.error)
  end)

  it("a script with respond only runs respond", function()
    local res, info = phases.run({ respond = function() return { body = "x" } end }, fake.get("/"))
    assert.are.same({ "respond" }, info.ran)
    assert.are.same({ status = 200, headers = {}, body = "x" }, res)
  end)

  it("a table access returns ends the request: no cache_key, no respond; on_response and log still run", function()
    local calls = {}
    local app = recording_app(calls, {
      access = function(req)
        calls[#calls + 1] = "access"
        return { status = 403, body = "no\n" }
      end,
    })
    local res, info = phases.run(app, fake.get("/admin"), { cache = true })
    assert.are.same({ "access", "on_response 403", "log 403" }, calls)
    assert.are.equal(403, res.status)
    assert.are.equal("no\n", res.body)
    assert.are.equal("access", info.ended_by)
    assert.is_nil(res.headers["x-cache"])
    assert.is_nil(info.log_res.cache)
  end)

  it("access rewrites the path and headers (req:set_header / clear_header on a plain table)", function()
    local seen
    local app = {
      access = function(req)
        req.path = "/v2" .. req.path
        req:set_header("X-User", "ada")
        req:clear_header("Authorization")
      end,
      cache_key = function(req) return "GET " .. req.path end,
      respond = function(req)
        seen = { path = req.path, user = req.headers["x-user"], auth = req.headers["authorization"] }
        return { status = 200 }
      end,
    }
    local _, info = phases.run(app, fake.get("/users/1", { Authorization = "Bearer t" }))
    assert.are.equal("GET /v2/users/1", info.key)
    assert.are.same({ path = "/v2/users/1", user = "ada" }, seen)
  end)

  it("req:set_header checks its arguments as the server does", function()
    local app = { access = function(req) req:set_header("x-n", 5) end, respond = function() return {} end }
    local res, info = phases.run(app, fake.get("/"))
    assert.are.equal(500, res.status)
    assert.matches("req:set_header: value must be a string or a list of strings, got number", info.error)
    assert.has_error(function() phases.run(app, fake.get("/"), { raise = true }) end)
  end)

  it("on_response changes the status and headers; a returned table replaces them; framing fields are dropped", function()
    local app = {
      respond = function() return { status = 200, headers = { ["x-drop"] = "1" }, body = "b" } end,
      on_response = function(req, res)
        assert.is_nil(res.body)
        if req.path == "/returns" then return { status = 201, headers = { ["X-New"] = "y" } } end
        res.status = 202
        res.headers["x-drop"] = nil
        res.headers["set-cookie"] = { "a=1", "b=2" }
        res.headers["content-length"] = "99"
        res.headers["connection"] = "close"
      end,
    }
    local res = phases.run(app, fake.get("/"))
    assert.are.same({ status = 202, headers = { ["set-cookie"] = { "a=1", "b=2" } }, body = "b" }, res)
    res = phases.run(app, fake.get("/returns"))
    assert.are.same({ status = 201, headers = { ["x-new"] = "y" }, body = "b" }, res)
  end)

  it("a hook that raises gives 500, on_response runs on it, and info.error has file:line", function()
    local statuses = {}
    local app = {
      respond = function() error("boom") end,
      on_response = function(req, res) statuses[#statuses + 1] = res.status res.headers["x-seen"] = "yes" end,
    }
    local res, info = phases.run(app, fake.get("/"))
    assert.are.equal(500, res.status)
    assert.are.equal("500 Internal Server Error\n", res.body)
    assert.are.equal("yes", res.headers["x-seen"])
    assert.are.same({ 500 }, statuses)
    assert.are.equal("error", info.ended_by)
    assert.matches("testing_phases_spec%.lua:%d+: boom", info.error)
  end)

  it("an error in on_response gives 500 (on_response is not run again)", function()
    local n = 0
    local app = { respond = function() return { body = "ok" } end,
                  on_response = function() n = n + 1 error("late") end }
    local res, info = phases.run(app, fake.get("/"))
    assert.are.equal(500, res.status)
    assert.are.equal(1, n)
    assert.matches("late", info.error)
  end)

  it("opts.raise raises the hook's error, naming the hook", function()
    local app = { cache_key = function() error("bad key") end, respond = function() return {} end }
    local ok, err = pcall(phases.run, app, fake.get("/"), { raise = true })
    assert.is_false(ok)
    assert.matches("lua error in cache_key: .*bad key", err)
  end)

  it("log gets a copy of req and { status, headers, bytes_sent, duration, cache }; waits move the clock", function()
    local got
    local app = {
      access = function() edge.sleep(0.5) end,
      respond = function() edge.sleep(1) return { status = 200, body = "12345" } end,
      on_response = function(req, res) res.status = 203 end,
      log = function(req, res)
        got = { path = req.path, x = req.headers["x-test"], status = res.status, bytes = res.bytes_sent,
                duration = res.duration, cache = res.cache, headers = type(res.headers) }
        req.path = "/changed"
        error("log fails")
      end,
    }
    local req = fake.get("/logged", { ["X-Test"] = "t" })
    local res, info = phases.run(app, req)
    assert.are.same({ path = "/logged", x = "t", status = 203, bytes = 5, duration = 1.5, headers = "table" }, got)
    -- log's error changes nothing the client got; log's req is a copy.
    assert.are.equal(203, res.status)
    assert.are.equal("/logged", req.path)
    assert.matches("log fails", info.log_error)
    assert.is_nil(info.error)
  end)

  it("opts.cache: a miss is stored with edge.cache.set; the next request hits; on_response never changes the entry", function()
    clock.advance(1)
    local key = "phases-unit " .. tostring(clock.now())
    local calls = {}
    local app = {
      cache_key = function() return key end,
      respond = function()
        calls[#calls + 1] = "respond"
        return { status = 200, ttl = 60, headers = { ["content-type"] = "text/plain" }, body = "stored" }
      end,
      on_response = function(req, res)
        calls[#calls + 1] = "on_response " .. tostring(res.headers["x-cache"])
        res.headers["x-added"] = "per-response"
      end,
      log = function(req, res) calls[#calls + 1] = "log " .. tostring(res.cache) end,
    }
    local res, info = phases.run(app, fake.get("/c"), { cache = true })
    assert.are.equal("MISS", info.cache)
    assert.are.equal("per-response", res.headers["x-added"])
    res, info = phases.run(app, fake.get("/c"), { cache = true })
    assert.are.equal("HIT", info.cache)
    assert.are.equal("cache", info.ended_by)
    assert.are.equal("stored", res.body)
    assert.are.equal("per-response", res.headers["x-added"])
    assert.are.same({ "respond", "on_response MISS", "log MISS", "on_response HIT", "log HIT" }, calls)
    local entry = edge.cache.get(key)
    assert.is_nil(entry.headers["x-added"])
    assert.is_nil(entry.headers["x-cache"])
    -- Without opts.cache the cache is not consulted: respond runs again.
    phases.run(app, fake.get("/c"))
    assert.are.equal("respond", calls[#calls - 2])
    edge.cache.purge(key)
  end)

  it("waits anywhere in the hooks, coroutines and pcall included", function()
    local t0 = clock.now()
    local app = {
      cache_key = function() coroutine.wrap(function() edge.sleep(0.25) end)() return nil end,
      respond = function()
        local ok = pcall(edge.sleep, 0.25)
        return { body = tostring(ok) }
      end,
    }
    local res = phases.run(app, fake.get("/"))
    assert.are.equal("true", res.body)
    assert.are.equal(t0 + 0.5, clock.now())
  end)

  it("checks its arguments", function()
    assert.has_error(function() phases.run(nil, fake.get("/")) end,
      "edge.testing.phases.run: app must be the script's table, got nil")
    assert.has_error(function() phases.run({}, "/") end,
      "edge.testing.phases.run: req must be a table (edge.testing.request.new), got string")
    assert.has_error(function() phases.run({}, fake.get("/")) end,
      "edge.testing.phases: the script has no respond function")
  end)
end)
