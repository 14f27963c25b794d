-- End-to-end specs for HTTP/2: the real binary ($EDGE_BIN) on ephemeral
-- loopback ports, talked to with curl --http2, nghttp and a raw frame client
-- (spec/support/h2raw.lua) that sends what real clients never do: bad
-- frames, malformed requests, resets and floods. The "h2raw" block at the
-- end is a unit spec of that client's HPACK code, so an end-to-end failure
-- is the server's, not the decoder's.
local server = require "support.server"
local client = require "support.client"
local h2raw = require "support.h2raw"
local util = require "support.util"

local curl = client.curl
local hpack = h2raw.hpack

--- A raw HTTP/2 connection (TLS, ALPN h2 unless opts say otherwise) that
-- has read the server's SETTINGS (and acknowledged them).
local function h2(srv, opts)
  opts = opts or {}
  local port = opts.plain and srv.plain_port or srv.port
  local c, err = h2raw.connect(port, opts)
  assert(c, "HTTP/2 connect failed: " .. tostring(err))
  if opts.handshake ~= false then
    local s, why = c:handshake(3)
    assert(s, "no SETTINGS from the server (" .. tostring(why) .. "):\n" .. c:trace())
  end
  return c
end

--- A fresh curl --http2 client still gets 200 (the server survived).
local function assert_h2_serving(srv, path)
  local status, _, _, version, info = curl { "--http2", srv:url(path or "/") }
  assert.are.equal(200, status, "server no longer serves a fresh HTTP/2 client: " .. tostring(info.stderr))
  assert.are.equal("2", version)
end

--- Asserts the stream got a 200 on connection `c`.
local function assert_ok(c, st, what)
  assert.are.equal(200, st.status, (what or "request") .. " on the connection failed:\n" .. c:trace())
end

--- Parses echo.lua's "key=value" lines.
local echo_fields = require("support.client").echo_fields

--- The body big4m.lua sends, built the same way.
local big4m_body
local function expected_big4m()
  if not big4m_body then
    local lines = {}
    for i = 0, 4095 do lines[#lines + 1] = string.format("%07d", i) .. string.rep("y", 1016) .. "\n" end
    big4m_body = table.concat(lines)
  end
  return big4m_body
end

--- Asserts `body` is big4m.lua's body; names the first wrong 1 KiB line.
local function assert_big4m(body, what)
  local want = expected_big4m()
  if body == want then return end
  local bad = "?"
  for i = 0, 4095 do
    if body:sub(i * 1024 + 1, i * 1024 + 1024) ~= want:sub(i * 1024 + 1, i * 1024 + 1024) then
      bad = i
      break
    end
  end
  error(string.format("%s: got %d bytes, want %d; first wrong line %s (%q...)", what or "body", #body,
    #want, tostring(bad), body:sub((tonumber(bad) or 0) * 1024 + 1, (tonumber(bad) or 0) * 1024 + 16)), 2)
end

local function parse_http_date(s)
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7,
                   Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
  local d, mon, y, h, mi, sec = s:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not months[mon] then return nil end
  return os.time { year = tonumber(y), month = months[mon], day = tonumber(d),
                   hour = tonumber(h), min = tonumber(mi), sec = tonumber(sec) }
end

--- Waits (bounded) until `text` occurs `n` more times in the log than `before`.
local function wait_log_count(srv, text, before, n, timeout)
  local deadline = util.now() + (timeout or 2)
  while util.count(srv:log(), text) - before < n and util.now() < deadline do util.sleep(0.05) end
  return util.count(srv:log(), text) - before
end

local KiB = 1024

describe("HTTP/2 over TLS: ALPN and the default greeting #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("curl --http2 negotiates h2 by ALPN and gets the greeting with server, date, content-length", function()
    local status, h, body, version, info = curl { "-v", "--http2", srv:url("/") }
    assert.are.equal(200, status, info.stderr)
    assert.are.equal("2", version)
    assert.matches("ALPN: server accepted h2\n", info.stderr)
    assert.matches("^HTTP/2 200", info.raw_headers)
    assert.are.equal("Hello from edge!", body)
    assert.are.equal("16", h["content-length"])
    assert.matches("^edge/%d", h["server"] or "")
    local t = parse_http_date(h["date"] or "")
    assert.truthy(t, "bad date: " .. tostring(h["date"]))
    assert.is_true(math.abs(t - os.time(os.date("!*t"))) <= 5, "date is off: " .. h["date"])
    -- No connection-specific header in an HTTP/2 response (RFC 9113 8.2.2).
    assert.is_nil(h["connection"])
    assert.is_nil(h["keep-alive"])
    assert.is_nil(h["transfer-encoding"])
  end)

  it("curl --http1.1 negotiates http/1.1 on the same port", function()
    local status, _, body, version, info = curl { "-v", "--http1.1", srv:url("/") }
    assert.are.equal(200, status, info.stderr)
    assert.are.equal("1.1", version)
    assert.matches("ALPN: server accepted http/1%.1", info.stderr)
    assert.are.equal("Hello from edge!", body)
  end)

  it("a raw client offering only h2 gets h2 and an HTTP/2 SETTINGS frame first", function()
    local c = h2(srv, { alpn = "h2", handshake = false })
    assert.are.equal("h2", c:alpn())
    local f = c:next_frame(3)
    assert.truthy(f, "nothing from the server:\n" .. c:trace())
    assert.are.equal(h2raw.SETTINGS, f.type, "first frame: " .. h2raw.describe(f))
    assert.are.equal(0, f.flags & h2raw.ACK)
    local res = c:get { path = "/" }
    c:close()
    assert_ok(c, res)
    assert.are.equal("Hello from edge!", res.body)
    assert.are.equal("16", res.headers["content-length"])
  end)

  it("prefers h2 (server order) when the client lists http/1.1 first", function()
    local c = h2(srv, { alpn = { "http/1.1", "h2" } })
    assert.are.equal("h2", c:alpn())
    local res = c:get { path = "/" }
    c:close()
    assert_ok(c, res)
  end)

  it("closes an h2 connection whose first bytes are not the client preface", function()
    local c = h2(srv, { preface = false, handshake = false })
    assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.is_true(c:wait_closed(3), "connection still open after a bad preface:\n" .. c:trace())
    c:close()
    assert_h2_serving(srv)
  end)
end)

describe("HTTP/2 settings #e2e", function()
  local default, limited

  lazy_setup(function()
    default = server.start { script = "spec/fixtures/sleepy.lua" }
    limited = server.start { script = "spec/fixtures/sleepy.lua", args = { "--h2-max-streams", "5" } }
  end)
  lazy_teardown(function() server.stop_and_check(default, limited) end)

  it("advertises MAX_CONCURRENT_STREAMS 128 by default, a sane window, a bounded header list, no push", function()
    local c = h2(default)
    local s = c.settings_frames[1]
    c:close()
    assert.are.equal(128, s[h2raw.MAX_CONCURRENT_STREAMS])
    local window = s[h2raw.INITIAL_WINDOW_SIZE] or 65535
    assert.is_true(window >= 65535 and window <= 16 * 1024 * KiB, "INITIAL_WINDOW_SIZE " .. window)
    assert.are.equal(16384, s[h2raw.MAX_HEADER_LIST_SIZE], "MAX_HEADER_LIST_SIZE should be --max-header-size")
    assert.are.equal(0, s[h2raw.ENABLE_PUSH])
  end)

  it("advertises MAX_CONCURRENT_STREAMS 5 with --h2-max-streams 5", function()
    local c = h2(limited)
    local s = c.settings_frames[1]
    c:close()
    assert.are.equal(5, s[h2raw.MAX_CONCURRENT_STREAMS])
  end)

  it("serves 5 concurrent streams under --h2-max-streams 5 and does not serve a sixth", function()
    local c = h2(limited)
    -- handshake() acknowledged the SETTINGS, so the limit is in force.
    local ids = {}
    for i = 1, 5 do ids[i] = c:request { path = "/ok" .. i .. "?s=0.3" } end
    for i = 1, 5 do
      local st = c:response(ids[i], 3)
      assert_ok(c, st, "stream " .. i .. " of 5")
    end
    for i = 1, 5 do ids[i] = c:request { path = "/again" .. i .. "?s=0.3" } end
    local sixth = c:request { path = "/sixth?s=0" }
    local st = c:response(sixth, 3)
    c:close()
    -- RFC 9113 5.1.2: a stream error (PROTOCOL_ERROR or REFUSED_STREAM),
    -- which an endpoint may escalate to a connection error (5.4.1).
    assert.are_not.equal(200, st.status, "the sixth concurrent stream was served:\n" .. c:trace())
    local refused = st.rst == h2raw.REFUSED_STREAM or st.rst == h2raw.PROTOCOL_ERROR
      or (c.goaway and c.goaway.code == h2raw.PROTOCOL_ERROR and c.goaway.last_stream < sixth)
    assert.is_true(refused, "the sixth stream was neither reset nor refused by GOAWAY:\n" .. c:trace())
    assert_h2_serving(limited, "/?s=0")
  end)
end)

describe("HTTP/2 concurrent streams (nghttp) #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/sleepy.lua", workers = 1 } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers 100 streams sleeping 0.2 s each on one connection in well under 100 x 0.2 s (-w 1)", function()
    local argv = { "nghttp", "-n", "--stat" }
    for i = 1, 100 do argv[#argv + 1] = srv:url("/n" .. i .. "?s=0.2") end
    local t0 = util.now()
    local code, out, err = util.run(argv, { timeout = 15 })
    local took = util.now() - t0
    assert.are.equal(0, code, "nghttp failed:\n" .. err .. out)
    -- --stat: "id responseEnd requestStart process code size request-path"
    local seen, ids, n = {}, {}, 0
    for id, status, path in out:gmatch("\n%s*(%d+)%s+%+%S+%s+%+%S+%s+%S+%s+(%d+)%s+%d+%s+(%S+)") do
      n = n + 1
      assert.are.equal("200", status, "stream " .. id .. " " .. path)
      seen[path] = true
      ids[id] = true
    end
    assert.are.equal(100, n, "expected 100 responses in nghttp --stat:\n" .. out)
    for i = 1, 100 do assert.truthy(seen["/n" .. i .. "?s=0.2"], "no response for /n" .. i) end
    local distinct = 0
    for _ in pairs(ids) do distinct = distinct + 1 end
    assert.are.equal(100, distinct, "streams not distinct")
    assert.is_true(took >= 0.19, "took " .. took)
    assert.is_true(took < 2, "100 sleeps of 0.2 s on one connection took " .. took .. " s")
  end)
end)

describe("HTTP/2 flow control: a 4 MiB response #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/big4m.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("sends 4 MiB intact to curl --http2", function()
    local status, h, body, version = curl { "--http2", srv:url("/") }
    assert.are.equal(200, status)
    assert.are.equal("2", version)
    assert.are.equal(tostring(4 * 1024 * KiB), h["content-length"])
    assert_big4m(body, "curl --http2")
  end)

  it("sends 4 MiB intact to nghttp with 64 KiB stream and connection windows (-w 16 -W 16)", function()
    local code, out, err = util.run({ "nghttp", "-w", "16", "-W", "16", srv:url("/") }, { timeout = 20 })
    assert.are.equal(0, code, err)
    assert_big4m(out, "nghttp -w 16 -W 16")
  end)

  it("stops at the 65535-byte initial window and resumes on WINDOW_UPDATE (raw)", function()
    local c = h2(srv, { auto_window = false })
    local id = c:request { path = "/" }
    local st = c:stream(id)
    c:read_until(function() return st.data_bytes >= 65535 end, 3)
    -- Anything past the window would arrive now.
    c:read_until(function() return st.data_bytes > 65535 or st.ended end, 0.3)
    assert.are.equal(65535, st.data_bytes, "DATA beyond the flow-control window:\n" .. c:trace())
    assert.is_falsy(st.ended)
    c.auto_window = true
    assert(c:send(h2raw.window_update(0, 8 * 1024 * KiB) .. h2raw.window_update(id, 8 * 1024 * KiB)))
    local res = c:response(id, 10)
    c:close()
    assert_ok(c, res)
    assert_big4m(res.body, "raw client")
  end)

  it("drops a response blocked on flow control when its stream is reset; the connection goes on", function()
    local c = h2(srv, { auto_window = false })
    local id = c:request { path = "/" }
    local st = c:stream(id)
    c:read_until(function() return st.data_bytes >= 65535 end, 3)
    assert(c:send(h2raw.rst(id, h2raw.CANCEL)))
    -- Give the connection window back, then ask again on the same connection.
    assert(c:send(h2raw.window_update(0, 65535)))
    c.auto_window = true
    local res = c:get { path = "/small" }
    c:close()
    assert_ok(c, res, "a request after the reset")
    assert.are.equal("small", res.body)
    assert.are.equal(65535, st.data_bytes, "DATA sent on a reset stream")
    assert.is_nil(srv:sanitizer_report())
  end)
end)

describe("HTTP/2 requests: HEAD, bodies, host #e2e", function()
  local default, echo, bodies, limited
  local dir

  lazy_setup(function()
    default = server.start { script = "lua/default.lua" }
    echo = server.start { script = "spec/fixtures/echo.lua" }
    -- A short drain: a connection the server stopped reading must not hold
    -- the teardown's SIGTERM for 30 s.
    bodies = server.start { script = "spec/fixtures/bodylen.lua", plain = true, args = { "--drain-timeout", "2" } }
    limited = server.start { script = "spec/fixtures/bodylen.lua", args = { "--max-body", "1024", "--drain-timeout", "2" } }
    dir = util.tmpdir("h2bodies")
    util.write_file(dir .. "/100k", string.rep("0123456789", 10240))
    util.write_file(dir .. "/1m", string.rep("m", 1024 * KiB))
    util.write_file(dir .. "/1024", string.rep("b", 1024))
    util.write_file(dir .. "/1025", string.rep("b", 1025))
  end)
  lazy_teardown(function() server.stop_and_check(default, echo, bodies, limited) end)

  it("answers HEAD with content-length and no body (curl --http2 -I)", function()
    local status, h, out, version = curl { "--http2", "-I", default:url("/") }
    assert.are.equal(200, status)
    assert.are.equal("2", version)
    assert.are.equal("16", h["content-length"])
    assert.falsy(out:find("Hello from edge!", 1, true), out)
  end)

  it("answers HEAD with END_STREAM on the HEADERS frame and no DATA frame (raw)", function()
    local c = h2(default)
    local head = c:get { method = "HEAD", path = "/" }
    local get = c:get { path = "/" }
    c:close()
    assert_ok(c, head, "HEAD")
    assert.are.equal("16", head.headers["content-length"])
    assert.are.equal(0, head.data_frames, "DATA after HEAD:\n" .. c:trace())
    assert.are.equal("", head.body)
    assert_ok(c, get, "GET after HEAD")
    assert.are.equal("Hello from edge!", get.body)
  end)

  it("passes version 2, scheme https, :authority as host (curl --http2)", function()
    local status, _, body = curl { "--http2", "-H", "X-Test: h2", echo:url("/x?a=1") }
    assert.are.equal(200, status)
    local f = echo_fields(body)
    assert.are.equal("2", f.version)
    assert.are.equal("https", f.scheme)
    assert.are.equal("127.0.0.1", f.host)
    assert.are.equal("/x", f.path)
    assert.are.equal("a=1", f.query)
    assert.are.equal("h2", f["x-test"])
  end)

  it("makes :authority req.host, lower-case and without the port (raw)", function()
    local c = h2(echo)
    local res = c:get { path = "/a", authority = "Example.COM:8443" }
    c:close()
    assert_ok(c, res)
    assert.are.equal("example.com", echo_fields(res.body).host)
  end)

  it("makes the host header req.host when :authority is absent (raw)", function()
    local c = h2(echo)
    local res = c:get { path = "/h", authority = false, headers = { { "host", "H2Host.example:99" } } }
    c:close()
    assert_ok(c, res)
    assert.are.equal("h2host.example", echo_fields(res.body).host)
  end)

  it("passes a POST body sent in DATA frames (curl, 100 KiB)", function()
    local status, _, body, version = curl { "--http2", "--data-binary", "@" .. dir .. "/100k", bodies:url("/") }
    assert.are.equal(200, status)
    assert.are.equal("2", version)
    assert.matches("^len=102400 ", body)
  end)

  it("passes a 1 MiB body, past the server's receive window (curl, 5 times)", function()
    for i = 1, 5 do
      local status, _, body = curl { "--http2", "--max-time", "3", "--data-binary", "@" .. dir .. "/1m",
        bodies:url("/" .. i) }
      assert.are.equal(200, status, "upload " .. i .. " of 5")
      assert.matches("^len=1048576 ", body)
    end
  end)

  it("reads on after 100 KiB of DATA arrive at once (cleartext; server stopped while they are sent)", function()
    local c = h2(bodies, { plain = true })
    -- SIGSTOP: the whole request is in the server's socket when it wakes,
    -- so it reads its input buffer full in one go.
    bodies:signal("STOP")
    local ok, id = pcall(c.request, c, { method = "POST", path = "/burst", body = string.rep("q", 100 * KiB) })
    bodies:signal("CONT")
    assert(ok, id)
    local res = c:response(id, 3)
    local after = ok and c:get({ path = "/after" }, 2)
    c:close()
    assert_ok(c, res, "a request whose 100 KiB body arrived in one burst")
    assert.matches("^len=102400 ", res.body)
    assert_ok(c, after, "the next request on that connection")
  end)

  it("passes a body split over several DATA frames, and an empty one (raw)", function()
    local c = h2(echo)
    local id = c:request { method = "POST", path = "/p", end_stream = false }
    assert(c:send(h2raw.data(id, "hello", false) .. h2raw.data(id, "", false) .. h2raw.data(id, " world", true)))
    local res = c:response(id)
    local get = c:get { path = "/g" }
    c:close()
    assert_ok(c, res)
    local f = echo_fields(res.body)
    assert.are.equal("POST", f.method)
    assert.are.equal("hello world", f.body)
    assert.are.equal("nil", echo_fields(get.body).body, "a GET without DATA has no body")
  end)

  it("accepts a body of exactly --max-body bytes", function()
    local status, _, body = curl { "--http2", "--data-binary", "@" .. dir .. "/1024", limited:url("/") }
    assert.are.equal(200, status)
    assert.matches("^len=1024 ", body)
  end)

  it("answers 413 to a body over --max-body (curl)", function()
    local status, _, _, version = curl { "--http2", "--data-binary", "@" .. dir .. "/1025", limited:url("/") }
    assert.are.equal(413, status)
    assert.are.equal("2", version)
  end)

  it("answers 413 to a body over --max-body and keeps the connection (raw)", function()
    local c = h2(limited)
    local res = c:get { method = "POST", path = "/big", body = string.rep("z", 3000) }
    local after = c:get { method = "POST", path = "/small", body = "abc" }
    c:close()
    assert.are.equal(413, res.status, c:trace())
    assert_ok(c, after, "a request after the 413")
    assert.matches("^len=3 ", after.body)
  end)
end)

describe("HTTP/2 cancellation #e2e", function()
  local srv, echo

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/sleepy.lua", args = { "--log-level", "info" } }
    echo = server.start { script = "spec/fixtures/echo.lua" }
  end)
  lazy_teardown(function() server.stop_and_check(srv, echo) end)

  it("RST_STREAM(CANCEL) during edge.sleep cancels the stream; the same connection serves on", function()
    local before = util.count(srv:log(), "cancelled")
    local c = h2(srv)
    local t0 = util.now()
    local gone = c:request { path = "/gone?s=1" }
    util.sleep(0.1)
    assert(c:send(h2raw.rst(gone, h2raw.CANCEL)))
    local next = c:get { path = "/next?s=0" }
    assert_ok(c, next, "a request after RST_STREAM")
    assert.matches("path=/next ", next.body)
    assert.are.equal(1, wait_log_count(srv, "cancelled", before, 1), srv:log_tail())
    assert.truthy(srv:log():find("client closed while waiting", 1, true), srv:log_tail())
    -- Past the moment the cancelled stream's timer would have fired.
    util.sleep(math.max(0, t0 + 1.2 - util.now()))
    local later = c:get { path = "/later?s=0" }
    c:close()
    assert_ok(c, later, "a request after the cancelled sleep's end")
    assert.is_nil(c:stream(gone).status, "a response came for the reset stream:\n" .. c:trace())
    assert.is_nil(srv:sanitizer_report())
  end)

  it("cancels every sleeping stream when the connection closes (FIN and RST)", function()
    local before = util.count(srv:log(), "cancelled")
    local t0 = util.now()
    for _, rst in ipairs { false, true } do
      local c = h2(srv, { rst = rst })
      for i = 1, 5 do c:request { path = "/sleeper" .. i .. "?s=1" } end
      util.sleep(0.1)
      c:close()
    end
    assert.are.equal(10, wait_log_count(srv, "cancelled", before, 10), srv:log_tail())
    assert_h2_serving(srv, "/now?s=0")
    util.sleep(math.max(0, t0 + 1.3 - util.now()))
    assert_h2_serving(srv, "/later?s=0")
    assert.is_nil(srv:sanitizer_report())
  end)

  it("drops responses for streams reset in the same write as their HEADERS", function()
    local c = h2(echo)
    local parts = {}
    for i = 1, 50 do
      local id = 2 * i - 1
      parts[#parts + 1] = h2raw.headers(id, hpack.encode(h2raw.request_fields { path = "/r" .. i }), { end_stream = true })
        .. h2raw.rst(id, h2raw.CANCEL)
    end
    c.next_stream = 101
    assert(c:send(table.concat(parts)))
    local res = c:get { path = "/after" }
    c:close()
    assert_ok(c, res, "a request after 50 reset streams")
    assert.is_nil(echo:sanitizer_report())
  end)
end)

describe("HTTP/2 bad frames: connection errors #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local req = hpack.encode(h2raw.request_fields { path = "/" })

  -- name, bytes after the handshake, expected GOAWAY code (RFC 9113 section).
  local cases = {
    { "a HEADERS frame on stream 0 (6.2)", function() return h2raw.headers(0, req, { end_stream = true }) end,
      h2raw.PROTOCOL_ERROR },
    { "a DATA frame on an idle stream (5.1)", function() return h2raw.data(5, "abc", true) end,
      h2raw.PROTOCOL_ERROR },
    { "a SETTINGS frame whose length is not a multiple of 6 (6.5)",
      function() return h2raw.frame(h2raw.SETTINGS, 0, 0, "12345") end, h2raw.FRAME_SIZE_ERROR },
    { "a PING frame of 7 bytes (6.7)", function() return h2raw.frame(h2raw.PING, 0, 0, "1234567") end,
      h2raw.FRAME_SIZE_ERROR },
    { "a HEADERS frame over SETTINGS_MAX_FRAME_SIZE (4.2)", function()
        return h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS | h2raw.END_STREAM, 1,
          req .. hpack.literal("x-big", string.rep("a", 16400)))
      end, h2raw.FRAME_SIZE_ERROR },
    { "a connection WINDOW_UPDATE of 0 (6.9)", function() return h2raw.window_update(0, 0) end,
      h2raw.PROTOCOL_ERROR },
    { "a CONTINUATION without HEADERS (6.10)", function() return h2raw.continuation(1, req, true) end,
      h2raw.PROTOCOL_ERROR },
    { "a PING inside an unfinished header block (6.10)",
      function() return h2raw.frame(h2raw.HEADERS, h2raw.END_STREAM, 1, req) .. h2raw.ping() end,
      h2raw.PROTOCOL_ERROR },
    { "HEADERS on an even (server-initiated) stream (5.1.1)",
      function() return h2raw.headers(2, req, { end_stream = true }) end, h2raw.PROTOCOL_ERROR },
    { "RST_STREAM on an idle stream (6.4)", function() return h2raw.rst(7, h2raw.CANCEL) end,
      h2raw.PROTOCOL_ERROR },
    { "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1 (6.5.2)",
      function() return h2raw.settings { { h2raw.INITIAL_WINDOW_SIZE, 0x80000000 } } end,
      h2raw.FLOW_CONTROL_ERROR },
    { "SETTINGS_ENABLE_PUSH 2 (6.5.2)", function() return h2raw.settings { { h2raw.ENABLE_PUSH, 2 } } end,
      h2raw.PROTOCOL_ERROR },
    { "an HPACK index past the tables (4.3)",
      function() return h2raw.headers(1, hpack.indexed(200), { end_stream = true }) end,
      h2raw.COMPRESSION_ERROR },
  }

  for _, case in ipairs(cases) do
    local name, bytes, code = case[1], case[2], case[3]
    it("answers " .. name .. " with GOAWAY " .. h2raw.ERROR_NAMES[code] .. " and closes", function()
      local c = h2(srv)
      assert(c:send(bytes()))
      local closed = c:wait_closed(3)
      c:close()
      assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
      assert.are.equal(h2raw.error_name(code), h2raw.error_name(c.goaway.code), c:trace())
      assert.is_true(closed, "connection still open after GOAWAY:\n" .. c:trace())
    end)
  end

  it("still serves after all that", function()
    assert_h2_serving(srv)
  end)
end)

describe("HTTP/2 malformed requests: stream errors #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/echo.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local F = h2raw.request_fields
  local function without(name)
    local out = {}
    for _, f in ipairs(F {}) do if f[1] ~= name then out[#out + 1] = f end end
    return out
  end
  local function post_with_length(length, body)
    return function(c, id)
      return h2raw.headers(id, hpack.encode(F { method = "POST", headers = { { "content-length", length } } }), {})
        .. h2raw.data(id, body, true)
    end
  end

  -- name, fields (or a function building the bytes). RFC 9113 8.1.1: a
  -- malformed request is a stream error of type PROTOCOL_ERROR.
  local cases = {
    { "missing :path (8.3.1)", without(":path") },
    { "missing :method (8.3.1)", without(":method") },
    { "missing :scheme (8.3.1)", without(":scheme") },
    { "an empty :path (8.3.1)", F { path = "" } },
    { "a duplicated :method (8.3)", { { ":method", "GET" }, { ":method", "GET" }, { ":scheme", "https" },
      { ":authority", "x" }, { ":path", "/" } } },
    { "a duplicated :path (8.3)", { { ":method", "GET" }, { ":scheme", "https" }, { ":authority", "x" },
      { ":path", "/" }, { ":path", "/b" } } },
    { "a pseudo-header after a regular header (8.3)", { { ":method", "GET" }, { ":scheme", "https" },
      { "x-a", "1" }, { ":authority", "x" }, { ":path", "/" } } },
    { "an unknown pseudo-header (8.3)", F { headers = { { ":foo", "1" } } } },
    { "connection: keep-alive (8.2.2)", F { headers = { { "connection", "keep-alive" } } } },
    { "keep-alive (8.2.2)", F { headers = { { "keep-alive", "timeout=5" } } } },
    { "transfer-encoding: chunked (8.2.2)", F { headers = { { "transfer-encoding", "chunked" } } } },
    { "upgrade: h2c (8.2.2)", F { headers = { { "upgrade", "h2c" } } } },
    { "te: gzip (8.2.2)", F { headers = { { "te", "gzip" } } } },
    { "an upper-case field name (8.2.1)", F { headers = { { "X-Upper", "1" } } } },
    { "a field value with a line feed (8.2.1)", F { headers = { { "x-split", "a\r\nx-injected: b" } } } },
    { "content-length larger than the DATA (8.1.1)", post_with_length("10", "abc") },
    { "content-length smaller than the DATA (8.1.1)", post_with_length("2", "abc") },
  }

  for _, case in ipairs(cases) do
    local name, what = case[1], case[2]
    it("resets a request with " .. name .. " (RST_STREAM PROTOCOL_ERROR); the connection serves on", function()
      local c = h2(srv)
      local id = c.next_stream
      c.next_stream = id + 2
      local bytes
      if type(what) == "function" then bytes = what(c, id)
      else bytes = h2raw.headers(id, hpack.encode(what), { end_stream = true }) end
      assert(c:send(bytes))
      local st = c:response(id, 3)
      local after = c:get { path = "/after" }
      c:close()
      assert.is_nil(st.status, "the malformed request was answered:\n" .. c:trace())
      assert.are.equal(h2raw.error_name(h2raw.PROTOCOL_ERROR), h2raw.error_name(st.rst), c:trace())
      assert.is_nil(c.goaway, "a stream error ended the connection:\n" .. c:trace())
      assert_ok(c, after, "a request after the reset one")
    end)
  end

  it("serves te: trailers and a matching content-length (the valid forms)", function()
    local c = h2(srv)
    local te = c:get { path = "/te", headers = { { "te", "trailers" } } }
    local id = c.next_stream
    c.next_stream = id + 2
    assert(c:send(post_with_length("3", "abc")(c, id)))
    local post = c:response(id)
    c:close()
    assert_ok(c, te, "te: trailers")
    assert_ok(c, post, "content-length 3 with 3 bytes of DATA")
    assert.are.equal("abc", echo_fields(post.body).body)
  end)
end)

describe("HTTP/2 header limits #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/echo.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers 431 to a header list over --max-header-size, and the connection serves on", function()
    local c = h2(srv)
    -- 20 000 bytes: over 16 KiB, so one HEADERS and one CONTINUATION frame.
    local big = c:get { path = "/big", headers = { { "x-big", string.rep("h", 20000) } } }
    local after = c:get { path = "/after" }
    c:close()
    assert.are.equal(431, big.status, c:trace())
    assert_ok(c, after, "a request after the 431")
  end)

  it("answers 431 to more than --max-headers fields", function()
    local c = h2(srv)
    local hs = {}
    for i = 1, 110 do hs[i] = { "x-h" .. i, "v" } end
    local many = c:get { path = "/many", headers = hs }
    local after = c:get { path = "/after" }
    c:close()
    assert.are.equal(431, many.status, c:trace())
    assert_ok(c, after, "a request after the 431")
  end)

  it("accepts a 15 000-byte header", function()
    local c = h2(srv)
    local res = c:get { path = "/ok", headers = { { "x-test", string.rep("h", 15000) } } }
    c:close()
    assert_ok(c, res)
  end)
end)

describe("HTTP/2 abuse: floods and bombs #e2e", function()
  local srv, rss0

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/sleepy.lua", args = { "--log-level", "info" } }
    rss0 = srv:rss_kb()
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  --- The flooding connection `c` must end: a GOAWAY (code returned) and/or
  -- a close, within 5 s. Meanwhile another client is served.
  local function assert_ends_while_others_served(c)
    assert_h2_serving(srv, "/other?s=0")
    local closed = c:wait_closed(5)
    c:close()
    assert.is_true(closed, "the flooding connection is still open:\n" .. c:trace())
    assert_h2_serving(srv, "/after?s=0")
    return c.goaway and c.goaway.code
  end

  local function assert_rss_bounded()
    local rss = srv:rss_kb()
    assert.truthy(rss, "server gone")
    assert.is_true(rss - rss0 < 100 * KiB, string.format("RSS grew from %d to %d KiB", rss0, rss))
  end

  it("ends a rapid-reset connection (2000 x HEADERS + RST_STREAM) with GOAWAY ENHANCE_YOUR_CALM", function()
    local c = h2(srv)
    local req = hpack.encode(h2raw.request_fields { path = "/rr?s=5" })
    local parts = {}
    for i = 1, 2000 do
      local id = 2 * i - 1
      parts[i] = h2raw.headers(id, req, { end_stream = true }) .. h2raw.rst(id, h2raw.CANCEL)
    end
    c:send(table.concat(parts))   -- may fail part-way once the server has had enough
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
  end)

  it("keeps serving a connection that resets 200 streams (under the rapid-reset limit)", function()
    local c = h2(srv)
    local req = hpack.encode(h2raw.request_fields { path = "/rr?s=5" })
    local parts = {}
    for i = 1, 200 do
      local id = 2 * i - 1
      parts[i] = h2raw.headers(id, req, { end_stream = true }) .. h2raw.rst(id, h2raw.CANCEL)
    end
    c.next_stream = 401
    assert(c:send(table.concat(parts)))
    local res = c:get { path = "/fine?s=0" }
    c:close()
    assert_ok(c, res, "a request after 200 resets")
    assert.is_nil(c.goaway, c:trace())
  end)

  -- A client that sends PINGs (or SETTINGS) and never reads the ACKs: once
  -- the socket buffers are full the ACKs queue up in the server. 100 000
  -- frames (1.7 MB) are more than the buffers hold, so the server's limit
  -- on queued ACKs must trip.
  it("ends a PING flood from a client that does not read (GOAWAY ENHANCE_YOUR_CALM)", function()
    local c = h2(srv, { auto_ack = false })
    c:send(string.rep(h2raw.ping("flooding"), 100000))
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
    assert.is_true((c.counts[h2raw.PING] or 0) < 100000, "every PING was answered")
  end)

  it("answers PINGs from a client that reads its ACKs (no false alarm)", function()
    local c = h2(srv)
    for _ = 1, 20 do
      assert(c:send(string.rep(h2raw.ping("politely"), 50)))
      local want = c.ping_acks + 50
      c:read_until(function() return c.ping_acks >= want end, 3)
    end
    local res = c:get { path = "/fine?s=0" }
    c:close()
    assert.are.equal(1000, c.ping_acks)
    assert_ok(c, res)
    assert.is_nil(c.goaway, c:trace())
  end)

  it("ends a SETTINGS flood from a client that does not read (GOAWAY ENHANCE_YOUR_CALM)", function()
    local c = h2(srv, { auto_ack = false })
    c:send(string.rep(h2raw.settings { { h2raw.INITIAL_WINDOW_SIZE, 65535 } }, 100000))
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
  end)

  it("ends a connection sending a SETTINGS frame with 40 entries (GOAWAY ENHANCE_YOUR_CALM)", function()
    local c = h2(srv)
    local list = {}
    for i = 1, 40 do list[i] = { h2raw.MAX_CONCURRENT_STREAMS, 100 + i } end
    assert(c:send(h2raw.settings(list)))
    local code = assert_ends_while_others_served(c)
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
  end)

  it("ends a CONTINUATION flood (HEADERS without END_HEADERS, then 10 000 CONTINUATIONs)", function()
    local c = h2(srv)
    local parts = { h2raw.frame(h2raw.HEADERS, h2raw.END_STREAM, 1,
      hpack.encode(h2raw.request_fields { path = "/cont?s=0" })) }
    for i = 1, 10000 do parts[#parts + 1] = h2raw.continuation(1, hpack.literal("x-c" .. i, "v"), false) end
    c:send(table.concat(parts))
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.is_nil(c:stream(1).status, "the flooded stream was answered")
    if code ~= nil then
      assert.are_not.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(code), c:trace())
    end
  end)

  it("ends an HPACK bomb (one 4 KB dynamic-table entry referenced 12 000 times: 48 MB)", function()
    local c = h2(srv)
    local block = hpack.encode(h2raw.request_fields { path = "/bomb?s=0" })
      .. hpack.literal_indexed("x-bomb", string.rep("b", 4000)) .. string.rep(hpack.indexed(62), 12000)
    assert.is_true(#block < 16384)
    c:send(h2raw.headers(1, block, { end_stream = true }))
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.is_nil(c:stream(1).status, "the bomb was served")
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
  end)

  it("ends a connection sending 200 headers of 8 KiB (1.6 MB header list)", function()
    local c = h2(srv)
    local parts = { hpack.encode(h2raw.request_fields { path = "/huge?s=0" }) }
    for i = 1, 200 do parts[#parts + 1] = hpack.literal("x-h" .. i, string.rep("v", 8 * KiB)) end
    c:send(h2raw.headers(1, table.concat(parts), { end_stream = true }))
    local code = assert_ends_while_others_served(c)
    assert_rss_bounded()
    assert.is_nil(c:stream(1).status, "the 1.6 MB header list was served")
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.ENHANCE_YOUR_CALM), h2raw.error_name(code), c:trace())
  end)

  it("keeps its memory bounded through all of the above", function()
    assert_rss_bounded()
    assert.is_nil(srv:sanitizer_report())
  end)
end)

describe("HTTP/2 graceful GOAWAY on SIGTERM #e2e", function()
  local srv

  after_each(function()
    local s = srv
    srv = nil
    server.stop_and_check(s)
  end)

  it("sends GOAWAY NO_ERROR, then finishes the in-flight stream, and exits 0", function()
    srv = server.start { script = "spec/fixtures/sleepy.lua" }
    local c = h2(srv)
    local id = c:request { path = "/inflight?s=0.5" }
    util.sleep(0.1)
    srv:signal("TERM")
    local st = c:response(id, 5)
    local closed = c:wait_closed(3)
    c:close()
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c.goaway.code))
    assert.is_true(c.goaway.last_stream >= id, "GOAWAY's last stream " .. c.goaway.last_stream)
    assert_ok(c, st, "the in-flight stream")
    assert.matches("path=/inflight ", st.body)
    assert.is_true(c.goaway.seq < st.headers_seq, "GOAWAY came after the response:\n" .. c:trace())
    assert.is_true(closed, "connection left open after the last stream:\n" .. c:trace())
    assert.are.equal(0, srv:wait_exit(5), srv:log_tail())
  end)

  it("does not serve a stream opened after the GOAWAY, but finishes the earlier one", function()
    srv = server.start { script = "spec/fixtures/sleepy.lua" }
    local c = h2(srv)
    local first = c:request { path = "/first?s=0.5" }
    util.sleep(0.1)
    srv:signal("TERM")
    assert.truthy(c:wait_goaway(3), "no GOAWAY:\n" .. c:trace())
    local late = c:request { path = "/late?s=0" }
    local st = c:response(first, 5)
    c:response(late, 0.5)
    c:close()
    assert_ok(c, st, "the stream opened before the GOAWAY")
    assert.are_not.equal(200, c:stream(late).status, "a stream opened after the GOAWAY was served")
    assert.are.equal(0, srv:wait_exit(5), srv:log_tail())
  end)

  it("closes an idle HTTP/2 connection at once with GOAWAY NO_ERROR", function()
    srv = server.start { script = "lua/default.lua" }
    local c = h2(srv)
    assert_ok(c, c:get { path = "/" })
    local t0 = util.now()
    srv:signal("TERM")
    local closed = c:wait_closed(3)
    c:close()
    assert.is_true(closed, "idle connection left open")
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c.goaway.code))
    assert.are.equal(0, srv:wait_exit(5), srv:log_tail())
    assert.is_true(util.now() - t0 < 2, "exit took " .. (util.now() - t0) .. " s")
  end)
end)

describe("HTTP/2 idle connections #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "lua/default.lua", args = { "--keepalive-timeout", "1" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("ends an idle connection after --keepalive-timeout with GOAWAY NO_ERROR", function()
    local c = h2(srv)
    assert_ok(c, c:get { path = "/" })
    local t0 = util.now()
    local closed = c:wait_closed(4)
    c:close()
    assert.is_true(closed, "idle connection still open after 4 s")
    local took = util.now() - t0
    assert.is_true(took > 0.5 and took < 3, "closed after " .. took .. " s")
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c.goaway.code))
  end)
end)

describe("HTTP/2 cleartext listener (--listen-plain) #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/echo.lua", plain = true } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("logs the cleartext listener", function()
    assert.truthy(srv:log():find("listening on 127.0.0.1:" .. srv.plain_port .. " cleartext", 1, true), srv:log())
  end)

  it("serves HTTP/2 with prior knowledge (curl --http2-prior-knowledge), scheme http", function()
    local status, _, body, version, info = curl { "--http2-prior-knowledge", srv:plain_url("/pk?x=1") }
    assert.are.equal(200, status, info.stderr)
    assert.are.equal("2", version)
    local f = echo_fields(body)
    assert.are.equal("2", f.version)
    assert.are.equal("http", f.scheme)
    assert.are.equal("/pk", f.path)
    assert.are.equal("127.0.0.1", f.host)
  end)

  it("serves HTTP/1.1 on the same port (plain curl), scheme http", function()
    local status, _, body, version = curl { "--http1.1", srv:plain_url("/h1") }
    assert.are.equal(200, status)
    assert.are.equal("1.1", version)
    local f = echo_fields(body)
    assert.are.equal("1.1", f.version)
    assert.are.equal("http", f.scheme)
    assert.are.equal("/h1", f.path)
  end)

  it("serves a raw HTTP/2 client over plain TCP, several streams on one connection", function()
    local c = h2(srv, { plain = true })
    local a = c:get { path = "/a" }
    local b = c:get { path = "/b", method = "POST", body = "plain body" }
    c:close()
    assert_ok(c, a)
    assert_ok(c, b)
    assert.are.equal("http", echo_fields(a.body).scheme)
    assert.are.equal("plain body", echo_fields(b.body).body)
  end)

  it("still serves https (h2 and HTTP/1.1) on the TLS port, scheme https", function()
    local _, _, body, version = curl { "--http2", srv:url("/tls") }
    assert.are.equal("2", version)
    assert.are.equal("https", echo_fields(body).scheme)
    local _, _, body1, version1 = curl { "--http1.1", srv:url("/tls1") }
    assert.are.equal("1.1", version1)
    assert.are.equal("https", echo_fields(body1).scheme)
  end)

  it("answers a bad frame on the cleartext listener with GOAWAY too", function()
    local c = h2(srv, { plain = true })
    assert(c:send(h2raw.data(9, "x", true)))
    local closed = c:wait_closed(3)
    c:close()
    assert.truthy(c.goaway, c:trace())
    assert.are.equal(h2raw.error_name(h2raw.PROTOCOL_ERROR), h2raw.error_name(c.goaway.code))
    assert.is_true(closed)
  end)
end)

describe("spec helper: h2raw HPACK and frames", function()
  local function unhex(s)
    return (s:gsub("%s", ""):gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
  end

  it("decodes RFC 7541 Huffman examples (C.4.1, C.4.2, C.6.1)", function()
    assert.are.equal("www.example.com", hpack.huffman_decode(unhex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")))
    assert.are.equal("no-cache", hpack.huffman_decode(unhex("a8eb 1064 9cbf")))
    assert.are.equal("custom-key", hpack.huffman_decode(unhex("25a8 49e9 5ba9 7d7f")))
    assert.are.equal("custom-value", hpack.huffman_decode(unhex("25a8 49e9 5bb8 e8b4 bf")))
  end)

  it("round-trips every byte through the Huffman code, and rejects bad padding", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    local s = table.concat(all) .. "Hello, HPACK!"
    assert.are.equal(s, hpack.huffman_decode(hpack.huffman_encode(s)))
    assert.is_nil(hpack.huffman_decode(unhex("f1e3 c2e5 f23a 6ba0 ab90 f4fe")))   -- padding not all ones
  end)

  it("decodes the RFC 7541 C.3 request sequence with its dynamic table", function()
    local d = hpack.decoder()
    local l1 = d:decode(unhex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
    assert.are.same({ { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" },
      { ":authority", "www.example.com" } }, l1)
    local l2 = d:decode(unhex("8286 84be 5808 6e6f 2d63 6163 6865"))
    assert.are.same({ { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" },
      { ":authority", "www.example.com" }, { "cache-control", "no-cache" } }, l2)
    assert.are.equal(110, d.size)
  end)

  it("encodes integers with N-bit prefixes (RFC 7541 C.1)", function()
    assert.are.equal(unhex("0a"), hpack.int(10, 5))
    assert.are.equal(unhex("1f9a0a"), hpack.int(1337, 5))
    assert.are.equal(unhex("2a"), hpack.int(42, 8))
  end)

  it("decodes what it encodes", function()
    local fields = { { ":method", "POST" }, { "x-long", string.rep("z", 300) }, { "empty", "" } }
    assert.are.same(fields, hpack.decoder():decode(hpack.encode(fields)))
  end)

  it("builds and parses frames; splits long header blocks into CONTINUATION", function()
    local bytes = h2raw.headers(3, string.rep("a", 20000), { end_stream = true })
    local f1, pos = h2raw.parse_frame(bytes)
    local f2 = h2raw.parse_frame(bytes, pos)
    assert.are.equal(h2raw.HEADERS, f1.type)
    assert.are.equal(16384, f1.length)
    assert.are.equal(h2raw.END_STREAM, f1.flags)
    assert.are.equal(h2raw.CONTINUATION, f2.type)
    assert.are.equal(20000 - 16384, f2.length)
    assert.are.equal(h2raw.END_HEADERS, f2.flags)
    assert.are.equal(3, f2.stream)
    assert.is_nil(h2raw.parse_frame(bytes:sub(1, 20)))
  end)
end)
