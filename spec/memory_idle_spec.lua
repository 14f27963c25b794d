-- Idle keep-alive connections give back their buffers (conn.c's
-- edge_conn_trim, run by each worker every second on connections that received
-- nothing since the previous sweep), and come back to life when a request
-- arrives. And what an idle TLS connection costs, measured with
-- build/test/idle_tls (spec/c/idle_tls.c: thousands of TLS 1.3 connections,
-- one request each, then held open).
local server = require "support.server"
local proc = require "support.proc"
local util = require "support.util"

local IDLE_TLS = "build/test/idle_tls"

local function rss_kib(pid)
  local s = util.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+) kB"))
end

local function is_asan(bin)
  return os.execute("grep -qa __asan_init " .. util.q(bin)) == true
end

--- Two requests on one connection, `gap` seconds apart (curl --rate):
-- returns curl's exit code and one "status num_connects" line per transfer.
local function two_requests(srv, gap, proto)
  local url = srv:url("/")
  local code, out = util.run({ "curl", "-sk", proto, "--max-time", tostring(gap + 10),
                               "--rate", string.format("%d/h", math.floor(3600 / gap)),
                               "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n", url, url },
                             { timeout = gap + 15 })
  return code, out
end

describe("idle connections give back their buffers #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua" } end)
  lazy_teardown(function() if srv then srv:stop_and_check() end end)

  for _, proto in ipairs { "--http1.1", "--http2" } do
    it("a connection idle past two sweeps answers its next request (" .. proto .. ")", function()
      local code, out = two_requests(srv, 5, proto)
      assert.are.equal(0, code, out)
      -- The second transfer reused the connection (0 new connects) after
      -- 5 s idle: the sweep (every second) had trimmed it in between.
      assert.are.equal("200 1\n200 0\n", out)
    end)
  end
end)

describe("memory per idle TLS connection #e2e", function()
  local N = 2000
  local srv

  lazy_setup(function()
    srv = server.start { script = "lua/default.lua", nofile = N + 200, args = { "--access-log", "off" } }
  end)
  lazy_teardown(function() if srv then srv:stop_and_check() end end)

  it("2000 idle HTTP/1.1 connections (one request each) cost at most 20 KiB each", function()
    assert.is_true(util.exists(IDLE_TLS), IDLE_TLS .. " is missing: make idle-tls")
    -- Warm: the worker's first connections allocate what every later one shares.
    local warm = proc.spawn({ IDLE_TLS, tostring(srv.port), "20", "h1", "0" }, { timeout = 20 })
    assert.are.equal(0, warm:wait(20), warm:stderr())
    util.sleep(0.3)
    local before = rss_kib(srv.pid)
    local p = proc.spawn({ "sh", "-c", string.format("ulimit -n %d && exec %s %d %d h1 60", N + 100,
                                                     IDLE_TLS, srv.port, N) }, { timeout = 90 })
    local opened = util.wait_until(function() return p:stdout():find("open " .. N, 1, true) or not p:running() end, 60)
    assert.is_truthy(opened and p:running(), "idle_tls: " .. p:stdout() .. p:stderr())
    util.sleep(4.5)                                 -- two sweeps: every connection trimmed
    local after = rss_kib(srv.pid)
    p:kill()
    local per = (after - before) / N
    print(string.format("\n  idle TLS connections: %d open, RSS %d -> %d KiB: %.1f KiB each%s",
                        N, before, after, per, is_asan(srv.bin) and " (ASan build: not checked)" or ""))
    if is_asan(srv.bin) then return end    -- redzones and quarantine: RSS measures the sanitizer
    -- OpenSSL's own state is about 13.7 KiB of this (SSL_new alone 7.5 KiB):
    -- see README, "Memory".
    assert.is_true(per <= 20, string.format("%.1f KiB per idle connection", per))
  end)
end)
