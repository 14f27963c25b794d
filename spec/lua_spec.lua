-- End-to-end specs for the Lua side: what the script sees of a request,
-- edge.sleep yielding to the loop, hook failures (500 + error log), and
-- clients that leave while their coroutine sleeps (run under ASan too).
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"

local curl = client.curl
local request = client.request

--- Parses echo.lua's "key=value" lines into a table.
local echo_fields = require("support.client").echo_fields

--- One raw request on a fresh connection; returns the response (or nil).
local function fetch(srv, path, opts)
  local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
  assert(c:send(request { path = path }))
  local list = c:read_responses(1, opts)
  c:close()
  return list[1], c.buf
end

--- The log lines containing every plain string in `needles`.
local function log_lines_with(srv, needles)
  local out = {}
  for line in srv:log():gmatch("[^\n]+") do
    local all = true
    for _, n in ipairs(needles) do
      if not line:find(n, 1, true) then all = false break end
    end
    if all then out[#out + 1] = line end
  end
  return out
end

describe("Lua: the request as the script sees it #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua", args = { "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("passes method, path, query, args, host, scheme, version, headers, remote_addr, id", function()
    local status, h, body = curl { "--http1.1", "-H", "X-Test: Hello", srv:url("/x/y?a=1&a=2&b=3") }
    assert.are.equal(200, status)
    local f = echo_fields(body)
    assert.are.equal("GET", f.method)
    assert.are.equal("/x/y", f.path)
    assert.are.equal("a=1&a=2&b=3", f.query)
    assert.are.equal("a:[1,2];b:3", f.args)
    assert.matches("^127%.0%.0%.1", f.host)
    assert.are.equal("https", f.scheme)
    assert.are.equal("1.1", f.version)
    assert.are.equal("127.0.0.1", f.remote_addr)
    assert.are.equal("Hello", f["x-test"])
    assert.are.equal("nil", f.body)
    assert.truthy(f.id ~= nil and f.id ~= "" and f.id ~= "nil", "no request id")
    -- Header names are lower-case.
    assert.are.equal(f.header_names:lower(), f.header_names)
    for _, n in ipairs { "host", "user-agent", "x-test" } do
      assert.truthy(("," .. f.header_names .. ","):find("," .. n .. ",", 1, true), "missing header " .. n)
    end
    -- Script headers reach the response.
    assert.are.equal("Hello", h["x-echo"])
  end)

  it("passes no query as nil and args as an empty table", function()
    local _, _, body = curl { "--http1.1", srv:url("/plain") }
    local f = echo_fields(body)
    assert.are.equal("/plain", f.path)
    assert.are.equal("nil", f.query)
    assert.are.equal("", f.args)
  end)

  it("passes the request body and the method of a POST", function()
    local _, _, body = curl { "--http1.1", "--data-binary", "payload-123", srv:url("/p") }
    local f = echo_fields(body)
    assert.are.equal("POST", f.method)
    assert.are.equal("payload-123", f.body)
  end)

  it("gives every request its own id", function()
    local ids = {}
    for i = 1, 5 do
      local _, _, body = curl { "--http1.1", srv:url("/id" .. i) }
      local id = echo_fields(body).id
      assert.is_nil(ids[id], "id repeated: " .. tostring(id))
      ids[id] = true
    end
  end)

  it("calls cache_key on every request", function()
    local _, _, b1 = curl { "--http1.1", srv:url("/k1") }
    local _, _, b2 = curl { "--http1.1", srv:url("/k2") }
    local n1, n2 = tonumber(echo_fields(b1).key_calls), tonumber(echo_fields(b2).key_calls)
    assert.truthy(n1 and n1 >= 1)
    assert.are.equal(n1 + 1, n2)
  end)

  it("exposes edge.version (same as the Server header), edge.worker_id, edge.now", function()
    local _, h, body = curl { "--http1.1", srv:url("/v") }
    local f = echo_fields(body)
    assert.are.equal("edge/" .. f.edge_version, h["server"])
    assert.matches("^%d+$", f.worker_id)
    assert.are.equal("number", f.now_type)
  end)

  it("edge.log writes to the error log at the given level", function()
    local status = curl { "--http1.1", srv:url("/log") }
    assert.are.equal(200, status)
    local line = srv:wait_log("[^\n]*echo%-log path=/log n=42[^\n]*", 2)
    assert.truthy(line, "edge.log line missing:\n" .. srv:log_tail())
    assert.truthy(line:find("[info]", 1, true), line)
  end)
end)

describe("Lua: edge.sleep does not block the loop #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/sleepy.lua", workers = 1 } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("sleeps as long as asked", function()
    local t0 = util.now()
    local res = fetch(srv, "/?s=0.3")
    local took = util.now() - t0
    assert.are.equal(200, res and res.status)
    assert.is_true(took >= 0.29, "answered after " .. took .. " s")
    assert.is_true(took < 2, "answered after " .. took .. " s")
  end)

  it("answers 20 concurrent requests sleeping 0.2 s each in well under 20 x 0.2 s (-w 1)", function()
    local conns = {}
    for i = 1, 20 do conns[i] = assert(client.tls(srv.port, { alpn = "http/1.1" })) end
    local t0 = util.now()
    for i = 1, 20 do assert(conns[i]:send(request { path = "/c" .. i .. "?s=0.2" })) end
    for i = 1, 20 do
      local list = conns[i]:read_responses(1, { timeout = 5 })
      assert.are.equal(200, list[1] and list[1].status, "request " .. i)
      assert.matches("path=/c" .. i .. " ", list[1].body)
    end
    local took = util.now() - t0
    for i = 1, 20 do conns[i]:close() end
    assert.is_true(took >= 0.19, "took " .. took)
    assert.is_true(took < 1.5, "20 sleeps of 0.2 s took " .. took .. " s: edge.sleep blocks the loop?")
  end)
end)

describe("Lua: a hook that raises #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/raise.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("gives 500 and an error-log line with the request id and file:line", function()
    local res = fetch(srv, "/")
    assert.are.equal(500, res and res.status)
    local line = srv:wait_log("[^\n]*raise%.lua:12:[^\n]*", 2)
    assert.truthy(line, "no raise.lua:12: in the log:\n" .. srv:log_tail())
    assert.truthy(line:find("[error]", 1, true), line)
    assert.truthy(line:find("boom", 1, true), line)
    assert.matches("request [^%s%)]+", line)
    assert.truthy(srv:log():find("stack traceback", 1, true), "no traceback:\n" .. srv:log_tail())
  end)

  it("does not leak the Lua error to the client", function()
    local res = fetch(srv, "/")
    assert.are.equal(500, res and res.status)
    assert.falsy(res.body:find("raise.lua", 1, true), res.body)
  end)

  it("gives 500 when cache_key raises, and logs it", function()
    local res = fetch(srv, "/in-key")
    assert.are.equal(500, res and res.status)
    assert.truthy(srv:wait_log("boom in cache_key", 2), srv:log_tail())
  end)

  it("gives 500 for a non-string error value", function()
    local res = fetch(srv, "/table")
    assert.are.equal(500, res and res.status)
  end)

  it("keeps serving after errors, on the same connection too", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send(request { path = "/" } .. request { path = "/ok" }))
    local list = c:read_responses(2)
    c:close()
    assert.are.equal(500, list[1] and list[1].status)
    assert.are.equal(200, list[2] and list[2].status)
  end)
end)

describe("Lua: the instruction budget #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/budget.lua", args = { "--lua-budget", "100000" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("stops an endless respond with 500 within 2 s and logs it", function()
    local t0 = util.now()
    local res = fetch(srv, "/", { timeout = 4 })
    assert.are.equal(500, res and res.status)
    assert.is_true(util.now() - t0 < 2, "took " .. (util.now() - t0) .. " s")
    assert.truthy(srv:wait_log("[^\n]*budget[^\n]*", 2), "no budget message:\n" .. srv:log_tail())
    assert.truthy(srv:log():find("instruction budget exceeded", 1, true), srv:log_tail())
  end)

  it("stops an endless cache_key with 500", function()
    local res = fetch(srv, "/key-loop", { timeout = 4 })
    assert.are.equal(500, res and res.status)
  end)

  it("still serves afterwards", function()
    local res = fetch(srv, "/ok")
    assert.are.equal(200, res and res.status)
    assert.are.equal("ok", res.body)
  end)
end)

describe("Lua: a response of the wrong shape #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/shape.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("gives 500 and logs that a table was expected", function()
    local res = fetch(srv, "/")
    assert.are.equal(500, res and res.status)
    assert.truthy(srv:wait_log("expected a table", 2), "no 'expected a table':\n" .. srv:log_tail())
  end)

  it("gives 500 for nil, a non-number status, a non-string body", function()
    for _, p in ipairs { "/nil", "/bad-status", "/bad-body" } do
      local res = fetch(srv, p)
      assert.are.equal(500, res and res.status, p)
    end
  end)

  it("still serves a well-formed response", function()
    local res = fetch(srv, "/ok")
    assert.are.equal(200, res and res.status)
  end)
end)

describe("Lua: yields the core cannot resume #e2e", function()
  local outside, in_key

  lazy_setup(function()
    outside = server.start { script = "spec/fixtures/yield_outside.lua" }
    in_key = server.start { script = "spec/fixtures/sleep_in_key.lua" }
  end)
  lazy_teardown(function() server.stop_and_check(outside, in_key) end)

  it("coroutine.yield() in respond gives 500 promptly and a log line", function()
    local t0 = util.now()
    local res = fetch(outside, "/", { timeout = 4 })
    assert.are.equal(500, res and res.status)
    assert.is_true(util.now() - t0 < 2)
    assert.truthy(outside:wait_log("%[error%]", 2), outside:log_tail())
    assert.are.equal(200, (fetch(outside, "/ok") or {}).status)
  end)

  it("edge.sleep in cache_key waits", function()
    local res = fetch(in_key, "/", { timeout = 4 })
    assert.are.equal(200, res and res.status)
  end)

  it("edge.sleep in a table.sort comparator in cache_key gives 500 and a clear log line", function()
    local res = fetch(in_key, "/sort", { timeout = 4 })
    assert.are.equal(500, res and res.status)
    in_key:wait_log("sleep", 2)
    local lines = log_lines_with(in_key, { "sleep" })
    assert.is_true(#lines > 0, "log does not mention sleep:\n" .. in_key:log_tail())
    assert.truthy(in_key:log():find("cache_key", 1, true), "log does not name cache_key:\n" .. in_key:log_tail())
    assert.are.equal(200, (fetch(in_key, "/ok") or {}).status)
  end)
end)

describe("Lua: a client that leaves while its coroutine sleeps #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/sleepy.lua", args = { "--log-level", "info" }, plain = true }
  end)

  -- A reset ends the connection at once. A FIN (or TLS close_notify) alone is
  -- a half-close: the request goes on, and only a failed write cancels it
  -- (spec/http1_framing_spec.lua). A plain TCP client resets without first
  -- sending the close_notify a TLS client would.
  local function plain_client(rst)
    local c = assert(client.tcp(srv.plain_port))
    if rst then c.conn:setoption("linger", { on = true, timeout = 0 }) end
    return c
  end
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("cancels the request, stops the timer, and the server keeps serving", function()
    local c = plain_client(true)
    assert(c:send(request { path = "/gone?s=1" }))
    util.sleep(0.1)
    c:close()
    -- Past the moment the timer would have fired on the freed connection.
    util.sleep(1.2)
    local res = fetch(srv, "/after?s=0")
    assert.are.equal(200, res and res.status)
    assert.truthy(srv:wait_log("[^\n]*cancelled[^\n]*", 2), "no 'cancelled' in the log:\n" .. srv:log_tail())
    assert.truthy(srv:log():find("client closed while waiting", 1, true), srv:log_tail())
    assert.is_nil(srv:sanitizer_report())
  end)

  it("survives 20 connections aborted mid-sleep (FIN and RST)", function()
    local before = util.count(srv:log(), "cancelled")
    local conns = {}
    for i = 1, 20 do
      conns[i] = plain_client(i % 2 == 0)
      assert(conns[i]:send(request { path = "/abort" .. i .. "?s=1" }))
    end
    util.sleep(0.1)
    for i = 1, 20 do conns[i]:close() end
    local res = fetch(srv, "/now?s=0")
    assert.are.equal(200, res and res.status)
    util.sleep(1.2)
    res = fetch(srv, "/later?s=0")
    assert.are.equal(200, res and res.status)
    local deadline = util.now() + 2
    -- The 10 reset ones are cancelled; the 10 that sent a FIN finish, and
    -- their answers go to a closed socket.
    while util.count(srv:log(), "cancelled") - before < 10 and util.now() < deadline do util.sleep(0.05) end
    assert.are.equal(10, util.count(srv:log(), "cancelled") - before, srv:log_tail())
    assert.is_nil(srv:sanitizer_report())
  end)

  it("survives a connection closed with pipelined requests waiting behind a sleeping one", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send(request { path = "/p1?s=0.3" } .. request { path = "/p2?s=0.3" } .. request { path = "/p3?s=0" }))
    util.sleep(0.1)
    c:close()
    util.sleep(0.6)
    local res = fetch(srv, "/after-pipeline?s=0")
    assert.are.equal(200, res and res.status)
    assert.is_nil(srv:sanitizer_report())
  end)

  it("survives a client that closes right after sending (no sleep started yet)", function()
    for i = 1, 10 do
      local c = assert(client.tls(srv.port, { alpn = "http/1.1", rst = (i % 2 == 1) }))
      assert(c:send(request { path = "/quick" .. i .. "?s=0.05" }))
      c:close()
    end
    util.sleep(0.3)
    local res = fetch(srv, "/after-quick?s=0")
    assert.are.equal(200, res and res.status)
    assert.is_nil(srv:sanitizer_report())
  end)
end)
