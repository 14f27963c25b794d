-- WebSocket pass-through with edge.proxy (issue 12, point 5): an HTTP/1.1
-- Upgrade request goes to the origin with its Upgrade/Connection; on 101 edge
-- relays bytes both ways until either side closes or the tunnel is idle.
-- Origins: websocketd (Debian) running cat / head -n 1, a small
-- python3-websockets origin (spec/support/ws_origin.py) for pushing and
-- dropping, and nginx for a non-101 answer. Client: spec/support/ws_client.py
-- (python3-websockets, wss:// to edge with the dev cert unverified).
local server = require "support.server"
local origin = require "support.origin"
local proc = require "support.proc"
local util = require "support.util"
local socket = require "socket"

local PY = "/usr/bin/python3"    -- Debian's: python3-websockets is installed for it

local function wait_port(port, p)
  return util.wait_until(function()
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    return ok or not p:running()
  end, 10) and p:running()
end

local function websocketd(cmd)
  local port = util.free_port()
  local argv = { "websocketd", "--port=" .. port, "--address=127.0.0.1", "--loglevel=error" }
  for _, a in ipairs(cmd) do argv[#argv + 1] = a end
  local p = proc.spawn(argv, { timeout = 600 })
  assert(wait_port(port, p), "websocketd did not start: " .. p:stderr())
  return { port = port, proc = p }
end

-- Every thread's children (websocketd is a Go program: any of its threads forks).
local function children(pid)
  local f = assert(io.popen(("cat /proc/%d/task/*/children 2>/dev/null"):format(pid)))
  local s = f:read("a") or ""
  f:close()
  local out = {}
  for n in s:gmatch("%d+") do out[#out + 1] = tonumber(n) end
  return out
end

-- websocketd runs its command once per WebSocket: the number of those
-- running is the number of connections the origin has open.
local function sessions(wsd)
  local pid = children(wsd.proc.pid)[1]      -- proc.spawn's timeout(1) -> websocketd
  return pid and #children(pid) or -1
end

-- Runs ws_client.py to completion; returns its exit code and output.
local function client(srv, path, actions, timeout)
  local argv = { PY, "spec/support/ws_client.py", ("wss://127.0.0.1:%d%s"):format(srv.port, path) }
  for _, a in ipairs(actions) do argv[#argv + 1] = a end
  return util.run(argv, { timeout = timeout or 30 })
end

-- Starts ws_client.py in the background.
local function client_bg(srv, path, actions)
  local argv = { PY, "spec/support/ws_client.py", ("wss://127.0.0.1:%d%s"):format(srv.port, path) }
  for _, a in ipairs(actions) do argv[#argv + 1] = a end
  return proc.spawn(argv, { timeout = 60 })
end

local function start_edge(env, args)
  return server.start { script = "spec/fixtures/ws_proxy.lua", env = env, args = args }
end

describe("WebSocket pass-through #e2e", function()
  local echo, once, tls, py, ngx, srv, access_log, env

  lazy_setup(function()
    echo = websocketd({ "cat" })
    once = websocketd({ "head", "-n", "1" })
    local cwd = os.getenv("PWD")
    tls = websocketd({ "--ssl", "--sslcert=" .. cwd .. "/certs/server.crt", "--sslkey=" .. cwd .. "/certs/server.key", "cat" })
    py = { port = util.free_port() }
    py.proc = proc.spawn({ PY, "spec/support/ws_origin.py", tostring(py.port) }, { timeout = 600 })
    assert(wait_port(py.port, py.proc), "ws_origin.py did not start: " .. py.proc:stderr())
    ngx = origin.nginx()
    env = { WS_ECHO = "127.0.0.1:" .. echo.port, WS_ONCE = "127.0.0.1:" .. once.port,
            WS_PY = "127.0.0.1:" .. py.port, WS_NGINX = "127.0.0.1:" .. ngx.port,
            WS_TLS = "127.0.0.1:" .. tls.port }
    access_log = util.tmpdir("wslog") .. "/access.log"
    srv = start_edge(env, { "--access-log", access_log, "--access-log-format", "json" })
  end)
  lazy_teardown(function()
    for _, o in ipairs({ echo, once, tls, py }) do if o then o.proc:kill() end end
    if ngx then ngx:stop() end
    if srv then srv:stop_and_check() end
  end)

  it("relays messages both ways, one of 1 MiB, then closes cleanly", function()
    local rc, out = client(srv, "/ws", { "echo:hello", "big:1048576", "echo:after the big one", "close" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
    assert.truthy(out:find("ok big 1048576 -> 1048576 bytes, equal=True", 1, true), out)
    -- the origin's connection ended with the client's
    assert.truthy(util.wait_until(function() return sessions(echo) == 0 end, 5), "websocketd sessions left")
  end)

  it("relays to an origin over TLS (wss) and to a named upstream", function()
    local rc, out = client(srv, "/ws-tls", { "echo:over tls", "big:1048576", "echo:after", "close" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
    assert.truthy(util.wait_until(function() return sessions(tls) == 0 end, 5), "websocketd (TLS) sessions left")
    rc, out = client(srv, "/ws-named", { "echo:named", "close" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
  end)

  it("closes the client when the origin closes (close handshake, then FIN)", function()
    local rc, out = client(srv, "/ws-once", { "echo:only one", "expect-close:3" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
  end)

  it("closes the client when the origin drops the TCP connection", function()
    local rc, out = client(srv, "/drop?after=0.3", { "expect-close:3" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
    assert.truthy(out:find("code 1006", 1, true), out)   -- no close frame: a dropped connection
  end)

  it("closes the origin when the client drops the TCP connection", function()
    assert.truthy(util.wait_until(function() return sessions(echo) == 0 end, 5), "sessions of earlier tests left")
    local p = client_bg(srv, "/ws", { "echo:x", "hold:1", "abort", "hold:2" })
    assert.truthy(util.wait_until(function() return p:stdout():find("ok echo", 1, true) end, 10), p:stdout())
    assert.are.equal(1, sessions(echo))
    assert.truthy(util.wait_until(function() return p:stdout():find("aborted", 1, true) end, 10), p:stdout())
    -- no close frame reached websocketd: only the TCP close, passed on by edge
    assert.truthy(util.wait_until(function() return sessions(echo) == 0 end, 3),
      "the origin connection outlived the client's")
    p:wait(10)
    -- and the next WebSocket works
    local rc, out = client(srv, "/ws", { "echo:again", "close" })
    assert.are.equal(0, rc, out)
  end)

  it("passes a non-101 answer to an Upgrade request on as a normal response", function()
    local res = srv:request { path = "/nginx", headers = {
      connection = "Upgrade", upgrade = "websocket", ["sec-websocket-version"] = "13",
      ["sec-websocket-key"] = "dGhlIHNhbXBsZSBub25jZQ==" } }
    assert.are.equal(200, res.status, res.error or res.body)
    assert.truthy(res.body:find("^GET /echo"), res.body)
    local rc, out = client(srv, "/nginx", { "close" })
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("status 200", 1, true), out)
  end)

  it("closes both sides after ws_idle_timeout without traffic", function()
    local rc, out = client(srv, "/ws-idle", { "echo:x", "expect-close:4" })
    assert.are.equal(0, rc, out .. srv:log_tail(20))
    local secs = tonumber(out:match("closed after ([%d.]+) s"))
    assert.truthy(secs and secs >= 0.7 and secs < 3, out)
    assert.truthy(util.wait_until(function() return sessions(echo) == 0 end, 3), "websocketd sessions left")
    -- traffic keeps it open past the timeout
    rc, out = client(srv, "/ws-idle", { "echo:1", "hold:0.6", "echo:2", "hold:0.6", "echo:3", "close" })
    assert.are.equal(0, rc, out)
  end)

  it("holds the origin back while the client does not read (memory stays bounded)", function()
    -- An edge of its own: under ASan, freed memory waits in a quarantine
    -- (256 MiB by default) that would hide what edge holds; 4 MiB here.
    local asan = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=4:thread_local_quarantine_size_kb=256"
    local own = start_edge({ WS_PY = env.WS_PY, ASAN_OPTIONS = asan })
    local ok, err = pcall(function()
      local before = own:rss_kb()
      -- 64 MiB pushed at once; the client reads nothing for 3 s
      local p = client_bg(own, "/push?n=64&size=1048576", { "drain:64:1048576:3", "close" })
      util.sleep(2.5)
      local during = own:rss_kb()
      local rc = p:wait(40)
      assert.are.equal(0, rc, p:stdout() .. p:stderr())
      -- socket buffers take some of it; edge holds at most ~256 KiB per tunnel
      assert.truthy(during - before < 12 * 1024,
        ("edge grew by %d KiB while the client did not read"):format(during - before))
    end)
    own:stop_and_check()
    assert(ok, err)
  end)

  it("writes the access log line when the tunnel ends", function()
    local rc, out = client(srv, "/ws?log=1", { "echo:x", "hold:1", "close" })
    assert.are.equal(0, rc, out)
    local line = util.wait_until(function()
      return (util.read_file(access_log) or ""):match('[^\n]*"path":"/ws%?log=1"[^\n]*')
    end, 5)
    assert.truthy(line, util.read_file(access_log))
    assert.truthy(line:find('"status":101', 1, true), line)
    assert.truthy(tonumber(line:match('"duration":([%d.]+)')) >= 1, line)
  end)
end)

describe("WebSocket pass-through with lua/proxy.lua #e2e", function()
  it("gives each of two WebSockets at once its own tunnel (GET has a cache key there)", function()
    local echo = websocketd({ "cat" })
    local srv = server.start { script = "lua/proxy.lua", env = { EDGE_ORIGIN = "127.0.0.1:" .. echo.port } }
    local ok, err = pcall(function()
      local a = client_bg(srv, "/chat", { "echo:a1", "hold:1", "echo:a2", "close" })
      local b = client_bg(srv, "/chat", { "echo:b1", "hold:1", "echo:b2", "close" })
      assert.truthy(util.wait_until(function() return sessions(echo) == 2 end, 10), "not two sessions")
      assert.are.equal(0, a:wait(10), a:stdout())
      assert.are.equal(0, b:wait(10), b:stdout())
      assert.truthy(b:stdout():find("ok echo 'b2'", 1, true), b:stdout())
    end)
    echo.proc:kill()
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

describe("WebSocket pass-through and SIGTERM #e2e", function()
  it("closes open tunnels at the drain timeout at the latest", function()
    local echo = websocketd({ "cat" })
    local srv = start_edge({ WS_ECHO = "127.0.0.1:" .. echo.port }, { "--drain-timeout", "1" })
    local ok, err = pcall(function()
      local p = client_bg(srv, "/ws", { "echo:x", "expect-close:5" })
      assert.truthy(util.wait_until(function() return p:stdout():find("ok echo", 1, true) end, 10), p:stdout())
      local t0 = util.now()
      srv:signal("TERM")
      assert.are.equal(0, p:wait(10), p:stdout())
      assert.truthy(srv:wait_exit(5), "edge did not exit")
      assert.truthy(util.now() - t0 < 4, "took " .. (util.now() - t0))
      assert.truthy(util.wait_until(function() return sessions(echo) == 0 end, 3), "websocketd sessions left")
    end)
    echo.proc:kill()
    local rc = srv:stop()
    assert(ok, err)
    assert.are.equal(0, rc, srv:log_tail(20))
    assert.falsy((srv:sanitizer_report()))
  end)
end)
