-- End-to-end specs for what an operator trips on (issue 10 points 1, 2, 6;
-- issue 9 point 8, admin part): a port already in use, default paths that
-- do not depend on the working directory, `edge -t` checking what a start
-- checks, size suffixes, reload metrics that count reloads, and an admin
-- listener that never blocks on a scraper that stops reading.
--
-- Every process is started on 127.0.0.1, bounded in time and stopped by PID.
local socket = require "socket"
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local proc = require "support.proc"
local admin = require "support.admin"

local ECHO = "spec/fixtures/echo.lua"
local GREETING = "Hello from edge!"

--- The absolute path of p (relative to the spec's working directory).
local CWD = (function()
  local p = assert(io.popen("pwd"))
  local d = p:read("l")
  p:close()
  return d
end)()
local function abs(p)
  if p:sub(1, 1) == "/" then return p end
  return CWD .. "/" .. p:gsub("^%./", "")
end

local EDGE = abs(util.edge_bin())

--- Runs edge (bounded: 10 s) with the working directory `dir`.
local function edge_in(dir, bin, ...)
  local argv = { bin, ... }
  return util.run({ "sh", "-c", "cd " .. util.q(dir) .. " && exec " .. util.qall(argv) }, { timeout = 10 })
end

local wait_until = util.wait_until

--- Starts a second edge with argv (after the binary) in the background.
local function spawn_edge(...)
  return proc.spawn({ EDGE, ... }, { timeout = 20 })
end

--- The body of one HTTP/1.1 GET on a fresh connection (TLS, or cleartext
-- with plain = true).
local function body_of(srv, path, plain)
  local res = srv:get(path, { plain = plain, timeout = 5 })
  return res.status == 200 and res.body or ("status " .. res.status .. ": " .. tostring(res.error))
end

--- CPU seconds (user + system) a process has used, from /proc/PID/stat.
local function cpu_seconds(pid)
  local stat = util.read_file("/proc/" .. pid .. "/stat")
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

--- A copy of the edge binary at dir/rel (directories created).
local function copy_binary(dir, rel)
  local dest = dir .. "/" .. rel
  assert(os.execute("mkdir -p " .. util.q(dest:match("^(.*)/")) .. " && cp " .. util.q(EDGE) .. " " .. util.q(dest)))
  return dest
end

---------------------------------------------------------------------------
-- 10.1 a port in use is an error
---------------------------------------------------------------------------

describe("operability: an address already in use #e2e", function()
  --- Starts a second edge with args, waits (bounded) for it to exit, and
  -- asks `probe` meanwhile; returns its exit code (nil: still running, then
  -- killed), its stderr, and what probe returned.
  local function second_edge(args, probe)
    local p = spawn_edge(table.unpack(args))
    local code = p:wait(5)
    local seen = probe()
    if code == nil then p:kill("KILL") end
    return code, p:stderr(), seen
  end

  it("a second edge on the same TLS address exits 1 and the first keeps answering with its own script", function()
    local srv = server.start { script = ECHO }
    local ok, err = pcall(function()
      local addr = "127.0.0.1:" .. srv.port
      local code, stderr, bodies = second_edge({ "-s", "lua/default.lua", "-l", addr, "-w", "2" }, function()
        local list = {}
        for i = 1, 8 do list[i] = body_of(srv, "/first" .. i) end
        return list
      end)
      assert.are.equal(1, code, "the second edge did not exit 1:\n" .. stderr)
      assert.truthy(stderr:find("edge: cannot listen on " .. addr .. ": address already in use (another edge?)", 1, true),
        stderr)
      for i, b in ipairs(bodies) do
        assert.falsy(b:find(GREETING, 1, true), "request " .. i .. " reached the second edge's script")
        assert.matches("path=/first" .. i, b)
      end
      -- Reload does not rebind: SIGHUP still works on the first one.
      srv:signal("HUP")
      assert.truthy(srv:wait_log("reloaded", 5), srv:log_tail())
      assert.matches("path=/after", body_of(srv, "/after"))
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("a second edge on the same cleartext address exits 1 and the first keeps answering", function()
    local srv = server.start { script = ECHO, plain = true }
    local ok, err = pcall(function()
      local addr = "127.0.0.1:" .. srv.plain_port
      local code, stderr, bodies = second_edge({ "-s", "lua/default.lua", "--listen-plain", addr }, function()
        local list = {}
        for i = 1, 8 do list[i] = body_of(srv, "/plain" .. i, true) end
        return list
      end)
      assert.are.equal(1, code, "the second edge did not exit 1:\n" .. stderr)
      assert.truthy(stderr:find("edge: cannot listen on " .. addr .. ": address already in use (another edge?)", 1, true),
        stderr)
      for i, b in ipairs(bodies) do assert.matches("path=/plain" .. i, b) end
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("a second edge on the same admin address exits 1 naming the admin address; scrapes reach the first", function()
    local aport = util.free_port()
    local srv = server.start { script = ECHO, args = { "--admin", "127.0.0.1:" .. aport } }
    local ok, err = pcall(function()
      assert.truthy(wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5), srv:log_tail())
      assert.matches("path=/counted", body_of(srv, "/counted"))
      local addr = "127.0.0.1:" .. aport
      local code, stderr, counts = second_edge({ "-s", "lua/default.lua", "-l", "127.0.0.1:0", "--admin", addr },
        function()
          local list = {}
          for i = 1, 6 do
            local m = admin.scrape(aport)
            list[i] = m['edge_requests_total{protocol="http/1.1",status="2xx"}']
          end
          return list
        end)
      assert.are.equal(1, code, "the second edge did not exit 1:\n" .. stderr)
      assert.truthy(stderr:find("edge: cannot listen on admin address " .. addr ..
        ": address already in use (another edge?)", 1, true), stderr)
      for i, n in ipairs(counts) do
        assert.is_true(n >= 1, "scrape " .. i .. " was answered by another process (no requests counted)")
      end
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

---------------------------------------------------------------------------
-- 10.2 paths and edge -t
---------------------------------------------------------------------------

describe("operability: default paths do not depend on the working directory #e2e", function()
  it("edge run from another directory finds the certificate of its own repository", function()
    local elsewhere = util.tmpdir("elsewhere")
    local code, out, err = edge_in(elsewhere, EDGE, "-t", "-s", abs("lua/default.lua"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find(CWD .. "/certs/server.crt", 1, true), "does not name the repository's certificate:\n" .. out)

    -- And it serves from there.
    local port = util.free_port()
    local p = proc.spawn({ "sh", "-c", "cd " .. util.q(elsewhere) .. " && exec " ..
      util.qall { EDGE, "-s", abs("lua/default.lua"), "-l", "127.0.0.1:" .. port, "-w", "1" } }, { timeout = 20 })
    local ok, perr = pcall(function()
      local status, _, body = 0, nil, nil
      wait_until(function()
        status, _, body = client.curl { "--http1.1", "--max-time", "2", "https://127.0.0.1:" .. port .. "/" }
        return status == 200 or not p:running()
      end, 8)
      assert.are.equal(200, status, p:stderr())
      assert.are.equal(GREETING, body)
    end)
    assert.are.equal(0, p:kill("TERM"), p:stderr())
    assert(ok, perr)
  end)

  it("an installed PREFIX/bin/edge finds PREFIX/etc/edge/server.crt and server.key", function()
    local prefix = util.tmpdir("prefix")
    local bin = copy_binary(prefix, "bin/edge")
    assert(os.execute("mkdir -p " .. util.q(prefix .. "/etc/edge") .. " && cp certs/server.crt certs/server.key " ..
      util.q(prefix .. "/etc/edge/")))
    local code, out, err = edge_in("/", bin, "-t", "-s", abs("lua/default.lua"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find(prefix .. "/etc/edge/server.crt", 1, true), out)
    assert.truthy(out:find(prefix .. "/etc/edge/server.key", 1, true), out)
  end)

  it("without a default certificate the message names every path tried", function()
    if util.exists("/etc/edge/server.crt") then pending("this host has /etc/edge/server.crt") return end
    local dir = util.tmpdir("lonely")
    local bin = copy_binary(dir, "edge")
    for _, mode in ipairs { "-t", "serve" } do
      local args = { "-s", abs("lua/default.lua"), "-l", "127.0.0.1:0" }
      if mode == "-t" then table.insert(args, 1, "-t") end
      local code, out, err = edge_in(dir, bin, table.unpack(args))
      assert.are.equal(1, code, mode .. ": " .. out .. err)
      assert.truthy(err:find(dir .. "/certs/server.crt", 1, true), mode .. ": does not name the path beside the binary:\n" .. err)
      assert.truthy(err:find("/etc/edge/server.crt", 1, true), mode .. ": does not name /etc/edge:\n" .. err)
      assert.truthy(err:find("make certs", 1, true), err)
    end
  end)
end)

describe("operability: edge -t checks what a start checks #e2e", function()
  it("with only --listen-plain, -t needs no certificate", function()
    local dir = util.tmpdir("plain-only")
    local bin = copy_binary(dir, "edge")     -- no certificate anywhere near it
    local code, out, err = edge_in(dir, bin, "-t", "-s", abs("lua/default.lua"), "--listen-plain", "127.0.0.1:0")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("no certificate needed", 1, true), out)
  end)

  it("an access log that cannot be written fails -t and the start alike", function()
    local path = util.tmpdir("nolog") .. "/missing-dir/access.log"
    for _, mode in ipairs { "-t", "serve" } do
      local args = { "-s", "lua/default.lua", "-l", "127.0.0.1:0", "--access-log", path }
      if mode == "-t" then table.insert(args, 1, "-t") end
      local code, out, err = edge_in(CWD, EDGE, table.unpack(args))
      assert.are.equal(1, code, mode .. ": " .. out .. err)
      assert.truthy(err:find(path, 1, true), mode .. ": does not name the log:\n" .. err)
    end
  end)

  it("an address edge cannot bind (not local) fails -t and the start alike, the admin one named as such", function()
    -- 192.0.2.1 (TEST-NET-1) is no address of this host: bind says EADDRNOTAVAIL.
    local cases = {
      { args = { "-l", "192.0.2.1:8443" }, says = "cannot listen on 192.0.2.1:8443" },
      { args = { "--listen-plain", "192.0.2.1:8080" }, says = "cannot listen on 192.0.2.1:8080" },
      { args = { "-l", "127.0.0.1:0", "--admin", "192.0.2.1:9901" }, says = "cannot listen on admin address 192.0.2.1:9901" },
    }
    for _, c in ipairs(cases) do
      for _, mode in ipairs { "-t", "serve" } do
        local args = { "-s", "lua/default.lua" }
        if mode == "-t" then table.insert(args, 1, "-t") end
        for _, a in ipairs(c.args) do args[#args + 1] = a end
        local code, out, err = edge_in(CWD, EDGE, table.unpack(args))
        assert.are.equal(1, code, mode .. " " .. table.concat(c.args, " ") .. ": " .. out .. err)
        assert.truthy(err:find(c.says, 1, true), mode .. ": " .. err)
      end
    end
  end)

  it("-t passes while a running edge holds the same addresses (test before a reload)", function()
    local aport = util.free_port()
    local srv = server.start { script = "lua/default.lua", plain = true, args = { "--admin", "127.0.0.1:" .. aport } }
    local ok, err = pcall(function()
      assert.truthy(wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5))
      local code, out, e = edge_in(CWD, EDGE, "-t", "-s", "lua/default.lua", "-l", "127.0.0.1:" .. srv.port,
        "--listen-plain", "127.0.0.1:" .. srv.plain_port, "--admin", "127.0.0.1:" .. aport)
      assert.are.equal(0, code, out .. e)
      assert.truthy(out:find("configuration test is successful", 1, true), out)
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

---------------------------------------------------------------------------
-- 10.6 sizes and reload metrics
---------------------------------------------------------------------------

describe("operability: size options #e2e", function()
  local OPTIONS = {
    ["--max-body"] = { "1m", "1M", "512k", "0", "2g" },
    ["--cache-size"] = { "64m", "64M", "1g", "100000" },
    ["--lua-memory"] = { "8m", "8M", "65536k" },
    ["--max-request-line"] = { "8k", "8K", "1m", "100" },
    ["--max-header-size"] = { "16k", "16K", "1M" },
  }

  it("every option that takes a size accepts k, m and g suffixes in either case", function()
    for opt, values in pairs(OPTIONS) do
      for _, v in ipairs(values) do
        local code, out, err = edge_in(CWD, EDGE, "-t", "-s", "lua/default.lua", "-l", "127.0.0.1:0", opt, v)
        assert.are.equal(0, code, opt .. " " .. v .. ": " .. out .. err)
      end
    end
  end)

  it("bad sizes are usage errors: exit 2 with one line naming the option", function()
    for opt in pairs(OPTIONS) do
      for _, v in ipairs { "", "k", "1x", "1kb", "1kk", "-1k", " 1k", "+1k", "1.5m", "99999999g", "0x10" } do
        local code, out, err = edge_in(CWD, EDGE, "-t", "-s", "lua/default.lua", opt, v)
        assert.are.equal(2, code, opt .. " '" .. v .. "': " .. out .. err)
        local lines = util.lines(err)
        assert.are.equal(1, #lines, err)
        assert.truthy(lines[1]:find(opt, 1, true), lines[1])
      end
    end
  end)

  it("1k is 1024 bytes: --max-body 1k takes 1024 bytes and refuses 1025 with 413", function()
    local srv = server.start { script = "spec/fixtures/bodylen.lua", args = { "--max-body", "1k" } }
    local ok, err = pcall(function()
      local res = srv:post("/", string.rep("a", 1024))
      assert.are.equal(200, res.status, res.error)
      assert.matches("^len=1024 ", res.body)
      assert.are.equal(413, srv:post("/", string.rep("a", 1025)).status)
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

describe("operability: reload metrics count reloads #e2e", function()
  it("edge_reloads_total counts each SIGHUP once with 3 workers; failures once per failed reload", function()
    local dir = util.tmpdir("reloadcount")
    local script = dir .. "/app.lua"
    util.write_file(script, assert(util.read_file("lua/default.lua")))
    local aport = util.free_port()
    local srv = server.start { script = script, workers = 3, args = { "--admin", "127.0.0.1:" .. aport } }
    local ok, err = pcall(function()
      assert.truthy(wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5))
      local function reload(pattern, want)
        srv:signal("HUP")
        assert.truthy(wait_until(function() return util.count(srv:log(), pattern) >= want end, 5), srv:log_tail())
      end
      reload(" reloaded", 3)
      reload(" reloaded", 6)
      local m = admin.scrape(aport)
      assert.are.equal(2, admin.value(m, "edge_reloads_total"))
      assert.are.equal(0, admin.value(m, "edge_reload_failures_total"))
      for w = 0, 2 do
        assert.are.equal(2, admin.value(m, 'edge_worker_reloads_total{worker="' .. w .. '",result="ok"}'))
      end

      util.write_file(script, "error('broken on purpose')\n")
      reload("reload failed", 3)
      m = admin.scrape(aport)
      assert.are.equal(3, admin.value(m, "edge_reloads_total"))
      assert.are.equal(1, admin.value(m, "edge_reload_failures_total"))
      for w = 0, 2 do
        assert.are.equal(1, admin.value(m, 'edge_worker_reloads_total{worker="' .. w .. '",result="failed"}'))
      end
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

---------------------------------------------------------------------------
-- 9.8 the admin thread never blocks on a scraper
---------------------------------------------------------------------------

describe("operability: the admin listener and slow scrapers #e2e", function()
  local srv, aport
  lazy_setup(function()
    aport = util.free_port()
    srv = server.start { script = "lua/default.lua", args = { "--admin", "127.0.0.1:" .. aport } }
    assert.truthy(wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5), srv:log_tail())
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers several requests on one keep-alive connection, pipelined too", function()
    local c = assert(client.tcp(aport, 5))
    assert(c:send("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"))
    local list = c:read_responses(1)
    assert.are.equal(200, list[1] and list[1].status, c.buf)
    assert(c:send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n" ..
      "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    c.buf = ""
    list = c:read_responses(3, { methods = { "GET", "HEAD", "GET" } })
    assert.are.equal(3, #list, c.buf)
    assert.matches("edge_reloads_total", list[1].body)
    assert.are.equal("", list[2].body)
    assert.are.equal("ok\n", list[3].body)
    assert.is_true(c:wait_closed(3), "Connection: close did not close")
    c:close()
  end)

  it("a scraper that pipelines /metrics and never reads costs no CPU, others are served, and it is closed", function()
    local stuck = socket.tcp4()
    stuck:setoption("recv-buffer-size", 4096)
    stuck:settimeout(5)
    assert(stuck:connect("127.0.0.1", aport))
    stuck:settimeout(0)
    local req = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
    local burst = string.rep(req, 200)      -- 6.6 KB: fits the admin's request buffer
    local sent = 0
    for _ = 1, 50 do                        -- until the kernel's buffers are full
      local n, e, last = stuck:send(burst)
      sent = sent + (n or last or 0)
      if e then break end
    end
    assert.is_true(sent >= #burst, "could not even send one burst")
    util.sleep(0.3)                         -- the admin answers until it must wait

    local cpu0, t0 = cpu_seconds(srv.pid), util.now()
    for i = 1, 8 do
      local status, _, body = admin.get(aport, "/healthz")
      assert.are.equal(200, status, "scrape " .. i .. " was not served while a scraper was stuck")
      assert.are.equal("ok\n", body)
      util.sleep(0.2)
    end
    local used, wall = cpu_seconds(srv.pid) - cpu0, util.now() - t0
    assert.is_true(used < 0.25 * wall, string.format("edge used %.2f s CPU in %.2f s with a stuck scraper", used, wall))

    -- The send deadline (5 s) closes it: reading now ends in a reset or EOF.
    util.sleep(math.max(0, 5.5 - (util.now() - t0)))
    stuck:settimeout(3)
    local closed = false
    for _ = 1, 4000 do
      local _, e = stuck:receive(65536)
      if e == "closed" or (e and e:find("reset", 1, true)) then closed = true break end
      if e == "timeout" then break end
    end
    stuck:close()
    assert.is_true(closed, "the stuck scraper's connection was not closed by the send deadline")
    assert.are.equal(200, (admin.get(aport, "/healthz")))
  end)
end)
