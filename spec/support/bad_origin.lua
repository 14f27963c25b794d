-- A misbehaving HTTP/1.1 origin for edge.fetch specs, on 127.0.0.1:PORT:
--   lua5.4 spec/support/bad_origin.lua PORT
-- Connections are served concurrently (socket.select, one coroutine each),
-- keep-alive unless the path says otherwise. What it answers, by path:
--   /ok            200, Content-Length, keep-alive
--   /conns         200, the number of connections accepted so far
--   /open          200, the number of connections open now (this one included)
--   /count?PATH    200, the number of requests for PATH read so far
--   /delay         200 "late" after 1 s
--   /chunked       a chunked body "hello world"
--   /close-delimited  no Content-Length: the body ends when it closes
--   /informational 100 Continue and 103 Early Hints, then 200 "ok"
--   /slow-headers  the status line, then nothing for 3 s
--   /never         reads the request and never answers (until the peer closes)
--   /close-mid-body  Content-Length 100, 7 bytes, then closes
--   /bad-status    "HTTX/1.1 200 OK"
--   /cl-te         Content-Length and Transfer-Encoding: chunked
--   /two-cl        two different Content-Lengths
--   /big-headers   40 KiB of headers
--   /stale         200 keep-alive; any later request on that connection is
--                  read and the connection closed without a byte
-- Every wait is bounded (10 s); it exits after 300 s at most.
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: bad_origin.lua PORT")
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0)
local started = socket.gettime()
local accepted = 0
local conns = {}
local requests = {}    -- path (without the query) -> requests read

local function fill(c)
  local data, err, partial = c.sock:receive(8192)
  local got = data or partial
  if got and #got > 0 then c.buf = c.buf .. got return true end
  if err == "closed" then c.closed = true end
  return false
end

-- Yields until a line (without CRLF) is there; nil when the peer closed.
local function read_line(c)
  while true do
    local i = c.buf:find("\r\n", 1, true)
    if i then
      local line = c.buf:sub(1, i - 1)
      c.buf = c.buf:sub(i + 2)
      return line
    end
    if c.closed then return nil end
    if not fill(c) then
      if c.closed then return nil end
      coroutine.yield("read")
    end
  end
end

local function read_request(c)
  local line = read_line(c)
  if not line then return nil end
  local method, path = line:match("^(%u+) (%S+) HTTP/1%.1$")
  local headers = {}
  while true do
    local h = read_line(c)
    if not h then return nil end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local len = tonumber(headers["content-length"] or 0)
  while #c.buf < len do
    if c.closed then return nil end
    if not fill(c) then coroutine.yield("read") end
  end
  c.buf = c.buf:sub(len + 1)
  return { method = method, path = path, headers = headers }
end

local function send(c, data)
  c.sock:settimeout(5)
  c.sock:send(data)
  c.sock:settimeout(0)
end

local function sleep(c, s)
  c.wake_at = socket.gettime() + s
  coroutine.yield("sleep")
end

local function ok(body, extra)
  return "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n" .. (extra or "") .. "\r\n" .. body
end

local handlers = {}
handlers["/ok"] = function(c) send(c, ok("ok")) end
handlers["/conns"] = function(c) send(c, ok(tostring(accepted))) end
handlers["/open"] = function(c) send(c, ok(tostring(#conns))) end
handlers["/count"] = function(c, req) send(c, ok(tostring(requests[req.path:match("%?(.*)$") or ""] or 0))) end
handlers["/delay"] = function(c)
  sleep(c, 1)
  send(c, ok("late"))
end
handlers["/chunked"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
  sleep(c, 0.05)
  send(c, "6\r\n world\r\n0\r\n\r\n")
end
handlers["/close-delimited"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
  sleep(c, 0.05)
  send(c, " of the connection")
  return "close"
end
handlers["/informational"] = function(c)
  send(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
  send(c, ok("ok", "X-Final: yes\r\n"))
end
handlers["/slow-headers"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\n")
  sleep(c, 3)
  return "close"
end
handlers["/never"] = function(c)
  local deadline = socket.gettime() + 10
  while not c.closed and socket.gettime() < deadline do
    if not fill(c) then coroutine.yield("read") end
  end
  return "close"
end
handlers["/close-mid-body"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
  return "close"
end
handlers["/bad-status"] = function(c) send(c, "HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") end
handlers["/cl-te"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
end
handlers["/two-cl"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
end
handlers["/big-headers"] = function(c)
  send(c, ok("ok", ("X-Filler: " .. ("x"):rep(1000) .. "\r\n"):rep(40)))
end
handlers["/stale"] = function(c)
  if c.served > 1 then return "close" end
  send(c, ok("fresh"))
end

local function serve(c)
  while true do
    local req = read_request(c)
    if not req then break end
    c.served = c.served + 1
    local path = req.path:match("^[^?]*")
    requests[path] = (requests[path] or 0) + 1
    local h = handlers[path]
    local how
    if h then how = h(c, req) else send(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") end
    if how == "close" then break end
  end
  c.sock:close()
end

while socket.gettime() - started < 300 do
  local reads = { server }
  for _, c in ipairs(conns) do if c.state == "read" then reads[#reads + 1] = c.sock end end
  local readable = socket.select(reads, nil, 0.02)
  while true do
    local s = server:accept()
    if not s then break end
    s:settimeout(0)
    accepted = accepted + 1
    local c = { sock = s, buf = "", served = 0, state = "read", since = socket.gettime() }
    c.co = coroutine.create(serve)
    conns[#conns + 1] = c
  end
  local now = socket.gettime()
  local keep = {}
  for _, c in ipairs(conns) do
    local run = (c.state == "read" and (readable[c.sock] or c.first == nil))
      or (c.state == "sleep" and now >= c.wake_at)
    if run then
      c.first = false
      local okr, state = coroutine.resume(c.co, c)
      if not okr then io.stderr:write("bad_origin: ", tostring(state), "\n") end
      c.state = state
    end
    if coroutine.status(c.co) ~= "dead" and now - c.since < 60 then keep[#keep + 1] = c
    elseif coroutine.status(c.co) ~= "dead" then c.sock:close() end
  end
  conns = keep
end
