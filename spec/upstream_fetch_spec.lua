-- edge.fetch against real origins (issue 11, points 2-5, 9 and 10 for
-- fetches): Debian's nginx on plain HTTP and TLS, a second edge, and a
-- misbehaving origin (spec/support/bad_origin.lua). The edge under test runs
-- spec/fixtures/fetch.lua: x-url is the URL, x-opts a Lua table of options,
-- ?n=N fetches N times in one respond.
local server = require "support.server"
local origin = require "support.origin"
local admin = require "support.admin"
local client = require "support.client"
local proc = require "support.proc"
local util = require "support.util"
local socket = require "socket"

local CA = os.getenv("PWD") .. "/certs/server.crt"

local function start_edge(extra)
  local admin_port = util.free_port()
  local args = { "--workers", "1", "--admin", "127.0.0.1:" .. admin_port, "--log-level", "info" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local srv = server.start { script = "spec/fixtures/fetch.lua", plain = true, args = args }
  srv.admin_port = admin_port
  return srv
end

-- One request to the edge under test; returns its response.
local function fetch(srv, url, opts, n)
  return srv:request { plain = true, path = "/f" .. (n and ("?n=" .. n) or ""), timeout = 20,
                       headers = { ["x-url"] = url, ["x-opts"] = opts } }
end

local function metric(srv, name)
  return admin.value(admin.scrape(srv.admin_port), name) or 0
end

local function field(body, name)
  return body:match("\n?" .. name .. "=([^\n]*)")
end

describe("edge.fetch against nginx #e2e", function()
  local srv, ngx, echo

  lazy_setup(function()
    ngx = origin.nginx()
    echo = server.start { script = "spec/fixtures/echo.lua", plain = true, args = { "--workers", "1" } }
    srv = start_edge()
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv, echo)
  end)

  it("GETs a URL: status, headers with repeated ones as lists, body; path and query as given", function()
    local res = fetch(srv, ("http://127.0.0.1:%d/echo?q=1&r=%%20"):format(ngx.port),
      '{ headers = { ["x-test"] = "T1" } }')
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("200", field(res.body, "status"))
    assert.are.equal("GET /echo?q=1&r=%20 T1", field(res.body, "body"))
    assert.truthy(field(res.body, "headers"):find("set-cookie:a=1|b=2", 1, true), res.body)
    assert.truthy(field(res.body, "headers"):find("server:nginx", 1, true), res.body)
  end)

  it("works for an HTTP/2 request too", function()
    local res = srv:request { plain = true, http2 = true, path = "/f",
                              headers = { ["x-url"] = ("http://127.0.0.1:%d/echo"):format(ngx.port) } }
    assert.are.equal("2", res.http_version)
    assert.are.equal("GET /echo ", field(res.body, "body"))
  end)

  it("sends Host as the URL's authority unless the script sets one", function()
    local res = fetch(srv, ("http://127.0.0.1:%d/host"):format(ngx.port))
    assert.are.equal(("127.0.0.1:%d"):format(ngx.port), field(res.body, "body"))
    res = fetch(srv, ("http://127.0.0.1:%d/host"):format(ngx.port), '{ headers = { Host = "api.example" } }')
    assert.are.equal("api.example", field(res.body, "body"))
  end)

  it("POSTs a body with its Content-Length and the script's headers (a second edge echoes them)", function()
    local res = fetch(srv, ("http://127.0.0.1:%d/in?a=b"):format(echo.plain_port),
      '{ method = "POST", body = "hello\\0world", headers = { ["x-test"] = "posted", ["x-multi"] = { "1", "2" } } }')
    assert.are.equal(200, res.status, res.body)
    local body = field(res.body, "body") and res.body:match("body=(.*)$")
    assert.truthy(body:find("method=POST", 1, true), body)
    assert.truthy(body:find("path=/in\n", 1, true), body)
    assert.truthy(body:find("x-test=posted", 1, true), body)
    assert.truthy(body:find("body=hello\0world", 1, true), body)
    assert.truthy(body:find("header_names=content-length,host,x-multi,x-test", 1, true), body)
  end)

  it("sends no body for HEAD and reads none back", function()
    local res = fetch(srv, ("http://127.0.0.1:%d/echo"):format(ngx.port), '{ method = "HEAD" }', 3)
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("0", field(res.body, "body_len"))
    assert.truthy(field(res.body, "headers"):find("content-length:11", 1, true), res.body)
  end)

  it("reuses connections: 100 sequential fetches open at most 2 (from /metrics)", function()
    local opened = metric(srv, "edge_upstream_connections_opened_total")
    local reused = metric(srv, "edge_upstream_connections_reused_total")
    local res = fetch(srv, ("http://127.0.0.1:%d/echo"):format(ngx.port), nil, 100)
    assert.are.equal(200, res.status, res.body)
    assert.is_true(metric(srv, "edge_upstream_connections_opened_total") - opened <= 2)
    assert.is_true(metric(srv, "edge_upstream_connections_reused_total") - reused >= 98)
  end)

  it("closes connections after keepalive.max_requests and idle_timeout; keepalive = false pools none", function()
    -- Each case on a port of its own: a pool of its own, empty at first.
    local function opened_by(port, opts, n, pause)
      local url = ("http://127.0.0.1:%d/echo"):format(port)
      local before = metric(srv, "edge_upstream_connections_opened_total")
      if pause then
        assert.are.equal(200, fetch(srv, url, opts).status)
        util.sleep(pause)
        n = n - 1
      end
      assert.are.equal(200, fetch(srv, url, opts, n).status)
      return metric(srv, "edge_upstream_connections_opened_total") - before
    end
    local p = ngx.more_ports
    assert.are.equal(3, opened_by(p[1], "{ keepalive = { max_requests = 2 } }", 6))
    assert.are.equal(3, opened_by(p[2], "{ keepalive = false }", 3))
    assert.are.equal(1, opened_by(p[2], nil, 3))       -- false left the pool alone: it pools now
    assert.are.equal(2, opened_by(p[3], "{ keepalive = { idle_timeout = 0.3 } }", 2, 0.7))
  end)

  it("drops an idle connection the origin closed (keepalive_timeout 1s) and opens a new one", function()
    local url = ("http://127.0.0.1:%d/"):format(ngx.short_port)
    local errors = metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}')
    assert.are.equal("short", field(fetch(srv, url).body, "body"))
    local opened = metric(srv, "edge_upstream_connections_opened_total")
    util.sleep(1.6)
    local res = fetch(srv, url)
    assert.are.equal("short", field(res.body, "body"), res.body)
    assert.are.equal(opened + 1, metric(srv, "edge_upstream_connections_opened_total"))
    assert.are.equal(errors, metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}'))
  end)

  it("answers bodies up to max_body and fails past it (never unbounded)", function()
    local url = ("http://127.0.0.1:%d/files/big"):format(ngx.port)
    local res = fetch(srv, url)
    assert.are.equal(502, res.status)
    assert.are.equal("response body larger than max_body (1048576)", res.body)
    res = fetch(srv, url, "{ max_body = 4 * 1024 * 1024 }")
    assert.are.equal(200, res.status)
    assert.are.equal(tostring(2 * 1024 * 1024), field(res.body, "body_len"))
  end)

  it("reaches an IPv6 literal ([::1])", function()
    if not ngx.v6_port then pending("no ::1 on this machine") return end
    local res = fetch(srv, ("http://[::1]:%d/echo"):format(ngx.v6_port))
    assert.are.equal("GET /echo ", field(res.body, "body"))
  end)

  describe("over TLS", function()
    local function url(path) return ("https://127.0.0.1:%d%s"):format(ngx.tls_port, path or "/echo") end

    it("verifies the origin's certificate against tls.ca_file", function()
      local res = fetch(srv, url(), ('{ tls = { ca_file = %q } }'):format(CA))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("GET /echo ", field(res.body, "body"))
    end)

    it("refuses a certificate the system store does not trust, and says what to do", function()
      local res = fetch(srv, url())
      assert.are.equal(502, res.status)
      assert.truthy(res.body:find("TLS certificate of 127.0.0.1:" .. ngx.tls_port .. " not trusted: self", 1, true),
        res.body)
      assert.truthy(res.body:find("tls.ca_file", 1, true), res.body)
    end)

    it("sends SNI: tls.sni, or the URL's host when it is a name", function()
      local res = fetch(srv, url("/sni"), ('{ tls = { ca_file = %q, sni = "localhost" } }'):format(CA))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("localhost", field(res.body, "body"))
      res = fetch(srv, ("https://localhost:%d/sni"):format(ngx.tls_port), ('{ tls = { ca_file = %q } }'):format(CA))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("localhost", field(res.body, "body"))
      res = fetch(srv, url("/sni"), ('{ tls = { ca_file = %q } }'):format(CA))
      assert.are.equal("", field(res.body, "body"))     -- an IP literal: no SNI
    end)

    it("refuses a certificate that does not match tls.sni", function()
      local res = fetch(srv, url(), ('{ tls = { ca_file = %q, sni = "wrong.example" } }'):format(CA))
      assert.are.equal(502, res.status)
      assert.truthy(res.body:find("hostname mismatch", 1, true), res.body)
    end)

    it("skips verification only with verify = false, with a warning in the error log", function()
      local res = fetch(srv, url(), "{ tls = { verify = false } }")
      assert.are.equal(200, res.status, res.body)
      assert.truthy(srv:wait_log("%[warn%][^\n]*tls.verify = false", 2), srv:log_tail())
    end)

    it("resumes the TLS session on the next connection to the same origin", function()
      local res = fetch(srv, url("/reused"), ('{ keepalive = false, tls = { ca_file = %q } }'):format(CA), 2)
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("r", field(res.body, "body"))
    end)
  end)
end)

describe("edge.fetch against a misbehaving origin #e2e", function()
  local srv, bad

  lazy_setup(function()
    bad = origin.bad()
    srv = start_edge()
  end)
  lazy_teardown(function()
    if bad then bad:stop() end
    server.stop_and_check(srv)
  end)

  local function url(path) return ("http://127.0.0.1:%d%s"):format(bad.port, path) end

  it("reads chunked and close-delimited bodies, and skips 1xx responses", function()
    local res = fetch(srv, url("/chunked"))
    assert.are.equal("hello world", field(res.body, "body"))
    res = fetch(srv, url("/close-delimited"))
    assert.are.equal("until the end of the connection", field(res.body, "body"))
    res = fetch(srv, url("/informational"))
    assert.are.equal("200", field(res.body, "status"))
    assert.are.equal("content-length:2;x-final:yes", field(res.body, "headers"))
  end)

  it("fails malformed responses with a message naming the origin", function()
    local cases = {
      ["/bad-status"] = "malformed response from 127.0.0.1:" .. bad.port .. ": ",
      ["/cl-te"] = "Content-Length can't be present with Transfer-Encoding",
      ["/two-cl"] = "Duplicate Content-Length",
      ["/big-headers"] = "headers larger than 32768 bytes",
      ["/close-mid-body"] = "closed the connection before the response was complete",
    }
    for path, msg in pairs(cases) do
      local res = fetch(srv, url(path))
      assert.are.equal(502, res.status, path)
      assert.truthy(res.body:find(msg, 1, true), path .. ": " .. res.body)
    end
  end)

  it("never pools a connection that carried a malformed response", function()
    for _, path in ipairs { "/bad-status", "/cl-te", "/two-cl" } do
      assert.are.equal(200, fetch(srv, url("/ok")).status)          -- a pooled connection
      local before = tonumber(field(fetch(srv, url("/conns")).body, "body"))
      assert.are.equal(502, fetch(srv, url(path)).status)           -- on it: malformed
      local after = tonumber(field(fetch(srv, url("/conns")).body, "body"))
      assert.are.equal(before + 1, after, path .. ": the next fetch must open a new connection")
    end
  end)

  it("fails a chunked body past max_body", function()
    local res = fetch(srv, url("/chunked"), "{ max_body = 8 }")
    assert.are.equal("response body larger than max_body (8)", res.body)
  end)

  it("times out reads with the URL in the message", function()
    for _, path in ipairs { "/slow-headers", "/never" } do
      local t0 = util.now()
      local res = fetch(srv, url(path), "{ timeout = { read = 0.5 } }")
      assert.are.equal("read timeout after 0.5 s: " .. url(path), res.body)
      assert.is_true(util.now() - t0 < 2.5)
    end
  end)

  it("retries a read timeout only before any response byte", function()
    -- The tries are counted at the origin, not timed: a loaded machine can
    -- take longer than a retry would to start curl and pass the request on.
    local function tries(path) return bad:requests(path) end
    local before = tries("/never")
    local t0 = util.now()
    local res = fetch(srv, url("/never"), "{ timeout = { read = 0.3 }, retries = 1 }")
    assert.are.equal("read timeout after 0.3 s: " .. url("/never"), res.body)
    local took = util.now() - t0
    assert.is_true(took >= 0.55, "two tries take 0.6 s, took " .. took)
    assert.are.equal(before + 2, tries("/never"), "no response byte: one retry")
    before = tries("/slow-headers")
    res = fetch(srv, url("/slow-headers"), "{ timeout = { read = 0.3 }, retries = 2 }")
    assert.are.equal("read timeout after 0.3 s: " .. url("/slow-headers"), res.body)
    assert.are.equal(before + 1, tries("/slow-headers"), "the status line arrived: no retry")
  end)

  it("keeps at most keepalive.size idle connections per origin", function()
    local opts = "{ keepalive = { size = 2 } }"
    local curls = {}
    for i = 1, 5 do
      curls[i] = proc.spawn({ "curl", "-s", "--max-time", "10", "-H", "x-url: " .. url("/delay"),
                              "-H", "x-opts: " .. opts, srv:plain_url("/f") }, { timeout = 15 })
    end
    for i = 1, 5 do
      assert.are.equal(0, curls[i]:wait(10))
      assert.are.equal("late", field(curls[i]:stdout(), "body"))
    end
    -- 5 connections were open at once; 2 stay idle, so the origin sees them
    -- and the one this question comes on.
    local deadline, n = util.now() + 5, nil
    repeat
      n = tonumber(field(fetch(srv, url("/open"), "{ keepalive = false }").body, "body"))
      if n ~= 3 then util.sleep(0.1) end
    until n == 3 or util.now() > deadline
    assert.are.equal(3, n)
  end)

  it("times out connects (a full accept queue) and retries only when asked", function()
    local s = socket.tcp()
    assert(s:bind("127.0.0.1", 0))
    assert(s:listen(0))
    local _, port = s:getsockname()
    local held = {}
    for i = 1, 3 do
      held[i] = socket.tcp()
      held[i]:settimeout(0)
      held[i]:connect("127.0.0.1", port)
    end
    local failures = metric(srv, 'edge_upstream_connect_failures_total{upstream=""}')
    local t0 = util.now()
    local res = fetch(srv, ("http://127.0.0.1:%d/"):format(port), "{ timeout = { connect = 0.3 } }")
    assert.are.equal("connect timeout after 0.3 s: 127.0.0.1:" .. port, res.body)
    res = fetch(srv, ("http://127.0.0.1:%d/"):format(port), "{ timeout = { connect = 0.3 }, retries = 2 }")
    assert.are.equal("connect timeout after 0.3 s: 127.0.0.1:" .. port, res.body)
    local took = util.now() - t0
    assert.is_true(took >= 1.1 and took < 4, "took " .. took)
    assert.are.equal(failures + 4, metric(srv, 'edge_upstream_connect_failures_total{upstream=""}'))
    for _, c in ipairs(held) do c:close() end
    s:close()
  end)

  it("times out sends to an origin that never reads", function()
    local s = socket.tcp()
    assert(s:bind("127.0.0.1", 0))
    assert(s:listen(8))                 -- connects complete; nothing is ever read
    local _, port = s:getsockname()
    local res = fetch(srv, ("http://127.0.0.1:%d/up"):format(port),
      '{ method = "PUT", body = string.rep("x", 32 * 1024 * 1024), timeout = { send = 0.5 } }')
    assert.are.equal(("send timeout after 0.5 s: http://127.0.0.1:%d/up"):format(port), res.body)
    s:close()
  end)

  it("says connect refused, naming the address", function()
    local port = util.free_port()
    local res = fetch(srv, ("http://127.0.0.1:%d/"):format(port))
    assert.are.equal(502, res.status)
    assert.are.equal("connect refused: 127.0.0.1:" .. port, res.body)
  end)

  it("retries an idempotent request once on a fresh connection when the pooled one was closed", function()
    local errors = metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}')
    local res = fetch(srv, url("/stale"), nil, 2)
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("fresh", field(res.body, "body"))
    assert.are.equal(errors, metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}'))
    -- POST is not idempotent: the same failure is the script's to handle.
    res = fetch(srv, url("/stale"), '{ method = "POST" }', 2)
    assert.are.equal(502, res.status)
    assert.truthy(res.body:find("kept-alive connection the origin had closed", 1, true), res.body)
  end)

  it("resolves names through the worker's resolver (/etc/hosts: localhost)", function()
    local res = fetch(srv, ("http://localhost:%d/ok"):format(bad.port))
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("ok", field(res.body, "body"))
    res = fetch(srv, ("http://no-such-host.invalid:%d/ok"):format(bad.port))
    assert.are.equal(502, res.status)
    assert.truthy(res.body:find("^cannot resolve no%-such%-host%.invalid: "), res.body)
  end)

end)

describe("edge.fetch: bad arguments and where it may wait #e2e", function()
  local srv
  lazy_setup(function() srv = start_edge() end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("raises for a bad URL or option (respond fails with 500, the message logged)", function()
    local cases = {
      { "ftp://127.0.0.1/", nil, "the scheme must be http or https" },
      { "http://user@127.0.0.1/", nil, "bad character in the host" },
      { "http://127.0.0.1:99999/", nil, "port out of range" },
      { "http://127.0.0.1/", "{ timeout = -1 }", "option timeout must be > 0 seconds" },
      { "http://127.0.0.1/", '{ headers = { ["x-a"] = "1\\r\\nx-b: 2" } }', "has a CR, LF or NUL" },
      { "http://127.0.0.1/", '{ method = "GE T" }', "bad method" },
    }
    for _, c in ipairs(cases) do
      local res = fetch(srv, c[1], c[2])
      assert.are.equal(500, res.status, c[3])
      assert.truthy(srv:wait_log("[^\n]*" .. c[3]:gsub("%p", "%%%0"), 2), c[3] .. "\n" .. srv:log_tail())
    end
  end)

  it("waits in cache_key and in a coroutine the script made", function()
    for _, where in ipairs { "cache_key", "coroutine" } do
      local res = srv:request { plain = true, path = "/f", headers = { ["x-fetch-in"] = where } }
      assert.are.equal(200, res.status, where)
      assert.matches("refused", res.body, 1, true)
    end
  end)

  it("refuses to wait across a C function without a continuation, with edge.sleep's message", function()
    for _, where in ipairs { "sort", "gsub" } do
      local res = srv:request { plain = true, path = "/f", headers = { ["x-fetch-in"] = where } }
      assert.are.equal(500, res.status, where)
    end
    local n = util.count(srv:log(), "edge.fetch cannot wait here: a C function without a continuation "
      .. "is in between")
    assert.are.equal(2, n, srv:log_tail())
  end)
end)

describe("edge.fetch: cancellation, reload and drain #e2e", function()
  local srv, bad

  lazy_setup(function()
    bad = origin.bad()
    srv = start_edge({ "--drain-timeout", "10" })
  end)
  lazy_teardown(function()
    if bad then bad:stop() end
    server.stop_and_check(srv)
  end)

  local function open_at_origin()
    local res = fetch(srv, ("http://127.0.0.1:%d/open"):format(bad.port), "{ keepalive = false }")
    return tonumber(field(res.body, "body"))
  end

  it("aborts the upstream request when the client resets; the connection is closed, not pooled", function()
    local answered = metric(srv, 'edge_upstream_requests_total{upstream="",code="2xx"}')
    local failed = metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}')
    local c = assert(client.tcp(srv.plain_port))
    c.conn:setoption("linger", { on = true, timeout = 0 })
    local before = bad:requests("/delay")
    assert(c:send("GET /f HTTP/1.1\r\nHost: x\r\nx-url: http://127.0.0.1:" .. bad.port
      .. "/delay\r\n\r\n"))
    -- Reset once the fetch is at the origin (a fixed 0.3 s raced a loaded machine).
    assert.are.equal(before + 1, bad:wait_requests("/delay", before + 1), "the fetch never reached the origin")
    c:close()
    assert.truthy(srv:wait_log("[^\n]*cancelled[^\n]*", 3), srv:log_tail())
    -- Past the moment the origin answers (1 s): the abandoned fetch never reported.
    util.sleep(1.2)
    assert.are.equal(answered, metric(srv, 'edge_upstream_requests_total{upstream="",code="2xx"}'))
    assert.are.equal(failed, metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}'))
    -- The origin saw the connection go: only the /open request's is left.
    local deadline, n = util.now() + 5, nil
    repeat
      n = open_at_origin()
      if n ~= 1 then util.sleep(0.1) end
    until n == 1 or util.now() > deadline
    assert.are.equal(1, n)
    assert.are.equal(200, fetch(srv, ("http://127.0.0.1:%d/ok"):format(bad.port)).status)
    assert.is_nil(srv:sanitizer_report())
  end)

  it("survives 20 clients reset mid-fetch", function()
    for _ = 1, 20 do
      local c = assert(client.tcp(srv.plain_port))
      c.conn:setoption("linger", { on = true, timeout = 0 })
      c:send("GET /f HTTP/1.1\r\nHost: x\r\nx-url: http://127.0.0.1:" .. bad.port .. "/delay\r\n\r\n")
      util.sleep(0.02)
      c:close()
    end
    util.sleep(1.2)       -- past the moment the origin answers the abandoned fetches
    assert.are.equal(200, fetch(srv, ("http://127.0.0.1:%d/ok"):format(bad.port)).status)
    assert.is_nil(srv:sanitizer_report())
  end)

  -- A curl whose fetch has reached the origin (waited for, bounded: a fixed
  -- 0.3 s raced a loaded machine starting curl).
  local function curl_in_background(path)
    local before = bad:requests(path)
    local p = proc.spawn({ "curl", "-s", "--max-time", "10", "-H", "x-url: http://127.0.0.1:" .. bad.port .. path,
                           srv:plain_url("/f") }, { timeout = 15 })
    assert.are.equal(before + 1, bad:wait_requests(path, before + 1), "the fetch never reached the origin")
    return p
  end

  it("keeps a fetch in flight across a SIGHUP reload", function()
    local p = curl_in_background("/delay")
    srv:signal("HUP")
    assert.truthy(srv:wait_log("reloaded", 3), srv:log_tail())
    assert.are.equal(0, p:wait(10))
    assert.are.equal("late", field(p:stdout(), "body"))
  end)

  it("lets a fetch in flight finish on SIGTERM before exiting", function()
    local p = curl_in_background("/delay")
    srv:signal("TERM")
    assert.are.equal(0, p:wait(10))
    assert.are.equal("late", field(p:stdout(), "body"))
    assert.are.equal(0, srv:wait_exit(10))
  end)
end)

describe("edge.fetch in the JSON access log and /metrics #e2e", function()
  local srv, bad, logfile

  lazy_setup(function()
    bad = origin.bad()
    logfile = util.tmpdir("fetchlog") .. "/access.json"
    srv = start_edge({ "--access-log", logfile, "--access-log-format", "json" })
  end)
  lazy_teardown(function()
    if bad then bad:stop() end
    server.stop_and_check(srv)
  end)

  local function last_lines(n)
    local deadline, lines = util.now() + 3, {}
    repeat
      lines = util.lines(util.read_file(logfile) or "")
      if #lines < n then util.sleep(0.1) end
    until #lines >= n or util.now() > deadline
    return lines
  end

  it("logs upstream_addr, upstream_status and upstream_response_time; null without a fetch", function()
    fetch(srv, ("http://127.0.0.1:%d/ok"):format(bad.port))
    local refused = util.free_port()
    fetch(srv, ("http://127.0.0.1:%d/"):format(refused))
    fetch(srv, "not a url")
    local lines = last_lines(3)
    assert.truthy(lines[1]:find(('"upstream_addr":"127.0.0.1:%d","upstream_status":200,"upstream_response_time":%%d'):format(bad.port)),
      lines[1])
    assert.truthy(lines[2]:find(('"upstream_addr":"127.0.0.1:%d","upstream_status":null,"upstream_response_time":'):format(refused), 1, true),
      lines[2])
    assert.truthy(lines[3]:find('"upstream_addr":null,"upstream_status":null,"upstream_response_time":null', 1, true),
      lines[3])
  end)

  it("counts results by status class and errors", function()
    local ok = metric(srv, 'edge_upstream_requests_total{upstream="",code="2xx"}')
    local nf = metric(srv, 'edge_upstream_requests_total{upstream="",code="4xx"}')
    local err = metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}')
    fetch(srv, ("http://127.0.0.1:%d/ok"):format(bad.port))
    fetch(srv, ("http://127.0.0.1:%d/missing"):format(bad.port))
    fetch(srv, ("http://127.0.0.1:%d/two-cl"):format(bad.port))
    assert.are.equal(ok + 1, metric(srv, 'edge_upstream_requests_total{upstream="",code="2xx"}'))
    assert.are.equal(nf + 1, metric(srv, 'edge_upstream_requests_total{upstream="",code="4xx"}'))
    assert.are.equal(err + 1, metric(srv, 'edge_upstream_requests_total{upstream="",code="error"}'))
    assert.is_true(metric(srv, "edge_upstream_response_seconds_count") >= 3)
  end)
end)
