-- Our specs start edge with the same helper users get: lua/edge/testing/server.lua
-- (require "edge.testing.server"). This name stays for the specs that use it,
-- with one addition: start() also waits for the --admin listener.
--
-- Why: edge opens (and logs) its traffic listeners before it starts the
-- workers, and the admin listener only after them (src/main.c), so the
-- traffic port accepts -- and start() returns -- while the admin port still
-- refuses connections. On a loaded machine (ASan, workers loading their Lua
-- state) that gap is long enough for a spec's first /metrics scrape to get
-- "connection refused".
local base = require "edge.testing.server"

local server = setmetatable({}, { __index = base })

local POLL = 0.02

--- The --admin address among args ("--admin ADDR" or "--admin=ADDR"), or nil.
local function admin_arg(args)
  for i, a in ipairs(args or {}) do
    if a == "--admin" then return args[i + 1] end
    if type(a) == "string" then
      local v = a:match("^%-%-admin=(.+)$")
      if v then return v end
    end
  end
end

--- host, port of an admin address (port 0: read back from edge's log line).
local function admin_host_port(srv, addr)
  local host, port = addr:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = addr:match("^(.*):(%d+)$") end
  if not host then return nil end
  if host == "" or host == "0.0.0.0" then host = "127.0.0.1" elseif host == "::" then host = "::1" end
  port = tonumber(port)
  if port == 0 then
    port = tonumber(srv:log():match("admin listening on http://[^\n]-:(%d+) "))
  end
  return host, port
end

--- True when a TCP connect to host:port succeeds now.
local function accepts(host, port)
  local socket = require "socket"
  local s = host:find(":", 1, true) and socket.tcp6() or socket.tcp()
  s:settimeout(0.5)
  local ok = s:connect(host, port)
  s:close()
  return ok ~= nil
end

--- Waits (bounded) until the admin port accepts. Returns true, or false and why.
local function wait_admin(srv, addr, timeout)
  local deadline = base.now() + timeout
  repeat
    local rc = srv:exit_code()
    if rc then return false, "exited with " .. rc end
    local host, port = admin_host_port(srv, addr)
    if host and port and accepts(host, port) then
      srv.admin_port = srv.admin_port or port
      return true
    end
    base.sleep(POLL)
  until base.now() >= deadline
  return false, "timeout waiting for the admin listener " .. addr
end

--- edge.testing.server.start, then (unless opts.wait is false) a bounded
-- wait until the --admin port accepts too; raises like start does.
function server.start(opts)
  local srv = base.start(opts)
  local addr = opts.wait ~= false and admin_arg(opts.args)
  if addr then
    local ok, why = wait_admin(srv, addr, opts.start_timeout or 10)
    if not ok then
      srv:stop()
      error(string.format("edge's admin listener did not come up (%s): %s\n--- log ---\n%s",
        why, base.qall(srv.argv), srv:log()), 2)
    end
  end
  return srv
end

return server
