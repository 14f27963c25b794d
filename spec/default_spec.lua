-- Unit specs for lua/default.lua, called with plain request tables, and for
-- the `edge` Lua module as built for busted (build/lua/edge.so): there
-- edge.sleep does not sleep but advances a virtual clock seen by edge.now().
local socket = require "socket"

describe("the edge Lua module (build/lua/edge.so)", function()
  local edge

  setup(function()
    edge = require "edge"
  end)

  it("loads with require 'edge'", function()
    assert.is_table(edge)
    assert.is_function(edge.sleep)
    assert.is_function(edge.now)
    assert.is_function(edge.log)
  end)

  it("exposes log levels and a version string", function()
    for _, level in ipairs { "ERR", "WARN", "NOTICE", "INFO", "DEBUG" } do
      assert.is_number(edge[level], "edge." .. level)
    end
    assert.is_string(edge.version)
    assert.matches("^%d+%.%d+", edge.version)
  end)

  it("edge.now() only moves when slept (a virtual clock, see testing_clock_spec)", function()
    local t = edge.now()
    assert.is_number(t)
    socket.sleep(0.05)
    assert.are.equal(t, edge.now())
  end)

  it("edge.sleep advances the virtual clock without sleeping", function()
    local wall0, t0 = socket.gettime(), edge.now()
    edge.sleep(100)
    local advanced = edge.now() - t0
    assert.is_true(advanced >= 100 - 1e-6, "advanced " .. advanced)
    assert.is_true(advanced < 101, "advanced " .. advanced)
    assert.is_true(socket.gettime() - wall0 < 0.5, "edge.sleep(100) really slept")
  end)

  it("edge.sleep works outside and inside a coroutine", function()
    local t0 = edge.now()
    local co = coroutine.wrap(function() edge.sleep(0.5) return "done" end)
    assert.are.equal("done", co())
    assert.is_true(edge.now() - t0 >= 0.5 - 1e-6)
  end)

  it("edge.sleep rejects a non-number", function()
    assert.has_error(function() edge.sleep("soon") end)
  end)

  it("edge.log accepts a level and several values", function()
    assert.has_no.errors(function() edge.log(edge.DEBUG, "unit spec: ", 1, " ", true) end)
  end)
end)

describe("lua/default.lua", function()
  local edge, app

  setup(function()
    edge = require "edge"
    app = dofile("lua/default.lua")
  end)

  it("is a module returning cache_key and respond", function()
    assert.is_table(app)
    assert.is_function(app.cache_key)
    assert.is_function(app.respond)
  end)

  describe("cache_key", function()
    it("is the path for GET", function()
      assert.are.equal("/a/b", app.cache_key { method = "GET", path = "/a/b", query = "x=1", headers = {} })
    end)

    it("is the path for HEAD", function()
      assert.are.equal("/", app.cache_key { method = "HEAD", path = "/", headers = {} })
    end)

    it("is nil for POST, PUT, DELETE", function()
      for _, m in ipairs { "POST", "PUT", "DELETE" } do
        assert.is_nil(app.cache_key { method = m, path = "/a", headers = {}, body = "x" }, m)
      end
    end)
  end)

  describe("respond", function()
    local req = { method = "GET", path = "/", headers = { host = "localhost" }, args = {},
                  host = "localhost", scheme = "https", version = "1.1",
                  remote_addr = "127.0.0.1", id = "1" }

    it("returns 200, text/plain and exactly 'Hello from edge!' (16 bytes)", function()
      local res = app.respond(req)
      assert.is_table(res)
      assert.are.equal(200, res.status)
      assert.is_table(res.headers)
      assert.are.equal("text/plain", res.headers["content-type"])
      assert.are.equal("Hello from edge!", res.body)
      assert.are.equal(16, #res.body)
    end)

    it("waits 2 ms with edge.sleep (virtual clock)", function()
      local t0 = edge.now()
      app.respond(req)
      local waited = edge.now() - t0
      assert.is_true(waited >= 0.002 - 1e-6, "waited " .. waited)
      assert.is_true(waited < 0.5, "waited " .. waited)
    end)

    it("works with a minimal plain table", function()
      local res = app.respond { method = "GET", path = "/anything", headers = {} }
      assert.are.equal(200, res.status)
      assert.are.equal("Hello from edge!", res.body)
    end)
  end)
end)
