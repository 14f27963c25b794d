-- edge.proxy (issue 12: reverse proxy), end to end, per the contract in the
-- brief PROXY.md: what is forwarded (method, path, query, headers, body),
-- hop-by-hop headers removed both ways, X-Forwarded-* / Via (and their
-- switches), opts.headers / host / path, opts.on_response, over HTTP/1.1 and
-- HTTP/2; then origin failures (502 / 504, error-log lines), the access
-- log's upstream fields and a client that leaves mid-response.
--
-- The edge under test runs spec/fixtures/proxy_edge.lua (X-Target names the
-- origin, X-Mode the options). Origins: a second edge running
-- spec/fixtures/proxy_origin.lua (answers the headers it received), Debian's
-- nginx (spec/support/proxy_nginx.lua), a raw origin with canned responses
-- (spec/support/proxy_raw_origin.lua) and spec/support/bad_origin.lua.
local cjson = require "cjson"
local server = require "support.server"
local origin = require "support.origin"
local proxy_nginx = require "support.proxy_nginx"
local raw_origin = require "support.proxy_raw_origin"
local admin = require "support.admin"
local proc = require "support.proc"
local util = require "support.util"

local EDGE = "spec/fixtures/proxy_edge.lua"
local ORIGIN = "spec/fixtures/proxy_origin.lua"

--- The echo origin's answer: fields (method, path, ...) and headers (h:NAME).
local function parse_echo(body)
  local fields, headers = {}, {}
  for line in (body or ""):gmatch("[^\n]+") do
    local name, v = line:match("^h:([^=]+)=(.*)$")
    if name then headers[name] = v
    else
      local k, val = line:match("^([^=]+)=(.*)$")
      if k then fields[k] = val end
    end
  end
  return fields, headers
end

local function target(port) return ("http://127.0.0.1:%d"):format(port) end

--- A request to the edge under test; headers merged over x-target/x-mode.
local function proxied(srv, to, opts)
  opts = opts or {}
  local headers = { ["x-target"] = to }
  if opts.mode then headers["x-mode"] = opts.mode end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return srv:request { method = opts.method, path = opts.path or "/", headers = headers,
                       body = opts.body, http2 = opts.http2, plain = opts.plain,
                       timeout = opts.timeout, curl_args = opts.curl_args }
end

local PROTOS = { { name = "HTTP/1.1", http2 = false, via = "1.1 edge" },
                 { name = "HTTP/2", http2 = true, via = "2 edge" } }

describe("edge.proxy: what goes to the origin and back #e2e", function()
  local srv, trusted, echo, ngx, raw

  lazy_setup(function()
    echo = server.start { script = ORIGIN, plain = true, workers = 1 }
    ngx = proxy_nginx.start()
    raw = raw_origin.start()
    srv = server.start { script = EDGE, plain = true, workers = 1 }
    trusted = server.start { script = EDGE, workers = 1, args = { "--trusted-proxies", "127.0.0.1/32" } }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    if raw then raw:stop() end
    server.stop_and_check(srv, trusted, echo)
  end)

  for _, p in ipairs(PROTOS) do
    describe("over " .. p.name, function()
      it("forwards the method, path and query as received (nginx sees $request_uri)", function()
        local res = proxied(srv, ngx:target(), { http2 = p.http2, path = "/echo/a%20b?q=1&r=%2F&s",
                                                 headers = { ["x-test"] = "T1" } })
        assert.are.equal(200, res.status, res.error or res.body)
        assert.are.equal(p.http2 and "2" or "1.1", res.http_version)
        assert.are.equal("GET /echo/a%20b?q=1&r=%2F&s T1", res.body)
        -- The origin's Server is replaced by edge's (as nginx does).
        assert.is_nil((res.headers["server"] or ""):find("nginx", 1, true), res.headers["server"])
        res = proxied(srv, ngx:target(), { http2 = p.http2, method = "DELETE", path = "/echo?x=%41" })
        assert.are.equal("DELETE /echo?x=%41 ", res.body)
      end)

      it("forwards headers and the body (a second edge echoes them)", function()
        local res = proxied(srv, target(echo.plain_port), {
          http2 = p.http2, method = "POST", path = "/in?a=b", body = "hello\0world",
          headers = { ["content-type"] = "application/octet-stream", ["x-test"] = "posted",
                      ["x-multi"] = { "1", "2" }, ["user-agent"] = "spec-agent" } })
        assert.are.equal(200, res.status, res.error or res.body)
        local f, h = parse_echo(res.body)
        assert.are.equal("POST", f.method)
        assert.are.equal("/in", f.path)
        assert.are.equal("a=b", f.query)
        assert.are.equal("11", f.body_len)
        assert.truthy(res.body:find("body=hello\0world\n", 1, true), res.body)
        assert.are.equal("posted", h["x-test"])
        assert.are.equal("1|2", h["x-multi"])
        assert.are.equal("spec-agent", h["user-agent"])
        assert.are.equal("application/octet-stream", h["content-type"])
        assert.are.equal("11", h["content-length"])
        assert.are.equal("yes", res.headers["x-origin"])
      end)

      it("sends the client's Host, X-Forwarded-Proto/Host and Via; X-Forwarded-For replaced (untrusted client)", function()
        local res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/xf",
          headers = { host = "shop.example:8443", ["x-forwarded-for"] = "203.0.113.9" } })
        assert.are.equal(200, res.status, res.error or res.body)
        local _, h = parse_echo(res.body)
        assert.are.equal("shop.example:8443", h["host"], res.body)
        assert.are.equal("127.0.0.1", h["x-forwarded-for"], res.body)
        assert.are.equal("https", h["x-forwarded-proto"], res.body)
        assert.truthy(h["x-forwarded-host"] == "shop.example:8443" or h["x-forwarded-host"] == "shop.example",
          res.body)
        assert.are.equal(p.via, h["via"], res.body)
        -- On the cleartext listener the proto is http.
        res = proxied(srv, target(echo.plain_port), { http2 = p.http2, plain = true, path = "/xf" })
        local _, h2 = parse_echo(res.body)
        assert.are.equal("http", h2["x-forwarded-proto"], res.body)
        assert.are.equal("127.0.0.1", h2["x-forwarded-for"], res.body)
      end)

      it("extends X-Forwarded-For when the client is in --trusted-proxies", function()
        local res = proxied(trusted, target(echo.plain_port), { http2 = p.http2, path = "/xff",
          headers = { ["x-forwarded-for"] = "203.0.113.9" } })
        assert.are.equal(200, res.status, res.error or res.body)
        local _, h = parse_echo(res.body)
        assert.are.equal("203.0.113.9, 127.0.0.1", h["x-forwarded-for"], res.body)
        -- Without an incoming one, it is the client's address.
        res = proxied(trusted, target(echo.plain_port), { http2 = p.http2, path = "/xff" })
        local _, h2 = parse_echo(res.body)
        assert.are.equal("127.0.0.1", h2["x-forwarded-for"], res.body)
      end)

      it("x_forwarded = false drops the X-Forwarded-* additions; via = false drops Via", function()
        local res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/noxf", mode = "noxf" })
        assert.are.equal(200, res.status, res.error or res.body)
        local _, h = parse_echo(res.body)
        assert.is_nil(h["x-forwarded-for"], res.body)
        assert.is_nil(h["x-forwarded-proto"], res.body)
        assert.is_nil(h["x-forwarded-host"], res.body)
        assert.are.equal(p.via, h["via"], res.body)
        res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/novia", mode = "novia" })
        local _, h2 = parse_echo(res.body)
        assert.is_nil(h2["via"], res.body)
        assert.are.equal("127.0.0.1", h2["x-forwarded-for"], res.body)
        assert.are.equal("https", h2["x-forwarded-proto"], res.body)
      end)

      it("removes hop-by-hop request headers: Connection and the names it lists, Keep-Alive, TE, Upgrade, Proxy-*", function()
        local headers = { ["proxy-authorization"] = "Basic c2VjcmV0", te = "trailers", ["x-keep"] = "yes" }
        if not p.http2 then
          -- curl drops these itself over HTTP/2 (they are illegal there).
          headers["connection"] = "keep-alive, X-Drop"
          headers["x-drop"] = "1"
          headers["keep-alive"] = "300"
          headers["proxy-connection"] = "keep-alive"
          headers["upgrade"] = "foo/1"
        end
        local res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/hop", headers = headers })
        assert.are.equal(200, res.status, res.error or res.body)
        local _, h = parse_echo(res.body)
        assert.are.equal("yes", h["x-keep"], res.body)
        for _, name in ipairs { "x-drop", "keep-alive", "te", "upgrade", "proxy-authorization",
                                "proxy-connection" } do
          assert.is_nil(h[name], name .. " reached the origin:\n" .. res.body)
        end
        -- edge may say Connection: keep-alive to its origin itself, but never
        -- pass on what the client's Connection named.
        assert.is_nil((h["connection"] or ""):lower():find("x-drop", 1, true), res.body)
      end)

      it("removes hop-by-hop response headers (and the names the origin's Connection lists)", function()
        local res = proxied(srv, raw:target(), { http2 = p.http2, path = "/hop" })
        assert.are.equal(200, res.status, res.error or res.body)
        assert.are.equal("hello world", res.body)
        assert.are.equal("kept", res.headers["x-end"])
        for _, name in ipairs { "x-hop", "keep-alive", "proxy-authenticate", "proxy-foo", "upgrade" } do
          assert.is_nil(res.headers[name], name .. " reached the client:\n" .. res.curl.raw_headers)
        end
        assert.is_nil((res.headers["connection"] or ""):lower():find("x-hop", 1, true), res.curl.raw_headers)
        if p.http2 then
          assert.is_nil(res.headers["transfer-encoding"], res.curl.raw_headers)
          assert.is_nil(res.headers["connection"], res.curl.raw_headers)
        end
      end)

      it("opts.headers adds, overrides and (false) removes request headers; opts.host and opts.path", function()
        local res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/h", mode = "headers",
          headers = { ["x-override"] = "client", ["x-remove"] = "gone", ["x-other"] = "client" } })
        assert.are.equal(200, res.status, res.error or res.body)
        local _, h = parse_echo(res.body)
        assert.are.equal("edge", h["x-added"], res.body)
        assert.are.equal("edge", h["x-override"], res.body)
        assert.is_nil(h["x-remove"], res.body)
        assert.are.equal("client", h["x-other"], res.body)
        assert.is_nil(h["x-target"], "opts.headers x-target = false was sent:\n" .. res.body)
        res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/orig?q=1", mode = "host,path" })
        local f, h2 = parse_echo(res.body)
        assert.are.equal("origin.example", h2["host"], res.body)
        assert.are.equal("/rewritten", f.path, res.body)
        assert.are.equal("by=edge", f.query, res.body)
      end)

      it("opts.on_response changes the status, adds a header and rewrites Location", function()
        local res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/redirect", mode = "onresp" })
        assert.are.equal(307, res.status, res.error or res.body)
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal("https://www.example.test/next?a=1", res.headers["location"])
        assert.are.equal("yes", res.headers["x-origin"])
        local f = parse_echo(res.body)
        assert.are.equal("/redirect", f.path)
        -- Without on_response the origin's answer is passed as is.
        res = proxied(srv, target(echo.plain_port), { http2 = p.http2, path = "/redirect" })
        assert.are.equal(302, res.status)
        assert.are.equal("http://origin.internal/next?a=1", res.headers["location"])
        assert.is_nil(res.headers["x-on-response"])
      end)
    end)
  end
end)

describe("edge.proxy: origin failures #e2e", function()
  local srv, bad, ngx, logfile

  lazy_setup(function()
    bad = origin.bad()
    ngx = proxy_nginx.start()
    logfile = util.tmpdir("proxy-log") .. "/access.json"
    local admin_port = util.free_port()
    srv = server.start { script = EDGE, plain = true, workers = 1,
                         args = { "--log-level", "info", "--access-log", logfile,
                                  "--access-log-format", "json", "--admin", "127.0.0.1:" .. admin_port } }
    srv.admin_port = admin_port
  end)
  lazy_teardown(function()
    if bad then bad:stop() end
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  local function metric(name)
    return admin.scrape(srv.admin_port)[name] or 0
  end

  for _, p in ipairs(PROTOS) do
    it("connect refused: 502, and an error-log line names the server address and the reason (" .. p.name .. ")", function()
      local port = util.free_port()
      local res = proxied(srv, target(port), { http2 = p.http2, path = "/refused" })
      assert.are.equal(502, res.status, res.error or res.body)
      local addr = "127.0.0.1:" .. port
      local line = srv:wait_log("[^\n]*" .. addr:gsub("%p", "%%%0") .. "[^\n]*", 2)
      assert.truthy(line, "no error-log line names " .. addr .. ":\n" .. srv:log_tail(20))
      assert.truthy(line:find("refused", 1, true), line)
    end)

    it("an origin that never answers, with timeout = { read = 1 }: 504 within seconds (" .. p.name .. ")", function()
      local t0 = util.now()
      local res = proxied(srv, target(bad.port), { http2 = p.http2, path = "/never", mode = "rtt" })
      assert.are.equal(504, res.status, res.error or res.body)
      assert.is_true(util.now() - t0 < 5)
      assert.truthy(srv:wait_log("[^\n]*timeout[^\n]*127%.0%.0%.1:" .. bad.port .. "[^\n]*", 2)
        or srv:wait_log("[^\n]*127%.0%.0%.1:" .. bad.port .. "[^\n]*timeout[^\n]*", 1), srv:log_tail(20))
    end)

    it("an origin that never answers, with read_timeout = 1 (PROXY.md's option): 504 within seconds (" .. p.name .. ")", function()
      local t0 = util.now()
      local res = proxied(srv, target(bad.port), { http2 = p.http2, path = "/never", mode = "rt", timeout = 6 })
      assert.are.equal(504, res.status, res.error or res.body)
      assert.is_true(util.now() - t0 < 5)
      assert.truthy(srv:wait_log("[^\n]*timeout[^\n]*127%.0%.0%.1:" .. bad.port .. "[^\n]*", 2)
        or srv:wait_log("[^\n]*127%.0%.0%.1:" .. bad.port .. "[^\n]*timeout[^\n]*", 1), srv:log_tail(20))
    end)

    it("a malformed origin response: 502 (" .. p.name .. ")", function()
      for _, path in ipairs { "/bad-status", "/cl-te", "/two-cl" } do
        local res = proxied(srv, target(bad.port), { http2 = p.http2, path = path })
        assert.are.equal(502, res.status, path .. ": " .. tostring(res.error or res.body))
      end
    end)
  end

  it("fills upstream_addr, upstream_status and upstream_response_time in the JSON access log", function()
    local res = proxied(srv, ngx:target(), { path = "/echo?alog=1" })
    assert.are.equal(200, res.status, res.error or res.body)
    local line = util.wait_until(function()
      for _, l in ipairs(util.lines(util.read_file(logfile))) do
        if l:find("/echo?alog=1", 1, true) then return l end
      end
    end, 3)
    assert.truthy(line, "no access-log line for /echo?alog=1")
    local rec = cjson.decode(line)
    assert.are.equal("127.0.0.1:" .. ngx.port, rec.upstream_addr)
    assert.are.equal(200, rec.upstream_status)
    assert.are.equal("number", type(rec.upstream_response_time))
    assert.is_true(rec.upstream_response_time >= 0 and rec.upstream_response_time < 5)
  end)

  it("a client gone mid-response: the upstream connection is closed, not pooled; edge still serves", function()
    -- A port of its own: a pool that only this spec uses.
    local port = ngx.ports[1]
    local res = proxied(srv, ngx:target(port), { path = "/files/big" })
    assert.are.equal(200, res.status)                      -- one connection, now idle in the pool
    -- A slow 1 GiB download that curl gives up after 1 s.
    local c = proc.spawn({ "curl", "-s", "-o", "/dev/null", "--limit-rate", "1M", "--max-time", "1",
                           "-H", "x-target: " .. ngx:target(port), srv:plain_url("/files/huge") }, { timeout = 10 })
    local code = c:wait(8)
    assert.are.equal(28, code)                             -- curl: operation timed out
    util.sleep(0.5)
    local opened = metric("edge_upstream_connections_opened_total")
    res = proxied(srv, ngx:target(port), { path = "/files/big" })
    assert.are.equal(200, res.status, res.error)
    assert.are.equal(proxy_nginx.pattern(2 * 1024 * 1024), res.body)
    assert.are.equal(opened + 1, metric("edge_upstream_connections_opened_total"))
    -- nginx logged the cut download (bytes sent < 1 GiB).
    assert.truthy(util.wait_until(function() return #ngx:requests_for("/files/huge") == 1 end, 3),
      "nginx never finished the cut download: edge kept its connection open")
  end)
end)

describe("lua/proxy.lua with EDGE_ORIGIN #e2e", function()
  local srv, ngx

  lazy_setup(function()
    ngx = proxy_nginx.start()
    srv = server.start { script = "lua/proxy.lua", workers = 1, env = { EDGE_ORIGIN = "127.0.0.1:" .. ngx.port } }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  it("proxies to the origin and caches GET as its Cache-Control says (MISS, then HIT with Age)", function()
    local a = srv:get("/cc/max-age/lp?x=1")
    assert.are.equal(200, a.status, a.error or a.body)
    assert.are.equal("MISS", a.headers["x-cache"])
    local b = srv:get("/cc/max-age/lp?x=1", { http2 = true })
    assert.are.equal(200, b.status, b.error or b.body)
    assert.are.equal("HIT", b.headers["x-cache"])
    assert.truthy(tonumber(b.headers["age"]))
    assert.are.equal(a.body, b.body)
    assert.are.equal(1, #ngx:requests_for("/cc/max-age/lp?x=1"))
  end)

  it("passes other methods through, uncached", function()
    local res = srv:post("/echo?p=1", "data", { headers = { ["x-test"] = "lp" } })
    assert.are.equal(200, res.status, res.error or res.body)
    assert.are.equal("POST /echo?p=1 lp", res.body)
    assert.is_nil(res.headers["x-cache"])
  end)

  it("takes a URL too (EDGE_ORIGIN=http://host:port)", function()
    local other <close> = server.start { script = "lua/proxy.lua", workers = 1,
                                        env = { EDGE_ORIGIN = "http://127.0.0.1:" .. ngx.ports[2] } }
    local res = other:get("/echo?url=1")
    assert.are.equal(200, res.status, res.error or res.body)
    assert.are.equal("GET /echo?url=1 ", res.body)
  end)

  it("refuses to start without EDGE_ORIGIN, saying so", function()
    local code, out, err = util.run({ util.edge_bin(), "-t", "-s", "lua/proxy.lua", "--listen-plain", "127.0.0.1:0" },
      { timeout = 10 })
    assert.are.equal(1, code, out .. err)
    assert.truthy((out .. err):find("EDGE_ORIGIN", 1, true), out .. err)
  end)
end)

describe("edge.proxy: a status without a body #e2e", function()
  local srv, echo

  lazy_setup(function()
    echo = server.start { script = ORIGIN, plain = true, workers = 1 }
    srv = server.start { script = EDGE, plain = true, workers = 1 }
  end)
  lazy_teardown(function() server.stop_and_check(srv, echo) end)

  -- on_response sets 204 on an origin answer that has a body: the body must
  -- not follow the 204 on the wire, or the next response on the connection
  -- starts with the origin's bytes (a desync the origin would control).
  it("sends no body after a 204 set by on_response (HTTP/1.1, the bytes on the wire)", function()
    local req = ("GET /echo HTTP/1.1\r\nHost: a.test\r\nx-target: %s\r\nx-mode: nobody\r\n"
      .. "Connection: close\r\n\r\n"):format(target(echo.plain_port))
    local socket = require "socket"
    local sock = assert(socket.tcp())
    sock:settimeout(10)
    assert(sock:connect("127.0.0.1", srv.plain_port))
    assert(sock:send(req))
    local out, err, partial = sock:receive("*a")     -- to the close (Connection: close)
    sock:close()
    out = out or partial
    assert.truthy(out and #out > 0, tostring(err))
    assert.truthy(out:find("^HTTP/1.1 204 "), out)
    local head_end = assert(out:find("\r\n\r\n", 1, true), out)
    assert.are.equal(#out, head_end + 3, "bytes after the 204's head:\n" .. out)
  end)
end)
