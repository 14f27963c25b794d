-- Yield anywhere (issue 14, point 1): edge.sleep and edge.fetch wait in
-- cache_key, in coroutines the script makes (wrap, create/resume, nested),
-- inside pcall/xpcall; the wait goes up to the request's coroutine and comes
-- back down into the script's coroutine, which sees its own yields and
-- resumes as before. Only a C function without a continuation (table.sort's
-- comparator, string.gsub's callback) still refuses: 500 and "cannot wait
-- here" in the log. Then clients that leave mid-wait, and many requests
-- waiting at once, over HTTP/1.1 and HTTP/2.
--
-- The script: spec/fixtures/yield_anywhere.lua (its header lists the routes).
-- The origin of edge.fetch: Debian's nginx (spec/support/origin.lua, /echo).
local server = require "support.server"
local client = require "support.client"
local origin = require "support.origin"
local ce = require "support.cache_e2e"
local util = require "support.util"

local SCRIPT = "spec/fixtures/yield_anywhere.lua"

--- "key=value" lines of a body.
local function fields(body)
  local t = {}
  for line in (body or ""):gmatch("[^\n]+") do
    local k, v = line:match("^([^=]+)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

local PROTOS = { { name = "HTTP/1.1", http2 = false }, { name = "HTTP/2", http2 = true } }

describe("yield anywhere: waits in cache_key and in the script's coroutines #e2e", function()
  local srv, ngx

  lazy_setup(function()
    ngx = origin.nginx()
    srv = server.start { script = SCRIPT, workers = 1, plain = true, args = { "--log-level", "info" } }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  for _, p in ipairs(PROTOS) do
    describe("over " .. p.name, function()
      local tag = p.http2 and "h2" or "h1"

      it("edge.sleep in cache_key: the keyed request waits, is stored, and the next one HITs", function()
        local path = "/key/sleep-" .. tag
        local t0 = util.now()
        local res = srv:get(path, { http2 = p.http2 })
        local took = util.now() - t0
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("MISS", res.headers["x-cache"])
        assert.is_true(took >= 0.05, "cache_key's 50 ms sleep did not wait: " .. took)
        local first = res.body
        res = srv:get(path, { http2 = p.http2 })
        assert.are.equal(200, res.status)
        assert.are.equal("HIT", res.headers["x-cache"])
        assert.are.equal(first, res.body)
      end)

      it("edge.sleep in a coroutine.wrap inside cache_key", function()
        local path = "/key/co-" .. tag
        local res = srv:get(path, { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("MISS", res.headers["x-cache"])
        res = srv:get(path, { http2 = p.http2 })
        assert.are.equal("HIT", res.headers["x-cache"])
      end)

      it("coroutine.wrap: values through yield/resume around two waits", function()
        local res = srv:get("/wrap", { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        local f = fields(res.body)
        assert.are.equal("2", f.r1)
        assert.are.equal("20", f.r2)
        assert.are.equal("true", f.waited)
      end)

      it("coroutine.create/resume: a generator that sleeps before each value; status and isyieldable as in plain Lua", function()
        local res = srv:get("/create?n=3", { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        local f = fields(res.body)
        assert.are.equal("1:1,2:4,3:9", f.values)
        assert.are.equal("true done:s1,s2,s3", f.ret)
        assert.are.equal("suspended", f.after_yield)
        assert.are.equal("dead", f.final)
        -- Inside the generator after each wait: it runs, the request's
        -- coroutine is "normal", it may yield, it is not the main thread.
        assert.are.equal("running/normal/true/false,running/normal/true/false,running/normal/true/false", f.seen)
        assert.are.equal("false cannot resume dead coroutine", f.again)
        assert.are.equal("true", f.outer_yieldable)
      end)

      it("two levels of coroutines, the inner one waiting, yields passing through both", function()
        local res = srv:get("/nested", { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("o(i1),o(i2),o(i-end),o-end", fields(res.body).got)
      end)

      it("pcall and xpcall around a wait; errors raised after the wait are caught", function()
        local res = srv:get("/pcall", { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        local f = fields(res.body)
        assert.are.equal("true pv", f.pcall)
        assert.matches("^false spec/fixtures/yield_anywhere%.lua:%d+: boom after wait$", f.pcall_err)
        assert.matches("^false handled%(spec/fixtures/yield_anywhere%.lua:%d+: x after wait%)$", f.xpcall_err)
        assert.are.equal("true 5", f.xpcall)
        assert.are.equal("false co false inner", f.co_in_pcall)
      end)

      it("edge.fetch inside a wrap and a create/resume generator reaches a real origin (nginx)", function()
        local res = srv:get("/fetch?port=" .. ngx.port, { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        local f = fields(res.body)
        assert.are.equal("200 GET /echo?from=wrap ", f.wrap)
        assert.are.equal("true 200 GET /echo?from=gen1 ", f.gen1)
        assert.are.equal("true 200 GET /echo?from=gen2 ", f.gen2)
        assert.are.equal("200 GET /echo?from=direct ", f.direct)
      end)

      it("edge.proxy inside a coroutine.wrap (nginx)", function()
        local res = srv:get("/proxy-co?port=" .. ngx.port, { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("GET /echo/co ", res.body)
        assert.are.equal("yes", res.headers["x-via-co"])
      end)
    end)
  end

  it("a coroutine kept across requests waits in the request that resumes it", function()
    local a = fields(srv:get("/shared-gen").body)
    local b = fields(srv:get("/shared-gen", { http2 = true }).body)
    assert.are.equal("true", a.ok, srv:log_tail())
    assert.are.equal("true", b.ok, srv:log_tail())
    assert.are.equal(tonumber(a.v) + 1, tonumber(b.v))
  end)

  it("a request cannot resume a coroutine another request is waiting in; the waiting one is unharmed", function()
    local proc = require "support.proc"
    local dir = util.tmpdir("gen")
    local first = proc.spawn({ "curl", "-sk", "--max-time", "10", "-o", dir .. "/body", srv:url("/shared-gen?s=1") },
      { timeout = 15 })
    util.sleep(0.3)
    local res = srv:get("/shared-gen?s=0")
    assert.are.equal(200, res.status, res.body .. srv:log_tail())
    local f = fields(res.body)
    assert.are.equal("false", f.ok, res.body)
    assert.are.equal("cannot resume a coroutine that waits in an edge call", f.v)
    -- coroutine.status still says "suspended" there (CONTRACT.md says nothing):
    -- the refusal above is what tells.
    assert.are.equal(0, first:wait(10))
    local g = fields(util.read_file(dir .. "/body"))
    assert.are.equal("true", g.ok, srv:log_tail())
    assert.truthy(tonumber(g.v), g.v)
    -- Afterwards it can be resumed again.
    local after = fields(srv:get("/shared-gen").body)
    assert.are.equal("true", after.ok)
    assert.are.equal(tonumber(g.v) + 1, tonumber(after.v))
  end)

  it("a hook's own coroutine, kept by the script, can be neither resumed nor closed later", function()
    assert.are.equal(200, srv:get("/save-root").status)
    local res = srv:get("/touch-root")
    assert.are.equal(200, res.status, res.body .. srv:log_tail())
    local f = fields(res.body)
    assert.are.equal("false cannot resume a hook's own coroutine", f.resume)
    assert.matches("^false .*cannot close a hook's own coroutine", f.close)
    assert.are.equal(200, srv:get("/wrap").status)      -- the pool's coroutines still serve
  end)

  it("a kept coroutine whose request was cancelled mid-wait is closed, not left waiting", function()
    local c = assert(client.tcp(srv.plain_port))
    c.conn:setoption("linger", { on = true, timeout = 0 })
    c:send("GET /kept?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    util.sleep(0.3)
    c:close()                                        -- a reset: the request is cancelled
    util.sleep(0.3)
    local f = fields(srv:get("/kept-state").body)
    assert.are.equal("false", f.ok)
    assert.matches("dead coroutine", f.err)
    assert.are.equal("1", f.closes, "its <close> ran once")
  end)

  it("edge.sleep in table.sort's comparator: 500, and the log says it cannot wait here", function()
    local before = util.count(srv:log(), "cannot wait here")
    local res = srv:get("/sort")
    assert.are.equal(500, res.status, res.body)
    assert.truthy(srv:wait_log("cannot wait here", 2), srv:log_tail())
    local lines = {}
    for line in srv:log():gmatch("[^\n]+") do
      if line:find("cannot wait here", 1, true) then lines[#lines + 1] = line end
    end
    assert.are.equal(before + 1, #lines, srv:log_tail())
    assert.truthy(lines[#lines]:find("[error]", 1, true), lines[#lines])
    assert.truthy(lines[#lines]:find("respond", 1, true), lines[#lines])
  end)

  it("edge.sleep in string.gsub's callback: 500 and the same message", function()
    local before = util.count(srv:log(), "cannot wait here")
    local res = srv:get("/gsub")
    assert.are.equal(500, res.status, res.body)
    assert.truthy(util.wait_until(function()
      return util.count(srv:log(), "cannot wait here") > before
    end, 2), srv:log_tail())
  end)

  it("the refusal is an ordinary error: pcall(table.sort, ...) catches it", function()
    local res = srv:get("/sort-pcall")
    assert.are.equal(200, res.status, res.body .. srv:log_tail())
    local f = fields(res.body)
    assert.are.equal("false", f.ok)
    assert.truthy(f.err:find("cannot wait here", 1, true), f.err)
  end)

  it("the worker still serves after the refusals", function()
    local res = srv:get("/deep?s=0.02&n=after")
    assert.are.equal(200, res.status)
    assert.are.equal("deep n=after\n", res.body)
  end)
end)

describe("yield anywhere: clients that leave while a nested coroutine waits #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = SCRIPT, workers = 1, plain = true, args = { "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("a reset mid-wait cancels the request; the timer never fires on it; the server stays healthy", function()
    local before = util.count(srv:log(), "cancelled")
    local c = assert(client.tcp(srv.plain_port))
    c.conn:setoption("linger", { on = true, timeout = 0 })
    assert(c:send(client.request { path = "/deep?s=1&n=gone" }))
    util.sleep(0.2)
    c:close()
    -- Past the moment the inner coroutine's timer would have fired.
    util.sleep(1.2)
    local res = srv:get("/deep?s=0.01&n=next")
    assert.are.equal(200, res.status, srv:log_tail())
    assert.are.equal("deep n=next\n", res.body)
    assert.truthy(util.wait_until(function()
      return util.count(srv:log(), "cancelled") > before
    end, 2), "no 'cancelled' in the log:\n" .. srv:log_tail())
    assert.is_nil(srv:sanitizer_report())
  end)

  it("20 connections aborted mid-wait (TLS and HTTP/2 among them): no report, still serving", function()
    local conns = {}
    for i = 1, 10 do
      local c = assert(client.tcp(srv.plain_port))
      c.conn:setoption("linger", { on = true, timeout = 0 })
      assert(c:send(client.request { path = "/deep?s=0.6&n=rst" .. i }))
      conns[#conns + 1] = c
    end
    -- curl clients killed by their own --max-time, mid-wait, on both protocols.
    local items = {}
    for i = 1, 10 do
      items[i] = { url = srv:url("/deep?s=2&n=cut" .. i), http2 = i % 2 == 0, max_time = 0.3 }
    end
    util.sleep(0.1)
    for _, c in ipairs(conns) do c:close() end
    local list = ce.parallel(items)
    for i, r in ipairs(list) do assert.are.equal(0, r.status, "client " .. i .. " got an answer") end
    util.sleep(2.2)
    local res = srv:get("/deep?s=0.01&n=after", { http2 = true })
    assert.are.equal(200, res.status, srv:log_tail())
    assert.are.equal("deep n=after\n", res.body)
    assert.is_true(srv:running())
    assert.is_nil(srv:sanitizer_report())
  end)
end)

describe("yield anywhere: many requests waiting in nested coroutines at once #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = SCRIPT, workers = 1 }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("30 HTTP/1.1 clients, each 1 s in nested coroutines: all answered their own, in parallel", function()
    local items = {}
    for i = 1, 30 do items[i] = { url = srv:url("/deep?s=1&n=" .. i), max_time = 15 } end
    local list, wall = ce.parallel(items)
    for i, r in ipairs(list) do
      assert.are.equal(200, r.status, "client " .. i .. ": " .. r.stderr)
      assert.are.equal("deep n=" .. i .. "\n", r.body)
    end
    -- One at a time would take 30 s (30 curl processes start slowly under ASan).
    assert.is_true(wall < 12, "took " .. wall .. " s")
  end)

  it("60 HTTP/2 streams on one connection, each 0.5 s in nested coroutines", function()
    local dir = util.tmpdir("h2many")
    local argv = { "curl", "-sk", "--http2", "--max-time", "10", "-Z", "--parallel-max", "100" }
    for i = 1, 60 do
      argv[#argv + 1] = srv:url("/deep?s=0.5&n=" .. i)
      argv[#argv + 1] = "-o"
      argv[#argv + 1] = ("%s/b%d"):format(dir, i)
    end
    local t0 = util.now()
    local code, _, err = util.run(argv, { timeout = 15 })
    local wall = util.now() - t0
    assert.are.equal(0, code, err)
    for i = 1, 60 do
      assert.are.equal("deep n=" .. i .. "\n", util.read_file(("%s/b%d"):format(dir, i)), "stream " .. i)
    end
    assert.is_true(wall < 6, "took " .. wall .. " s")
  end)

  it("h2load: 2000 requests on 10 connections x 20 streams, every one 2xx", function()
    local code, out = util.run({ "h2load", "-n", "2000", "-c", "10", "-m", "20",
                                 srv:url("/deep?s=0.01&n=load") }, { timeout = 60 })
    assert.are.equal(0, code, out)
    local ok = out:match("status codes: (%d+) 2xx")
    assert.are.equal("2000", ok, out)
    assert.is_nil(srv:sanitizer_report())
  end)
end)
