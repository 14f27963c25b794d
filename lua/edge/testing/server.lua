-- edge.testing.server: runs the real edge binary with your script on an
-- ephemeral loopback port, for end-to-end specs (busted or anything else:
-- it only raises errors, it asserts nothing).
--
--   local server = require "edge.testing.server"
--
--   local srv = server.start { script = "lua/examples/api.lua" }
--   local res = srv:get("/users/1")                     -- HTTP/1.1
--   -- res.status, res.headers["x-cache"], res.body, res.http_version ("1.1")
--   res = srv:get("/users/1", { http2 = true })         -- HTTP/2 (ALPN h2)
--   res = srv:post("/users", '{"name":"Ada"}', { headers = { ["content-type"] = "application/json" } })
--   res = srv:request { method = "DELETE", path = "/cache/users/1", headers = { ... } }
--   print(srv:log())                                    -- the error log so far
--   local code = srv:stop()                             -- SIGTERM; 0 when edge exited cleanly
--
-- In busted:
--   local srv
--   lazy_setup(function() srv = server.start { script = "myapp.lua" } end)
--   lazy_teardown(function() if srv then assert.are.equal(0, srv:stop()) end end)
-- or `srv:stop_and_check()`, which raises unless edge exited 0 without a
-- sanitizer report. A server in a `local srv <close> = server.start {...}`
-- variable is stopped when the variable goes out of scope.
--
-- server.start(opts), opts:
--   script        the Lua script (required), a path edge opens as given
--   args          extra command-line arguments, e.g. { "--cache-ttl", "5" }
--   workers       -w (default 1)
--   bin           the edge binary: default $EDGE_BIN, else ./edge, else the
--                 `edge` on PATH (make install)
--   cert, key     default certs/server.crt and certs/server.key (made by
--                 `make certs`), in the current directory or beside the binary
--   port          the TLS port (default 0: the kernel picks a free one, read
--                 back from edge's "listening on" log line)
--   plain         true: also a cleartext listener (--listen-plain) on a
--                 free port, srv.plain_port
--   env           extra environment variables { NAME = "value" }
--   nofile        a lower `ulimit -n` for edge
--   start_timeout seconds to wait for the port (default 10)
--   stop_timeout  seconds between SIGTERM and SIGKILL in stop() (default 10)
--   wait          false: return at once, call srv:wait_ready() yourself
-- start raises (with edge's log) when edge exits or does not listen in time.
--
-- Requests go through curl (`curl -sk`, --http1.1, or --http2 with
-- http2 = true), so curl must be installed. Everything is bounded in time.
local server = {}

---------------------------------------------------------------------------
-- Small utilities (time, files, shell)
---------------------------------------------------------------------------

local now, sleep
do
  local ok, system = pcall(require, "system")        -- lua-system (a busted dependency)
  if ok and type(system) == "table" and system.gettime and system.sleep then
    now, sleep = system.gettime, system.sleep
  else
    local sok, socket = pcall(require, "socket")     -- luasocket
    if sok and type(socket) == "table" then
      now, sleep = socket.gettime, socket.sleep
    else
      now = os.time
      sleep = function(s) os.execute(string.format("sleep %.3f", s)) end
    end
  end
end
local has_socket, socket = pcall(require, "socket")
if not has_socket then socket = nil end

server.now, server.sleep = now, sleep

--- Quotes one word for /bin/sh.
local function q(s)
  s = tostring(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Quotes a list of words for /bin/sh and joins them with spaces.
local function qall(list)
  local out = {}
  for i, w in ipairs(list) do out[i] = q(w) end
  return table.concat(out, " ")
end
server.q, server.qall = q, qall

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function read_number(path)
  local s = read_file(path)
  if s then return tonumber(s:match("%-?%d+")) end
end

local function tmpfile()
  local name = os.tmpname()   -- mkstemp: created empty, private
  return name
end

--- A fresh private directory under $EDGE_TEST_TMPDIR (scripts/test.sh sets
-- it and removes it) or /tmp.
local function mkdtemp(prefix)
  local root = os.getenv("EDGE_TEST_TMPDIR")
  if not root or root == "" then root = os.getenv("TMPDIR") end
  if not root or root == "" then root = "/tmp" end
  local p = assert(io.popen("mktemp -d " .. q(root .. "/" .. prefix .. ".XXXXXX")))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp -d failed under " .. root)
  return dir
end

--- Runs argv with a time limit (seconds, default 10), stdin from /dev/null.
-- Returns exit code (124 when the limit killed it), stdout, stderr.
local function run(argv, timeout)
  local out, err = tmpfile(), tmpfile()
  local cmd = string.format("timeout -k 2 %s %s </dev/null >%s 2>%s",
    tostring(timeout or 10), qall(argv), q(out), q(err))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  local o, e = read_file(out) or "", read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end
server.run = run

---------------------------------------------------------------------------
-- curl
---------------------------------------------------------------------------

--- line's "Name: value" (value trimmed), or nil when the name is empty or
-- holds a space. Linear: no "(.-)%s*$", which backtracks over long runs of
-- spaces.
local function header_line(line)
  local colon = line:find(":", 1, true)
  if colon == nil or colon == 1 then return nil end
  local name = line:sub(1, colon - 1)
  if name:find("%s") then return nil end
  local i, j = line:find("%S", colon + 1) or #line + 1, #line
  while j >= i and line:find("^%s", j) do j = j - 1 end
  return name, line:sub(i, j)
end

--- Parses "Name: value" lines into { lower-case name = value } (repeated
-- names joined with ", ") and an ordered list of { name, value }.
local function parse_header_lines(block)
  local headers, list = {}, {}
  for line in block:gmatch("[^\r\n]+") do
    local name, value = header_line(line)
    if name then
      name = name:lower()
      list[#list + 1] = { name, value }
      if headers[name] then headers[name] = headers[name] .. ", " .. value
      else headers[name] = value end
    end
  end
  return headers, list
end
server.parse_header_lines = parse_header_lines

--- Runs `curl -sk --max-time 10 -D HDR -o BODY -w '%{http_code} %{http_version}'`
-- followed by args (a list). Returns status (0 when there was no response),
-- headers (of the final response), body, http_version ("1.1", "2"), and
-- info { exit, stderr, stdout, raw_headers, header_blocks, header_list }.
function server.curl(args, timeout)
  timeout = timeout or 10
  local hdr, body = tmpfile(), tmpfile()
  local argv = { "curl", "-sk", "--max-time", tostring(timeout), "-D", hdr, "-o", body,
                 "-w", "%{http_code} %{http_version}" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local code, out, err = run(argv, timeout + 5)
  local raw = read_file(hdr) or ""
  local bodytext = read_file(body) or ""
  os.remove(hdr)
  os.remove(body)
  -- -D holds every header block (1xx, then the final one): keep the last.
  local blocks = {}
  for block in (raw .. "\r\n"):gmatch("(HTTP/[^\r\n]*\r\n.-\r\n)\r\n") do
    blocks[#blocks + 1] = block
  end
  local headers, list = parse_header_lines((blocks[#blocks] or ""):match("^[^\n]*\n(.*)$") or "")
  local status, version = out:match("^(%d+) (%S+)")
  return tonumber(status) or 0, headers, bodytext, version,
    { exit = code, stderr = err, stdout = out, raw_headers = raw, header_blocks = blocks,
      header_list = list }
end

---------------------------------------------------------------------------
-- The server
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server
server.Server = Server

local START_TIMEOUT = 10
local STOP_TIMEOUT = 10
local POLL = 0.02

local QUIET_LEVELS = { error = true, warn = true }

--- A free ephemeral TCP port (bind port 0, read, close); needs luasocket.
local function free_port(host)
  assert(socket, "edge.testing.server: luasocket is needed to pick a port here "
    .. "(apt-get install lua-socket), or pass opts.port")
  local s = assert(socket.tcp())
  assert(s:bind(host, 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end
server.free_port = free_port

--- True when a TCP connect to host:port succeeds now (true when luasocket
-- is missing: the "listening on" log line is then the only signal).
local function can_connect(host, port)
  if not socket then return true end
  local s = socket.tcp()
  s:settimeout(0.5)
  local ok = s:connect(host, port)
  s:close()
  return ok ~= nil
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

--- The default certificate and key: certs/ in the current directory, else
-- certs/ beside the binary (or beside build/<kind>/edge's repository).
--- True for a readable, non-empty file (not a directory named edge).
local function is_file(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok = f:read(1) ~= nil
  f:close()
  return ok
end

--- ./edge (a checkout), else the first edge on PATH, else "./edge".
local function default_bin()
  if is_file("./edge") then return "./edge" end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if is_file(dir .. "/edge") then return dir .. "/edge" end
  end
  return "./edge"
end

local function default_cert(bin, name)
  local here = "certs/" .. name
  if exists(here) then return here end
  local dir = dirname(bin)
  for _, cand in ipairs { dir .. "/certs/" .. name, dir .. "/../../certs/" .. name } do
    if exists(cand) then return cand end
  end
  return here   -- edge will say that it is missing, and to run `make certs`
end

--- Starts edge (see the header comment for opts). Returns the server.
function server.start(opts)
  if type(opts) ~= "table" or type(opts.script) ~= "string" then
    error("edge.testing.server.start: opts.script (the Lua script to serve) is required", 2)
  end
  local self = setmetatable({}, Server)
  self.host = opts.host or "127.0.0.1"
  self.bin = opts.bin or os.getenv("EDGE_BIN")
  if not self.bin or self.bin == "" then self.bin = default_bin() end
  if not exists(self.bin) then
    error("edge.testing.server: no edge binary at " .. self.bin
      .. " (build it with `make`, install it, or set EDGE_BIN)", 2)
  end

  -- With the notice lines in the log, port 0 is race-free: edge binds, then
  -- logs the port it got. With a quieter --log-level, pick one up front.
  local quiet = false
  local args = opts.args or {}
  for i, a in ipairs(args) do
    if a == "--log-level" and QUIET_LEVELS[args[i + 1]] then quiet = true end
    if type(a) == "string" and QUIET_LEVELS[a:match("^%-%-log%-level=(%a+)$") or ""] then quiet = true end
  end
  self.port = opts.port or (quiet and free_port(self.host) or 0)
  if opts.plain then
    self.plain_port = type(opts.plain) == "number" and opts.plain or (quiet and free_port(self.host) or 0)
  end
  self.want_port, self.want_plain = self.port, self.plain_port

  self.dir = mkdtemp("edge-server")
  self.logfile = self.dir .. "/stderr.log"
  self.outfile = self.dir .. "/stdout.log"
  self.pidfile = self.dir .. "/pid"
  self.rcfile = self.dir .. "/rc"
  self.stop_timeout = opts.stop_timeout or STOP_TIMEOUT

  local addr = self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host
  self.addr = addr
  local argv = { self.bin, "-s", opts.script, "-l", addr .. ":" .. self.port,
                 "-w", tostring(opts.workers or 1),
                 "--cert", opts.cert or default_cert(self.bin, "server.crt"),
                 "--key", opts.key or default_cert(self.bin, "server.key") }
  if self.plain_port then
    argv[#argv + 1] = "--listen-plain"
    argv[#argv + 1] = addr .. ":" .. self.plain_port
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  self.argv = argv

  local envs = {}
  for k, v in pairs(opts.env or {}) do envs[#envs + 1] = q(k .. "=" .. tostring(v)) end
  table.sort(envs)
  local env = #envs > 0 and ("env " .. table.concat(envs, " ") .. " ") or ""
  local prelude = opts.nofile and string.format("ulimit -n %d && ", opts.nofile) or ""
  -- The subshell execs edge (through env(1), which execs too), so $! is
  -- edge's own PID; the wrapper shell waits for it and records the exit
  -- status (128+N when killed by signal N).
  local inner = string.format(
    "( %sexec %s%s <%s >%s 2>%s ) & echo $! > %s; wait $!; echo $? > %s.tmp; mv %s.tmp %s",
    prelude, env, qall(argv), "/dev/null", q(self.outfile), q(self.logfile),
    q(self.pidfile), q(self.rcfile), q(self.rcfile), q(self.rcfile))
  assert(os.execute("sh -c " .. q(inner) .. " </dev/null >/dev/null 2>&1 &"))

  local timeout = opts.start_timeout or START_TIMEOUT
  local deadline = now() + timeout
  while not self.pid and now() < deadline do
    self.pid = read_number(self.pidfile)
    if not self.pid then sleep(0.005) end
  end
  if not self.pid then error("edge did not start (no pid file): " .. qall(argv), 2) end
  -- scripts/test.sh kills servers a crashed run left behind from this list.
  local reg_root = os.getenv("EDGE_TEST_TMPDIR")
  if reg_root and reg_root ~= "" then
    local reg = io.open(reg_root .. "/pids", "a")
    if reg then reg:write(self.pid, "\n") reg:close() end
  end

  if opts.wait ~= false then
    local ok, why = self:wait_ready(timeout)
    if not ok then
      self:stop()
      error(string.format("edge did not come up (%s): %s\n--- log ---\n%s",
        why, qall(argv), self:log()), 2)
    end
  end
  return self
end

--- Reads the ports edge picked (port 0) from its "listening on" lines.
function Server:_read_ports()
  if self.port ~= 0 and (self.plain_port == nil or self.plain_port ~= 0) then return true end
  local log = self:log()
  local a = self.addr:gsub("%p", "%%%0")
  if self.port == 0 then
    for p, rest in log:gmatch("listening on " .. a .. ":(%d+) (%S+)") do
      if rest ~= "cleartext" then self.port = tonumber(p) break end
    end
  end
  if self.plain_port == 0 then
    self.plain_port = tonumber(log:match("listening on " .. a .. ":(%d+) cleartext"))
      or 0
  end
  return self.port ~= 0 and (self.plain_port == nil or self.plain_port ~= 0)
end

--- Waits (bounded, default 10 s) until edge listens and the port(s) accept
-- a TCP connection. Returns true, or false and a reason.
function Server:wait_ready(timeout)
  local deadline = now() + (timeout or START_TIMEOUT)
  repeat
    local rc = self:exit_code()
    if rc then return false, "exited with " .. rc end
    if self:_read_ports() and can_connect(self.host, self.port)
        and (not self.plain_port or can_connect(self.host, self.plain_port)) then
      return true
    end
    sleep(POLL)
  until now() >= deadline
  return false, "timeout"
end

--- https URL for a path on this server.
function Server:url(path)
  return string.format("https://%s:%d%s", self.addr, self.port, path or "/")
end

--- http URL for a path on the cleartext listener (start{ plain = true }).
function Server:plain_url(path)
  assert(self.plain_port, "server started without plain = true")
  return string.format("http://%s:%d%s", self.addr, self.plain_port, path or "/")
end

--- One request with curl. opts: method (default "GET"), path (default "/",
-- sent as is: no dot-segment squashing), headers ({ name = value } with a
-- list value for a repeated header, or a list of { name, value }), body (a
-- string; curl adds content-type application/x-www-form-urlencoded unless you
-- set one), http2 (true: HTTP/2, by ALPN or, with plain, prior knowledge;
-- default HTTP/1.1), plain (true: the cleartext listener), timeout (seconds,
-- default 10), curl_args (a list of extra curl arguments).
-- Returns { status (0: no response), headers (lower-case names, repeated
-- ones joined with ", "), header_list, body, http_version ("1.1" or "2"),
-- error (curl's message when status is 0) }.
function Server:request(opts)
  opts = opts or {}
  local method = opts.method or "GET"
  local path = opts.path or "/"
  local args = { "--path-as-is", "--globoff" }
  if opts.http2 then
    args[#args + 1] = opts.plain and "--http2-prior-knowledge" or "--http2"
  else
    args[#args + 1] = "--http1.1"
  end
  if method == "HEAD" then
    args[#args + 1] = "--head"
  elseif method ~= "GET" or opts.body then
    args[#args + 1] = "-X"
    args[#args + 1] = method
  end
  local function add_header(name, value)
    args[#args + 1] = "-H"
    args[#args + 1] = value == "" and (name .. ";") or (name .. ": " .. tostring(value))
  end
  local hs = opts.headers or {}
  if hs[1] then
    for _, h in ipairs(hs) do add_header(h[1], h[2]) end
  else
    local names = {}
    for k in pairs(hs) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      local v = hs[k]
      if type(v) == "table" then
        for _, one in ipairs(v) do add_header(k, one) end
      else
        add_header(k, v)
      end
    end
  end
  local bodyfile
  if opts.body then
    bodyfile = tmpfile()
    write_file(bodyfile, opts.body)
    args[#args + 1] = "--data-binary"
    args[#args + 1] = "@" .. bodyfile
  end
  for _, a in ipairs(opts.curl_args or {}) do args[#args + 1] = a end
  args[#args + 1] = opts.plain and self:plain_url(path) or self:url(path)
  local status, headers, body, version, info = server.curl(args, opts.timeout)
  if bodyfile then os.remove(bodyfile) end
  if method == "HEAD" then body = "" end
  local res = { status = status, headers = headers, header_list = info.header_list,
                body = body, http_version = version, curl = info }
  if status == 0 then
    res.error = string.format("no response (curl exit %s): %s", tostring(info.exit),
      info.stderr ~= "" and info.stderr or "no message")
  end
  return res
end

--- GET path; opts as for request.
function Server:get(path, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.method, o.path = o.method or "GET", path
  return self:request(o)
end

--- POST body to path; opts as for request.
function Server:post(path, body, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.method, o.path, o.body = o.method or "POST", path, body
  return self:request(o)
end

--- The error log (edge's stderr) so far.
function Server:log()
  if self.log_text then return self.log_text end
  return read_file(self.logfile) or ""
end

--- Whatever edge wrote on stdout so far.
function Server:stdout()
  if self.stdout_text then return self.stdout_text end
  return read_file(self.outfile) or ""
end

--- The last n (default 40) lines of the log.
function Server:log_tail(n)
  local lines = {}
  for line in self:log():gmatch("[^\n]+") do lines[#lines + 1] = line end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 40) + 1))
end

--- Waits (bounded, default 2 s) until the log matches a Lua pattern;
-- returns the match or nil.
function Server:wait_log(pattern, timeout)
  local deadline = now() + (timeout or 2)
  repeat
    local m = self:log():match(pattern)
    if m then return m end
    sleep(POLL)
  until now() >= deadline
end

--- The exit code once edge has exited, else nil.
function Server:exit_code()
  if self.rc == nil then self.rc = read_number(self.rcfile) end
  return self.rc
end

--- True while edge has not exited.
function Server:running()
  return self:exit_code() == nil
end

--- Sends a signal ("TERM", "INT", "HUP", "USR1", "KILL") to edge's PID.
function Server:signal(name)
  if self.pid and self:running() then
    os.execute(string.format("kill -%s %d 2>/dev/null", name, self.pid))
  end
end

--- Waits (bounded) for edge to exit; returns its exit code or nil.
function Server:wait_exit(timeout)
  local deadline = now() + (timeout or STOP_TIMEOUT)
  while self:running() and now() < deadline do sleep(POLL) end
  return self:exit_code()
end

--- The resident set size (VmRSS) in KiB, or nil once edge is gone.
function Server:rss_kb()
  local status = read_file("/proc/" .. tostring(self.pid) .. "/status")
  return status and tonumber(status:match("VmRSS:%s*(%d+)"))
end

--- SIGTERM, wait up to stop_timeout for the exit, then SIGKILL. Returns the
-- exit code (0 for a clean exit; 137 when it had to be killed). Keeps the
-- log readable and removes the temp files. Safe to call twice.
function Server:stop()
  if self.stopped then return self.rc end
  if self.pid and self:running() then
    self:signal("TERM")
    if not self:wait_exit(self.stop_timeout) then
      self.killed = true
      self:signal("KILL")
      self:wait_exit(5)
    end
  end
  local rc = self:exit_code()
  if rc ~= nil or not self.pid then
    self.log_text = read_file(self.logfile) or ""
    self.stdout_text = read_file(self.outfile) or ""
    os.execute("rm -rf " .. q(self.dir))
    self.stopped = true
  end
  return rc
end
Server.__close = Server.stop

--- Every sanitizer line in the log (AddressSanitizer, LeakSanitizer,
-- UBSan "runtime error:"), or nil when there is none.
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

--- Stops edge and raises unless it exited 0 with no sanitizer report (for
-- teardown). Returns 0.
function Server:stop_and_check()
  local rc = self:stop()
  if self:sanitizer_report() then
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

--- stop_and_check on every server given (nil ones, from a setup that
-- failed, are skipped); all are stopped before any error is raised.
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
