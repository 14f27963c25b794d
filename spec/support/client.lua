-- Clients for end-to-end specs: curl (the real-world client), a raw TLS
-- socket (lua-sec) that sends arbitrary bytes, and an HTTP/1.x response
-- parser for what the raw socket reads. Only 127.0.0.1, every wait bounded.
local socket = require "socket"
local ssl = require "ssl"
local util = require "support.util"

local client = {}

---------------------------------------------------------------------------
-- HTTP/1.x response parsing
---------------------------------------------------------------------------

-- One header parser for the specs and for users' edge.testing.server.
local parse_header_lines = require("edge.testing.server").parse_header_lines
client.parse_header_lines = parse_header_lines

--- Decodes a chunked body starting at `pos`. Returns body, next position,
-- or nil when incomplete, or false and a message when malformed.
local function parse_chunked(data, pos)
  local parts = {}
  for _ = 1, 100000 do
    local e = data:find("\r\n", pos, true)
    if not e then return nil end
    local size = tonumber(data:sub(pos, e - 1):match("^(%x+)"), 16)
    if not size then return false, "bad chunk size line: " .. data:sub(pos, e - 1) end
    pos = e + 2
    if size == 0 then
      -- Trailers, then an empty line.
      local t = data:find("\r\n\r\n", pos - 2, true)
      if not t then return nil end
      return table.concat(parts), t + 4
    end
    if #data < pos + size + 1 then return nil end
    parts[#parts + 1] = data:sub(pos, pos + size - 1)
    pos = pos + size + 2
  end
  return false, "too many chunks"
end

--- Parses the "key=value" lines spec/fixtures/echo.lua answers with.
function client.echo_fields(body)
  local t = {}
  for line in (body or ""):gmatch("[^\n]+") do
    local k, v = line:match("^([^=]+)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

--- Parses as many complete responses as `data` holds.
-- opts.methods: list of request methods in order (a HEAD response has no
-- body); opts.closed: the peer closed, so a body without length ends at the
-- end of data. Returns a list of responses { version, status, reason,
-- headers, header_list, body, raw } and the unparsed rest.
function client.parse_responses(data, opts)
  opts = opts or {}
  local methods = opts.methods or {}
  local out, pos, req_index = {}, 1, 1
  for _ = 1, 10000 do
    if pos > #data then break end
    local start = pos
    local hend = data:find("\r\n\r\n", pos, true)
    if not hend then break end
    local head = data:sub(pos, hend + 1)
    local version, status, reason = head:match("^HTTP/(%d%.%d) (%d%d%d) ?([^\r\n]*)\r\n")
    if not version then
      out.error = "malformed status line: " .. head:sub(1, 80)
      break
    end
    status = tonumber(status)
    local headers, list = parse_header_lines(head:match("^[^\n]*\n(.*)$") or "")
    local r = { version = version, status = status, reason = reason,
                headers = headers, header_list = list }
    local body_start = hend + 4
    local method = methods[req_index]
    local te = headers["transfer-encoding"]
    if status < 200 or status == 204 or status == 304 or method == "HEAD" then
      r.body, pos = "", body_start
    elseif te and te:lower():find("chunked", 1, true) then
      local body, npos = parse_chunked(data, body_start)
      if body == nil then break end
      if body == false then out.error = npos break end
      r.body, pos = body, npos
    elseif headers["content-length"] then
      local n = tonumber(headers["content-length"])
      if not n then out.error = "bad content-length" break end
      if #data < body_start + n - 1 then break end
      r.body, pos = data:sub(body_start, body_start + n - 1), body_start + n
    else
      if not opts.closed then break end
      r.body, pos = data:sub(body_start), #data + 1
    end
    r.raw = data:sub(start, pos - 1)
    out[#out + 1] = r
    if status >= 200 then req_index = req_index + 1 end
  end
  return out, data:sub(pos)
end

--- The final (non-1xx) responses only.
function client.final_responses(list)
  local out = {}
  for _, r in ipairs(list) do if r.status >= 200 then out[#out + 1] = r end end
  return out
end

---------------------------------------------------------------------------
-- curl
---------------------------------------------------------------------------

--- Runs curl with `-sk --max-time 10 -D HDR -o BODY -w '%{http_code} %{http_version}'`
-- plus `args` (a list, or several string arguments). Returns status (number,
-- 0 when no response), headers (lower-case names, of the last response),
-- body, http_version ("1.1"), info { exit, stderr, stdout, raw_headers,
-- header_blocks }. With `-v` in args the verbose trace is in info.stderr.
function client.curl(...)
  local args = ...
  if type(args) ~= "table" then args = { ... } end
  local dir = util.tmpdir("curl")
  local hdr, body = dir .. "/headers", dir .. "/body"
  local argv = { "curl", "-sk", "--max-time", "10", "-D", hdr, "-o", body,
                 "-w", "%{http_code} %{http_version}" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local code, out, err = util.run(argv, { timeout = 15 })
  local raw = util.read_file(hdr) or ""
  local bodytext = util.read_file(body) or ""
  os.execute("rm -rf " .. util.q(dir))
  -- -D holds every header block (1xx, then the final one); keep the last.
  local blocks = {}
  for block in (raw .. "\r\n"):gmatch("(HTTP/[^\r\n]*\r\n.-\r\n)\r\n") do
    blocks[#blocks + 1] = block
  end
  local headers = parse_header_lines((blocks[#blocks] or ""):match("^[^\n]*\n(.*)$") or "")
  local status, version = out:match("^(%d+) (%S+)")
  return tonumber(status) or 0, headers, bodytext, version,
    { exit = code, stderr = err, stdout = out, raw_headers = raw, header_blocks = blocks }
end

---------------------------------------------------------------------------
-- Raw TLS client (lua-sec)
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

--- Connects to 127.0.0.1:port and does a TLS handshake.
-- opts: protocol (lua-sec name, default "tlsv1_3"), alpn (string or list;
-- default none), ciphers, timeout (seconds, default 5, at most 5),
-- rst (true: SO_LINGER 0, so close() sends a TCP RST instead of a FIN).
-- Returns a connection, or nil and the error.
function client.tls(port, opts)
  opts = opts or {}
  local timeout = math.min(opts.timeout or 5, 5)
  local tcp = socket.tcp4()
  tcp:settimeout(timeout)
  local ok, err = tcp:connect("127.0.0.1", port)
  if not ok then tcp:close() return nil, "connect: " .. tostring(err) end
  if opts.rst then tcp:setoption("linger", { on = true, timeout = 0 }) end
  local params = { mode = "client", protocol = opts.protocol or "tlsv1_3",
                   verify = "none", options = "all", alpn = opts.alpn,
                   ciphers = opts.ciphers }
  local conn, werr = ssl.wrap(tcp, params)
  if not conn then tcp:close() return nil, "wrap: " .. tostring(werr) end
  conn:settimeout(timeout)
  local deadline = util.now() + timeout
  while true do
    local hok, herr = conn:dohandshake()
    if hok then break end
    if (herr == "wantread" or herr == "wantwrite" or herr == "timeout") and util.now() < deadline then
      util.sleep(0.01)
    else
      conn:close()
      return nil, "handshake: " .. tostring(herr)
    end
  end
  return setmetatable({ conn = conn, buf = "", closed = false }, Conn)
end

--- The protocol ALPN selected (nil when none).
function Conn:alpn()
  return self.conn:getalpn()
end

--- TLS version and cipher as lua-sec reports them.
function Conn:info()
  return self.conn:info()
end

--- Sends all of `data`. Returns true, or nil and the error.
function Conn:send(data)
  local i = 1
  local deadline = util.now() + 5
  while i <= #data do
    local n, err, last = self.conn:send(data, i)
    if n then
      i = n + 1
    elseif err == "timeout" or err == "wantwrite" or err == "wantread" then
      i = (last or i - 1) + 1
      if util.now() > deadline then return nil, "send timeout" end
    else
      return nil, err
    end
  end
  return true
end

--- Reads whatever arrives within `step` seconds; appends to self.buf.
-- Returns "data", "timeout" or "closed".
function Conn:read_some(step)
  if self.closed then return "closed" end
  self.conn:settimeout(step or 0.05)
  local data, err, partial = self.conn:receive(16384)
  local got = data or partial
  if got and #got > 0 then self.buf = self.buf .. got end
  if err and err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then
    self.closed = true
    self.close_reason = err
    return "closed"
  end
  if got and #got > 0 then return "data" end
  return "timeout"
end

--- Reads until pred(buffer) is true, the peer closes, or `timeout` seconds
-- (default 5) pass. Returns the buffer and "matched" | "closed" | "timeout".
function Conn:read_until(pred, timeout)
  local deadline = util.now() + (timeout or 5)
  while true do
    if pred and pred(self.buf) then return self.buf, "matched" end
    if self.closed then return self.buf, "closed" end
    if util.now() >= deadline then return self.buf, "timeout" end
    self:read_some(math.min(0.05, math.max(0.001, deadline - util.now())))
  end
end

--- Reads until the peer closes or `timeout` s pass.
function Conn:read_all(timeout)
  return self:read_until(nil, timeout)
end

--- Reads until `n` final responses are complete (or close / timeout), then
-- parses. opts: methods (list of request methods), timeout.
-- Returns the list of parsed responses (1xx included) and the status word.
function Conn:read_responses(n, opts)
  opts = opts or {}
  local status
  local function enough(buf)
    local list = client.parse_responses(buf, { methods = opts.methods })
    return #client.final_responses(list) >= n
  end
  local _
  _, status = self:read_until(enough, opts.timeout or 5)
  local list = client.parse_responses(self.buf, { methods = opts.methods, closed = self.closed })
  return list, status
end

--- Waits (at most `timeout` s) for the peer to close; returns true if it did.
-- Data arriving meanwhile is kept in self.buf.
function Conn:wait_closed(timeout)
  local _, st = self:read_all(timeout or 3)
  return st == "closed"
end

--- Clears the receive buffer.
function Conn:reset()
  self.buf = ""
end

--- Closes the socket.
function Conn:close()
  if self.conn then self.conn:close() end
  self.closed = true
end

--- A plain TCP connection (no TLS) with the same read helpers.
function client.tcp(port, timeout)
  local tcp = socket.tcp4()
  tcp:settimeout(math.min(timeout or 5, 5))
  local ok, err = tcp:connect("127.0.0.1", port)
  if not ok then tcp:close() return nil, err end
  return setmetatable({ conn = tcp, buf = "", closed = false }, Conn)
end

---------------------------------------------------------------------------
-- Request builders
---------------------------------------------------------------------------

--- Builds an HTTP/1.1 request. opts: method, path, version ("1.1"),
-- host ("localhost"; false to omit), headers (list of {name, value} or
-- map), body.
function client.request(opts)
  opts = opts or {}
  local lines = { string.format("%s %s HTTP/%s", opts.method or "GET", opts.path or "/",
    opts.version or "1.1") }
  if opts.host ~= false then lines[#lines + 1] = "Host: " .. (opts.host or "localhost") end
  local hs = opts.headers or {}
  if hs[1] then
    for _, h in ipairs(hs) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  else
    local names = {}
    for k in pairs(hs) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. hs[k] end
  end
  if opts.body and not opts.no_length then
    lines[#lines + 1] = "Content-Length: " .. #opts.body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")
end

return client
