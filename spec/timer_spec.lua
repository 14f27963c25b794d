-- End-to-end specs for edge.timer (issue 14, point 4): the real edge runs
-- spec/fixtures/timer.lua (its header lists the paths), which writes marker
-- files into $TIMER_DIR; nginx (spec/support/origin.lua) is the real origin
-- a timer fetches from.
local server = require "support.server"
local origin = require "support.origin"
local util = require "support.util"

local function start(dir, extra)
  local args = { "--workers", "1", "--log-level", "info" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return server.start { script = "spec/fixtures/timer.lua", plain = true, args = args,
                        env = { TIMER_DIR = dir } }
end

local function get(srv, path)
  local res = srv:request { plain = true, path = path }
  assert.are.equal(200, res.status, path .. ": " .. tostring(res.body) .. "\n" .. srv:log_tail(20))
  return res.body
end

local function lines(dir, file)
  return util.lines(util.read_file(dir .. "/" .. file) or "")
end

-- The line of the fixture marked BOOM_LINE.
local function boom_line()
  local n = 0
  for line in io.lines("spec/fixtures/timer.lua") do
    n = n + 1
    if line:find("BOOM_LINE", 1, true) and not line:find("^%-%-") then return n end
  end
end

describe("edge.timer in the server #e2e", function()
  local srv, dir, ngx

  lazy_setup(function()
    ngx = origin.nginx()
    dir = util.tmpdir("timer")
    srv = start(dir)
  end)

  lazy_teardown(function()
    if srv then srv:stop_and_check() end
    if ngx then ngx:stop() end
  end)

  it("a timer made at the top level runs when the worker starts, and writes an edge.cache entry a request sees", function()
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5), srv:log_tail(20))
    assert.are.same({ "boot false" }, lines(dir, "boot"))
    assert.are.equal("set by a timer", get(srv, "/cache"))
  end)

  it("every() ticks at its interval", function()
    local first = tonumber(get(srv, "/ticks"))
    util.sleep(0.55)
    local later = tonumber(get(srv, "/ticks"))
    -- 0.55 s at 0.1 s: about 5 ticks; a loaded machine may lose some.
    assert.is_true(later - first >= 3 and later - first <= 7, first .. " then " .. later)
  end)

  it("a timer fetches from a real origin (it waits in edge.fetch) and stores the answer", function()
    assert.are.equal("true", get(srv, "/fetch?port=" .. ngx.port))
    local body = util.wait_until(function()
      local b = get(srv, "/fetched")
      return b ~= "none" and b
    end, 5)
    assert.truthy(body and body:find("^200 GET /echo"), tostring(body) .. "\n" .. srv:log_tail(20))
  end)

  it("a timer that sleeps counts as running until it ends", function()
    assert.are.equal("true", get(srv, "/slow?s=0.4"))
    assert.truthy(get(srv, "/counts"):find("running=1", 1, true))
    assert.truthy(util.wait_until(function() return #lines(dir, "slow") == 1 end, 5))
    assert.truthy(util.wait_until(function() return get(srv, "/counts"):find("running=0", 1, true) end, 2))
  end)

  it("an error in a timer is logged with file:line and a traceback; the worker goes on", function()
    assert.are.equal("true", get(srv, "/boom"))
    local pattern = "lua error in timer %(request [%x]+%): spec/fixtures/timer.lua:" .. boom_line()
      .. ": boom from a timer"
    assert.truthy(srv:wait_log(pattern, 5), srv:log_tail(20))
    assert.truthy(srv:log():find("stack traceback", 1, true))
    local before = tonumber(get(srv, "/ticks"))
    assert.truthy(util.wait_until(function() return tonumber(get(srv, "/ticks")) > before end, 3))
  end)
end)

describe("edge.timer every() in the server #e2e", function()
  it("every() never overlaps its runs: a tick while the previous run sleeps is skipped", function()
    local dir = util.tmpdir("timer-overlap")
    local srv <close> = start(dir)
    assert.are.equal("true", get(srv, "/overlap"))
    util.sleep(1.05)
    local runs, most = get(srv, "/overlap_stats"):match("^runs=(%d+) most=(%d+)$")
    -- runs start at 0.1, 0.4, 0.7, 1.0 s (each sleeps 0.25 s): not one per 0.1 s tick
    assert.are.equal("1", most)
    assert.is_true(tonumber(runs) >= 2 and tonumber(runs) <= 5, "runs=" .. runs)
    assert.are.equal(0, srv:stop())
  end)

end)

describe("edge.timer premature runs #e2e", function()
  it("SIGHUP: the old script's pending timers run at once with premature = true; the new script's start; a sleeping run ends in the old VM", function()
    local dir = util.tmpdir("timer-hup")
    local srv <close> = start(dir)
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5))
    assert.are.same({}, lines(dir, "premature"))
    assert.are.equal("true", get(srv, "/slow?s=0.5"))   -- still sleeping in the old VM at the reload
    srv:signal("HUP")
    assert.truthy(srv:wait_log("reloaded", 5), srv:log_tail(20))
    assert.truthy(util.wait_until(function() return #lines(dir, "premature") == 1 end, 5))
    assert.are.same({ "premature true a b" }, lines(dir, "premature"))
    assert.are.same({ "premature" }, lines(dir, "every"))   -- the old every() ended
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 2 end, 5))
    -- the new VM's every() ticks, counted from 0
    assert.truthy(util.wait_until(function() return tonumber(get(srv, "/ticks")) >= 2 end, 3))
    assert.truthy(util.wait_until(function() return #lines(dir, "slow") == 1 end, 5), srv:log_tail(20))
    assert.are.equal(0, srv:stop())
    assert.are.same({ "premature true a b", "premature true a b" }, lines(dir, "premature"))
  end)

  it("SIGHUP: a run still going in the replaced script gets --drain-timeout, then is cancelled", function()
    local dir = util.tmpdir("timer-hup-deadline")
    local srv = start(dir, { "--drain-timeout", "1" })
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5))
    assert.are.equal("true", get(srv, "/slow?s=30"))
    local t0 = util.now()
    srv:signal("HUP")
    assert.truthy(srv:wait_log("timer task %x+ cancelled: its script was replaced by a reload", 5),
      srv:log_tail(20))
    assert.is_true(util.now() - t0 >= 0.8, "cancelled before --drain-timeout")
    assert.are.same({}, lines(dir, "slow"))
    local t1 = util.now()
    srv:stop_and_check()
    assert.is_true(util.now() - t1 < 5, "the stop waited for the cancelled run")
  end)

  it("SIGTERM: pending timers run with premature = true, and the drain waits for a sleeping timer", function()
    local dir = util.tmpdir("timer-term")
    local srv = start(dir)
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5))
    assert.are.equal("true", get(srv, "/slow?s=0.8"))
    local t0 = util.now()
    srv:stop_and_check()
    assert.is_true(util.now() - t0 >= 0.6, "edge exited before the sleeping timer ended")
    assert.are.same({ "premature true a b" }, lines(dir, "premature"))
    assert.are.same({ "premature" }, lines(dir, "every"))
    assert.are.same({ "slow done" }, lines(dir, "slow"))
  end)

  it("SIGTERM: --drain-timeout bounds the wait for a timer that sleeps longer", function()
    local dir = util.tmpdir("timer-drain")
    local srv = start(dir, { "--drain-timeout", "0.5" })
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5))
    assert.are.equal("true", get(srv, "/slow?s=30"))
    local t0 = util.now()
    srv:stop_and_check()
    assert.is_true(util.now() - t0 < 5, "the drain did not end at --drain-timeout")
    assert.are.same({}, lines(dir, "slow"))
  end)
end)

describe("edge.timer bound #e2e", function()
  it("--lua-max-timers bounds the pending timers: past it, nil and 'too many pending timers'", function()
    local dir = util.tmpdir("timer-max")
    local srv = start(dir, { "--lua-max-timers", "10" })
    assert.truthy(util.wait_until(function() return #lines(dir, "boot") == 1 end, 5))
    -- pending now: the every() and the at(3600): 2 of 10
    assert.are.equal("ok=8 err=too many pending timers pending=10", get(srv, "/many?n=20"))
    assert.are.equal("ok=0 err=too many pending timers pending=10", get(srv, "/many?n=1"))
    srv:stop_and_check()
  end)

  it("rejects a bad --lua-max-timers", function()
    local code, _, err = util.run({ util.edge_bin(), "-t", "-s", "spec/fixtures/echo.lua", "--lua-max-timers", "-1" })
    assert.are.equal(2, code)
    assert.truthy(err:find("lua-max-timers", 1, true), err)
  end)
end)
