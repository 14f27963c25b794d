-- A raw HTTP/1.1 origin for the edge.proxy specs: canned responses, byte for
-- byte, that neither nginx nor an edge script can send (hop-by-hop response
-- headers, bodies cut short with a Cache-Control that would store them).
--   lua5.4 spec/support/proxy_raw_origin.lua PORT
-- or from a spec: local o = require("support.proxy_raw_origin").start(); o.port; o:stop()
-- One connection at a time; each is answered once and closed. By path:
--   /hop         200, chunked "hello world", with Connection: keep-alive, X-Hop,
--                X-Hop, Keep-Alive, Proxy-Authenticate, Proxy-Foo, Upgrade,
--                and X-End (an end-to-end header that must pass)
--   /chunked-cut 200, chunked, Cache-Control: max-age=60, one 64 KiB chunk,
--                then, 0.3 s later, the connection closes (no last chunk)
--   /cl-cut      200, Content-Length 1000000, Cache-Control: max-age=60,
--                100000 bytes, then, 0.3 s later, the connection closes
-- (The pause lets a streaming proxy pass the head and the first bytes on
-- before the failure, as with a real origin that dies mid-body.)
-- Every wait is bounded (5 s per connection); it exits after 600 s.
if ... == "support.proxy_raw_origin" then
  -- required from a spec: the launcher
  local proc = require "support.proc"
  local util = require "support.util"
  local socket = require "socket"
  local M = {}
  function M.start()
    local self = { port = util.free_port() }
    self.proc = proc.spawn({ "lua5.4", "spec/support/proxy_raw_origin.lua", tostring(self.port) },
      { timeout = 600 })
    local deadline = util.now() + 10
    while util.now() < deadline do
      local s = socket.tcp()
      s:settimeout(0.2)
      local ok = s:connect("127.0.0.1", self.port)
      s:close()
      if ok then break end
      util.sleep(0.05)
    end
    function self:target() return ("http://127.0.0.1:%d"):format(self.port) end
    function self:stop() return self.proc:kill() end
    return self
  end
  return M
end

local socket = require "socket"
local port = assert(tonumber(arg[1]), "usage: proxy_raw_origin.lua PORT")
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(1)
local started = socket.gettime()

local RESPONSES = {
  ["/hop"] = table.concat({
    "HTTP/1.1 200 OK",
    "Content-Type: text/plain",
    "Connection: keep-alive, X-Hop",
    "X-Hop: secret",
    "Keep-Alive: timeout=5, max=100",
    "Proxy-Authenticate: Basic realm=\"origin\"",
    "Proxy-Foo: 1",
    "Upgrade: h2c",
    "Transfer-Encoding: chunked",
    "X-End: kept",
    "", "5", "hello", "6", " world", "0", "", "" }, "\r\n"),
  ["/chunked-cut"] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n10000\r\n" .. ("x"):rep(65536) .. "\r\n",
  ["/cl-cut"] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n"
    .. "Content-Length: 1000000\r\n\r\n" .. ("y"):rep(100000),
}

while socket.gettime() - started < 600 do
  local c = server:accept()
  if c then
    c:settimeout(5)
    local line = c:receive("*l")
    local path = line and line:match("^%u+ (%S+) HTTP/1%.1$")
    -- The rest of the head (a proxied GET has no body).
    for _ = 1, 200 do
      local h = c:receive("*l")
      if not h or h == "" then break end
    end
    local res = path and RESPONSES[path:match("^[^?]*")]
      or "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    c:send(res)
    if path and path:find("%-cut$") then socket.sleep(0.3) end
    -- Let the bytes leave before the close (no RST over unread data).
    c:shutdown("send")
    c:settimeout(0.5)
    c:receive("*a")
    c:close()
  end
end
