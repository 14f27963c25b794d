-- edge.fetch in plain busted (issue 11, point 11): `require "edge"` outside
-- the server runs the server's client (lua_fetch.c, upstream_fetch.c) on a
-- private loop inside the call, against real origins started here: Debian's
-- nginx (plain HTTP and TLS) and the misbehaving origin. No #e2e tag: nothing
-- here runs the edge binary.
local edge = require "edge"
local clock = require "edge.testing.clock"
local origin = require "support.origin"
local util = require "support.util"

local CA = os.getenv("PWD") .. "/certs/server.crt"

describe("edge.fetch in busted", function()
  local ngx, bad

  lazy_setup(function()
    ngx = origin.nginx()
    bad = origin.bad()
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    if bad then bad:stop() end
  end)

  it("GETs from a real nginx in-process: status, headers with repeated ones as lists, body", function()
    local res, err = edge.fetch(("http://127.0.0.1:%d/echo?q=1"):format(ngx.port),
      { headers = { ["x-test"] = "T1" } })
    assert.is_nil(err)
    assert.are.equal(200, res.status)
    assert.are.equal("GET /echo?q=1 T1", res.body)
    assert.are.same({ "a=1", "b=2" }, res.headers["set-cookie"])
    assert.truthy(res.headers["server"]:find("nginx", 1, true))
  end)

  it("sends a method and a body, and the Host of the URL", function()
    local res = assert(edge.fetch(("http://127.0.0.1:%d/host"):format(ngx.port), { method = "POST", body = "x" }))
    assert.are.equal(("127.0.0.1:%d"):format(ngx.port), res.body)
  end)

  it("speaks TLS with verification (the server's client context)", function()
    local url = ("https://127.0.0.1:%d/echo"):format(ngx.tls_port)
    local res = assert(edge.fetch(url, { tls = { ca_file = CA, sni = "localhost" } }))
    assert.are.equal(200, res.status)
    local none, err = edge.fetch(url, { tls = { sni = "localhost" } })
    assert.is_nil(none)
    assert.truthy(err:find("not trusted", 1, true), err)
  end)

  it("keeps connections alive between calls, as the server's pools do", function()
    local url = ("http://127.0.0.1:%d/conns"):format(bad.port)
    local first = tonumber(assert(edge.fetch(url)).body)
    for _ = 1, 5 do assert(edge.fetch(url)) end
    assert.are.equal(first, tonumber(assert(edge.fetch(url)).body))
    local fresh = tonumber(assert(edge.fetch(url, { keepalive = false })).body)
    assert.are.equal(first + 1, fresh)
  end)

  it("works inside a coroutine and a respond hook called directly", function()
    local app = { respond = function(req)
      local res, err = edge.fetch(("http://127.0.0.1:%d/echo"):format(ngx.port) .. req.path)
      if not res then return { status = 502, body = err } end
      return { status = res.status, body = res.body }
    end }
    local co = coroutine.wrap(function() return app.respond { path = "/x" } end)
    assert.are.same({ status = 200, body = "GET /echo/x " }, co())
  end)

  it("returns nil and the server's messages for network failures", function()
    local res, err = edge.fetch("http://127.0.0.1:" .. util.free_port() .. "/")
    assert.is_nil(res)
    assert.truthy(err:match("^connect refused: 127%.0%.0%.1:%d+$"), err)
    res, err = edge.fetch(("http://127.0.0.1:%d/two-cl"):format(bad.port))
    assert.is_nil(res)
    assert.truthy(err:find("malformed response", 1, true), err)
  end)

  it("times out in real time; the virtual clock does not move", function()
    local before = clock.now()
    local t0 = util.now()
    local res, err = edge.fetch(("http://127.0.0.1:%d/never"):format(bad.port), { timeout = { read = 0.3 } })
    local waited = util.now() - t0
    assert.is_nil(res)
    assert.truthy(err:find("read timeout after 0.3 s", 1, true), err)
    assert.is_true(waited >= 0.25 and waited < 5, "waited " .. waited .. " s")
    assert.are.equal(before, clock.now())
  end)

  it("counts a fetch's timeouts from the fetch, however long the process sat still before", function()
    local port = util.free_port()
    local _, err = edge.fetch("http://127.0.0.1:" .. port .. "/", { timeout = 0.5 })
    assert.truthy(err:match("^connect refused"), err)
    util.sleep(0.8)   -- longer than the timeout: the module's loop did not run meanwhile
    _, err = edge.fetch("http://127.0.0.1:" .. port .. "/", { timeout = 0.5 })
    assert.truthy(err:match("^connect refused"), "timed out at once on a stale loop clock: " .. err)
  end)

  it("raises for bad arguments, as in the server", function()
    assert.has_error(function() edge.fetch("ftp://x/") end)
    assert.has_error(function() edge.fetch("http://127.0.0.1/", { headers = { a = "b\r\nc: d" } }) end)
  end)
end)
