-- edge.fetch to named upstreams (issue 11, points 1, 7 passive, 8, 10):
-- the edge under test runs spec/fixtures/upstream_named.lua over four real
-- origins (second edges on --listen-plain running
-- spec/fixtures/upstream_origin.lua, each answering with its name) and two
-- ports where nothing listens.
local server = require "support.server"
local admin = require "support.admin"
local client = require "support.client"
local util = require "support.util"
local origin = require "support.origin"

local srv, origins, R1, R2, ngx, reload_file
local NAMES = { "A", "B", "C", "F" }

local function start_origin(name)
  return server.start { script = "spec/fixtures/upstream_origin.lua", plain = true,
                        env = { EDGE_SPEC_VALUE = name }, args = { "--workers", "1" } }
end

local function ask(up, path, extra)
  extra = extra or {}
  local headers = { ["x-up"] = up, ["x-opts"] = extra.opts, ["x-key"] = extra.key,
                    ["x-scheme"] = extra.scheme, ["x-method"] = extra.method, ["x-nopcall"] = extra.nopcall }
  return srv:request { plain = true, path = path or "/", headers = headers, timeout = 20,
                       method = extra.method, body = extra.body }
end

local function who(res) return res.body:match("^(%u) ") end

local function count(name)
  local res = origins[name]:request { plain = true, path = "/count" }
  return tonumber(res.body)
end

local function counts()
  local t = {}
  for _, n in ipairs(NAMES) do t[n] = count(n) end
  return t
end

local function metric(key)
  return admin.value(admin.scrape(srv.admin_port), key)
end

local function tally(up, n, path)
  local seen = {}
  for _ = 1, n do
    local res = ask(up, path)
    assert.are.equal(200, res.status, res.body)
    seen[who(res)] = (seen[who(res)] or 0) + 1
  end
  return seen
end

describe("named upstreams through edge.fetch #e2e", function()
  lazy_setup(function()
    origins = {}
    for _, n in ipairs(NAMES) do origins[n] = start_origin(n) end
    R1, R2 = util.free_port(), util.free_port()
    ngx = origin.nginx()
    reload_file = util.tmpdir("named-reload") .. "/rl"
    util.write_file(reload_file, "A")
    local admin_port = util.free_port()
    srv = server.start { script = "spec/fixtures/upstream_named.lua", plain = true,
                         env = { PORT_A = origins.A.plain_port, PORT_B = origins.B.plain_port,
                                 PORT_C = origins.C.plain_port, PORT_F = origins.F.plain_port,
                                 PORT_R1 = R1, PORT_R2 = R2, PORT_T = ngx.tls_port, RELOAD_FILE = reload_file },
                         args = { "--workers", "1", "--admin", "127.0.0.1:" .. admin_port, "--log-level", "info" } }
    srv.admin_port = admin_port
  end)
  lazy_teardown(function()
    server.stop_and_check(srv, origins.A, origins.B, origins.C, origins.F)
    if ngx then ngx:stop() end
  end)

  it("sends the URL's path and query to the upstream, with Host the upstream's name", function()
    local res = ask("rr", "/some/path?q=1&r=2")
    assert.are.equal(200, res.status, res.body)
    assert.truthy(res.body:match("^[AB] GET rr /some/path%?q=1&r=2$"), res.body)
    local set = ask("rr", "/p", { opts = '{ headers = { host = "api.example" } }' })
    assert.truthy(set.body:match("^[AB] GET api.example /p$"), set.body)
  end)

  it("round robin: two origins share the requests evenly", function()
    local seen = tally("rr", 10)
    assert.are.same({ A = 5, B = 5 }, seen)
  end)

  it("weights 3:1 give a 3:1 ratio", function()
    local seen = tally("w", 8)
    assert.are.same({ A = 6, B = 2 }, seen)
  end)

  it("hash: a key sticks to one server, and keys spread over the servers", function()
    local first = who(ask("h", "/", { key = "user-42" }))
    for _ = 1, 5 do assert.are.equal(first, who(ask("h", "/", { key = "user-42" }))) end
    local spread = {}
    for i = 1, 20 do spread[who(ask("h", "/", { key = "k" .. i }))] = true end
    local n = 0
    for _ in pairs(spread) do n = n + 1 end
    assert.is_true(n >= 2)
  end)

  it("least_conn: while one server is busy with a slow request, the others go to the idle one", function()
    local before = counts()
    local c = assert(client.tcp(srv.plain_port, 5))
    assert(c.conn:send("GET /slow?s=1.5 HTTP/1.1\r\nHost: x\r\nx-up: lc\r\n\r\n"))
    local busy
    local deadline = util.now() + 5
    repeat
      util.sleep(0.05)
      if count("A") > before.A then busy = "A" elseif count("B") > before.B then busy = "B" end
    until busy or util.now() > deadline
    assert.truthy(busy)
    local seen = tally("lc", 4)
    assert.are.same({ [busy == "A" and "B" or "A"] = 4 }, seen)
    c:close()
  end)

  it("skips a refused server: the request succeeds on the other, the retry is counted, the server stays out", function()
    local seen = tally("dead1", 4)
    assert.are.same({ A = 4 }, seen)
    assert.are.equal(1, metric('edge_upstream_connect_failures_total{upstream="dead1"}'))
    assert.are.equal(1, metric('edge_upstream_requests_total{upstream="dead1",code="error"}'))
    assert.are.equal(4, metric('edge_upstream_requests_total{upstream="dead1",code="2xx"}'))
    assert.are.equal(0, metric('edge_upstream_connections{upstream="dead1",state="active"}'))
    assert.is_true(metric('edge_upstream_connections{upstream="dead1",state="idle"}') >= 1)
    assert.truthy(srv:wait_log("http://dead1/ failed on 127.0.0.1:" .. R1 .. ", trying another server", 3))
  end)

  it("retries a 503 listed in retries.on on the other server, then returns the last 503 as the response", function()
    local before = counts()
    local res = ask("err5", "/status/503")
    assert.are.equal(503, res.status, res.body)
    assert.is_nil(res.headers["x-error"])
    local after = counts()
    assert.are.equal(before.A + 1, after.A)
    assert.are.equal(before.B + 1, after.B)
    assert.are.equal(2, metric('edge_upstream_requests_total{upstream="err5",code="5xx"}'))
  end)

  it("does not retry a status retries.on does not list", function()
    local before = counts()
    assert.are.equal(504, ask("err5", "/status/504").status)
    local after = counts()
    assert.are.equal(1, (after.A - before.A) + (after.B - before.B))
  end)

  it("does not retry a POST unless retries.on has non_idempotent", function()
    local before = counts()
    local res = ask("err5", "/status/503", { method = "POST", body = "x" })
    assert.are.equal(503, res.status, res.body)
    local mid = counts()
    assert.are.equal(1, (mid.A - before.A) + (mid.B - before.B))
    res = ask("err5ni", "/status/503", { method = "POST", body = "x" })
    assert.are.equal(503, res.status, res.body)
    local after = counts()
    assert.are.equal(before.A + 1 + (mid.A - before.A), after.A)
    assert.are.equal(2, (after.A - mid.A) + (after.B - mid.B))
  end)

  it("a call's retries lowers the upstream's tries", function()
    local before = counts()
    assert.are.equal(503, ask("err5", "/status/503", { opts = "{ retries = 0 }" }).status)
    local after = counts()
    assert.are.equal(1, (after.A - before.A) + (after.B - before.B))
  end)

  it("passive health: a failing server gets no request during fail_timeout, and is back after", function()
    origins.F:request { plain = true, path = "/ctl/fail" }
    local f0 = count("F")
    -- Round robin: one of the first two requests goes to F, gets 502, is retried on A.
    local seen = tally("pas", 2)
    assert.are.same({ A = 2 }, seen)
    assert.are.equal(f0 + 1, count("F"))
    local failed_at = util.now()
    origins.F:request { plain = true, path = "/ctl/ok" }
    seen = tally("pas", 6)
    assert.are.same({ A = 6 }, seen)
    assert.are.equal(f0 + 1, count("F"))
    util.sleep(math.max(0, failed_at + 2.3 - util.now()))
    seen = tally("pas", 6)
    assert.is_true((seen.F or 0) >= 2, "F back in rotation")
  end)

  it("every server down: tries each once, then fails fast with a clear error", function()
    local res = ask("alldown", "/")
    assert.are.equal(502, res.status)
    assert.truthy(res.body:find("ERR upstream alldown (2 tried): connect refused: 127.0.0.1:", 1, true), res.body)
    local t0 = util.now()
    res = ask("alldown", "/")
    assert.is_true(util.now() - t0 < 1)
    assert.truthy(res.body:find("ERR no live server in upstream alldown (2 tried): connect refused: 127.0.0.1:",
      1, true), res.body)
    assert.are.equal(4, metric('edge_upstream_connect_failures_total{upstream="alldown"}'))
  end)

  it("a client reset is not a failure: the cancelled server stays in rotation", function()
    local before = counts()
    local c = assert(client.tcp(srv.plain_port, 5))
    c.conn:setoption("linger", { on = true, timeout = 0 })
    assert(c.conn:send("GET /slow?s=1 HTTP/1.1\r\nHost: x\r\nx-up: cx\r\n\r\n"))
    local deadline = util.now() + 5
    repeat util.sleep(0.05) until count("A") + count("B") > before.A + before.B or util.now() > deadline
    c:close()
    assert.truthy(srv:wait_log("[^\n]*cancelled[^\n]*", 3), srv:log_tail())
    local seen = tally("cx", 4)
    assert.are.same({ A = 2, B = 2 }, seen)
    assert.are.equal(0, metric('edge_upstream_requests_total{upstream="cx",code="error"}'))
  end)

  it("the URL's scheme must match the upstream's tls; a port or tls option is refused", function()
    local res = ask("rr", "/", { scheme = "https" })
    assert.are.equal(500, res.status)
    assert.truthy(res.body:find("upstream rr has no tls, so its URL is http://rr/...", 1, true), res.body)
    res = ask("rr", "/", { opts = "{ keepalive = false }" })
    assert.truthy(res.body:find("option keepalive is set by edge.upstream.define('rr')", 1, true), res.body)
  end)

  it("labels every upstream's counters with its name; what happened adds up", function()
    local m = admin.scrape(srv.admin_port)
    assert.are.equal(12, admin.value(m, 'edge_upstream_requests_total{upstream="rr",code="2xx"}'))
    assert.are.equal(0, admin.value(m, 'edge_upstream_requests_total{upstream="rr",code="error"}'))
    assert.are.equal(0, admin.value(m, 'edge_upstream_connect_failures_total{upstream="rr"}'))
    assert.are.equal(0, admin.value(m, 'edge_upstream_connections{upstream="rr",state="active"}'))
    assert.is_true(admin.value(m, 'edge_upstream_connections{upstream="rr",state="idle"}') >= 1)
    assert.are.equal(0, admin.value(m, 'edge_upstream_requests_total{upstream="",code="2xx"}'))
    assert.is_nil(srv:sanitizer_report())
  end)

  it("https: an upstream with tls reaches TLS nginx, verified against tls.ca_file, its pool reused", function()
    local opened = metric("edge_upstream_connections_opened_total")
    for _ = 1, 3 do
      local res = ask("tls", "/echo?x=1", { scheme = "https" })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("GET /echo?x=1 ", res.body)
    end
    assert.are.equal("tls", ask("tls", "/host", { scheme = "https" }).body)
    assert.are.equal(opened + 1, metric("edge_upstream_connections_opened_total"))
    assert.are.equal(4, metric('edge_upstream_requests_total{upstream="tls",code="2xx"}'))
    -- the same server with the system store: nginx's self-signed certificate is not trusted
    local res = ask("tlssys", "/echo", { scheme = "https" })
    assert.are.equal(502, res.status)
    assert.truthy(res.body:find("ERR upstream tlssys (1 tried): TLS certificate of 127.0.0.1:" .. ngx.tls_port
      .. " not trusted", 1, true), res.body)
    -- and http:// for it raises
    res = ask("tls", "/echo")
    assert.are.equal(500, res.status)
    assert.truthy(res.body:find("RAISED", 1, true), res.body)
  end)

  it("a port on an upstream's name makes an ordinary URL: its host is resolved, not the upstream", function()
    local before = counts()
    local res = ask("rr:" .. origins.A.plain_port, "/p")
    assert.are.equal(502, res.status, res.body)
    assert.truthy(res.body:find("^ERR cannot resolve rr: "), res.body)
    assert.are.same(before, counts())
  end)

  it("a hash_key that raises fails the fetch with its error (file:line); the request gets 500", function()
    local before = counts()
    local res = ask("hraise", "/k1")
    assert.are.equal(500, res.status)
    assert.truthy(res.body:find("^RAISED [^\n]*spec/fixtures/upstream_named%.lua:%d+: no key for /k1"), res.body)
    res = ask("hraise", "/k2", { nopcall = "1" })
    assert.are.equal(500, res.status)
    assert.truthy(srv:wait_log("[^\n]*spec/fixtures/upstream_named%.lua:%d+: no key for /k2", 3), srv:log_tail())
    assert.are.same(before, counts())
    -- no try was made, so nothing is counted under its name
    assert.is_nil(admin.scrape(srv.admin_port)['edge_upstream_requests_total{upstream="hraise",code="error"}'])
  end)

  -- last: the reload gives every upstream fresh state
  it("SIGHUP while a named fetch is in flight: it finishes on the old script; the new upstreams serve new requests", function()
    assert.are.equal("A", who(ask("rl", "/")))
    local before = count("A")
    local c = assert(client.tcp(srv.plain_port, 5))
    assert(c.conn:send("GET /slow?s=1.5 HTTP/1.1\r\nHost: x\r\nx-up: rl\r\n\r\n"))
    assert.truthy(util.wait_until(function() return count("A") > before end, 5), "the slow fetch never reached A")
    util.write_file(reload_file, "B")
    srv:signal("HUP")
    assert.truthy(srv:wait_log("script [^\n]* reloaded", 5), srv:log_tail())
    local res = ask("rl", "/new")
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("B GET rl /new", res.body)
    local list = c:read_responses(1, { timeout = 5 })
    c:close()
    assert.are.equal(1, #list, "the fetch in flight got no answer")
    assert.are.equal(200, list[1].status, list[1].body)
    assert.are.equal("A GET rl /slow?s=1.5", list[1].body)
    assert.is_nil(srv:sanitizer_report())
  end)
end)

-- Runs edge in its own user and mount namespaces with `hosts` bind-mounted
-- over /etc/hosts (unshare -rm: no privilege needed), so a spec decides what
-- names resolve to. Returns the wrapper's path, or nil when the system
-- cannot do it.
local function hosts_wrapper(dir, hosts)
  local probe = util.run({ "unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts', hosts }, { timeout = 10 })
  if probe ~= 0 then return nil end
  local wrapper = dir .. "/edge-with-hosts"
  util.write_file(wrapper, string.format(
    "#!/bin/sh\nexec unshare -rm sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' %s %s \"$@\"\n",
    util.q(hosts), util.q(util.edge_bin())))
  assert(util.run({ "chmod", "+x", wrapper }) == 0)
  return wrapper
end

describe("named upstreams: server names and their addresses #e2e", function()
  local dir, hosts, origin_a, proxy, admin_port, wrapper
  local HOSTS = "127.0.0.1 localhost\n127.0.0.2 multi.edge.test\n127.0.0.1 multi.edge.test\n"

  lazy_setup(function()
    dir = util.tmpdir("named-dns")
    hosts = dir .. "/hosts"
    util.write_file(hosts, HOSTS .. "127.0.0.1 kept.edge.test\n127.0.0.1 ttl.edge.test\n")
    wrapper = hosts_wrapper(dir, hosts)
    if not wrapper then return end
    origin_a = start_origin("A")
    admin_port = util.free_port()
    proxy = server.start { script = "spec/fixtures/upstream_dns.lua", plain = true, bin = wrapper,
                           cert = "certs/server.crt", key = "certs/server.key",
                           env = { PORT_A = origin_a.plain_port },
                           args = { "--workers", "1", "--admin", "127.0.0.1:" .. admin_port, "--log-level", "info" } }
  end)
  lazy_teardown(function()
    if proxy then server.stop_and_check(proxy, origin_a) elseif origin_a then origin_a:stop() end
  end)

  local function via(name)
    return proxy:request { plain = true, path = "/" .. name, timeout = 10 }
  end

  it("a connect failure on one address of a server goes on to its next address, within the same try", function()
    if not wrapper then return pending("unshare -rm is not available: cannot give edge its own /etc/hosts") end
    for _ = 1, 5 do
      local res = via("multi")
      assert.are.equal(200, res.status, res.body)
      assert.truthy(res.body:match("^A GET multi /x$"), res.body)
    end
    local m = admin.scrape(admin_port)
    -- one try per request (retries.tries = 1), yet each went on past the dead address
    assert.is_true(admin.value(m, 'edge_upstream_connect_failures_total{upstream="multi"}') >= 1,
      "127.0.0.2 was never tried first:\n" .. proxy:log_tail())
    assert.are.equal(5, admin.value(m, 'edge_upstream_requests_total{upstream="multi",code="2xx"}'))
    assert.are.equal(0, admin.value(m, 'edge_upstream_requests_total{upstream="multi",code="error"}'))
  end)

  it("dns.valid keeps an upstream's answer that long, whatever the TTL; without it the TTL applies", function()
    if not wrapper then return pending("unshare -rm is not available: cannot give edge its own /etc/hosts") end
    local t0 = util.now()
    assert.are.equal(200, via("kept").status)
    assert.are.equal(200, via("ttl").status)
    -- both names move to an address where nothing listens
    util.write_file(hosts, HOSTS .. "127.0.0.2 kept.edge.test\n127.0.0.2 ttl.edge.test\n")
    util.sleep(2.2 - (util.now() - t0))
    local ttl = via("ttl")
    assert.are.equal(502, ttl.status, "ttl.edge.test still used its 1 s answer after 2 s")
    assert.truthy(ttl.body:find("127.0.0.2:", 1, true), ttl.body)
    local kept = via("kept")
    assert.is_true(util.now() - t0 < 3.5, "too slow to test within dns.valid")
    assert.are.equal(200, kept.status, "dns.valid = 4 did not keep the answer: " .. kept.body)
    local moved_at
    assert.truthy(util.wait_until(function()
      if via("kept").status == 502 then moved_at = util.now() return true end
    end, 8, 0.2), "kept.edge.test never moved to its new address")
    assert.is_true(moved_at - t0 >= 3.9 and moved_at - t0 < 6, "moved after " .. (moved_at - t0) .. " s")
  end)
end)
