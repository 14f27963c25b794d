-- Background processes for end-to-end specs (wrk, a curl that must be in
-- flight while the spec does something else): started with a time limit
-- (timeout(1)), their PID and exit code recorded, stopped by PID only.
--
--   local proc = require "support.proc"
--   local p = proc.spawn({ "wrk", "-d2s", url }, { timeout = 10 })
--   p:running(), p:wait(5) -> exit code or nil, p:stdout(), p:stderr(), p:kill()
local util = require "support.util"

local proc = {}

local Proc = {}
Proc.__index = Proc

local function read_number(path)
  local s = util.read_file(path)
  if s then return tonumber(s:match("%-?%d+")) end
end

--- Starts argv in the background with stdin from /dev/null and stdout /
-- stderr to temp files. opts.timeout (seconds, default 30) bounds its run
-- (timeout(1) sends TERM, then KILL 2 s later; exit code 124 then).
-- Returns a handle once the PID is known (at most 5 s).
function proc.spawn(argv, opts)
  opts = opts or {}
  local self = setmetatable({}, Proc)
  self.dir = util.tmpdir("proc")
  self.outfile = self.dir .. "/stdout"
  self.errfile = self.dir .. "/stderr"
  self.pidfile = self.dir .. "/pid"
  self.rcfile = self.dir .. "/rc"
  self.argv = argv
  local cmd = { "timeout", "-k", "2", tostring(opts.timeout or 30) }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local inner = string.format(
    "( exec %s </dev/null >%s 2>%s ) & echo $! > %s; wait $!; echo $? > %s.tmp; mv %s.tmp %s",
    util.qall(cmd), util.q(self.outfile), util.q(self.errfile), util.q(self.pidfile),
    util.q(self.rcfile), util.q(self.rcfile), util.q(self.rcfile))
  assert(os.execute("sh -c " .. util.q(inner) .. " </dev/null >/dev/null 2>&1 &"))
  local deadline = util.now() + 5
  while not self.pid and util.now() < deadline do
    self.pid = read_number(self.pidfile)
    if not self.pid then util.sleep(0.01) end
  end
  assert(self.pid, "process did not start: " .. util.qall(cmd))
  return self
end

--- The exit code once the process has exited, else nil.
function Proc:exit_code()
  if self.rc == nil then self.rc = read_number(self.rcfile) end
  return self.rc
end

function Proc:running()
  return self:exit_code() == nil
end

--- Waits (at most `timeout` s, default 10) for the exit; returns the exit
-- code or nil.
function Proc:wait(timeout)
  local deadline = util.now() + (timeout or 10)
  while self:running() and util.now() < deadline do util.sleep(0.05) end
  return self:exit_code()
end

function Proc:stdout() return util.read_file(self.outfile) or "" end
function Proc:stderr() return util.read_file(self.errfile) or "" end

--- Sends a signal (default TERM) to the PID (timeout(1)'s, which passes it
-- on), waits up to 5 s. Safe to call after the exit.
function Proc:kill(sig)
  if self:running() then
    os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", self.pid))
    self:wait(5)
  end
  return self:exit_code()
end

return proc
