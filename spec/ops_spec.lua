-- End-to-end specs for running edge in production: reload under load
-- (SIGHUP while wrk runs), a broken script on reload, drain on SIGTERM,
-- timeouts (slowloris, body, keep-alive, send), limits (--max-connections,
-- --lua-memory), the access log (combined, JSON, off, SIGUSR1) and the
-- admin listener (/metrics checked by promtool, /healthz).
--
-- Every server is stopped by PID in teardown and must exit 0 with no
-- sanitizer report; every wait is bounded; only 127.0.0.1.
local socket = require "socket"
local ssl = require "ssl"
local cjson = require "cjson"
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local proc = require "support.proc"
local admin = require "support.admin"

local request = client.request

local OPS = "spec/fixtures/ops.lua"

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

--- Polls fn() every `step` s (default 0.05) for at most `timeout` s;
-- returns its first truthy value, or nil.
local wait_until = util.wait_until

--- Two distinct free ports.
local function two_ports()
  local a = util.free_port()
  for _ = 1, 20 do
    local b = util.free_port()
    if b ~= a then return a, b end
  end
  error("no second free port")
end

--- server.start with an admin listener on another free port: returns the
-- server and the admin port.
local function start_with_admin(opts)
  local port, aport = two_ports()
  opts.port = port
  local args = { "--admin", "127.0.0.1:" .. aport }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  opts.args = args
  local srv = server.start(opts)
  -- The admin listener opens just after the workers' listeners.
  local up = wait_until(function()
    local c = client.tcp(aport, 1)
    if c then c:close() return true end
  end, 5)
  if not up then
    srv:stop()
    error("the admin listener on 127.0.0.1:" .. aport .. " never accepted a connection:\n" .. srv:log_tail(), 2)
  end
  return srv, aport
end

--- One HTTP/1.1 request on a fresh TLS connection; returns the response
-- (or nil) and the raw bytes read.
local function fetch(port, path, opts)
  opts = opts or {}
  local c, err = client.tls(port, { alpn = "http/1.1" })
  assert(c, "TLS connect to the server failed: " .. tostring(err))
  assert(c:send(opts.raw or request { path = path, headers = opts.headers }))
  local list = c:read_responses(1, { timeout = opts.timeout or 5 })
  c:close()
  return list[1], c.buf
end

--- Sends one request on an open connection and reads its response.
local function exchange(c, path, timeout)
  c:reset()
  assert(c:send(request { path = path }))
  local list = c:read_responses(1, { timeout = timeout or 5 })
  return list[1]
end

--- "v1" / "v2" ... from an ops.lua body.
local function version_of(res)
  return res and res.status == 200 and res.body:match("^(v%d+) ") or nil
end

--- Writes a script through a rename, so a reload never reads half a file.
local function write_script(path, text)
  util.write_file(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

--- The ops fixture's text with VERSION set to `version`.
local ops_text = assert(util.read_file(OPS))
local function ops_version(version)
  local text, n = ops_text:gsub('local VERSION = "v1"', 'local VERSION = "' .. version .. '"')
  assert(n == 1, "ops.lua has no VERSION line")
  return text
end

--- The user+system CPU seconds the process has used so far.
local clk_tck
local function cpu_seconds(pid)
  if not clk_tck then
    local p = io.popen("getconf CLK_TCK")
    clk_tck = tonumber(p:read("a")) or 100
    p:close()
  end
  local stat = assert(util.read_file("/proc/" .. pid .. "/stat"), "no /proc/" .. pid .. "/stat")
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  -- Fields after "(comm) " start at field 3: utime is field 14, stime 15.
  return (tonumber(fields[12]) + tonumber(fields[13])) / clk_tck
end

--- Log lines containing a plain string.
local function log_lines(srv, needle)
  local out = {}
  for line in srv:log():gmatch("[^\n]+") do
    if line:find(needle, 1, true) then out[#out + 1] = line end
  end
  return out
end

--- Escapes Lua pattern magic characters.
local function pesc(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

--- Starts a TLS client handshake (TCP connect, lua-sec wrap) without
-- waiting for it; step_handshake drives it.
local function begin_tls(port)
  local tcp = socket.tcp4()
  tcp:settimeout(2)
  assert(tcp:connect("127.0.0.1", port))
  local conn = assert(ssl.wrap(tcp, { mode = "client", protocol = "tlsv1_3", verify = "none",
                                      options = "all", alpn = "http/1.1" }))
  return conn
end

--- Drives a handshake for at most `seconds`: true when it completed, false
-- and why when it did not.
local function step_handshake(conn, seconds)
  local deadline = util.now() + seconds
  repeat
    conn:settimeout(0.05)
    local ok, err = conn:dohandshake()
    if ok then return true end
    if err ~= "wantread" and err ~= "wantwrite" and err ~= "timeout" then return false, err end
    util.sleep(0.02)
  until util.now() >= deadline
  return false, "not complete after " .. seconds .. " s"
end

--- Reads one response from a raw lua-sec connection (bounded).
local function read_one(conn, timeout)
  local buf, deadline = "", util.now() + (timeout or 5)
  while util.now() < deadline do
    conn:settimeout(0.05)
    local data, err, partial = conn:receive(16384)
    local got = data or partial
    if got and #got > 0 then buf = buf .. got end
    local list = client.parse_responses(buf)
    if list[1] then return list[1] end
    if err and err ~= "timeout" and err ~= "wantread" then break end
  end
  return client.parse_responses(buf, { closed = true })[1]
end

--- Splits raw HTTP/2 bytes (server to client) into frames { type, flags,
-- stream, payload, error_code (GOAWAY) }.
local function h2_frames(buf)
  local out, pos = {}, 1
  while #buf - pos + 1 >= 9 do
    local len = buf:byte(pos) * 65536 + buf:byte(pos + 1) * 256 + buf:byte(pos + 2)
    if #buf - pos + 1 < 9 + len then break end
    local f = { type = buf:byte(pos + 3), flags = buf:byte(pos + 4),
                stream = string.unpack(">I4", buf, pos + 5) & 0x7fffffff,
                payload = buf:sub(pos + 9, pos + 8 + len) }
    if f.type == 7 and len >= 8 then f.error_code = string.unpack(">I4", f.payload, 5) end
    out[#out + 1] = f
    pos = pos + 9 + len
  end
  return out
end

---------------------------------------------------------------------------
-- 1. reload under load
---------------------------------------------------------------------------

describe("ops: SIGHUP reload under load #e2e", function()
  local srv, aport, script, wrk

  lazy_setup(function()
    script = util.tmpdir("reload") .. "/app.lua"
    write_script(script, ops_version("v1"))
    srv, aport = start_with_admin { script = script, workers = 2 }
  end)
  lazy_teardown(function()
    if wrk then wrk:kill() end
    server.stop_and_check(srv)
  end)

  it("wrk sees no failed request while the script is reloaded 10 times; the new script answers after", function()
    assert.are.equal("v1", version_of(fetch(srv.port, "/")))
    local before = admin.value(admin.scrape(aport), "edge_reloads_total")
    assert.are.equal(0, before)

    -- Reloads 1..10 write v1, v2, v1, ... v2: the last one is v2.
    wrk = proc.spawn({ "wrk", "-t1", "-c20", "-d6s", "--latency", srv:url("/") }, { timeout = 30 })
    util.sleep(0.5)   -- wrk has connected and is sending
    local t0 = util.now()
    for i = 1, 10 do
      write_script(script, ops_version(i % 2 == 0 and "v2" or "v1"))
      srv:signal("HUP")
      util.sleep(0.4)
    end
    local signalled_in = util.now() - t0
    local rc = wrk:wait(20)
    local out = wrk:stdout()
    assert.are.equal(0, rc, "wrk failed (exit " .. tostring(rc) .. "):\n" .. out .. wrk:stderr())
    assert.is_true(signalled_in < 5.5, "the 10 SIGHUPs took " .. signalled_in .. " s: not all inside wrk's 6 s")
    local n = tonumber(out:match("(%d+) requests in"))
    assert.truthy(n and n >= 100, "wrk made too few requests to mean anything:\n" .. out)
    assert.falsy(out:find("Non-2xx or 3xx responses", 1, true), "failed requests during reloads:\n" .. out)
    assert.falsy(out:find("Socket errors", 1, true), "socket errors during reloads:\n" .. out)

    -- Every worker answers with the last script (fresh connections land on
    -- either worker).
    for i = 1, 6 do
      local res = fetch(srv.port, "/after" .. i)
      assert.are.equal("v2", version_of(res), "request " .. i .. " after the reloads: " ..
        tostring(res and res.status) .. " " .. tostring(res and res.body))
    end

    assert.are.equal(10, #log_lines(srv, "SIGHUP: reloading"), srv:log_tail(60))
    local reloaded = log_lines(srv, " reloaded")
    local per_worker = {}
    for _, line in ipairs(reloaded) do
      local w = line:match("%d+#(%d+):")
      per_worker[w] = (per_worker[w] or 0) + 1
    end
    assert.truthy(per_worker["0"] and per_worker["1"], "not every worker logged a reload:\n" .. srv:log_tail(60))
    assert.is_true(#reloaded >= 10, #reloaded .. " 'reloaded' lines for 10 SIGHUPs x 2 workers:\n" .. srv:log_tail(60))
    assert.are.equal(0, #log_lines(srv, "reload failed"), srv:log_tail(60))
    -- One reload per SIGHUP, however many workers ran it.
    local after = admin.value(admin.scrape(aport), "edge_reloads_total")
    assert.are.equal(10, after - before, "edge_reloads_total does not count the 10 SIGHUPs")
  end)

  it("keeps the cache and open connections; a request in flight finishes on the old script", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    local miss = exchange(c, "/cached/keep")
    assert.are.equal("MISS", miss and miss.headers["x-cache"])
    local old = version_of(fetch(srv.port, "/"))
    assert.truthy(old, "no version before the reload")

    local sleeper = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(sleeper:send(request { path = "/sleep?s=1" }))
    util.sleep(0.2)   -- the sleep has started on the old VM

    local n0 = #log_lines(srv, " reloaded")
    write_script(script, ops_version("v7"))
    srv:signal("HUP")
    assert.truthy(wait_until(function() return #log_lines(srv, " reloaded") >= n0 + 2 end, 5),
      "both workers did not reload:\n" .. srv:log_tail())

    -- Same connection: the cached entry survived, the new script answers.
    local hit = exchange(c, "/cached/keep")
    assert.are.equal(200, hit and hit.status, "the keep-alive connection did not survive the reload")
    assert.are.equal("HIT", hit.headers["x-cache"], "the cache was dropped by the reload")
    assert.are.equal(miss.body, hit.body)
    assert.are.equal("v7", version_of(exchange(c, "/now")))
    c:close()

    local list = sleeper:read_responses(1, { timeout = 5 })
    sleeper:close()
    assert.are.equal(200, list[1] and list[1].status, "the request in flight during the reload failed")
    assert.are.equal(old .. " slept\n", list[1].body, "the request in flight did not finish on the old script")
  end)
end)

---------------------------------------------------------------------------
-- 2. a broken script on reload
---------------------------------------------------------------------------

describe("ops: a script that fails to load on SIGHUP #e2e", function()
  local srv, aport, script

  lazy_setup(function()
    script = util.tmpdir("broken") .. "/app.lua"
    write_script(script, ops_version("v1"))
    srv, aport = start_with_admin { script = script, workers = 2 }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("keeps serving the old script and says why; a fixed script is then loaded", function()
    assert.are.equal("v1", version_of(fetch(srv.port, "/")))
    -- spec/fixtures/bad_syntax.lua: luac reports line 5.
    write_script(script, assert(util.read_file("spec/fixtures/bad_syntax.lua")))
    srv:signal("HUP")
    assert.truthy(wait_until(function() return #log_lines(srv, "reload failed") >= 2 end, 5),
      "no 'reload failed' line from each worker:\n" .. srv:log_tail())
    for _, line in ipairs(log_lines(srv, "reload failed")) do
      assert.truthy(line:find("[error]", 1, true), line)
      assert.truthy(line:find("still serving the previous script", 1, true), line)
      assert.matches("app%.lua:5:", line)
    end
    assert.are.equal(0, #log_lines(srv, " reloaded"), srv:log_tail())

    for i = 1, 6 do
      local res = fetch(srv.port, "/still" .. i)
      assert.are.equal("v1", version_of(res), "after a failed reload: " ..
        tostring(res and res.status) .. " " .. tostring(res and res.body))
    end
    local m = admin.scrape(aport)
    -- One failed reload, though both workers failed it.
    assert.are.equal(1, admin.value(m, "edge_reload_failures_total"))
    assert.are.equal(1, admin.value(m, "edge_reloads_total"))

    -- An error at the top level of the script fails the reload too.
    write_script(script, "error('top-level boom')\n")
    srv:signal("HUP")
    assert.truthy(wait_until(function() return #log_lines(srv, "top-level boom") >= 2 end, 5), srv:log_tail())
    assert.are.equal("v1", version_of(fetch(srv.port, "/still")))

    write_script(script, ops_version("v2"))
    srv:signal("HUP")
    assert.truthy(wait_until(function() return #log_lines(srv, " reloaded") >= 2 end, 5),
      "the fixed script was not loaded:\n" .. srv:log_tail())
    for i = 1, 6 do
      assert.are.equal("v2", version_of(fetch(srv.port, "/fixed" .. i)))
    end
    m = admin.scrape(aport)
    assert.are.equal(3, admin.value(m, "edge_reloads_total"))
    assert.are.equal(2, admin.value(m, "edge_reload_failures_total"))
  end)
end)

---------------------------------------------------------------------------
-- 3. drain on SIGTERM
---------------------------------------------------------------------------

describe("ops: SIGTERM drains #e2e", function()
  local srv, aport, curl_h2, nghttp
  local bodyfile

  lazy_setup(function()
    srv, aport = start_with_admin { script = "spec/fixtures/sleepy.lua", workers = 2,
                                    args = { "--drain-timeout", "20" } }
  end)
  lazy_teardown(function()
    if curl_h2 then curl_h2:kill() end
    if nghttp then nghttp:kill() end
    server.stop_and_check(srv)
  end)

  it("finishes in-flight h1 and h2 requests with 200, refuses new connections, exits 0", function()
    -- An idle keep-alive connection: closed at once.
    local idle = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    local first = exchange(idle, "/?s=0")
    assert.are.equal(200, first and first.status)

    local busy = {}
    for i = 1, 4 do
      busy[i] = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      assert(busy[i]:send(request { path = "/h1-" .. i .. "?s=1" }))
    end
    bodyfile = util.tmpdir("drain") .. "/h2body"
    curl_h2 = proc.spawn({ "curl", "-sk", "--http2", "--max-time", "10", "-o", bodyfile,
                           "-w", "%{http_code} %{http_version}", srv:url("/h2?s=1") }, { timeout = 15 })
    nghttp = proc.spawn({ "nghttp", "-nv", srv:url("/nghttp?s=1") }, { timeout = 15 })
    local inflight = wait_until(function()
      local m = admin.scrape(aport)
      return m["edge_requests_in_flight"] == 6 and m
    end, 3)
    assert.truthy(inflight, "the 6 requests were never in flight together")

    local t0 = util.now()
    srv:signal("TERM")

    -- New connections are refused (the listeners are closed).
    local refused_after
    for _ = 1, 40 do
      local c = client.tcp(srv.port, 0.5)
      if not c then refused_after = util.now() - t0 break end
      c:close()
      util.sleep(0.025)
      if util.now() - t0 > 1 then break end
    end
    assert.truthy(refused_after, "connections still accepted 1 s after SIGTERM")
    assert.is_true(refused_after < 1, "refused only after " .. tostring(refused_after) .. " s")

    assert.is_true(idle:wait_closed(1), "an idle keep-alive connection was not closed by SIGTERM")
    idle:close()

    for i = 1, 4 do
      local list = busy[i]:read_responses(1, { timeout = 5 })
      local r = list[1]
      assert.are.equal(200, r and r.status, "in-flight h1 request " .. i .. " did not complete: " .. busy[i].buf)
      assert.matches("path=/h1%-" .. i .. " ", r.body)
      assert.are.equal("close", r.headers["connection"], "no Connection: close while draining")
      assert.is_true(busy[i]:wait_closed(3), "connection " .. i .. " not closed after its response")
      busy[i]:close()
    end

    assert.are.equal(0, curl_h2:wait(8), "curl --http2: " .. curl_h2:stderr())
    assert.are.equal("200 2", curl_h2:stdout(), "the in-flight HTTP/2 stream did not complete")
    assert.matches("^slept path=/h2 ", util.read_file(bodyfile) or "")

    assert.are.equal(0, nghttp:wait(8), "nghttp:\n" .. nghttp:stdout() .. nghttp:stderr())
    local trace = nghttp:stdout()
    assert.truthy(trace:find("recv GOAWAY frame", 1, true), "no GOAWAY sent on SIGTERM:\n" .. trace)
    assert.truthy(trace:find("error_code=NO_ERROR", 1, true), trace)
    assert.truthy(trace:find(":status: 200", 1, true), "the stream did not complete after GOAWAY:\n" .. trace)

    local rc = srv:wait_exit(8)
    local took = util.now() - t0
    assert.are.equal(0, rc, "exit code after draining\n" .. srv:log_tail())
    assert.is_true(took < 5, "exited " .. took .. " s after SIGTERM (1 s requests, --drain-timeout 20)")
    assert.truthy(srv:log():find("SIGTERM", 1, true))
  end)
end)

describe("ops: --drain-timeout closes stragglers #e2e", function()
  local srv, aport

  lazy_setup(function()
    srv, aport = start_with_admin { script = "spec/fixtures/sleepy.lua", workers = 1,
                                    args = { "--drain-timeout", "1" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("exits 0 about --drain-timeout after SIGTERM, closing a request that sleeps 5 s", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send(request { path = "/straggler?s=5" }))
    assert.truthy(wait_until(function()
      return admin.scrape(aport)["edge_requests_in_flight"] == 1
    end, 3), "the request never got in flight")
    local t0 = util.now()
    srv:signal("TERM")
    local rc = srv:wait_exit(6)
    local took = util.now() - t0
    assert.are.equal(0, rc, "exit code\n" .. srv:log_tail())
    assert.is_true(took > 0.8, "exited after " .. took .. " s: before --drain-timeout 1")
    assert.is_true(took < 3, "exited " .. took .. " s after SIGTERM with --drain-timeout 1")
    assert.is_true(c:wait_closed(1), "the straggler's connection is still open")
    assert.falsy(c.buf:find("HTTP/1.1 200", 1, true), "the straggler got a response: " .. c.buf)
    c:close()
    assert.truthy(srv:log():find("drain timeout", 1, true), srv:log_tail())
  end)
end)

---------------------------------------------------------------------------
-- 4. timeouts
---------------------------------------------------------------------------

describe("ops: timeouts #e2e", function()
  local srv, aport

  lazy_setup(function()
    srv, aport = start_with_admin { script = OPS, workers = 1,
      args = { "--header-timeout", "2", "--body-timeout", "1", "--keepalive-timeout", "1",
               "--send-timeout", "1", "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("closes a slowloris client within --header-timeout while another client is served", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    local t0 = util.now()
    assert(c:send("GET / HTTP/1.1\r\n"))
    local closed, served = false, 0
    for i = 1, 12 do   -- one header line every 0.5 s, for at most ~6 s
      local ok = c:send("X-Slow-" .. i .. ": 1\r\n")
      if not ok then closed = true break end
      local res = fetch(srv.port, "/meanwhile" .. i)
      assert.are.equal(200, res and res.status, "another client was not served while the slowloris trickled")
      served = served + 1
      local _, st = c:read_until(nil, math.max(0.05, 0.5 - (util.now() - t0 - (i - 1) * 0.5)))
      if st == "closed" then closed = true break end
    end
    local took = util.now() - t0
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.is_true(closed, "a client sending a header line every 0.5 s was never closed")
    assert.is_true(took >= 1.5, "closed after " .. took .. " s, before --header-timeout 2")
    assert.is_true(took < 3.5, "closed only after " .. took .. " s with --header-timeout 2")
    assert.is_true(served >= 2, "the other client was served only " .. served .. " times")
    if #list > 0 then assert.are.equal(408, list[1].status) end
  end)

  it("answers 408 to a client that stalls in its body past --body-timeout", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"))
    local t0 = util.now()
    local closed = c:wait_closed(4)
    local took = util.now() - t0
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.is_true(closed, "a stalled body was not cut off in 4 s")
    assert.is_true(took > 0.7 and took < 3, "closed after " .. took .. " s with --body-timeout 1")
    if #list > 0 then assert.are.equal(408, list[1].status) end
  end)

  it("closes an idle keep-alive connection after --keepalive-timeout", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    local res = exchange(c, "/ka")
    assert.are.equal(200, res and res.status)
    local t0 = util.now()
    local closed = c:wait_closed(4)
    local took = util.now() - t0
    c:close()
    assert.is_true(closed, "idle connection still open after 4 s with --keepalive-timeout 1")
    assert.is_true(took > 0.7 and took < 3, "closed after " .. took .. " s")
  end)

  it("sends GOAWAY to an idle HTTP/2 connection after --keepalive-timeout, and closes it", function()
    local c = assert(client.tls(srv.port, { alpn = "h2" }))
    assert.are.equal("h2", c:alpn())
    -- The client preface and an empty SETTINGS frame, then nothing.
    assert(c:send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" .. "\0\0\0\4\0\0\0\0\0"))
    local t0 = util.now()
    local closed = c:wait_closed(4)
    local took = util.now() - t0
    c:close()
    assert.is_true(closed, "idle HTTP/2 connection still open after 4 s with --keepalive-timeout 1")
    assert.is_true(took > 0.7 and took < 3, "closed after " .. took .. " s")
    local goaway
    for _, f in ipairs(h2_frames(c.buf)) do
      if f.type == 7 then goaway = f end
    end
    assert.truthy(goaway, "no GOAWAY frame before the close")
    assert.are.equal(0, goaway.error_code, "GOAWAY error code")
  end)

  it("closes a client that stops reading a 32 MiB response after --send-timeout; others are served", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send(request { path = "/big?mb=32" }))   -- and never read
    local line = srv:wait_log("[^\n]*client stopped reading[^\n]*", 8)
    assert.truthy(line, "no 'client stopped reading' line 8 s after a client stopped reading:\n" .. srv:log_tail())
    local gone = wait_until(function()
      return admin.scrape(aport)['edge_connections{protocol="http/1.1"}'] == 0
    end, 3)
    c:close()
    assert.truthy(gone, "the server still counts an open HTTP/1.1 connection")
    local res = fetch(srv.port, "/alive")
    assert.are.equal(200, res and res.status, "the server stopped serving")
  end)
end)

---------------------------------------------------------------------------
-- 5. limits
---------------------------------------------------------------------------

describe("ops: --max-connections #e2e", function()
  local srv
  local conns, sixth = {}, nil

  lazy_setup(function()
    srv = server.start { script = OPS, workers = 2, args = { "--max-connections", "5" } }
  end)
  lazy_teardown(function()
    for _, c in pairs(conns) do c:close() end
    if sixth then sixth:close() end
    server.stop_and_check(srv)
  end)

  it("pauses accepting at the limit without spinning, and resumes when connections close", function()
    util.sleep(0.2)   -- the readiness probe's connection is gone
    for i = 1, 5 do
      conns[i] = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      local res = exchange(conns[i], "/c" .. i)
      assert.are.equal(200, res and res.status, "connection " .. i .. " of 5 not served")
    end

    sixth = begin_tls(srv.port)   -- the kernel's backlog accepts the TCP connection
    local cpu0, t0 = cpu_seconds(srv.pid), util.now()
    local done, why = step_handshake(sixth, 1.0)
    local cpu = cpu_seconds(srv.pid) - cpu0
    local wall = util.now() - t0
    assert.is_false(done, "a 6th TLS handshake completed with --max-connections 5")
    assert.is_true(why:find("not complete", 1, true) ~= nil, "the 6th connection failed instead of waiting: " .. why)
    assert.is_true(cpu < 0.3, string.format("the server used %.2f s of CPU in %.2f s while paused: a busy loop", cpu, wall))
    assert.truthy(srv:log():find("--max-connections", 1, true), "no warning about the limit:\n" .. srv:log_tail())

    conns[1]:close()
    conns[2]:close()
    conns[1], conns[2] = nil, nil
    local ok, err = step_handshake(sixth, 3)
    assert.is_true(ok, "the 6th connection was not served after 2 closed: " .. tostring(err))
    assert(sixth:send(request { path = "/sixth" }))
    local res = read_one(sixth, 5)
    assert.are.equal(200, res and res.status)
    assert.matches("path=/sixth ", res.body)
  end)
end)

describe("ops: --lua-memory #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = OPS, workers = 1, args = { "--lua-memory", "32m" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("fails a hook that allocates ~200 MiB with 500 and a log line; the worker goes on", function()
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    local res = exchange(c, "/alloc", 10)
    assert.are.equal(500, res and res.status, "a 200 MiB allocation under --lua-memory 32m: " ..
      tostring(res and res.status) .. " " .. tostring(res and res.body))
    local line = srv:wait_log("[^\n]*%-%-lua%-memory[^\n]*", 2)
    assert.truthy(line, "no error-log line mentioning --lua-memory:\n" .. srv:log_tail())
    assert.truthy(line:find("[error]", 1, true), line)
    local next_res = exchange(c, "/next")
    assert.are.equal(200, next_res and next_res.status, "the next request on the same worker failed")
    assert.matches("path=/next ", next_res.body)
    c:close()
    -- Again, on a fresh connection: the memory was given back.
    res = fetch(srv.port, "/alloc", { timeout = 10 })
    assert.are.equal(500, res and res.status)
    res = fetch(srv.port, "/again")
    assert.are.equal(200, res and res.status)
  end)
end)

describe("ops: error log levels #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = OPS, workers = 1, args = { "--log-level", "warn" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("--log-level warn keeps errors, with the connection and request ids, and drops notices", function()
    local res = fetch(srv.port, "/raise")
    assert.are.equal(500, res and res.status)
    local line = srv:wait_log("[^\n]*ops boom[^\n]*", 2)
    assert.truthy(line, "no error line for the raising hook:\n" .. srv:log_tail())
    assert.matches("^%d%d%d%d/%d%d/%d%d %d%d:%d%d:%d%d %[error%] %d+#0: %*%d+ ", line)
    assert.matches("request %x+", line)
    srv:signal("HUP")   -- "SIGHUP: reloading" and "reloaded" are notices
    util.sleep(0.3)
    assert.are.equal(200, fetch(srv.port, "/").status)
    assert.are.equal(0, #log_lines(srv, "[notice]"), "notice lines with --log-level warn:\n" .. srv:log_tail())
    assert.are.equal(0, #log_lines(srv, "[info]"), srv:log_tail())
  end)
end)

---------------------------------------------------------------------------
-- 6. access log
---------------------------------------------------------------------------

--- Waits until the file has a line containing `needle` (plain); returns
-- the lines of the file then, and the seconds waited.
local function wait_line(path, needle, timeout)
  local t0 = util.now()
  local found = wait_until(function()
    local text = util.read_file(path)
    return text and text:find(needle, 1, true) and text
  end, timeout or 3)
  return found and util.lines(found), util.now() - t0
end

describe("ops: access log, combined #e2e", function()
  local srv, dir, logfile

  lazy_setup(function()
    dir = util.tmpdir("alog")
    logfile = dir .. "/access.log"
    srv = server.start { script = OPS, workers = 1, args = { "--access-log", logfile } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("writes nginx's combined line for a request, with what was sent", function()
    local ua, ref = "ops-spec-agent/1.0 (test)", "https://ref.example/from?x=1"
    local res = fetch(srv.port, nil, { raw = request { path = "/path?q=1",
      headers = { { "User-Agent", ua }, { "Referer", ref } } } })
    assert.are.equal(200, res and res.status)
    local lines, waited = wait_line(logfile, "/path?q=1", 3)
    assert.truthy(lines, "no access-log line 3 s after the request")
    assert.is_true(waited < 2.5, "the line was flushed only after " .. waited .. " s")
    assert.are.equal(1, #lines, "expected exactly one line:\n" .. table.concat(lines, "\n"))
    local pattern = '^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d %+0000%] "GET /path%?q=1 HTTP/1%.1" 200 (%d+) "'
      .. pesc(ref) .. '" "' .. pesc(ua) .. '"$'
    local bytes = lines[1]:match(pattern)
    assert.truthy(bytes, "not the combined line for the request:\n" .. lines[1])
    assert.are.equal(#res.body, tonumber(bytes))
    -- The date is today's (UTC), give or take a minute.
    local day = lines[1]:match("%[(%d%d/%a%a%a/%d%d%d%d)")
    local now = os.time()
    assert.truthy(day == os.date("!%d/%b/%Y", now) or day == os.date("!%d/%b/%Y", now - 60), lines[1])
  end)

  it("logs a 400 answered to malformed input", function()
    local _, raw = fetch(srv.port, nil, { raw = "GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n" })
    assert.matches("^HTTP/1%.1 400 ", raw)
    local lines = wait_line(logfile, '" 400 ', 3)
    assert.truthy(lines, "the 400 was not logged:\n" .. (util.read_file(logfile) or ""))
    local line
    for _, l in ipairs(lines) do if l:find('" 400 ', 1, true) then line = l end end
    assert.matches('^127%.0%.0%.1 %- %- %[[^%]]+%] "[^"]*" 400 %d+ "[^"]*" "[^"]*"$', line)
  end)

  it("reopens the file on SIGUSR1 after it was renamed", function()
    local res = fetch(srv.port, "/before-rotate")
    assert.are.equal(200, res and res.status)
    assert.truthy(wait_line(logfile, "/before-rotate", 3))
    local rotated = logfile .. ".1"
    assert(os.rename(logfile, rotated))
    res = fetch(srv.port, "/between")
    assert.are.equal(200, res and res.status)
    assert.truthy(wait_line(rotated, "/between", 3), "the renamed file no longer gets lines before SIGUSR1")
    assert.is_false(util.exists(logfile))

    srv:signal("USR1")
    assert.truthy(srv:wait_log("SIGUSR1", 3), srv:log_tail())
    assert.truthy(wait_until(function() return util.exists(logfile) end, 3),
      "no new file at the original path after SIGUSR1")
    res = fetch(srv.port, "/after-rotate")
    assert.are.equal(200, res and res.status)
    local lines = wait_line(logfile, "/after-rotate", 3)
    assert.truthy(lines, "the new file did not get the next request's line")
    assert.are.equal(1, #lines, table.concat(lines, "\n"))
    assert.falsy((util.read_file(rotated) or ""):find("/after-rotate", 1, true), "written to the old file too")
  end)
end)

describe("ops: access log, JSON #e2e", function()
  local srv, logfile

  lazy_setup(function()
    logfile = util.tmpdir("jlog") .. "/access.json"
    srv = server.start { script = OPS, workers = 1,
                         args = { "--access-log", logfile, "--access-log-format", "json" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("writes one JSON object per request with what was sent", function()
    local miss = fetch(srv.port, "/cached/j?q=1")
    local hit = fetch(srv.port, "/cached/j?q=1")
    assert.are.equal("MISS", miss and miss.headers["x-cache"])
    assert.are.equal("HIT", hit and hit.headers["x-cache"])
    local status, _, body, version = client.curl { "--http2", srv:url("/h2path?x=y") }
    assert.are.equal(200, status)
    assert.are.equal("2", version)

    local lines = wait_line(logfile, "/h2path", 3)
    assert.truthy(lines, "no JSON line for the HTTP/2 request:\n" .. (util.read_file(logfile) or ""))
    assert.are.equal(3, #lines, table.concat(lines, "\n"))
    local recs = {}
    for i, line in ipairs(lines) do
      local ok, rec = pcall(cjson.decode, line)
      assert.truthy(ok, "line " .. i .. " is not JSON: " .. line)
      recs[i] = rec
    end
    local t0 = os.time()
    local tz = os.time(os.date("!*t", t0)) - t0
    local expect = {
      { protocol = "HTTP/1.1", path = "/cached/j?q=1", cache = "MISS", body = miss.body },
      { protocol = "HTTP/1.1", path = "/cached/j?q=1", cache = "HIT", body = hit.body },
      { protocol = "HTTP/2", path = "/h2path?x=y", body = body },
    }
    for i, e in ipairs(expect) do
      local r = recs[i]
      local what = "line " .. i .. ": " .. lines[i]
      assert.are.equal(e.protocol, r.protocol, what)
      assert.are.equal("GET", r.method, what)
      assert.are.equal(e.path, r.path, what)
      assert.are.equal(200, r.status, what)
      assert.are.equal(#e.body, r.bytes, what)
      assert.are.equal("127.0.0.1", r.remote_addr, what)
      assert.are.equal("number", type(r.duration), what)
      assert.is_true(r.duration >= 0 and r.duration < 5, what)
      assert.are.equal("string", type(r.id), what)
      assert.matches("^%x+$", r.id, what)
      local y, mo, d, h, mi, s = r.time:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.%d%d%dZ$")
      assert.truthy(y, "time is not ISO 8601 UTC with milliseconds: " .. tostring(r.time))
      local epoch = os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(d),
                              hour = tonumber(h), min = tonumber(mi), sec = tonumber(s) } - tz
      assert.is_true(math.abs(epoch - t0) < 120, "time is not now: " .. r.time)
      if e.cache then assert.are.equal(e.cache, r.cache, what) end
      assert.are.equal("string", type(r.cache), what)
    end
    -- The id is the request's (the fixture puts req.id in the body).
    assert.are.equal(miss.body:match("id=(%x+)"), recs[1].id)
    assert.are.equal(body:match("id=(%x+)"), recs[3].id)
    assert.are_not.equal(recs[1].id, recs[2].id)
  end)
end)

describe("ops: --access-log off #e2e", function()
  local srv, control

  lazy_setup(function()
    srv = server.start { script = OPS, workers = 1, args = { "--access-log", "off" } }
    control = server.start { script = OPS, workers = 1 }   -- default: stdout
  end)
  lazy_teardown(function() server.stop_and_check(srv, control) end)

  it("writes nothing, where the default writes to stdout", function()
    for _, s in ipairs { srv, control } do
      for i = 1, 3 do
        local res = fetch(s.port, "/off" .. i)
        assert.are.equal(200, res and res.status)
      end
    end
    assert.truthy(wait_until(function() return control:stdout():find("/off3", 1, true) end, 3),
      "the default access log (stdout) got no line: the check below would mean nothing")
    util.sleep(1.5)   -- past the flush interval
    assert.are.equal("", srv:stdout(), "--access-log off wrote to stdout")
    assert.is_false(util.exists("off"), "--access-log off created a file named 'off'")
  end)
end)

---------------------------------------------------------------------------
-- 7. metrics and the admin listener
---------------------------------------------------------------------------

describe("ops: admin listener and metrics #e2e", function()
  local srv, aport

  lazy_setup(function()
    srv, aport = start_with_admin { script = OPS, workers = 2, plain = true,
                                    args = { "--max-requests", "2", "--lua-budget", "1000000" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function h1(path) return fetch(srv.port, path) end

  it("/healthz answers ok, an unknown path 404", function()
    local status, headers, body = admin.get(aport, "/healthz")
    assert.are.equal(200, status)
    assert.are.equal("ok\n", body)
    assert.matches("^text/plain", headers["content-type"])
    status = admin.get(aport, "/nope")
    assert.are.equal(404, status)
    local mstatus, mheaders = admin.get(aport, "/metrics")
    assert.are.equal(200, mstatus)
    assert.matches("^text/plain; version=0%.0%.4", mheaders["content-type"])
  end)

  it("answers HEAD without a body", function()
    local c = assert(client.tcp(aport))
    assert(c:send("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    c:read_all(3)
    c:close()
    local list = client.parse_responses(c.buf, { methods = { "HEAD" }, closed = true })
    assert.are.equal(200, list[1] and list[1].status, c.buf)
    assert.are.equal(c.buf:find("\r\n\r\n", 1, true) + 3, #c.buf,
      "bytes after the header block of a HEAD response: " .. string.format("%q", c.buf))
  end)

  it("serves a scrape while another admin client sends its request slowly", function()
    local slow = assert(client.tcp(aport))
    assert(slow:send("GET /metr"))
    local t0 = util.now()
    local status = admin.get(aport, "/healthz")
    assert.are.equal(200, status)
    assert.is_true(util.now() - t0 < 2, "a slow admin client held up another one")
    assert(slow:send("ics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    slow:read_all(3)
    slow:close()
    local list = client.parse_responses(slow.buf, { closed = true })
    assert.are.equal(200, list[1] and list[1].status)
    assert.truthy(list[1].body:find("edge_requests_total", 1, true))
  end)

  it("is plain HTTP on the given address only", function()
    local c, err = client.tls(aport, { timeout = 2 })
    if c then c:close() end
    assert.is_nil(c, "a TLS handshake succeeded on the admin port")
    assert.truthy(err)
    -- The listening socket is bound to 127.0.0.1 (0100007F), not a wildcard.
    -- /proc/net/tcp is not read atomically: on a busy machine a socket can be
    -- skipped, so read it a few times.
    local hexport = string.format(":%04X", aport)
    local found
    for _ = 1, 10 do
      found = {}
      for _, f in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
        for line in (util.read_file(f) or ""):gmatch("[^\n]+") do
          local laddr, state = line:match("^%s*%d+:%s+(%x+:%x+)%s+%x+:%x+%s+(%x%x)")
          if laddr and state == "0A" and laddr:sub(-5) == hexport then found[#found + 1] = laddr end
        end
      end
      if #found > 0 then break end
      util.sleep(0.05)
    end
    assert.are.same({ "0100007F" .. hexport }, found)
    -- And the TLS port is not the admin: /metrics there is the script's answer.
    local res = h1("/metrics")
    assert.are.equal(200, res and res.status)
    assert.falsy(res.body:find("edge_requests_total", 1, true))
  end)

  it("counts requests by protocol and status class, and their durations", function()
    local before = admin.scrape(aport)
    for i = 1, 3 do assert.are.equal(200, h1("/m" .. i).status) end
    local code, out = util.run({ "curl", "-sk", "--http2", "--max-time", "10", "-o", "/dev/null", "-o", "/dev/null",
      "-w", "%{http_code} %{http_version}\n", srv:url("/h2a"), srv:url("/h2b") }, { timeout = 15 })
    assert.are.equal(0, code)
    assert.are.equal("200 2\n200 2\n", out)
    local after = admin.scrape(aport)
    local function delta(key) return admin.value(after, key) - admin.value(before, key) end
    assert.are.equal(3, delta('edge_requests_total{protocol="http/1.1",status="2xx"}'))
    assert.are.equal(2, delta('edge_requests_total{protocol="h2",status="2xx"}'))
    assert.are.equal(0, delta('edge_requests_total{protocol="http/1.1",status="5xx"}'))
    assert.are.equal(5, delta("edge_request_duration_seconds_count"))
    assert.are.equal(5, delta('edge_request_duration_seconds_bucket{le="+Inf"}'))
    assert.is_true(delta("edge_request_duration_seconds_sum") >= 0)
    -- 3 fresh TLS connections for HTTP/1.1, 1 for curl's two streams.
    assert.are.equal(4, delta("edge_tls_handshakes_total"))
    -- The histogram is cumulative and ends at the count.
    local prev = 0
    for _, le in ipairs { "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "10", "+Inf" } do
      local v = admin.value(after, 'edge_request_duration_seconds_bucket{le="' .. le .. '"}')
      assert.is_true(v >= prev, "bucket le=" .. le .. " is below the previous one")
      prev = v
    end
    assert.are.equal(admin.value(after, "edge_request_duration_seconds_count"), prev)
  end)

  it("counts cache hits and misses", function()
    local before = admin.scrape(aport)
    local miss, hit = h1("/cached/metrics"), h1("/cached/metrics")
    assert.are.equal("MISS", miss.headers["x-cache"])
    assert.are.equal("HIT", hit.headers["x-cache"])
    local after = admin.scrape(aport)
    local function delta(key) return admin.value(after, key) - admin.value(before, key) end
    assert.are.equal(1, delta("edge_cache_misses_total"))
    assert.are.equal(1, delta("edge_cache_hits_total"))
    assert.are.equal(1, delta("edge_cache_entries"))
    assert.is_true(delta("edge_cache_bytes") >= #miss.body, "edge_cache_bytes did not grow by the entry")
    assert.are.equal(64 * 1024 * 1024, admin.value(after, "edge_cache_max_bytes"))
  end)

  it("counts Lua errors and budget kills (and their 500s)", function()
    local before = admin.scrape(aport)
    assert.are.equal(500, h1("/raise").status)
    local after = admin.scrape(aport)
    local function delta(key) return admin.value(after, key) - admin.value(before, key) end
    assert.are.equal(1, delta("edge_lua_errors_total"))
    assert.are.equal(0, delta("edge_lua_budget_kills_total"))
    assert.are.equal(1, delta('edge_requests_total{protocol="http/1.1",status="5xx"}'))
    before = after
    assert.are.equal(500, h1("/spin").status)
    after = admin.scrape(aport)
    assert.are.equal(1, delta("edge_lua_budget_kills_total"))
    assert.are.equal(1, delta("edge_lua_errors_total"))
  end)

  it("shows requests in flight, and counts the 503s past --max-requests", function()
    local before = admin.scrape(aport)
    local sleepers = {}
    for i = 1, 2 do
      sleepers[i] = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      assert(sleepers[i]:send(request { path = "/sleep?s=1" }))
    end
    local full = wait_until(function() return admin.scrape(aport)["edge_requests_in_flight"] == 2 end, 3)
    assert.truthy(full, "edge_requests_in_flight never showed the 2 sleeping requests")
    local over = h1("/over")
    assert.are.equal(503, over and over.status, "a 3rd request with --max-requests 2")
    assert.are.equal("1", over.headers["retry-after"])
    for i = 1, 2 do
      local list = sleepers[i]:read_responses(1, { timeout = 5 })
      sleepers[i]:close()
      assert.are.equal(200, list[1] and list[1].status)
    end
    local after = admin.scrape(aport)
    assert.are.equal(1, admin.value(after, "edge_requests_rejected_total") -
      admin.value(before, "edge_requests_rejected_total"))
    assert.are.equal(0, admin.value(after, "edge_requests_in_flight"))

    -- A client that leaves while its request sleeps: no longer in flight. It
    -- resets the connection (plain TCP, SO_LINGER 0): a FIN or close_notify
    -- alone is a half-close, whose request goes on (http1_framing_spec).
    local gone = assert(client.tcp(srv.plain_port))
    gone.conn:setoption("linger", { on = true, timeout = 0 })
    assert(gone:send(request { path = "/sleep?s=5" }))
    assert.truthy(wait_until(function() return admin.scrape(aport)["edge_requests_in_flight"] == 1 end, 3),
      "the sleeping request was never in flight")
    gone:close()
    assert.truthy(wait_until(function() return admin.scrape(aport)["edge_requests_in_flight"] == 0 end, 3),
      "edge_requests_in_flight still counts a request whose client left")
  end)

  it("counts TLS handshakes and handshake failures, and open connections", function()
    local before = admin.scrape(aport)
    local conns = {}
    for i = 1, 2 do
      conns[i] = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      assert.are.equal(200, exchange(conns[i], "/open" .. i).status)
    end
    local h2c = assert(client.tls(srv.port, { alpn = "h2" }))
    assert.are.equal("h2", h2c:alpn())
    local open = wait_until(function()
      local m = admin.scrape(aport)
      return m['edge_connections{protocol="http/1.1"}'] == 2 and m['edge_connections{protocol="h2"}'] == 1 and m
    end, 3)
    assert.truthy(open, "edge_connections does not show 2 HTTP/1.1 and 1 h2 connection")
    -- Not TLS at all: a failed handshake.
    local t = assert(client.tcp(srv.port))
    assert(t:send("hello, this is not TLS\r\n\r\n"))
    t:wait_closed(3)
    t:close()
    for _, c in ipairs(conns) do c:close() end
    h2c:close()
    local after = wait_until(function()
      local m = admin.scrape(aport)
      return m['edge_connections{protocol="http/1.1"}'] == 0 and m['edge_connections{protocol="h2"}'] == 0
        and m["edge_tls_handshake_failures_total"] > before["edge_tls_handshake_failures_total"] and m
    end, 3)
    assert.truthy(after, "connections not back to 0, or no handshake failure counted")
    assert.are.equal(3, after["edge_tls_handshakes_total"] - before["edge_tls_handshakes_total"])
    assert.are.equal(1, after["edge_tls_handshake_failures_total"] - before["edge_tls_handshake_failures_total"])
  end)

  it("serves text that promtool check metrics accepts, with every documented metric", function()
    local code = util.run({ "sh", "-c", "command -v promtool" })
    assert(code == 0, "promtool is missing: apt-get install -y prometheus (it provides promtool)")
    local _, text = admin.scrape(aport)
    local rc, out, err = util.run({ "promtool", "check", "metrics" }, { stdin = text, timeout = 20 })
    assert.are.equal(0, rc, "promtool check metrics failed:\n" .. out .. err .. "\n--- metrics ---\n" .. text)
    for _, name in ipairs { "edge_requests_total", "edge_request_duration_seconds", "edge_requests_in_flight",
        "edge_connections", "edge_tls_handshakes_total", "edge_tls_handshake_failures_total",
        "edge_cache_hits_total", "edge_cache_misses_total", "edge_cache_evictions_total", "edge_cache_bytes",
        "edge_cache_max_bytes", "edge_cache_entries", "edge_coalesced_waits_total",
        "edge_requests_rejected_total", "edge_lua_errors_total", "edge_lua_budget_kills_total",
        "edge_reloads_total", "edge_reload_failures_total", "edge_worker_reloads_total" } do
      assert.truthy(text:find("# TYPE " .. name .. " ", 1, true), "no # TYPE line for " .. name)
    end
  end)
end)
