-- Starts the real edge binary on an ephemeral loopback port for end-to-end
-- specs, and stops it by PID.
--
--   local server = require "support.server"
--   local srv = server.start{ script = "spec/fixtures/echo.lua",
--                             args = { "--lua-budget", "1000" }, workers = 1 }
--   srv.port, srv.pid, srv:url("/x"), srv:log(), srv:stop(), srv:sanitizer_report()
--   srv:stop_and_check()   -- in teardown: asserts exit code 0 and no sanitizer report
--   server.start{ ..., plain = true }   -- also a cleartext listener (--listen-plain):
--   srv.plain_port, srv:plain_url("/x")
--   srv:rss_kb()           -- the process's resident set size (VmRSS), in KiB
--
-- The binary is $EDGE_BIN (default ./edge). Its stderr (the error log) goes to
-- a temp file, its stdout to another; its exit code is captured by a wrapper
-- shell. Every wait is bounded.
local socket = require "socket"
local util = require "support.util"
local client = require "support.client"

local server = {}
server.curl = client.curl
server.tls = client.tls
server.util = util

local Server = {}
Server.__index = Server

local START_TIMEOUT = 10   -- seconds until the port must accept connections
local STOP_TIMEOUT = 10    -- seconds after SIGTERM before SIGKILL
local POLL = 0.05

local function read_number(path)
  local s = util.read_file(path)
  if s then return tonumber(s:match("%-?%d+")) end
end

--- True when a TCP connect to 127.0.0.1:port succeeds right now.
local function can_connect(port)
  local s = socket.tcp4()
  s:settimeout(0.5)
  local ok = s:connect("127.0.0.1", port)
  s:close()
  return ok ~= nil
end

--- Starts edge. opts: script (required), args (list), workers (default 1),
-- port (default: a free ephemeral port), cert/key (default certs/server.*),
-- env (table of extra environment variables), nofile (a lower `ulimit -n`
-- for the process), stop_timeout (seconds between SIGTERM and SIGKILL,
-- default 10), plain (true: also listen in cleartext on another free port,
-- srv.plain_port, with --listen-plain), wait (default true: wait until the
-- ports accept connections; raises with the log if edge exits first).
function server.start(opts)
  assert(opts and opts.script, "server.start: script is required")
  local self = setmetatable({}, Server)
  self.port = opts.port or util.free_port()
  if opts.plain then
    for _ = 1, 20 do
      self.plain_port = util.free_port()
      if self.plain_port ~= self.port then break end
    end
    assert(self.plain_port ~= self.port, "no second free port")
  end
  self.dir = util.tmpdir("edge")
  self.logfile = self.dir .. "/stderr.log"
  self.outfile = self.dir .. "/stdout.log"
  self.pidfile = self.dir .. "/pid"
  self.rcfile = self.dir .. "/rc"
  self.bin = opts.bin or util.edge_bin()

  local argv = { self.bin, "-s", opts.script, "-l", "127.0.0.1:" .. self.port,
                 "-w", tostring(opts.workers or 1),
                 "--cert", opts.cert or "certs/server.crt",
                 "--key", opts.key or "certs/server.key" }
  if self.plain_port then
    argv[#argv + 1] = "--listen-plain"
    argv[#argv + 1] = "127.0.0.1:" .. self.plain_port
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  self.argv = argv

  self.stop_timeout = opts.stop_timeout or STOP_TIMEOUT
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. util.q(v) .. " " end
  local prelude = ""
  if opts.nofile then prelude = string.format("ulimit -n %d && ", opts.nofile) end
  -- The subshell execs edge, so $! is edge's own PID; the wrapper waits for
  -- it and records the exit status (128+N when killed by signal N).
  local inner = string.format(
    "( %sexec %s%s <%s >%s 2>%s ) & echo $! > %s; wait $!; echo $? > %s.tmp; mv %s.tmp %s",
    prelude, env, util.qall(argv), "/dev/null", util.q(self.outfile), util.q(self.logfile),
    util.q(self.pidfile), util.q(self.rcfile), util.q(self.rcfile), util.q(self.rcfile))
  assert(os.execute("sh -c " .. util.q(inner) .. " </dev/null >/dev/null 2>&1 &"))

  local deadline = util.now() + START_TIMEOUT
  while not self.pid and util.now() < deadline do
    self.pid = read_number(self.pidfile)
    if not self.pid then util.sleep(0.01) end
  end
  assert(self.pid, "edge did not start (no pid file): " .. util.qall(argv))
  -- Register the PID so scripts/test.sh can kill a server a crashed run left.
  local reg = io.open(util.tmp_root() .. "/pids", "a")
  if reg then reg:write(self.pid, "\n") reg:close() end

  if opts.wait ~= false then
    local ok, why = self:wait_ready(START_TIMEOUT)
    if not ok then
      self:stop()
      error(string.format("edge did not come up (%s): %s\n--- log ---\n%s",
        why, util.qall(argv), self:log()), 2)
    end
  end
  return self
end

--- Polls (every 50 ms, at most `timeout` s) until the port (and the
-- cleartext port, if any) accepts a TCP connection. Returns true, or false
-- and a reason.
function Server:wait_ready(timeout)
  local deadline = util.now() + (timeout or START_TIMEOUT)
  repeat
    if self:exit_code() then return false, "exited with " .. self:exit_code() end
    if can_connect(self.port) and (not self.plain_port or can_connect(self.plain_port)) then
      return true
    end
    util.sleep(POLL)
  until util.now() >= deadline
  return false, "timeout"
end

--- https URL for a path on this server.
function Server:url(path)
  return string.format("https://127.0.0.1:%d%s", self.port, path or "/")
end

--- http URL for a path on the cleartext listener (server.start{ plain = true }).
function Server:plain_url(path)
  assert(self.plain_port, "server started without plain = true")
  return string.format("http://127.0.0.1:%d%s", self.plain_port, path or "/")
end

--- The resident set size (VmRSS in /proc/PID/status) in KiB, or nil once
-- the process is gone.
function Server:rss_kb()
  local status = util.read_file("/proc/" .. self.pid .. "/status")
  return status and tonumber(status:match("VmRSS:%s*(%d+)"))
end

--- The error log (stderr) so far.
function Server:log()
  return util.read_file(self.logfile) or ""
end

--- Whatever edge wrote on stdout so far.
function Server:stdout()
  return util.read_file(self.outfile) or ""
end

--- The exit code once edge has exited, else nil.
function Server:exit_code()
  if self.rc == nil then self.rc = read_number(self.rcfile) end
  return self.rc
end

--- True while the process has not exited.
function Server:running()
  return self:exit_code() == nil
end

--- Sends a signal (name such as "TERM", "INT", "HUP", "KILL") to the PID.
function Server:signal(name)
  if self:running() then
    os.execute(string.format("kill -%s %d 2>/dev/null", name, self.pid))
  end
end

--- Waits (bounded) for the process to exit; returns its exit code or nil.
function Server:wait_exit(timeout)
  local deadline = util.now() + (timeout or STOP_TIMEOUT)
  while self:running() and util.now() < deadline do util.sleep(POLL) end
  return self:exit_code()
end

--- SIGTERM, wait up to 10 s for the exit code, then SIGKILL. Returns the
-- exit code (137 when it had to be killed). Safe to call twice.
function Server:stop()
  if self:running() then
    self:signal("TERM")
    if not self:wait_exit(self.stop_timeout) then
      self.killed = true
      self:signal("KILL")
      self:wait_exit(5)
    end
  end
  return self:exit_code()
end

--- Text of every sanitizer line in the log (AddressSanitizer,
-- LeakSanitizer, UBSan "runtime error:"), or nil when there is none.
function Server:sanitizer_report()
  local found = {}
  for line in self:log():gmatch("[^\n]+") do
    if line:find("AddressSanitizer", 1, true) or line:find("LeakSanitizer", 1, true)
      or line:find("UndefinedBehaviorSanitizer", 1, true)
      or line:find("runtime error:", 1, true) then
      found[#found + 1] = line
    end
  end
  if #found > 0 then return table.concat(found, "\n") end
end

--- The last `n` lines of the log (for failure messages).
function Server:log_tail(n)
  local lines = util.lines(self:log())
  local first = math.max(1, #lines - (n or 40) + 1)
  return table.concat(lines, "\n", first)
end

--- Waits (bounded) until the log contains a Lua pattern; returns the
-- capture/match or nil.
function Server:wait_log(pattern, timeout)
  local deadline = util.now() + (timeout or 2)
  repeat
    local m = self:log():match(pattern)
    if m then return m end
    util.sleep(POLL)
  until util.now() >= deadline
end

--- For teardown: stops the server and asserts exit code 0 and a clean
-- sanitizer report. Raises (failing the block) otherwise.
function Server:stop_and_check()
  local rc = self:stop()
  local report = self:sanitizer_report()
  if report then
    error("sanitizer report from " .. self.bin .. ":\n" .. self:log_tail(80), 2)
  end
  if rc ~= 0 then
    error(string.format("%s exited with %s%s (expected 0)\n--- log tail ---\n%s",
      self.bin, tostring(rc),
      self.killed and string.format(" after SIGKILL (SIGTERM ignored for %g s)", self.stop_timeout) or "",
      self:log_tail(40)), 2)
  end
  return rc
end

--- For teardown: stop_and_check on every server given (nil ones, from a
-- setup that failed, are skipped); all are stopped before any error.
function server.stop_and_check(...)
  local errs = {}
  for i = 1, select("#", ...) do
    local srv = select(i, ...)
    if srv then
      local ok, err = pcall(srv.stop_and_check, srv)
      if not ok then errs[#errs + 1] = tostring(err) end
    end
  end
  if #errs > 0 then error(table.concat(errs, "\n"), 2) end
end

return server
