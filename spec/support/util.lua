-- Small helpers shared by the spec support modules: shell quoting, temp
-- files, bounded command execution, wall clock and sleeping.
local socket = require "socket"

local util = {}

--- Wall-clock time in seconds (sub-millisecond resolution).
function util.now()
  return socket.gettime()
end

--- Sleeps for `s` seconds without spinning.
function util.sleep(s)
  if s > 0 then socket.sleep(s) end
end

--- Quotes one word for /bin/sh.
function util.q(s)
  s = tostring(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Quotes a list of words for /bin/sh and joins them with spaces.
function util.qall(list)
  local out = {}
  for i, w in ipairs(list) do out[i] = util.q(w) end
  return table.concat(out, " ")
end

--- Returns the whole content of a file, or nil when it cannot be read.
function util.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Writes `data` to `path`.
function util.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- True when a file exists.
function util.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local tmp_root
--- The directory all spec temp files go in: $EDGE_TEST_TMPDIR (set by
-- scripts/test.sh, which cleans it up) or a fresh mktemp directory.
function util.tmp_root()
  if not tmp_root then
    tmp_root = os.getenv("EDGE_TEST_TMPDIR")
    if not tmp_root or tmp_root == "" then
      local p = assert(io.popen("mktemp -d /tmp/edge-spec.XXXXXX"))
      tmp_root = p:read("l")
      p:close()
    end
  end
  return tmp_root
end

local tmp_seq = 0
--- Creates and returns a fresh, empty directory under util.tmp_root().
function util.tmpdir(prefix)
  tmp_seq = tmp_seq + 1
  local dir = string.format("%s/%s-%d-%d", util.tmp_root(), prefix or "t",
    math.floor(util.now() * 1000) % 100000000, tmp_seq)
  assert(os.execute("mkdir -p " .. util.q(dir)))
  return dir
end

--- Runs argv (a list) with a time limit (seconds, default 10), stdin from
-- `opts.stdin` (a string) or /dev/null. Returns exit code, stdout, stderr.
-- A command killed by the time limit returns 124 (see timeout(1)).
function util.run(argv, opts)
  opts = opts or {}
  local dir = util.tmpdir("run")
  local stdin = "/dev/null"
  if opts.stdin then
    stdin = dir .. "/stdin"
    util.write_file(stdin, opts.stdin)
  end
  local cmd = string.format("timeout -k 2 %s %s <%s >%s 2>%s",
    tostring(opts.timeout or 10), util.qall(argv), util.q(stdin),
    util.q(dir .. "/stdout"), util.q(dir .. "/stderr"))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  local out, err = util.read_file(dir .. "/stdout") or "", util.read_file(dir .. "/stderr") or ""
  os.execute("rm -rf " .. util.q(dir))
  return code, out, err
end

--- Calls fn every `step` seconds (default 0.05) until it returns a true
-- value, for at most `timeout` seconds; returns that value, or what one last
-- call returns at the deadline.
function util.wait_until(fn, timeout, step)
  local deadline = util.now() + timeout
  repeat
    local v = fn()
    if v then return v end
    util.sleep(step or 0.05)
  until util.now() >= deadline
  return fn()
end

--- Splits text into a list of lines (without line terminators).
function util.lines(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

--- Counts the non-overlapping occurrences of a plain string.
function util.count(text, needle)
  local n, pos = 0, 1
  while true do
    local s, e = text:find(needle, pos, true)
    if not s then return n end
    n, pos = n + 1, e + 1
  end
end

--- Returns the path of the edge binary under test ($EDGE_BIN, default ./edge).
function util.edge_bin()
  local b = os.getenv("EDGE_BIN")
  if not b or b == "" then b = "./edge" end
  return b
end

--- Returns a free ephemeral TCP port on 127.0.0.1 (bind port 0, read, close).
function util.free_port()
  local s = assert(socket.tcp4())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

return util
