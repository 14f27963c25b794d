-- End-to-end specs for lua/edge/testing/server.lua itself: start on an
-- ephemeral port, the curl client (HTTP/1.1, HTTP/2, cleartext, methods,
-- headers, bodies), the error log, start failures, stop by PID.
local server = require "edge.testing.server"

--- Parses echo.lua's "key=value" lines.
local fields = require("support.client").echo_fields

describe("edge.testing.server #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua", plain = true }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("runs edge on ephemeral loopback ports it read from the log", function()
    assert.is_true(srv.port > 0)
    assert.is_true(srv.plain_port > 0)
    assert.are_not.equal(srv.port, srv.plain_port)
    assert.is_number(srv.pid)
    assert.is_true(srv:running())
    assert.matches("listening on 127%.0%.0%.1:" .. srv.port, srv:log())
    assert.are.equal("https://127.0.0.1:" .. srv.port .. "/x", srv:url("/x"))
  end)

  it("GETs over HTTP/1.1 by default, HTTP/2 with http2 = true", function()
    local res = srv:get("/a?b=1", { headers = { ["X-Test"] = "one" } })
    assert.are.equal(200, res.status, res.error)
    assert.are.equal("1.1", res.http_version)
    local f = fields(res.body)
    assert.are.equal("/a", f.path)
    assert.are.equal("b=1", f.query)
    assert.are.equal("one", f["x-test"])
    assert.are.equal("one", res.headers["x-echo"])
    res = srv:get("/h2", { http2 = true })
    assert.are.equal("2", res.http_version)
    assert.are.equal("2", fields(res.body).version)
  end)

  it("talks to the cleartext listener with plain = true (HTTP/2 by prior knowledge)", function()
    local res = srv:get("/p", { plain = true })
    assert.are.equal(200, res.status, res.error)
    assert.are.equal("http", fields(res.body).scheme)
    res = srv:get("/p2", { plain = true, http2 = true })
    assert.are.equal("2", res.http_version)
    assert.are.equal("http", fields(res.body).scheme)
  end)

  it("POSTs a body, sends any method, HEAD without a body", function()
    local res = srv:post("/p", "payload \0 binary")
    local f = fields(res.body)
    assert.are.equal("POST", f.method)
    assert.are.equal("payload \0 binary", f.body)
    res = srv:request { method = "PATCH", path = "/m", body = "x", http2 = true }
    assert.are.equal("PATCH", fields(res.body).method)
    res = srv:request { method = "DELETE", path = "/d" }
    assert.are.equal("DELETE", fields(res.body).method)
    res = srv:request { method = "HEAD", path = "/h" }
    assert.are.equal(200, res.status)
    assert.are.equal("", res.body)
  end)

  it("sends headers given as a list of pairs, and repeated ones", function()
    local res = srv:request { path = "/l", headers = { { "X-Test", "first" }, { "X-Other", "2" } } }
    assert.are.equal("first", fields(res.body)["x-test"])
    -- Two X-Test lines: the script sees a list (echo.lua prints it as "table: 0x...").
    res = srv:request { path = "/r", headers = { ["X-Test"] = { "a", "b" } } }
    assert.matches("^table: ", fields(res.body)["x-test"])
  end)

  it("sends the path as given (no dot-segment squashing)", function()
    local res = srv:get("/a/../b")
    assert.are.equal("/a/../b", fields(res.body).path)
  end)

  it("reports no response as status 0 with curl's message", function()
    local res = srv:get("/slow", { timeout = 1, curl_args = { "--connect-to", "::127.0.0.1:1" } })
    assert.are.equal(0, res.status)
    assert.matches("no response", res.error)
  end)
end)

describe("edge.testing.server lifecycle #e2e", function()
  it("stop() returns edge's exit code (0 after SIGTERM), keeps the log, is idempotent", function()
    local srv = server.start { script = "spec/fixtures/echo.lua", workers = 2 }
    assert.are.equal(200, srv:get("/").status)
    local dir = srv.dir
    assert.are.equal(0, srv:stop())
    assert.are.equal(0, srv:stop())
    assert.is_false(srv:running())
    assert.matches("exited cleanly", srv:log())
    assert.is_nil(io.open(dir .. "/stderr.log"), "temp files left behind")
  end)

  it("raises with edge's message when the script does not load", function()
    local ok, err = pcall(server.start, { script = "spec/fixtures/bad_syntax.lua" })
    assert.is_false(ok)
    assert.matches("edge did not come up %(exited with 1%)", err)
    assert.matches("bad_syntax.lua:%d+:", err)
  end)

  it("raises at once for a missing binary", function()
    local ok, err = pcall(server.start, { script = "lua/default.lua", bin = "./no-such-edge" })
    assert.is_false(ok)
    assert.matches("no edge binary at ./no-such-edge", err, 1, true)
  end)

  it("passes env and extra args; picks a port itself when the log level hides the notice", function()
    local srv = server.start { script = "spec/fixtures/env.lua", env = { EDGE_SPEC_VALUE = "it's set" },
                               args = { "--log-level", "warn" } }
    local res = srv:get("/")
    assert.are.equal("it's set\n", res.body)
    assert.are.equal("", srv:log())
    server.stop_and_check(srv)
  end)

  it("stops a server held in a <close> variable when it goes out of scope", function()
    local pid
    do
      local srv <close> = server.start { script = "spec/fixtures/echo.lua" }
      pid = srv.pid
      assert.are.equal(200, srv:get("/").status)
    end
    assert.is_nil(io.open("/proc/" .. pid .. "/status"), "edge still running")
  end)
end)
