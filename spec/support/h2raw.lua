-- A raw HTTP/2 client for end-to-end specs: frames built byte by byte, so a
-- spec can send what no real client would (bad frames, floods, malformed
-- requests), and a frame reader that keeps per-stream state.
--
--   local h2raw = require "support.h2raw"
--   local c = assert(h2raw.connect(srv.port))            -- TLS, ALPN "h2"
--   local c = assert(h2raw.connect(srv.plain_port, { plain = true }))  -- prior knowledge
--   c:handshake()                          -- waits for the server's SETTINGS
--   local id = c:request { path = "/x", headers = { { "x-test", "1" } } }
--   local res = c:response(id)             -- { status, headers, body, rst, ended }
--   c:send(h2raw.rst(id, h2raw.CANCEL)); c:wait_goaway(); c:wait_closed(); c:close()
--
-- HPACK: requests are encoded with literal header fields without indexing and
-- without Huffman coding (h2raw.hpack.encode); what the server sends is
-- decoded in full (static and dynamic table, Huffman), so any response the
-- server's nghttp2 deflater produces can be read.
--
-- Connects to 127.0.0.1 only. Every read is bounded in time (default 5 s);
-- sending goes through support.client (bounded too).
local client = require "support.client"
local util = require "support.util"

local h2raw = {}

h2raw.PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

-- Frame types (RFC 9113 section 6).
h2raw.DATA, h2raw.HEADERS, h2raw.PRIORITY, h2raw.RST_STREAM = 0, 1, 2, 3
h2raw.SETTINGS, h2raw.PUSH_PROMISE, h2raw.PING, h2raw.GOAWAY = 4, 5, 6, 7
h2raw.WINDOW_UPDATE, h2raw.CONTINUATION = 8, 9
h2raw.FRAME_NAMES = { [0] = "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
  "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION" }

-- Flags.
h2raw.END_STREAM, h2raw.ACK, h2raw.END_HEADERS, h2raw.PADDED, h2raw.PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

-- Error codes (RFC 9113 section 7).
h2raw.NO_ERROR, h2raw.PROTOCOL_ERROR, h2raw.INTERNAL_ERROR, h2raw.FLOW_CONTROL_ERROR = 0, 1, 2, 3
h2raw.SETTINGS_TIMEOUT, h2raw.STREAM_CLOSED, h2raw.FRAME_SIZE_ERROR, h2raw.REFUSED_STREAM = 4, 5, 6, 7
h2raw.CANCEL, h2raw.COMPRESSION_ERROR, h2raw.CONNECT_ERROR, h2raw.ENHANCE_YOUR_CALM = 8, 9, 10, 11
h2raw.INADEQUATE_SECURITY, h2raw.HTTP_1_1_REQUIRED = 12, 13
h2raw.ERROR_NAMES = { [0] = "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
  "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED" }

-- SETTINGS identifiers.
h2raw.HEADER_TABLE_SIZE, h2raw.ENABLE_PUSH, h2raw.MAX_CONCURRENT_STREAMS = 1, 2, 3
h2raw.INITIAL_WINDOW_SIZE, h2raw.MAX_FRAME_SIZE, h2raw.MAX_HEADER_LIST_SIZE = 4, 5, 6

h2raw.DEFAULT_MAX_FRAME = 16384

--- "PROTOCOL_ERROR (1)" for messages.
function h2raw.error_name(code)
  if code == nil then return "none" end
  return string.format("%s (%d)", h2raw.ERROR_NAMES[code] or "UNKNOWN", code)
end

---------------------------------------------------------------------------
-- HPACK (RFC 7541)
---------------------------------------------------------------------------

local hpack = {}
h2raw.hpack = hpack

-- Appendix A.
local STATIC = {
  { ":authority", "" }, { ":method", "GET" }, { ":method", "POST" }, { ":path", "/" },
  { ":path", "/index.html" }, { ":scheme", "http" }, { ":scheme", "https" }, { ":status", "200" },
  { ":status", "204" }, { ":status", "206" }, { ":status", "304" }, { ":status", "400" },
  { ":status", "404" }, { ":status", "500" }, { "accept-charset", "" },
  { "accept-encoding", "gzip, deflate" }, { "accept-language", "" }, { "accept-ranges", "" },
  { "accept", "" }, { "access-control-allow-origin", "" }, { "age", "" }, { "allow", "" },
  { "authorization", "" }, { "cache-control", "" }, { "content-disposition", "" },
  { "content-encoding", "" }, { "content-language", "" }, { "content-length", "" },
  { "content-location", "" }, { "content-range", "" }, { "content-type", "" }, { "cookie", "" },
  { "date", "" }, { "etag", "" }, { "expect", "" }, { "expires", "" }, { "from", "" },
  { "host", "" }, { "if-match", "" }, { "if-modified-since", "" }, { "if-none-match", "" },
  { "if-range", "" }, { "if-unmodified-since", "" }, { "last-modified", "" }, { "link", "" },
  { "location", "" }, { "max-forwards", "" }, { "proxy-authenticate", "" },
  { "proxy-authorization", "" }, { "range", "" }, { "referer", "" }, { "refresh", "" },
  { "retry-after", "" }, { "server", "" }, { "set-cookie", "" },
  { "strict-transport-security", "" }, { "transfer-encoding", "" }, { "user-agent", "" },
  { "vary", "" }, { "via", "" }, { "www-authenticate", "" },
}
hpack.STATIC = STATIC

-- Appendix B: the code length of every symbol 0..256 (256 is EOS). The code
-- is canonical (codes of one length are consecutive, in symbol order, and
-- each length continues from the previous one), so the lengths define it.
local HUFFMAN_LENGTHS = {
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
}

--- The canonical code of every symbol: { [sym] = { code, length } }.
local huffman_codes
function hpack.huffman_codes()
  if huffman_codes then return huffman_codes end
  local order = {}
  for s = 0, 256 do order[#order + 1] = s end
  table.sort(order, function(a, b)
    local la, lb = HUFFMAN_LENGTHS[a + 1], HUFFMAN_LENGTHS[b + 1]
    if la ~= lb then return la < lb end
    return a < b
  end)
  local codes, code, prev = {}, -1, HUFFMAN_LENGTHS[order[1] + 1]
  for _, s in ipairs(order) do
    local len = HUFFMAN_LENGTHS[s + 1]
    code = (code + 1) << (len - prev)
    prev = len
    codes[s] = { code, len }
  end
  huffman_codes = codes
  return codes
end

-- Decoding tree: node[0] / node[1] is a child node or a symbol (a number).
local huffman_tree
local function get_huffman_tree()
  if huffman_tree then return huffman_tree end
  local root = {}
  for s, cl in pairs(hpack.huffman_codes()) do
    local code, len = cl[1], cl[2]
    local node = root
    for i = len - 1, 1, -1 do
      local bit = (code >> i) & 1
      node[bit] = node[bit] or {}
      node = node[bit]
    end
    node[code & 1] = s
  end
  huffman_tree = root
  return root
end

--- Decodes a Huffman-coded string. Returns the text, or nil and an error.
function hpack.huffman_decode(s)
  local root = get_huffman_tree()
  local out, node, depth, ones = {}, root, 0, true
  for i = 1, #s do
    local b = s:byte(i)
    for k = 7, 0, -1 do
      local bit = (b >> k) & 1
      local nxt = node[bit]
      if type(nxt) == "number" then
        if nxt == 256 then return nil, "EOS inside a Huffman string" end
        out[#out + 1] = string.char(nxt)
        node, depth, ones = root, 0, true
      elseif nxt == nil then
        return nil, "bad Huffman code"
      else
        node, depth, ones = nxt, depth + 1, ones and bit == 1
      end
    end
  end
  -- Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if depth > 7 or not ones then return nil, "bad Huffman padding" end
  return table.concat(out)
end

--- Huffman-encodes a string (for the helper's own specs).
function hpack.huffman_encode(s)
  local codes = hpack.huffman_codes()
  local out, acc, nbits = {}, 0, 0
  for i = 1, #s do
    local cl = codes[s:byte(i)]
    acc = (acc << cl[2]) | cl[1]
    nbits = nbits + cl[2]
    while nbits >= 8 do
      nbits = nbits - 8
      out[#out + 1] = string.char((acc >> nbits) & 0xff)
    end
    acc = acc & ((1 << nbits) - 1)
  end
  if nbits > 0 then
    out[#out + 1] = string.char(((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xff)
  end
  return table.concat(out)
end

--- An integer with an N-bit prefix (section 5.1); `first` holds the bits
-- above the prefix in the first byte.
function hpack.int(v, nbits, first)
  first = first or 0
  local max = (1 << nbits) - 1
  if v < max then return string.char(first | v) end
  local out = { string.char(first | max) }
  v = v - max
  while v >= 128 do
    out[#out + 1] = string.char((v & 127) | 128)
    v = v >> 7
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end

--- A string literal without Huffman coding (section 5.2).
function hpack.str(s)
  return hpack.int(#s, 7, 0) .. s
end

--- Literal header field without indexing, new name (section 6.2.2).
function hpack.literal(name, value)
  return "\0" .. hpack.str(name) .. hpack.str(value)
end

--- Literal header field with incremental indexing, new name (section 6.2.1):
-- the field enters the server's dynamic table (index 62 when it is the newest).
function hpack.literal_indexed(name, value)
  return "\64" .. hpack.str(name) .. hpack.str(value)
end

--- Indexed header field (section 6.1).
function hpack.indexed(index)
  return hpack.int(index, 7, 0x80)
end

--- Encodes a list of { name, value } as literals without indexing.
function hpack.encode(fields)
  local out = {}
  for i, f in ipairs(fields) do out[i] = hpack.literal(f[1], f[2]) end
  return table.concat(out)
end

local function decode_int(s, pos, nbits)
  local b = s:byte(pos)
  if not b then return nil, "truncated integer" end
  local max = (1 << nbits) - 1
  local v = b & max
  pos = pos + 1
  if v < max then return v, pos end
  local shift = 0
  repeat
    b = s:byte(pos)
    if not b then return nil, "truncated integer" end
    pos = pos + 1
    v = v + ((b & 127) << shift)
    shift = shift + 7
    if shift > 28 then return nil, "integer too large" end
  until b < 128
  return v, pos
end

local function decode_str(s, pos)
  local b = s:byte(pos)
  if not b then return nil, "truncated string" end
  local len, p = decode_int(s, pos, 7)
  if not len then return nil, p end
  if p + len - 1 > #s then return nil, "truncated string" end
  local raw = s:sub(p, p + len - 1)
  if b & 0x80 ~= 0 then
    local text, err = hpack.huffman_decode(raw)
    if not text then return nil, err end
    raw = text
  end
  return raw, p + len
end

local Decoder = {}
Decoder.__index = Decoder

--- A decoder with its own dynamic table (one per connection).
function hpack.decoder(max_size)
  return setmetatable({ dynamic = {}, size = 0, max = max_size or 4096 }, Decoder)
end

function Decoder:get(index)
  if index >= 1 and index <= #STATIC then return STATIC[index][1], STATIC[index][2] end
  local e = self.dynamic[index - #STATIC]
  if e then return e[1], e[2] end
end

function Decoder:evict()
  while self.size > self.max and #self.dynamic > 0 do
    local e = table.remove(self.dynamic)
    self.size = self.size - (#e[1] + #e[2] + 32)
  end
end

function Decoder:add(name, value)
  table.insert(self.dynamic, 1, { name, value })
  self.size = self.size + #name + #value + 32
  self:evict()   -- an entry larger than the table empties it (section 4.4)
end

--- Decodes a whole header block. Returns a list of { name, value }, or nil
-- and an error message.
function Decoder:decode(block)
  local out, pos = {}, 1
  while pos <= #block do
    local b = block:byte(pos)
    if b & 0x80 ~= 0 then
      local index, p = decode_int(block, pos, 7)
      if not index then return nil, p end
      local name, value = self:get(index)
      if not name then return nil, "bad index " .. index end
      out[#out + 1] = { name, value }
      pos = p
    elseif b & 0xe0 == 0x20 then
      local size, p = decode_int(block, pos, 5)
      if not size then return nil, p end
      self.max = size
      self:evict()
      pos = p
    else
      local indexing = b & 0xc0 == 0x40
      local index, p = decode_int(block, pos, indexing and 6 or 4)
      if not index then return nil, p end
      local name, value
      if index == 0 then
        name, p = decode_str(block, p)
        if not name then return nil, p end
      else
        name = self:get(index)
        if not name then return nil, "bad index " .. index end
      end
      value, p = decode_str(block, p)
      if not value then return nil, p end
      if indexing then self:add(name, value) end
      out[#out + 1] = { name, value }
      pos = p
    end
  end
  return out
end

---------------------------------------------------------------------------
-- Frames (RFC 9113 section 4 and 6)
---------------------------------------------------------------------------

--- One frame: 9-byte header and payload.
function h2raw.frame(ftype, flags, stream, payload)
  payload = payload or ""
  assert(#payload < 1 << 24, "frame payload too large")
  return string.pack(">I3BBI4", #payload, ftype, flags or 0, stream & 0x7fffffff) .. payload
end

--- SETTINGS: list of { id, value }; ack = true for an ACK (empty).
function h2raw.settings(list, ack)
  if ack then return h2raw.frame(h2raw.SETTINGS, h2raw.ACK, 0, "") end
  local p = {}
  for i, s in ipairs(list or {}) do p[i] = string.pack(">I2I4", s[1], s[2]) end
  return h2raw.frame(h2raw.SETTINGS, 0, 0, table.concat(p))
end

function h2raw.ping(data, ack)
  data = data or "12345678"
  return h2raw.frame(h2raw.PING, ack and h2raw.ACK or 0, 0, data)
end

function h2raw.rst(stream, code)
  return h2raw.frame(h2raw.RST_STREAM, 0, stream, string.pack(">I4", code))
end

function h2raw.goaway(last_stream, code, debug)
  return h2raw.frame(h2raw.GOAWAY, 0, 0, string.pack(">I4I4", last_stream, code) .. (debug or ""))
end

function h2raw.window_update(stream, increment)
  return h2raw.frame(h2raw.WINDOW_UPDATE, 0, stream, string.pack(">I4", increment))
end

--- DATA frames for `data` (split at 16384 bytes); END_STREAM on the last
-- when end_stream is true.
function h2raw.data(stream, data, end_stream)
  local out, i = {}, 1
  repeat
    local chunk = data:sub(i, i + h2raw.DEFAULT_MAX_FRAME - 1)
    i = i + #chunk
    local last = i > #data
    out[#out + 1] = h2raw.frame(h2raw.DATA, (last and end_stream) and h2raw.END_STREAM or 0, stream, chunk)
  until last
  return table.concat(out)
end

--- A header block as HEADERS plus CONTINUATION frames of at most 16384
-- bytes. opts: end_stream (default false), end_headers (default true: set
-- on the last frame).
function h2raw.headers(stream, block, opts)
  opts = opts or {}
  local max = h2raw.DEFAULT_MAX_FRAME
  local out, i, first = {}, 1, true
  repeat
    local chunk = block:sub(i, i + max - 1)
    i = i + #chunk
    local last = i > #block
    local flags = 0
    if first and opts.end_stream then flags = flags | h2raw.END_STREAM end
    if last and opts.end_headers ~= false then flags = flags | h2raw.END_HEADERS end
    out[#out + 1] = h2raw.frame(first and h2raw.HEADERS or h2raw.CONTINUATION, flags, stream, chunk)
    first = false
  until last
  return table.concat(out)
end

function h2raw.continuation(stream, block, end_headers)
  return h2raw.frame(h2raw.CONTINUATION, end_headers and h2raw.END_HEADERS or 0, stream, block)
end

--- The request's fields: pseudo-headers then headers. opts: method ("GET"),
-- scheme ("https"), authority ("localhost"; false to omit), path ("/"),
-- headers (list of { name, value }).
function h2raw.request_fields(opts)
  local f = { { ":method", opts.method or "GET" }, { ":scheme", opts.scheme or "https" } }
  if opts.authority ~= false then f[#f + 1] = { ":authority", opts.authority or "localhost" } end
  f[#f + 1] = { ":path", opts.path or "/" }
  for _, h in ipairs(opts.headers or {}) do f[#f + 1] = h end
  return f
end

--- Parses one frame at `pos` of `buf`. Returns the frame and the position
-- after it, or nil when the buffer does not hold a whole frame.
function h2raw.parse_frame(buf, pos)
  pos = pos or 1
  if #buf - pos + 1 < 9 then return nil end
  local len, ftype, flags, stream = string.unpack(">I3BBI4", buf, pos)
  if #buf - pos + 1 < 9 + len then return nil end
  return { type = ftype, flags = flags, stream = stream & 0x7fffffff, length = len,
           payload = buf:sub(pos + 9, pos + 8 + len) }, pos + 9 + len
end

--- "HEADERS stream=1 flags=0x5 len=30" for messages.
function h2raw.describe(f)
  local s = string.format("%s stream=%d flags=0x%x len=%d", h2raw.FRAME_NAMES[f.type] or ("type" .. f.type),
    f.stream, f.flags, f.length)
  if f.type == h2raw.GOAWAY and f.length >= 8 then
    local last, code = string.unpack(">I4I4", f.payload)
    s = s .. string.format(" last=%d code=%s debug=%q", last, h2raw.error_name(code), f.payload:sub(9))
  elseif f.type == h2raw.RST_STREAM and f.length == 4 then
    s = s .. " code=" .. h2raw.error_name(string.unpack(">I4", f.payload))
  end
  return s
end

---------------------------------------------------------------------------
-- Connection
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn
h2raw.Conn = Conn

local MAX_KEPT_FRAMES = 2000   -- frames kept in c.frames (counts go on)

--- Connects and (unless opts.preface == false) sends the client preface
-- and a SETTINGS frame. opts: plain (TCP, no TLS), alpn (default "h2"),
-- settings (list of { id, value } for the first SETTINGS), rst (close with
-- a TCP RST), auto_ack (default true: answer the server's SETTINGS and
-- PING), auto_window (default true: WINDOW_UPDATE for every DATA received),
-- timeout (connect/handshake, default 5). Returns the connection, or nil
-- and an error.
function h2raw.connect(port, opts)
  opts = opts or {}
  local sock, err
  if opts.plain then
    sock, err = client.tcp(port, opts.timeout)
    if sock and opts.rst then sock.conn:setoption("linger", { on = true, timeout = 0 }) end
  else
    local alpn = opts.alpn
    if alpn == nil then alpn = "h2" end
    sock, err = client.tls(port, { alpn = alpn, rst = opts.rst, timeout = opts.timeout })
  end
  if not sock then return nil, err end
  local self = setmetatable({
    sock = sock, plain = opts.plain and true or false,
    rbuf = "", rpos = 1, closed = false,
    next_stream = 1, streams = {}, decoder = hpack.decoder(),
    server_settings = {}, settings_frames = {}, settings_acks = 0, ping_acks = 0,
    goaways = {}, frames = {}, counts = {}, frame_count = 0, bytes_in = 0, data_bytes = 0,
    auto_ack = opts.auto_ack ~= false, auto_window = opts.auto_window ~= false,
  }, Conn)
  if opts.preface ~= false then
    local ok, serr = self:send(h2raw.PREFACE .. h2raw.settings(opts.settings or {}))
    if not ok then
      self:close()
      return nil, "sending the preface: " .. tostring(serr)
    end
  end
  return self
end

--- The ALPN protocol selected (nil over plain TCP or without ALPN).
function Conn:alpn()
  if self.plain then return nil end
  return self.sock:alpn()
end

--- Sends bytes. Returns true, or nil and the error (the peer closed...).
function Conn:send(bytes)
  if self.send_failed then return nil, self.send_failed end
  local ok, err = self.sock:send(bytes)
  if not ok then self.send_failed = err or "send failed" end
  return ok, err
end

function Conn:send_frame(ftype, flags, stream, payload)
  return self:send(h2raw.frame(ftype, flags, stream, payload))
end

--- The state of one stream (created on first use).
function Conn:stream(id)
  local st = self.streams[id]
  if not st then
    st = { id = id, chunks = {}, data_bytes = 0, data_frames = 0, blocks = 0, informational = {} }
    self.streams[id] = st
  end
  return st
end

--- Reads what arrives within `step` seconds into the frame buffer.
function Conn:fill(step)
  if self.closed then return "closed" end
  local how = self.sock:read_some(step)
  local chunk = self.sock.buf
  if #chunk > 0 then
    self.sock.buf = ""
    if self.rpos > 1 then
      self.rbuf = self.rbuf:sub(self.rpos)
      self.rpos = 1
    end
    self.rbuf = self.rbuf .. chunk
    self.bytes_in = self.bytes_in + #chunk
  end
  if how == "closed" then
    self.closed = true
    self.close_reason = self.sock.close_reason
  end
  return how
end

local function headers_map(list)
  local map = {}
  for _, f in ipairs(list) do
    if map[f[1]] then map[f[1]] = map[f[1]] .. ", " .. f[2] else map[f[1]] = f[2] end
  end
  return map
end

function Conn:on_header_block(st, list)
  st.blocks = st.blocks + 1
  local map = headers_map(list)
  local status = tonumber(map[":status"])
  if status and status < 200 then
    st.informational[#st.informational + 1] = { status = status, headers = map }
  elseif st.status == nil and status then
    st.status, st.headers, st.header_list = status, map, list
  else
    st.trailers = map
  end
end

--- Updates the connection's state with one frame just read.
function Conn:process(f)
  self.frame_count = self.frame_count + 1
  self.counts[f.type] = (self.counts[f.type] or 0) + 1
  if #self.frames < MAX_KEPT_FRAMES then
    local kept = f
    if f.type == h2raw.DATA then
      kept = { type = f.type, flags = f.flags, stream = f.stream, length = f.length, payload = "" }
    end
    kept.seq = self.frame_count
    self.frames[#self.frames + 1] = kept
  end
  f.seq = self.frame_count
  local t, flags = f.type, f.flags
  if t == h2raw.SETTINGS then
    if flags & h2raw.ACK ~= 0 then
      self.settings_acks = self.settings_acks + 1
    else
      local s = {}
      for i = 1, #f.payload - 5, 6 do
        local id, v = string.unpack(">I2I4", f.payload, i)
        s[id] = v
        self.server_settings[id] = v
      end
      s.length = f.length
      self.settings_frames[#self.settings_frames + 1] = s
      if self.auto_ack then self:send(h2raw.settings(nil, true)) end
    end
  elseif t == h2raw.PING then
    if flags & h2raw.ACK ~= 0 then
      self.ping_acks = self.ping_acks + 1
    elseif self.auto_ack then
      self:send(h2raw.ping(f.payload, true))
    end
  elseif t == h2raw.GOAWAY then
    local last, code = 0, nil
    if #f.payload >= 8 then last, code = string.unpack(">I4I4", f.payload) end
    local g = { last_stream = last & 0x7fffffff, code = code, debug = f.payload:sub(9), seq = f.seq }
    self.goaways[#self.goaways + 1] = g
    self.goaway = self.goaway or g
  elseif t == h2raw.RST_STREAM then
    local st = self:stream(f.stream)
    if #f.payload == 4 then st.rst = string.unpack(">I4", f.payload) else st.rst = -1 end
    st.rst_seq = f.seq
  elseif t == h2raw.HEADERS or t == h2raw.CONTINUATION then
    local st = self:stream(f.stream)
    if t == h2raw.HEADERS then
      local p, stop = 1, #f.payload
      if flags & h2raw.PADDED ~= 0 then
        p = 2
        stop = #f.payload - f.payload:byte(1)
      end
      if flags & h2raw.PRIORITY_FLAG ~= 0 then p = p + 5 end
      st.pending = { f.payload:sub(p, stop) }
      st.pending_end_stream = flags & h2raw.END_STREAM ~= 0
      st.headers_seq = st.headers_seq or f.seq
    else
      st.pending = st.pending or {}
      st.pending[#st.pending + 1] = f.payload
    end
    if flags & h2raw.END_HEADERS ~= 0 then
      local list, err = self.decoder:decode(table.concat(st.pending))
      st.pending = nil
      if list then
        self:on_header_block(st, list)
      else
        self.hpack_error = err
        st.hpack_error = err
      end
      if st.pending_end_stream then st.ended = true end
    end
  elseif t == h2raw.DATA then
    local st = self:stream(f.stream)
    local data = f.payload
    if flags & h2raw.PADDED ~= 0 and #data > 0 then data = data:sub(2, #data - data:byte(1)) end
    st.chunks[#st.chunks + 1] = data
    st.data_bytes = st.data_bytes + #data
    st.data_frames = st.data_frames + 1
    self.data_bytes = self.data_bytes + f.length
    if flags & h2raw.END_STREAM ~= 0 then st.ended = true end
    if self.auto_window and f.length > 0 then
      local wu = h2raw.window_update(0, f.length)
      if not st.ended then wu = wu .. h2raw.window_update(f.stream, f.length) end
      self:send(wu)
    end
  end
end

--- The next frame (processed), or nil and "closed" | "timeout".
function Conn:next_frame(timeout)
  local deadline = util.now() + (timeout or 5)
  while true do
    local f, npos = h2raw.parse_frame(self.rbuf, self.rpos)
    if f then
      self.rpos = npos
      self:process(f)
      return f
    end
    if self.closed then return nil, "closed" end
    local left = deadline - util.now()
    if left <= 0 then return nil, "timeout" end
    self:fill(math.min(0.02, left))
  end
end

--- Reads frames until pred(conn) is true, the peer closes, or `timeout`
-- seconds (default 5) pass. Returns "matched" | "closed" | "timeout".
function Conn:read_until(pred, timeout)
  local deadline = util.now() + (timeout or 5)
  while true do
    if pred and pred(self) then return "matched" end
    local left = deadline - util.now()
    if left <= 0 then return "timeout" end
    local f, why = self:next_frame(left)
    if not f then
      if pred and pred(self) then return "matched" end
      return why
    end
  end
end

--- Waits for the server's first SETTINGS frame (answered with an ACK);
-- returns its entries { [id] = value }, or nil and why.
function Conn:handshake(timeout)
  local how = self:read_until(function(c) return #c.settings_frames > 0 end, timeout)
  if how ~= "matched" then return nil, how end
  return self.settings_frames[1]
end

--- Sends a request; returns its stream id. opts: stream (id, default the
-- next odd one), method, scheme, authority, path, headers (list of
-- { name, value }) or fields (the whole list, pseudo-headers included, as
-- is), body (sent as DATA), end_stream (default true).
function Conn:request(opts)
  opts = opts or {}
  local id = opts.stream or self.next_stream
  if id >= self.next_stream then self.next_stream = id + 2 end
  local fopts = opts
  if not opts.scheme and self.plain then fopts = setmetatable({ scheme = "http" }, { __index = opts }) end
  local fields = opts.fields or h2raw.request_fields(fopts)
  local end_stream = opts.end_stream ~= false
  local bytes = h2raw.headers(id, hpack.encode(fields), { end_stream = end_stream and opts.body == nil })
  if opts.body then bytes = bytes .. h2raw.data(id, opts.body, end_stream) end
  local ok, err = self:send(bytes)
  assert(ok, "sending the request: " .. tostring(err))
  return id
end

--- Waits until stream `id` ends (END_STREAM or RST_STREAM), the connection
-- closes, or `timeout` s pass. Returns the stream { status, headers (map),
-- header_list, body, rst, ended, data_frames } and how the wait ended.
function Conn:response(id, timeout)
  local st = self:stream(id)
  local how = self:read_until(function() return st.ended or st.rst ~= nil end, timeout)
  st.body = table.concat(st.chunks)
  return st, how
end

--- Request + response in one call.
function Conn:get(opts, timeout)
  local id = self:request(opts)
  return self:response(id, timeout)
end

--- Waits for a GOAWAY; returns the first one { last_stream, code, debug } or nil.
function Conn:wait_goaway(timeout)
  self:read_until(function(c) return c.goaway ~= nil end, timeout)
  return self.goaway
end

--- Reads (and processes) until the peer closes; true if it did within `timeout`.
function Conn:wait_closed(timeout)
  return self:read_until(nil, timeout or 3) == "closed"
end

--- The frames kept so far, described one per line (for failure messages).
function Conn:trace(max)
  local out = {}
  local first = math.max(1, #self.frames - (max or 30) + 1)
  for i = first, #self.frames do out[#out + 1] = h2raw.describe(self.frames[i]) end
  if self.closed then out[#out + 1] = "(closed: " .. tostring(self.close_reason) .. ")" end
  return table.concat(out, "\n")
end

function Conn:close()
  pcall(self.sock.close, self.sock)
  self.closed = true
end

return h2raw
