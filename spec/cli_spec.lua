-- End-to-end specs for the command line, start-up failures, listeners and
-- signals of the real binary ($EDGE_BIN).
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local socket = require "socket"

local EDGE = util.edge_bin()

--- Runs edge with the given arguments (bounded: 10 s).
local function edge(...)
  return util.run({ EDGE, ... }, { timeout = 10 })
end

--- Asserts a usage error: exit 2, exactly one line on stderr starting "edge: ".
local function assert_usage_error(...)
  local code, out, err = edge(...)
  local what = util.qall({ ... })
  assert.are.equal(2, code, what .. "\nstdout: " .. out .. "\nstderr: " .. err)
  local lines = util.lines(err)
  assert.are.equal(1, #lines, what .. ": expected one line on stderr, got:\n" .. err)
  assert.matches("^edge: ", lines[1], what)
  assert.is_true(#lines[1] > #"edge: " + 5, "message too short: " .. lines[1])
  return lines[1]
end

describe("CLI #e2e", function()
  it("-h and --help print usage on stdout and exit 0", function()
    for _, flag in ipairs { "-h", "--help" } do
      local code, out = edge(flag)
      assert.are.equal(0, code, flag)
      assert.matches("[Uu]sage", out, flag)
      for _, opt in ipairs { "--script", "--listen", "--cert", "--key", "--workers", "--test",
                             "--help", "--version", "--tls-min", "--lua-budget", "--log-level",
                             "--max-body" } do
        assert.truthy(out:find(opt, 1, true), flag .. " does not mention " .. opt)
      end
    end
  end)

  it("-V and --version print the version and exit 0", function()
    for _, flag in ipairs { "-V", "--version" } do
      local code, out = edge(flag)
      assert.are.equal(0, code, flag)
      assert.matches("edge", out, flag)
      assert.matches("%d+%.%d+", out, flag)
    end
  end)

  it("an unknown option exits 2 with one line on stderr", function()
    local line = assert_usage_error("--bogus-option", "-s", "lua/default.lua", "-t")
    assert.truthy(line:find("bogus", 1, true), line)
    assert_usage_error("-Z", "-s", "lua/default.lua", "-t")
  end)

  it("an option missing its argument exits 2", function()
    assert_usage_error("-t", "-s")
  end)

  it("no script exits 2", function()
    assert_usage_error("-t")
  end)

  it("bad values exit 2 with one line on stderr", function()
    local cases = {
      { "-w", "abc" }, { "-w", "0" }, { "-w", "-3" }, { "-w", "4x" },
      { "--workers", "" },
      { "--tls-min", "1.1" }, { "--log-level", "loud" },
      { "--lua-budget", "abc" }, { "--max-body", "lots" },
      { "--max-headers", "-1" }, { "--keepalive-timeout", "soon" },
    }
    for _, c in ipairs(cases) do
      -- -t so that a wrongly accepted value ends the run instead of serving.
      assert_usage_error("-t", "-s", "lua/default.lua", c[1], c[2])
    end
  end)

  it("bad -l values exit 2 with one line on stderr, when serving and with -t", function()
    for _, l in ipairs { "nonsense", "127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:http" } do
      assert_usage_error("-s", "lua/default.lua", "-l", l)
      assert_usage_error("-t", "-s", "lua/default.lua", "-l", l)
    end
  end)

  it("-w names the bad value in its message", function()
    local line = assert_usage_error("-t", "-s", "lua/default.lua", "-w", "abc")
    assert.truthy(line:find("abc", 1, true), line)
  end)

  it("-t with lua/default.lua exits 0 and says what it checked", function()
    local code, out, err = edge("-t", "-s", "lua/default.lua")
    local text = out .. err
    assert.are.equal(0, code, text)
    assert.truthy(text:find("lua/default.lua", 1, true), "does not name the script:\n" .. text)
    assert.truthy(text:find("server.crt", 1, true), "does not name the certificate:\n" .. text)
  end)

  it("-t with a script that does not compile exits 1 and gives file:line", function()
    local code, out, err = edge("-t", "-s", "spec/fixtures/bad_syntax.lua")
    assert.are.equal(1, code, out .. err)
    assert.truthy((out .. err):find("bad_syntax.lua:5:", 1, true), out .. err)
  end)

  it("-t with a script without respond exits 1 and mentions respond", function()
    local code, out, err = edge("-t", "-s", "spec/fixtures/no_respond.lua")
    assert.are.equal(1, code, out .. err)
    assert.truthy((out .. err):find("respond", 1, true), out .. err)
  end)

  it("-t with a missing script exits 1 and names it", function()
    local code, out, err = edge("-t", "-s", "spec/fixtures/does_not_exist.lua")
    assert.are.equal(1, code, out .. err)
    assert.truthy((out .. err):find("does_not_exist.lua", 1, true), out .. err)
  end)

  it("a missing certificate exits 1 and says to run make certs", function()
    for _, mode in ipairs { "-t", "serve" } do
      local args = { "-s", "lua/default.lua", "--cert", "/nonexistent/server.crt",
                     "-l", "127.0.0.1:" .. util.free_port() }
      if mode == "-t" then table.insert(args, 1, "-t") end
      local code, out, err = edge(table.unpack(args))
      assert.are.equal(1, code, mode .. ": " .. out .. err)
      assert.truthy(err:find("make certs", 1, true), mode .. ": no hint to run make certs:\n" .. err)
      assert.truthy(err:find("/nonexistent/server.crt", 1, true), mode .. ": does not name the file:\n" .. err)
    end
  end)

  it("a key that does not match the certificate exits 1", function()
    local dir = util.tmpdir("key")
    local key = dir .. "/other.key"
    local code = util.run { "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-out", key }
    assert.are.equal(0, code)
    local rc, out, err = edge("-t", "-s", "lua/default.lua", "--key", key)
    assert.are.equal(1, rc, out .. err)
  end)

  it("serving a script that does not compile exits 1 with file:line on stderr", function()
    local t0 = util.now()
    local code, out, err = edge("-s", "spec/fixtures/bad_syntax.lua", "-l", "127.0.0.1:" .. util.free_port(), "-w", "2")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("bad_syntax.lua:5:", 1, true), err)
    assert.is_true(util.now() - t0 < 5)
  end)

  it("serving a script without respond exits 1", function()
    local code, out, err = edge("-s", "spec/fixtures/no_respond.lua", "-l", "127.0.0.1:" .. util.free_port())
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("respond", 1, true), err)
  end)

  it("a port already in use exits 1 with a message", function()
    local holder = assert(socket.tcp4())
    assert(holder:bind("127.0.0.1", 0))
    assert(holder:listen(8))
    local _, port = holder:getsockname()
    local code, out, err = edge("-s", "lua/default.lua", "-l", "127.0.0.1:" .. port)
    holder:close()
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("cannot listen on 127.0.0.1:" .. port .. ": address already in use (another edge?)", 1, true),
      "message does not name the address and the cause:\n" .. err)
  end)
end)

describe("listeners and workers #e2e", function()
  it("serves on every -l address", function()
    local second = util.free_port()
    local srv = server.start { script = "lua/default.lua", args = { "-l", "127.0.0.1:" .. second } }
    local ok, err = pcall(function()
      for _, port in ipairs { srv.port, second } do
        local status, _, body = client.curl { "--http1.1", "https://127.0.0.1:" .. port .. "/" }
        assert.are.equal(200, status, "port " .. port)
        assert.are.equal("Hello from edge!", body)
      end
      assert.truthy(srv:log():find("listening on 127.0.0.1:" .. second, 1, true), srv:log())
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("serves with several workers (-w 2), every connection answered", function()
    local srv = server.start { script = "spec/fixtures/echo.lua", workers = 2 }
    local ok, err = pcall(function()
      for i = 1, 12 do
        local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
        assert(c:send(client.request { path = "/w" .. i }))
        local list = c:read_responses(1)
        c:close()
        assert.are.equal(200, list[1] and list[1].status, "request " .. i)
        assert.matches("worker_id=%d+\n", list[1].body)
      end
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)
end)

--- CPU seconds (user + system) a process has used, from /proc/PID/stat.
local function cpu_seconds(pid)
  local stat = util.read_file("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  -- After "pid (comm)": field 3 is state, so utime (14) and stime (15) are at 12 and 13.
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

describe("accept under file-descriptor exhaustion #e2e", function()
  it("backs off on EMFILE instead of spinning, and recovers when descriptors free up", function()
    local srv = server.start { script = "lua/default.lua", nofile = 64 }
    local ok, err = pcall(function()
      local held = {}
      for i = 1, 90 do
        local c = socket.tcp4()
        c:settimeout(2)
        assert(c:connect("127.0.0.1", srv.port))
        held[i] = c
      end
      util.sleep(0.3) -- let it hit EMFILE
      local p = io.popen("ls /proc/" .. srv.pid .. "/fd | wc -l")
      local fds = tonumber(p:read("a"))
      p:close()
      assert.is_true(fds >= 60, "the spec did not exhaust descriptors: " .. tostring(fds) .. " open")
      local cpu0, t0 = cpu_seconds(srv.pid), util.now()
      util.sleep(1)
      local used = cpu_seconds(srv.pid) - cpu0
      local wall = util.now() - t0
      for _, c in ipairs(held) do c:close() end
      assert.is_true(srv:running(), "edge died at EMFILE:\n" .. srv:log_tail())
      assert.is_true(used < 0.3 * wall, string.format("edge used %.2f s CPU in %.2f s while out of descriptors", used, wall))
      -- Descriptors come back: a new client is served within a few seconds.
      local status
      local deadline = util.now() + 5
      repeat
        status = client.curl { "--http1.1", "--max-time", "2", srv:url("/") }
        if status ~= 200 then util.sleep(0.2) end
      until status == 200 or util.now() > deadline
      assert.are.equal(200, status, "not serving again after descriptors were freed")
    end)
    server.stop_and_check(srv)
    assert(ok, err)
  end)
end)

describe("signals #e2e", function()
  it("SIGTERM lets an in-flight request finish with Connection: close, then exits 0", function()
    local srv = server.start { script = "spec/fixtures/sleepy.lua" }
    local ok, err = pcall(function()
      local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      assert(c:send(client.request { path = "/?s=0.6" }))
      util.sleep(0.15)
      srv:signal("TERM")
      local list = c:read_responses(1, { timeout = 5 })
      c:close()
      assert.are.equal(200, list[1] and list[1].status, "in-flight request lost at SIGTERM: " .. c.buf)
      assert.are.equal("close", (list[1].headers.connection or ""):lower())
      assert.are.equal(0, srv:wait_exit(5), srv:log_tail())
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("SIGTERM does not serve new connections while draining", function()
    local srv = server.start { script = "spec/fixtures/sleepy.lua" }
    local ok, err = pcall(function()
      local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
      assert(c:send(client.request { path = "/?s=1" }))
      util.sleep(0.15)
      srv:signal("TERM")
      util.sleep(0.15)
      local late = client.tls(srv.port, { alpn = "http/1.1", timeout = 2 })
      if late then
        late:send(client.request { path = "/?s=0" })
        local list = late:read_responses(1, { timeout = 2 })
        late:close()
        local served = list[1] ~= nil and list[1].status == 200
        assert.is_false(served, "a new connection was served after SIGTERM")
      end
      local list = c:read_responses(1, { timeout = 5 })
      c:close()
      assert.are.equal(200, list[1] and list[1].status)
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("SIGTERM closes idle keep-alive connections and exits 0 promptly", function()
    local srv = server.start { script = "lua/default.lua", workers = 2 }
    local ok, err = pcall(function()
      local conns = {}
      for i = 1, 4 do
        local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
        assert(c:send(client.request { path = "/" }))
        assert.are.equal(200, (c:read_responses(1)[1] or {}).status)
        conns[i] = c
      end
      local t0 = util.now()
      srv:signal("TERM")
      assert.are.equal(0, srv:wait_exit(5), "did not exit 0 within 5 s:\n" .. srv:log_tail())
      assert.is_true(util.now() - t0 < 3, "took " .. (util.now() - t0) .. " s")
      for _, c in ipairs(conns) do c:close() end
    end)
    srv:stop_and_check()
    assert(ok, err)
  end)

  it("SIGINT exits 0", function()
    local srv = server.start { script = "lua/default.lua" }
    srv:signal("INT")
    assert.are.equal(0, srv:wait_exit(5), srv:log_tail())
    srv:stop_and_check()
  end)
end)
