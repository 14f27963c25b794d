-- Packaging for a real host (issue 10.9): readiness through $NOTIFY_SOCKET
-- (src/sd_notify.c), the systemd unit (scripts/edge.service, checked with
-- systemd-analyze verify) and the logrotate snippet (scripts/edge.logrotate,
-- run by logrotate against a live edge).
local server = require "edge.testing.server"
local util = require "support.util"
local unix = require "socket.unix"

--- A bound datagram socket at a fresh path: what systemd listens on.
local function notify_socket()
  local path = util.tmpdir("notify") .. "/notify.sock"
  local s = assert(unix.dgram())
  assert(s:bind(path))
  return s, path
end

--- The next datagram within `timeout` seconds, or nil.
local function receive(s, timeout)
  s:settimeout(timeout)
  local msg = s:receive()
  return msg
end

describe("sd_notify #e2e", function()
  it("sends READY=1 once every worker listens, and STOPPING=1 when it drains", function()
    local s, path = notify_socket()
    local srv = server.start { script = "lua/default.lua", workers = 2, env = { NOTIFY_SOCKET = path } }
    assert.are.equal("READY=1", receive(s, 5))
    assert.are.equal(200, srv:get("/").status)
    assert.is_nil(receive(s, 0.2), "a second message before the stop")
    server.stop_and_check(srv)
    assert.are.equal("STOPPING=1", receive(s, 5))
    s:close()
  end)

  it("only warns about a NOTIFY_SOCKET that is not a socket address, and serves", function()
    local srv = server.start { script = "lua/default.lua", env = { NOTIFY_SOCKET = "relative/path" } }
    assert.are.equal(200, srv:get("/").status)
    assert.truthy(srv:wait_log("sd_notify: NOTIFY_SOCKET=relative/path is not a socket address", 2),
      srv:log_tail())
    server.stop_and_check(srv)
  end)

  it("only warns when nothing listens on NOTIFY_SOCKET", function()
    local path = util.tmpdir("notify") .. "/nobody.sock"
    local srv = server.start { script = "lua/default.lua", env = { NOTIFY_SOCKET = path } }
    assert.are.equal(200, srv:get("/").status)
    assert.truthy(srv:wait_log("sd_notify: sending READY=1 to [^\n]*nobody.sock", 2), srv:log_tail())
    server.stop_and_check(srv)
  end)
end)

describe("scripts/edge.service", function()
  local unit = assert(util.read_file("scripts/edge.service"))

  it("reloads with SIGHUP, stops with SIGTERM after the drain, is notify-ready, raises LimitNOFILE", function()
    assert.matches("\nType=notify\n", unit)
    assert.matches("\nExecReload=/bin/kill %-HUP %$MAINPID\n", unit)
    assert.matches("\nKillSignal=SIGTERM\n", unit)
    local drain = tonumber(unit:match("%-%-drain%-timeout (%d+)"))
    local stop = tonumber(unit:match("\nTimeoutStopSec=(%d+)\n"))
    assert.is_true(drain ~= nil and stop ~= nil and stop > drain,
      "TimeoutStopSec " .. tostring(stop) .. " must exceed --drain-timeout " .. tostring(drain))
    assert.is_true(tonumber(unit:match("\nLimitNOFILE=(%d+)\n")) >= 25000 + 1024)
  end)

  it("passes systemd-analyze verify once installed", function()
    if util.run({ "sh", "-c", "command -v systemd-analyze" }) ~= 0 then
      pending("systemd-analyze is not installed (Debian package systemd): unit not verified")
      return
    end
    -- Installed under a real PREFIX (no DESTDIR), so the paths in the unit exist.
    local prefix = util.tmpdir("unit")
    local code, out, err = util.run({ "make", "--no-print-directory", "install", "PREFIX=" .. prefix,
      "LOGROTATEDIR=" .. prefix .. "/etc/logrotate.d" }, { timeout = 300 })
    assert(code == 0, "make install failed:\n" .. out .. err)
    local installed = prefix .. "/lib/systemd/system/edge.service"
    assert.truthy(util.read_file(installed):find("ExecStart=" .. prefix .. "/bin/edge -s "
      .. prefix .. "/share/edge/default.lua", 1, true))
    assert.truthy(util.exists(prefix .. "/etc/logrotate.d/edge"))
    code, out, err = util.run({ "env", "MANPATH=" .. prefix .. "/share/man", "SYSTEMD_LOG_COLOR=0",
      "systemd-analyze", "verify", installed }, { timeout = 60 })
    assert.are.equal(0, code, out .. err)
    assert.are.equal("", out .. err, "systemd-analyze verify warned")
  end)
end)

describe("scripts/edge.logrotate #e2e", function()
  it("rotates the access log and makes edge reopen it with SIGUSR1", function()
    local snippet = assert(util.read_file("scripts/edge.logrotate"))
    assert.matches("%-%-signal=SIGUSR1", snippet)
    assert.truthy(snippet:find("/var/log/edge/*.log", 1, true))
    if util.run({ "sh", "-c", "command -v logrotate" }) ~= 0 then
      pending("logrotate is not installed (Debian package logrotate): snippet not run")
      return
    end
    local dir = util.tmpdir("logrotate")
    local srv = server.start { script = "lua/default.lua", args = { "--access-log", dir .. "/access.log" } }
    assert.are.equal(200, srv:get("/before").status)
    local deadline = util.now() + 5   -- access-log lines are flushed at least once a second
    while not (util.read_file(dir .. "/access.log") or ""):find("/before", 1, true) and util.now() < deadline do
      util.sleep(0.05)
    end
    -- The snippet as installed, pointed at this log and this edge: systemctl
    -- kill --kill-who=main edge.service is kill -USR1 on its main PID.
    local conf = snippet:gsub("/var/log/edge/", dir .. "/")
      :gsub("systemctl kill %-%-signal=SIGUSR1 %-%-kill%-who=main edge%.service", "kill -USR1 " .. srv.pid)
    assert.truthy(conf:find("kill -USR1 " .. srv.pid, 1, true), conf)
    util.write_file(dir .. "/logrotate.conf", conf)
    local code, out, err = util.run({ "logrotate", "-f", "-s", dir .. "/state", dir .. "/logrotate.conf" })
    assert.are.equal(0, code, out .. err)
    assert.are.equal(200, srv:get("/after").status)
    deadline = util.now() + 5
    while not (util.read_file(dir .. "/access.log") or ""):find("/after", 1, true) and util.now() < deadline do
      util.sleep(0.05)
    end
    local old, new = util.read_file(dir .. "/access.log.1") or "", util.read_file(dir .. "/access.log") or ""
    assert.truthy(old:find("/before", 1, true), "rotated file: " .. old)
    assert.is_nil(old:find("/after", 1, true), "edge kept writing the rotated file")
    assert.truthy(new:find("/after", 1, true), "new file: " .. new)
    server.stop_and_check(srv)
  end)
end)
