-- End-to-end specs for the bounds on a worker's Lua VM: --lua-memory never
-- kills the process (every allocation a request makes is in a protected
-- call), the instruction budget covers every coroutine a hook run creates,
-- and edge.cache.get gives its entry back when it fails midway.
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local proc = require "support.proc"

local request = client.request

--- One raw request on a fresh connection; returns the response (or nil).
local function fetch(srv, path, opts)
  local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
  assert(c:send(request { path = path }))
  local list = c:read_responses(1, opts)
  c:close()
  return list[1]
end

--- GET path; returns the response and the seconds it took.
local function timed_fetch(srv, path, timeout)
  local t0 = util.now()
  local res = fetch(srv, path, { timeout = timeout })
  return res, util.now() - t0
end

--- h2load's "status codes:" counts: 2xx, 5xx (nil when it printed none).
local function h2load_counts(out)
  local ok, _, _, fail = out:match("status codes: (%d+) 2xx, (%d+) 3xx, (%d+) 4xx, (%d+) 5xx")
  return tonumber(ok), tonumber(fail)
end

describe("Lua limits: --lua-memory reached by parked requests #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/lua_memory.lua", workers = 1,
                         args = { "--lua-memory", "8m" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers the excess 500, stays up, and serves 200 once the parked requests finish", function()
    -- N requests on 30 HTTP/2 connections, each parked PARK s holding a
    -- few KiB: more than 8 MiB, so edge's own allocations (the coroutine, the
    -- req userdata, their registry refs) are the ones that hit the bound.
    -- About 1700 fit; N = 2400 would fill 8 MiB even with no overhead per
    -- request (3.5 KiB held on average). Not more: each request refused on a
    -- full VM costs the worker a full emergency GC (Lua retries a failed
    -- allocation after one; ~0.8 ms under ASan), and the 1300 refused when N
    -- was 3000 kept it from even accepting for seconds on a loaded machine.
    -- PARK is long enough for a loaded machine to fill the VM (h2load's
    -- ramp), answer the excess and then the spec's own requests while the
    -- first parked ones still hold their memory: 3 s was not.
    local N, PARK = 2400, 10
    local load = proc.spawn({ "h2load", "-n", tostring(N), "-c", "30", "-m", "100",
                              srv:url("/park?s=" .. PARK) }, { timeout = 60 })
    local t0 = util.now()
    local line = srv:wait_log("[^\n]*reached %-%-lua%-memory[^\n]*", 15)
    assert.truthy(line, "the VM never reached --lua-memory:\n" .. srv:log_tail())
    assert.matches("lua error in %a+ %(request %x+%): not enough memory: the VM reached %-%-lua%-memory",
      line)
    assert.truthy(line:find("[error]", 1, true), line)

    -- While they are parked: more requests get 500, the process stays up.
    -- The worker may still be answering h2load's excess (a storm of 500s), so
    -- a handshake that times out is tried again, until the first parked
    -- requests could end.
    for i = 1, 3 do
      local ok, res
      repeat
        ok, res = pcall(fetch, srv, "/more-" .. i, { timeout = 5 })
      until (ok and res) or util.now() > t0 + PARK - 1
      assert.are.equal(500, ok and res and res.status, "request " .. i .. " while the VM is full: "
        .. tostring(ok and res and res.body or res))
    end
    assert.is_true(srv:running(), "edge exited:\n" .. srv:log_tail())

    assert.are.equal(0, load:wait(50), "h2load: " .. load:stdout() .. load:stderr())
    local ok, failed = h2load_counts(load:stdout())
    assert.truthy(ok and failed, "no status counts from h2load:\n" .. load:stdout())
    assert.is_true(ok > 0, "no parked request was answered 200:\n" .. load:stdout())
    assert.is_true(failed > 0, "the VM never ran out of memory:\n" .. load:stdout())
    assert.are.equal(N, ok + failed, load:stdout())

    -- The parked requests are done: their memory is back.
    local res = fetch(srv, "/after", { timeout = 5 })
    assert.are.equal(200, res and res.status)
    assert.are.equal("ok /after", res.body)
    assert.is_nil(srv:log():find("lua panic", 1, true), srv:log_tail())
    assert.is_true(srv:running())
  end)
end)

describe("Lua limits: a respond that raises when the VM is full #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/lua_memory.lua", workers = 1,
                         args = { "--lua-memory", "8m" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("gets 500 and the bare message logged when no traceback fits; the worker goes on", function()
    for i = 1, 3 do
      local res = fetch(srv, "/raise-when-full", { timeout = 5 })
      assert.are.equal(500, res and res.status, "attempt " .. i)
    end
    local line = srv:wait_log("[^\n]*raised on a full VM[^\n]*", 2)
    assert.truthy(line, srv:log_tail())
    assert.matches("lua error in respond %(request %x+%): raised on a full VM", line)
    local res = fetch(srv, "/after")
    assert.are.equal(200, res and res.status)
    assert.are.equal("ok /after", res.body)
    assert.is_nil(srv:log():find("lua panic", 1, true), srv:log_tail())
  end)
end)

describe("Lua limits: the instruction budget covers every coroutine #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/budget_coroutines.lua",
                         args = { "--lua-budget", "1000000" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("counts the instructions of all of respond's coroutines against one budget", function()
    -- 20 coroutines of 60,000 instructions: each under the budget, together over it.
    local res = fetch(srv, "/wrap?n=20&per=60000", { timeout = 5 })
    assert.are.equal(500, res and res.status, res and res.body)
    assert.truthy(srv:wait_log("[^\n]*instruction budget exceeded[^\n]*", 2),
      "no budget message:\n" .. srv:log_tail())
  end)

  it("stops a respond that runs coroutine after coroutine, quickly", function()
    local res, took = timed_fetch(srv, "/wrap", 5)
    assert.are.equal(500, res and res.status)
    assert.is_true(took < 2, "took " .. took .. " s")
  end)

  it("does so for coroutine.create, and when the script catches every error with pcall", function()
    for _, path in ipairs { "/create", "/pcall" } do
      local res, took = timed_fetch(srv, path, 5)
      assert.are.equal(500, res and res.status, path)
      assert.is_true(took < 2, path .. " took " .. took .. " s")
    end
  end)

  it("stops a cache_key that runs coroutine after coroutine", function()
    local res, took = timed_fetch(srv, "/key", 5)
    assert.are.equal(500, res and res.status)
    assert.is_true(took < 2, "took " .. took .. " s")
  end)

  it("leaves a request under the budget alone, coroutines or not", function()
    local res = fetch(srv, "/wrap?n=10&per=60000")
    assert.are.equal(200, res and res.status)
    assert.are.equal("ran 10 coroutines", res.body)
    res = fetch(srv, "/create?n=300&per=100")
    assert.are.equal(200, res and res.status)
    assert.are.equal("ran 300 coroutines", res.body)
    res = fetch(srv, "/plain?n=0&per=0")
    assert.are.equal(200, res and res.status)
    assert.are.equal("ran 0 coroutines", res.body)
  end)
end)

describe("Lua limits: edge.cache.get out of memory midway #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/cache_squeeze.lua", workers = 1,
                         args = { "--lua-memory", "4m" } }
  end)
  lazy_teardown(function() if srv and srv:running() then server.stop_and_check(srv) end end)

  it("raises the memory error, gives the entry back, and edge exits cleanly (no leak under LSan)", function()
    local res = fetch(srv, "/store")
    assert.are.equal("stored", res and res.body)
    for _ = 1, 2 do
      res = fetch(srv, "/get", { timeout = 10 })
      assert.are.equal(200, res and res.status)
      assert.are.equal("get failed: not enough memory", res.body)
    end
    res = fetch(srv, "/next")
    assert.are.equal("ok", res and res.body)
    -- Under ASan, LeakSanitizer reports an entry whose reference was never
    -- given back (exit code 68): a clean exit is the proof.
    local rc = srv:stop()
    assert.is_nil(srv:sanitizer_report(), srv:log_tail(60))
    assert.are.equal(0, rc, srv:log_tail(40))
  end)
end)
