-- Writes the generated seeds of spec/fuzz/corpus/h1/ and spec/fuzz/corpus/h2/.
--
--   lua5.4 spec/fuzz/gen_corpus.lua        (from the repository root)
--
-- Each seed is one meaningful client conversation, so the fuzzer starts from
-- inputs that reach the dispatcher and Lua rather than the parsers' first
-- error. The h2 seeds start AFTER the client preface: fuzz_h2 sends the
-- preface itself. The real_* seeds beside them were captured from curl and
-- nghttp (Huffman-coded HPACK, WINDOW_UPDATE, ...) and are not rewritten here.
local H1_DIR, H2_DIR = "spec/fuzz/corpus/h1/", "spec/fuzz/corpus/h2/"

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

---------------------------------------------------------------------------
-- HTTP/1.1
---------------------------------------------------------------------------

local function req(lines, body)
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local h1 = {}

h1.get = req { "GET / HTTP/1.1", "Host: localhost" }

h1.get_query_headers = req {
  "GET /users/42?a=1&b=%20x+y&b=2&flag&c=%zz HTTP/1.1",
  "Host: Example.COM:8080",
  "User-Agent: curl/7.88.1",
  "Accept: */*",
  "Accept-Encoding: gzip, br",
  "Cookie: a=1; b=2",
  "X-Forwarded-For: 10.0.0.1",
  "X-Forwarded-For: 10.0.0.2",
  "Cache-Control: no-cache",
}

h1.head = req { "HEAD /index.html HTTP/1.1", "Host: localhost" }

h1.post_content_length = req({
  "POST /submit?x=1 HTTP/1.1",
  "Host: localhost",
  "Content-Type: application/x-www-form-urlencoded",
  "Content-Length: 13",
}, "name=edge&v=1")

h1.post_chunked = req({
  "POST /upload HTTP/1.1",
  "Host: localhost",
  "Transfer-Encoding: chunked",
  "Trailer: X-Checksum",
}, "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n")

h1.pipelined = req { "GET / HTTP/1.1", "Host: localhost" }
  .. req { "GET /a?b=c HTTP/1.1", "Host: localhost" }
  .. req({ "POST /p HTTP/1.1", "Host: localhost", "Content-Length: 3" }, "abc")
  .. req { "HEAD / HTTP/1.1", "Host: localhost" }
  .. req { "GET / HTTP/1.1", "Host: localhost" }            -- a cache hit this time

h1.pipelined_chunked_then_get = req({
  "PUT /item/1 HTTP/1.1", "Host: localhost", "Transfer-Encoding: chunked",
}, "3\r\nabc\r\n0\r\n\r\n") .. req { "DELETE /item/1 HTTP/1.1", "Host: localhost" }
  .. req { "GET /item/1 HTTP/1.1", "Host: localhost", "Connection: close" }

h1.http10 = req { "GET /old HTTP/1.0", "Connection: keep-alive" }
  .. req { "GET /old2 HTTP/1.0" }

h1.connection_close = req { "GET / HTTP/1.1", "Host: localhost", "Connection: close" }
  .. req { "GET /never HTTP/1.1", "Host: localhost" }

h1.expect_continue = req({
  "POST /big HTTP/1.1", "Host: localhost", "Expect: 100-continue", "Content-Length: 4",
}, "data")

h1.expect_unknown = req { "POST /x HTTP/1.1", "Host: localhost", "Expect: magic", "Content-Length: 0" }

h1.unknown_method = req { "BREW /pot HTTP/1.1", "Host: localhost" }

h1.connect = req { "CONNECT example.com:443 HTTP/1.1", "Host: example.com:443" }

h1.bad_version = req { "GET / HTTP/1.2", "Host: localhost" }

h1.absolute_form = req { "GET http://example.com/abs/path?q=1 HTTP/1.1", "Host: example.com" }

h1.options_star = req { "OPTIONS * HTTP/1.1", "Host: localhost" }

h1.te_gzip = req({
  "POST /z HTTP/1.1", "Host: localhost", "Transfer-Encoding: gzip, chunked",
}, "0\r\n\r\n")

h1.te_and_length = req({
  "POST /smuggle HTTP/1.1", "Host: localhost", "Content-Length: 4", "Transfer-Encoding: chunked",
}, "0\r\n\r\n")

h1.upgrade_h2c = req {
  "GET / HTTP/1.1", "Host: localhost", "Connection: Upgrade, HTTP2-Settings",
  "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA",
}

h1.no_host = req { "GET / HTTP/1.1", "Accept: */*" }

h1.body_too_large = req({ "POST /big HTTP/1.1", "Host: localhost", "Content-Length: 20000" }, "x")

do
  local lines = { "GET /many HTTP/1.1", "Host: localhost" }
  for i = 1, 33 do lines[#lines + 1] = ("X-H%d: %d"):format(i, i) end
  h1.too_many_headers = req(lines)
end

h1.long_target = req { "GET /" .. ("a"):rep(1100) .. " HTTP/1.1", "Host: localhost" }

h1.big_header = req { "GET /h HTTP/1.1", "Host: localhost", "X-Big: " .. ("b"):rep(4200) }

h1.partial_headers = "GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Partial: "

h1.obs_fold = req { "GET / HTTP/1.1", "Host: localhost", "X-Fold: a", " b" }

h1.lf_only = "GET / HTTP/1.1\nHost: localhost\n\n"

---------------------------------------------------------------------------
-- HTTP/2 (after the preface)
---------------------------------------------------------------------------

local DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION =
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9
local END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

local function frame(ftype, flags, stream, payload)
  payload = payload or ""
  return string.pack(">I3BBI4", #payload, ftype, flags, stream) .. payload
end

local function settings(list)
  local p = {}
  for _, kv in ipairs(list or {}) do p[#p + 1] = string.pack(">I2I4", kv[1], kv[2]) end
  return frame(SETTINGS, 0, 0, table.concat(p))
end

-- HPACK integer with an n-bit prefix.
local function hint(first, n, v)
  local max = (1 << n) - 1
  if v < max then return string.char(first | v) end
  local out = { string.char(first | max) }
  v = v - max
  while v >= 128 do
    out[#out + 1] = string.char(v % 128 + 128)
    v = v // 128
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end
local function hstr(s) return hint(0, 7, #s) .. s end

local hp = {}
function hp.indexed(i) return hint(0x80, 7, i) end
-- literal with incremental indexing, indexed name / new name
function hp.inc(name_index, value) return hint(0x40, 6, name_index) .. hstr(value) end
function hp.inc_new(name, value) return "\x40" .. hstr(name) .. hstr(value) end
-- literal without indexing and never indexed, new name
function hp.lit(name, value) return "\x00" .. hstr(name) .. hstr(value) end
function hp.never(name, value) return "\x10" .. hstr(name) .. hstr(value) end
function hp.lit_idx(name_index, value) return hint(0x00, 4, name_index) .. hstr(value) end
function hp.table_size(n) return hint(0x20, 5, n) end

-- Static table: 2 :method GET, 3 :method POST, 4 :path /, 6 :scheme http,
-- 1 :authority, 4 :path (name), 58 user-agent, 28 content-length, 31 content-type.
local GET, POST, PATH_ROOT, HTTP = hp.indexed(2), hp.indexed(3), hp.indexed(4), hp.indexed(6)
local function authority(v) return hp.inc(1, v) end
local function path(v) return hp.lit_idx(4, v) end
local function method(v) return hp.lit_idx(2, v) end

local PRE = settings()                       -- the client's first frame must be SETTINGS
local function get(stream, p, extra)
  return frame(HEADERS, END_STREAM | END_HEADERS, stream,
               GET .. HTTP .. (p and path(p) or PATH_ROOT) .. authority("localhost") .. (extra or ""))
end

local h2 = {}

h2.get = PRE .. get(1)

h2.get_literals = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1,
  method("GET") .. hp.lit(":scheme", "http") .. path("/users/7?x=1&y=%41&y=2")
  .. hp.lit(":authority", "Example.com:8080") .. hp.inc(58, "fuzz/1.0")
  .. hp.never("cookie", "secret=1") .. hp.lit("accept", "*/*") .. hp.inc_new("x-custom", "v"))

h2.head = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1,
  method("HEAD") .. HTTP .. PATH_ROOT .. authority("localhost"))

h2.post_data = PRE .. frame(HEADERS, END_HEADERS, 1,
  POST .. HTTP .. path("/submit") .. authority("localhost") .. hp.lit_idx(28, "11")
  .. hp.lit_idx(31, "text/plain"))
  .. frame(DATA, 0, 1, "hello ") .. frame(DATA, END_STREAM, 1, "world")

h2.multi_stream_coalesce = PRE .. get(1, "/same") .. get(3, "/same") .. get(5, "/same") .. get(7, "/other")

h2.continuation = PRE .. frame(HEADERS, END_STREAM, 1, GET .. HTTP)
  .. frame(CONTINUATION, 0, 1, path("/cont"))
  .. frame(CONTINUATION, END_HEADERS, 1, authority("localhost") .. hp.lit("x-a", "b"))

h2.rst_while_sleeping = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1,
  method("DELETE") .. HTTP .. path("/x") .. authority("localhost"))
  .. frame(RST_STREAM, 0, 1, string.pack(">I4", 8))

h2.control_frames = settings { { 1, 0 }, { 2, 0 }, { 3, 100 }, { 4, 65535 }, { 5, 16384 }, { 6, 8192 } }
  .. frame(SETTINGS, ACK, 0) .. frame(PING, 0, 0, "12345678")
  .. frame(WINDOW_UPDATE, 0, 0, string.pack(">I4", 1 << 20))
  .. frame(PRIORITY, 0, 1, string.pack(">I4B", 0, 15)) .. get(1)
  .. frame(WINDOW_UPDATE, 0, 1, string.pack(">I4", 1000))

h2.goaway = PRE .. get(1) .. frame(GOAWAY, 0, 0, string.pack(">I4I4", 1, 0) .. "bye")

h2.dynamic_table = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1,
  GET .. HTTP .. PATH_ROOT .. authority("localhost") .. hp.inc_new("x-session", "abc"))
  -- 62 is x-session, 63 :authority localhost (newest first)
  .. frame(HEADERS, END_STREAM | END_HEADERS, 3, GET .. HTTP .. path("/two") .. hp.indexed(63) .. hp.indexed(62))
  .. frame(HEADERS, END_STREAM | END_HEADERS, 5, hp.table_size(0) .. GET .. HTTP .. PATH_ROOT .. authority("h"))

h2.padded_priority = PRE .. frame(HEADERS, END_STREAM | END_HEADERS | PADDED | PRIO, 1,
  "\x04" .. string.pack(">I4B", 0x80000000, 200)
  .. GET .. HTTP .. path("/pad") .. authority("localhost") .. "\0\0\0\0")
  .. frame(HEADERS, END_HEADERS | PADDED, 3, "\x02" .. POST .. HTTP .. path("/p") .. authority("l") .. "\0\0")
  .. frame(DATA, END_STREAM | PADDED, 3, "\x03abc\0\0\0")

h2.trailers = PRE .. frame(HEADERS, END_HEADERS, 1, POST .. HTTP .. path("/t") .. authority("localhost"))
  .. frame(DATA, 0, 1, "body") .. frame(HEADERS, END_STREAM | END_HEADERS, 1, hp.lit("x-trailer", "1"))

do
  local s = { PRE }
  for i = 0, 19 do s[#s + 1] = get(2 * i + 1, "/s" .. i) end
  h2.many_streams = table.concat(s)
end

do
  local hs = { GET, HTTP, path("/big"), authority("localhost") }
  for i = 1, 40 do hs[#hs + 1] = hp.lit("x-h" .. i, ("v"):rep(100)) end
  h2.too_many_headers = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1, table.concat(hs)) .. get(3)
end

h2.body_too_large = PRE .. frame(HEADERS, END_HEADERS, 1, POST .. HTTP .. path("/b") .. authority("l"))
  .. frame(DATA, 0, 1, ("x"):rep(10000)) .. frame(DATA, END_STREAM, 1, ("x"):rep(7000))  -- > 16 KiB

h2.missing_path = PRE .. frame(HEADERS, END_STREAM | END_HEADERS, 1, GET .. HTTP .. authority("l")) .. get(3)

h2.data_on_stream0 = PRE .. frame(DATA, 0, 0, "bad")

h2.even_stream = PRE .. get(2)

h2.push_promise_from_client = PRE .. frame(PUSH_PROMISE, END_HEADERS, 1, string.pack(">I4", 2) .. GET)

h2.no_settings = get(1)

---------------------------------------------------------------------------

local n = 0
for name, bytes in pairs(h1) do write(H1_DIR .. name, bytes); n = n + 1 end
for name, bytes in pairs(h2) do write(H2_DIR .. name, bytes); n = n + 1 end
-- One HTTP/2 conversation in the h1 corpus too: the cleartext listener detects it.
write(H1_DIR .. "h2_prior_knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" .. h2.get)
print(("wrote %d seeds"):format(n + 1))
