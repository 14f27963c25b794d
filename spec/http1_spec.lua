-- End-to-end specs for TLS and HTTP/1.1: the real binary ($EDGE_BIN) on an
-- ephemeral loopback port, talked to with curl and raw TLS sockets.
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"

local curl = client.curl
local request = client.request

--- Opens a raw TLS 1.3 connection offering http/1.1 (asserts it worked).
local function connect(srv, opts)
  opts = opts or {}
  if opts.alpn == nil then opts.alpn = "http/1.1" end
  local c, err = client.tls(srv.port, opts)
  assert(c, "TLS connect failed: " .. tostring(err))
  return c
end

--- Sends `bytes` on a fresh connection and reads `n` final responses.
local function exchange(srv, bytes, n, opts)
  local c = connect(srv)
  assert(c:send(bytes))
  local list, status = c:read_responses(n or 1, opts)
  return list, c, status
end

--- A fresh client still gets 200 for GET / (the server survived).
local function assert_still_serving(srv)
  local list, c = exchange(srv, request { path = "/" }, 1)
  c:close()
  assert.are.equal(200, list[1] and list[1].status, "server no longer serves a fresh client")
end

--- Sends a bad request; asserts exactly one response with `status`,
-- `Connection: close`, and that the server then closes the connection.
local function assert_rejected(srv, bytes, status)
  local c = connect(srv)
  assert(c:send(bytes))
  local closed = c:wait_closed(3)
  local list = client.parse_responses(c.buf, { closed = true })
  c:close()
  assert.are.equal(1, #list, "expected exactly one response, got:\n" .. c.buf)
  assert.are.equal(status, list[1].status, "got:\n" .. c.buf)
  assert.are.equal("close", (list[1].headers.connection or ""):lower(), "no Connection: close in:\n" .. c.buf)
  assert.is_true(closed, "the server did not close the connection after " .. status)
  assert_still_serving(srv)
end

local function parse_http_date(s)
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7,
                   Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
  local d, mon, y, h, mi, sec = s:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not months[mon] then return nil end
  return os.time { year = tonumber(y), month = months[mon], day = tonumber(d),
                   hour = tonumber(h), min = tonumber(mi), sec = tonumber(sec) }
end

describe("TLS #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("logs that it listens on the port", function()
    assert.truthy(srv:log():find("listening on 127.0.0.1:" .. srv.port, 1, true), srv:log())
  end)

  it("serves HTTP/1.1 over TLS 1.3 and negotiates ALPN http/1.1 (curl)", function()
    local status, _, body, version, info = curl { "-v", "--http1.1", "--tlsv1.3", srv:url("/") }
    assert.are.equal(200, status, info.stderr)
    assert.are.equal("1.1", version)
    assert.are.equal("Hello from edge!", body)
    assert.matches("SSL connection using TLSv1%.3", info.stderr)
    assert.matches("ALPN: server accepted http/1%.1", info.stderr)
  end)

  it("selects http/1.1 from a client list that also has an unknown protocol", function()
    local c = connect(srv, { alpn = { "foo", "http/1.1" } })
    assert.are.equal("http/1.1", c:alpn())
    c:close()
  end)

  it("refuses the handshake when the client offers only an unknown ALPN protocol", function()
    local c, err = client.tls(srv.port, { alpn = "foo" })
    if c then c:close() end
    assert.is_nil(c, "handshake with ALPN 'foo' succeeded")
    assert.truthy(err)
    assert_still_serving(srv)
  end)

  it("serves HTTP/1.1 when the client offers no ALPN", function()
    local c = connect(srv, { alpn = false })
    assert.is_nil(c:alpn())
    assert(c:send(request { path = "/" }))
    local list = c:read_responses(1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
    assert.are.equal("Hello from edge!", list[1].body)
  end)

  it("accepts TLS 1.2 with an ECDHE + AEAD suite", function()
    local status, _, body, _, info = curl { "-v", "--http1.1", "--tlsv1.2", "--tls-max", "1.2",
      "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", srv:url("/") }
    assert.are.equal(200, status, info.stderr)
    assert.are.equal("Hello from edge!", body)
    assert.matches("SSL connection using TLSv1%.2", info.stderr)
  end)

  it("refuses TLS 1.2 suites that are not ECDHE + AEAD (CBC)", function()
    local status, _, _, _, info = curl { "--http1.1", "--tlsv1.2", "--tls-max", "1.2",
      "--ciphers", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", srv:url("/") }
    assert.are.equal(0, status, "a CBC suite was accepted")
    assert.are_not.equal(0, info.exit)
  end)

  it("refuses TLS 1.1 (client willing: openssl s_client -tls1_1 @SECLEVEL=0)", function()
    local code, out, err = util.run({ "openssl", "s_client", "-connect", "127.0.0.1:" .. srv.port,
      "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0" }, { timeout = 5 })
    local text = out .. err
    assert.falsy(text:find("no protocols available", 1, true), "client could not offer TLS 1.1:\n" .. text)
    -- s_client prints "Protocol : TLSv1.1" even for a failed handshake; the
    -- cipher says whether one was negotiated.
    assert.are.equal("(NONE)", text:match("Cipher is ([^\n]+)"), "TLS 1.1 negotiated:\n" .. text)
    assert.are_not.equal(0, code, text)
    assert_still_serving(srv)
  end)

  it("resumes TLS 1.3 sessions (session tickets on)", function()
    local dir = util.tmpdir("sess")
    local sess = dir .. "/sess.pem"
    local req = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    local base = { "openssl", "s_client", "-connect", "127.0.0.1:" .. srv.port, "-tls1_3",
                   "-alpn", "http/1.1", "-ign_eof" }
    local a = { table.unpack(base) }; a[#a + 1] = "-sess_out"; a[#a + 1] = sess
    local code1, out1 = util.run(a, { stdin = req, timeout = 5 })
    assert.are.equal(0, code1, out1)
    assert.truthy(util.exists(sess), "no session saved (no ticket sent?)")
    local b = { table.unpack(base) }; b[#b + 1] = "-sess_in"; b[#b + 1] = sess
    local code2, out2 = util.run(b, { stdin = req, timeout = 5 })
    assert.are.equal(0, code2, out2)
    assert.matches("Reused, TLSv1%.3", out2)
    assert.matches("Hello from edge!", out2)
  end)

  it("closes a connection that speaks plain HTTP to the TLS port, and keeps serving", function()
    local c = assert(client.tcp(srv.port))
    assert(c:send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    assert.is_true(c:wait_closed(3), "server kept a non-TLS connection open")
    c:close()
    assert_still_serving(srv)
  end)
end)

describe("TLS --tls-min 1.3 #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua", args = { "--tls-min", "1.3" } } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("refuses TLS 1.2", function()
    local status, _, _, _, info = curl { "--http1.1", "--tlsv1.2", "--tls-max", "1.2", srv:url("/") }
    assert.are.equal(0, status)
    assert.are_not.equal(0, info.exit)
  end)

  it("accepts TLS 1.3", function()
    local status = curl { "--http1.1", "--tlsv1.3", srv:url("/") }
    assert.are.equal(200, status)
  end)
end)

describe("HTTP/1.1 with lua/default.lua #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "lua/default.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers GET with the default body and Date, Server, Content-Length, Content-Type", function()
    local status, h, body = curl { "--http1.1", "--tlsv1.3", srv:url("/") }
    assert.are.equal(200, status)
    assert.are.equal("Hello from edge!", body)
    assert.are.equal("16", h["content-length"])
    assert.matches("^text/plain", h["content-type"])
    assert.matches("^edge/%d", h["server"] or "")
    local t = parse_http_date(h["date"] or "")
    assert.truthy(t, "bad Date: " .. tostring(h["date"]))
    assert.is_true(math.abs(t - os.time(os.date("!*t"))) <= 5, "Date is off: " .. h["date"])
  end)

  it("answers HEAD with Content-Length and no body (curl)", function()
    -- With -I curl writes the response head where the body would go.
    local status, h, out, _, info = curl { "--http1.1", "-I", srv:url("/") }
    assert.are.equal(200, status)
    assert.are.equal(0, info.exit)
    assert.are.equal("16", h["content-length"])
    assert.falsy(out:find("Hello from edge!", 1, true), out)
  end)

  it("sends no body after HEAD, so the next response on the connection parses", function()
    local list, c = exchange(srv, request { method = "HEAD", path = "/" } .. request { path = "/" }, 2,
      { methods = { "HEAD", "GET" } })
    local rest = client.parse_responses(c.buf, { methods = { "HEAD", "GET" } })
    c:close()
    assert.are.equal(2, #list, c.buf)
    assert.are.equal("16", list[1].headers["content-length"])
    assert.are.equal("", list[1].body)
    assert.are.equal("Hello from edge!", list[2].body)
    assert.are.equal(2, #rest)
  end)

  it("keeps the connection alive between requests (curl reuses it)", function()
    local status, _, _, _, info = curl { "-v", "--http1.1", srv:url("/a"), srv:url("/b"), "-o", "/dev/null" }
    assert.are.equal(200, status)
    assert.matches("Re%-using existing connection", info.stderr)
    assert.are.equal(1, util.count(info.stderr, "SSL connection using"), info.stderr)
  end)

  it("keeps the connection alive between requests (raw, one after the other)", function()
    local c = connect(srv)
    for i = 1, 3 do
      c:reset()
      assert(c:send(request { path = "/" .. i }))
      local list = c:read_responses(1)
      assert.are.equal(200, list[1] and list[1].status, "request " .. i)
      assert.falsy((list[1].headers.connection or ""):lower():find("close"))
    end
    c:close()
  end)

  it("closes after an HTTP/1.0 request by default", function()
    local c = connect(srv)
    assert(c:send("GET / HTTP/1.0\r\n\r\n"))
    local closed = c:wait_closed(3)
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.are.equal(1, #list, c.buf)
    assert.are.equal(200, list[1].status)
    assert.are.equal("Hello from edge!", list[1].body)
    assert.is_true(closed, "connection left open after HTTP/1.0 response")
  end)

  it("keeps an HTTP/1.0 connection alive with Connection: keep-alive", function()
    local c = connect(srv)
    local req = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert(c:send(req))
    local list = c:read_responses(1)
    assert.are.equal(200, list[1] and list[1].status, c.buf)
    assert.are.equal("keep-alive", (list[1].headers.connection or ""):lower())
    assert.are.equal("16", list[1].headers["content-length"])
    c:reset()
    assert(c:send(req))
    list = c:read_responses(1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status, "second request on the HTTP/1.0 connection")
  end)

  it("honours Connection: close", function()
    local c = connect(srv)
    assert(c:send(request { path = "/", headers = { Connection = "close" } }))
    local closed = c:wait_closed(3)
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.are.equal(1, #list)
    assert.are.equal(200, list[1].status)
    assert.are.equal("close", (list[1].headers.connection or ""):lower())
    assert.is_true(closed, "connection left open after Connection: close")
  end)

  it("answers 400 and closes for an HTTP/1.1 request without Host (RFC 9112 3.2)", function()
    assert_rejected(srv, "GET / HTTP/1.1\r\n\r\n", 400)
  end)
end)

describe("HTTP/1.1 pipelining #e2e", function()
  local echo, sleepy

  lazy_setup(function()
    echo = server.start { script = "spec/fixtures/echo.lua" }
    sleepy = server.start { script = "spec/fixtures/sleepy.lua" }
  end)
  lazy_teardown(function() server.stop_and_check(echo, sleepy) end)

  it("answers 3 requests sent in one write, in order", function()
    local bytes = request { path = "/one" } .. request { path = "/two", method = "POST", body = "hello" }
      .. request { path = "/three", headers = { ["X-Test"] = "3" } }
    local list, c = exchange(echo, bytes, 3)
    c:close()
    assert.are.equal(3, #list, c.buf)
    assert.matches("path=/one\n", list[1].body)
    assert.matches("path=/two\n", list[2].body)
    assert.matches("body=hello\n", list[2].body)
    assert.matches("path=/three\n", list[3].body)
    assert.are.equal("3", list[3].headers["x-echo"])
  end)

  it("keeps the order when the first request sleeps longer than the others", function()
    local bytes = request { path = "/first?s=0.05" }
      .. request { path = "/second?s=0" } .. request { path = "/third?s=0" }
    local list, c = exchange(sleepy, bytes, 3)
    c:close()
    assert.are.equal(3, #list, c.buf)
    assert.matches("path=/first ", list[1].body)
    assert.matches("path=/second ", list[2].body)
    assert.matches("path=/third ", list[3].body)
  end)

  it("answers pipelined HEAD and GET without a stray body", function()
    local bytes = request { method = "HEAD", path = "/h" } .. request { path = "/g" }
    local list, c = exchange(echo, bytes, 2, { methods = { "HEAD", "GET" } })
    local rest = select(2, client.parse_responses(c.buf, { methods = { "HEAD", "GET" } }))
    c:close()
    assert.are.equal(2, #list)
    assert.are.equal("", list[1].body)
    assert.matches("path=/g\n", list[2].body)
    assert.are.equal("", rest)
  end)

  it("answers nothing after a pipelined request with Connection: close", function()
    local bytes = request { path = "/last", headers = { Connection = "close" } } .. request { path = "/ignored" }
    local c = connect(echo)
    assert(c:send(bytes))
    local closed = c:wait_closed(3)
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.is_true(closed)
    assert.are.equal(1, #list, c.buf)
    assert.matches("path=/last\n", list[1].body)
  end)

  it("answers a good request, then 400 + close for bad bytes pipelined behind it", function()
    local c = connect(echo)
    assert(c:send(request { path = "/good" } .. "\1\2 garbage\r\n\r\n" .. request { path = "/never" }))
    local closed = c:wait_closed(3)
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.is_true(closed)
    assert.are.equal(2, #list, c.buf)
    assert.are.equal(200, list[1].status)
    assert.matches("path=/good\n", list[1].body)
    assert.are.equal(400, list[2].status)
  end)

  it("answers 20 pipelined requests split at odd byte boundaries", function()
    local parts = {}
    for i = 1, 20 do parts[i] = request { path = "/p" .. i } end
    local bytes = table.concat(parts)
    local c = connect(echo)
    local i = 1
    while i <= #bytes do
      assert(c:send(bytes:sub(i, i + 36)))
      i = i + 37
    end
    local list = c:read_responses(20)
    c:close()
    assert.are.equal(20, #list)
    for k = 1, 20 do assert.matches("path=/p" .. k .. "\n", list[k].body) end
  end)
end)

describe("HTTP/1.1 request bodies #e2e", function()
  local srv, limited
  local dir

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/bodylen.lua" }
    limited = server.start { script = "spec/fixtures/bodylen.lua", args = { "--max-body", "1024" } }
    dir = util.tmpdir("bodies")
    util.write_file(dir .. "/100k", string.rep("0123456789", 10240))
    util.write_file(dir .. "/1024", string.rep("b", 1024))
    util.write_file(dir .. "/1025", string.rep("b", 1025))
  end)
  lazy_teardown(function() server.stop_and_check(srv, limited) end)

  it("reads a POST body by Content-Length (curl, 100 KiB)", function()
    local status, _, body = curl { "--http1.1", "--data-binary", "@" .. dir .. "/100k", srv:url("/") }
    assert.are.equal(200, status)
    assert.matches("^len=102400 ", body)
  end)

  it("reads a chunked POST body (curl, 100 KiB)", function()
    local status, _, body = curl { "--http1.1", "-H", "Transfer-Encoding: chunked",
      "--data-binary", "@" .. dir .. "/100k", srv:url("/") }
    assert.are.equal(200, status)
    assert.matches("^len=102400 ", body)
  end)

  it("reads a chunked body with extensions and trailers (raw)", function()
    local bytes = "POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
      .. request { path = "/after" }
    local list, c = exchange(srv, bytes, 2)
    c:close()
    assert.are.equal(2, #list, c.buf)
    assert.matches("^len=16 ", list[1].body)
    assert.matches("^len=0 ", list[2].body)
  end)

  it("reads an empty body (Content-Length: 0)", function()
    local list, c = exchange(srv, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 1)
    c:close()
    assert.matches("^len=0 ", list[1] and list[1].body or "")
  end)

  it("accepts a body of exactly --max-body bytes", function()
    local status, _, body = curl { "--http1.1", "--data-binary", "@" .. dir .. "/1024", limited:url("/") }
    assert.are.equal(200, status)
    assert.matches("^len=1024 ", body)
  end)

  it("answers 413 to a Content-Length body over --max-body", function()
    local status, h = curl { "--http1.1", "--data-binary", "@" .. dir .. "/1025", limited:url("/") }
    assert.are.equal(413, status)
    assert.are.equal("close", (h.connection or ""):lower())
  end)

  it("answers 413 at once to a huge Content-Length, without waiting for the body", function()
    local c = connect(limited)
    local t0 = util.now()
    assert(c:send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"))
    local list = c:read_responses(1, { timeout = 3 })
    c:close()
    assert.are.equal(413, list[1] and list[1].status, c.buf)
    assert.is_true(util.now() - t0 < 2)
  end)

  it("answers 413 to a chunked body over --max-body", function()
    local chunk = string.rep("c", 600)
    local bytes = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. string.format("%x\r\n%s\r\n", #chunk, chunk):rep(2) .. "0\r\n\r\n"
    assert_rejected(limited, bytes, 413)
  end)

  it("answers 413 to a body over the default 1 MiB limit", function()
    local list, c = exchange(srv, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n", 1)
    c:close()
    assert.are.equal(413, list[1] and list[1].status, c.buf)
  end)

  it("survives clients that leave in the middle of a request body", function()
    for i = 1, 6 do
      local c = connect(srv, { rst = (i % 2 == 0) })
      assert(c:send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" .. string.rep("z", 100)))
      util.sleep(0.02)
      c:close()
    end
    assert_still_serving(srv)
  end)

  it("sends 100 Continue before reading the body when asked (Expect: 100-continue)", function()
    local c = connect(srv)
    assert(c:send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"))
    local buf = c:read_until(function(b) return b:find("\r\n\r\n", 1, true) end, 3)
    assert.matches("^HTTP/1%.1 100 Continue\r\n", buf)
    assert(c:send("hello"))
    local list = c:read_responses(1)
    c:close()
    assert.are.equal(2, #list)
    assert.are.equal(100, list[1].status)
    assert.are.equal(200, list[2].status)
    assert.matches("^len=5 ", list[2].body)
  end)

  it("answers 413 without 100 Continue when the announced body is too large", function()
    local c = connect(limited)
    assert(c:send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"))
    local list = c:read_responses(1, { timeout = 3 })
    c:close()
    assert.are.equal(1, #list, c.buf)
    assert.are.equal(413, list[1].status)
  end)
end)

describe("HTTP/1.1 large responses #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/big.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function check_big(body)
    assert.are.equal(1048576, #body)
    assert.are.equal("0000000", body:sub(1, 7))
    assert.are.equal("0001023", body:sub(1023 * 1024 + 1, 1023 * 1024 + 7))
    assert.are.equal("0000512", body:sub(512 * 1024 + 1, 512 * 1024 + 7))
  end

  it("sends a 1 MiB body intact (curl)", function()
    local status, h, body = curl { "--http1.1", srv:url("/") }
    assert.are.equal(200, status)
    assert.are.equal("1048576", h["content-length"])
    check_big(body)
  end)

  it("sends three pipelined 1 MiB responses to a slow reader", function()
    local c = connect(srv)
    assert(c:send(request { path = "/1" } .. request { path = "/2" } .. request { path = "/3" }))
    util.sleep(0.3) -- let the server fill the socket buffer and wait for writability
    local list = c:read_responses(3, { timeout = 10 })
    c:close()
    assert.are.equal(3, #list)
    for i = 1, 3 do check_big(list[i].body) end
  end)

  it("survives clients that leave in the middle of 1 MiB responses (FIN and RST)", function()
    for i = 1, 6 do
      local c = connect(srv, { rst = (i % 2 == 0) })
      assert(c:send(request { path = "/a" } .. request { path = "/b" }))
      c:read_until(function(b) return #b > 100000 end, 3)
      c:close()
    end
    util.sleep(0.2)
    local status, _, body = curl { "--http1.1", srv:url("/") }
    assert.are.equal(200, status)
    check_big(body)
  end)
end)

describe("HTTP/1.1 malformed input #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/echo.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers 400 + close to a garbage request line", function()
    assert_rejected(srv, "\1\2 this is not http\r\n\r\n", 400)
  end)

  it("answers 400 + close to an invalid header name", function()
    assert_rejected(srv, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400)
  end)

  it("answers 400 + close to Content-Length together with Transfer-Encoding (smuggling)", function()
    assert_rejected(srv, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400)
  end)

  it("answers 400 + close to two different Content-Length headers", function()
    assert_rejected(srv, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400)
  end)

  it("answers 400 + close to an invalid chunk size", function()
    assert_rejected(srv, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400)
  end)

  it("answers 414 + close to a request line over 8 KiB", function()
    assert_rejected(srv, "GET /" .. string.rep("a", 9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 414)
  end)

  it("accepts a request line just under 8 KiB", function()
    local list, c = exchange(srv, "GET /" .. string.rep("a", 8000) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
  end)

  it("answers 431 + close to a header block over 16 KiB", function()
    assert_rejected(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("h", 17000) .. "\r\n\r\n", 431)
  end)

  it("accepts a header block of 15 000 bytes", function()
    local list, c = exchange(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("h", 15000) .. "\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
  end)

  it("answers 431 + close to more than 100 header fields", function()
    local hs = { "GET / HTTP/1.1", "Host: x" }
    for i = 1, 110 do hs[#hs + 1] = "X-H" .. i .. ": v" end
    assert_rejected(srv, table.concat(hs, "\r\n") .. "\r\n\r\n", 431)
  end)

  it("accepts exactly 100 header fields", function()
    local hs = { "GET / HTTP/1.1", "Host: x" }
    for i = 1, 99 do hs[#hs + 1] = "X-H" .. i .. ": v" end
    local list, c = exchange(srv, table.concat(hs, "\r\n") .. "\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
  end)

  it("answers 505 + close to an HTTP/2.0 request line over HTTP/1", function()
    assert_rejected(srv, "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
  end)

  it("answers 501 + close to an unknown Transfer-Encoding", function()
    assert_rejected(srv, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\nhello", 501)
  end)
end)

describe("HTTP/1.1 configurable limits #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua",
      args = { "--max-request-line", "1024", "--max-header-size", "2048", "--max-headers", "10" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("--max-request-line: 414 over, 200 under", function()
    assert_rejected(srv, "GET /" .. string.rep("a", 1100) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    local list, c = exchange(srv, "GET /" .. string.rep("a", 900) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
  end)

  it("--max-header-size: 431 over, 200 under", function()
    assert_rejected(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("h", 2100) .. "\r\n\r\n", 431)
    local list, c = exchange(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("h", 1500) .. "\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
  end)

  it("--max-headers: 431 over, 200 at the limit", function()
    local hs = { "GET / HTTP/1.1", "Host: x" }
    for i = 1, 9 do hs[#hs + 1] = "X-H" .. i .. ": v" end
    local list, c = exchange(srv, table.concat(hs, "\r\n") .. "\r\n\r\n", 1)
    c:close()
    assert.are.equal(200, list[1] and list[1].status)
    hs[#hs + 1] = "X-H10: v"
    hs[#hs + 1] = "X-H11: v"
    assert_rejected(srv, table.concat(hs, "\r\n") .. "\r\n\r\n", 431)
  end)
end)

describe("HTTP/1.1 timeouts #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "lua/default.lua",
      args = { "--handshake-timeout", "1", "--header-timeout", "1", "--keepalive-timeout", "1" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("closes a connection that never starts the TLS handshake (--handshake-timeout)", function()
    local c = assert(client.tcp(srv.port))
    local t0 = util.now()
    local closed = c:wait_closed(4)
    c:close()
    assert.is_true(closed, "still open after 4 s")
    local took = util.now() - t0
    assert.is_true(took > 0.5 and took < 3, "closed after " .. took .. " s")
  end)

  it("closes a connection whose request head never completes (--header-timeout)", function()
    local c = connect(srv)
    assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n"))
    local t0 = util.now()
    local closed = c:wait_closed(4)
    local list = client.parse_responses(c.buf, { closed = true })
    c:close()
    assert.is_true(closed, "still open after 4 s")
    assert.is_true(util.now() - t0 < 3)
    if #list > 0 then assert.are.equal(408, list[1].status) end
  end)

  it("does not let a slow client stretch the header timeout by dribbling bytes", function()
    local c = connect(srv)
    local t0 = util.now()
    assert(c:send("GET / HTTP/1.1\r\n"))
    local closed = false
    for i = 1, 20 do
      if not c:send("X-Slow-" .. i .. ": 1\r\n") then closed = true break end
      local _, st = c:read_until(nil, 0.25)
      if st == "closed" then closed = true break end
    end
    c:close()
    assert.is_true(closed, "a client sending a header line every 0.25 s was never cut off")
    assert.is_true(util.now() - t0 < 3, "cut off only after " .. (util.now() - t0) .. " s")
  end)

  it("closes an idle keep-alive connection (--keepalive-timeout)", function()
    local c = connect(srv)
    assert(c:send(request { path = "/" }))
    local list = c:read_responses(1)
    assert.are.equal(200, list[1] and list[1].status)
    local t0 = util.now()
    local closed = c:wait_closed(4)
    c:close()
    assert.is_true(closed, "idle connection still open after 4 s")
    assert.is_true(util.now() - t0 < 3)
  end)
end)
