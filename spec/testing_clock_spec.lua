-- Unit specs for lua/edge/testing/clock.lua: the virtual clock behind
-- edge.now(), edge.sleep() and edge.cache expiry in busted; and the clear
-- error it raises inside the server (#e2e).
local edge = require "edge"
local clock = require "edge.testing.clock"

-- The clock is shared by the whole busted process (other spec files too), so
-- these specs only ever move it forward.
describe("edge.testing.clock", function()
  it("now() is edge.now()", function()
    assert.are.equal(edge.now(), clock.now())
  end)

  it("set() fixes the time edge.now() sees", function()
    local t = math.floor(clock.now()) + 100
    clock.set(t)
    assert.are.equal(t, edge.now())
    assert.are.equal(t, clock.now())
  end)

  it("advance() moves it forward and returns the new time", function()
    local t = math.floor(clock.now()) + 1
    clock.set(t)
    assert.are.equal(t + 12.5, clock.advance(12.5))
    assert.are.equal(t + 12.5, edge.now())
  end)

  it("edge.sleep advances it without waiting", function()
    local t = math.floor(clock.now()) + 1
    clock.set(t)
    local wall = os.clock()
    edge.sleep(3600)
    assert.are.equal(t + 3600, clock.now())
    assert.is_true(os.clock() - wall < 0.5)
  end)

  it("drives edge.cache expiry (the real C cache)", function()
    clock.set(math.floor(clock.now()) + 1)
    assert.is_true(edge.cache.set("clock-spec", { status = 200, body = "x" }, 30))
    clock.advance(10)
    local e = edge.cache.get("clock-spec")
    assert.are.equal("x", e.body)
    assert.are.equal(10, e.age)
    assert.are.equal(20, e.ttl)
    clock.advance(20.5)
    assert.is_nil(edge.cache.get("clock-spec"))
  end)

  it("advances exactly: a hundred edge.sleep(0.01) make 1", function()
    clock.set(0)
    edge.sleep(0.01)
    assert.are.equal(0.01, clock.now())
    for _ = 2, 100 do edge.sleep(0.01) end
    assert.are.equal(1, clock.now())
    assert.are.equal(1.5, clock.advance(0.5))
  end)

  it("starts at 0, so edge.sleep(0.01) moves edge.now() by exactly 0.01", function()
    local src = 'package.cpath = ' .. string.format("%q", package.cpath) .. '\n'
      .. 'local edge = require "edge"\n'
      .. 'local t0 = edge.now()\n'
      .. 'edge.sleep(0.01)\n'
      .. 'io.write(string.format("%.17g %.17g", t0, edge.now() - t0))\n'
    local p = io.popen("lua5.4 -e '" .. src:gsub("'", "'\\''") .. "' 2>&1")
    local out = p:read("a")
    p:close()
    assert.are.equal("0 0.01", out)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() clock.set("now") end, "clock.set: t must be a number, got string")
    assert.has_error(function() clock.advance(-1) end, "clock.advance: seconds must be a number >= 0, got -1")
  end)
end)

describe("edge.testing.clock inside the server #e2e", function()
  local server = require "edge.testing.server"
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/clock_in_server.lua" }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("raises a clear error there", function()
    local res = srv:get("/")
    assert.are.equal(200, res.status, res.error)
    assert.matches("edge.testing.clock is for specs run with busted", res.body, 1, true)
    assert.matches("no clock to control", res.body, 1, true)
  end)
end)
