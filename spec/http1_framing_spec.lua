-- End-to-end specs for HTTP/1.1 message framing (RFC 9112) and connection
-- handling corners: ambiguous framing gets one 400 and Connection: close,
-- a client that half-closes still gets its answers, and a pipelining client
-- that reads slowly never stalls. The real binary, raw sockets, 127.0.0.1.
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local socket = require "socket"
local ssl = require "ssl"

local request = client.request

--- Opens a raw TLS 1.3 connection offering http/1.1 (asserts it worked).
local function connect(srv)
  local c, err = client.tls(srv.port, { alpn = "http/1.1" })
  assert(c, "TLS connect failed: " .. tostring(err))
  return c
end

--- Sends bytes; returns the responses read before the server closed (or
-- `timeout` s passed), whether it closed, and the raw bytes.
local function send_and_wait_close(srv, bytes, timeout)
  local c = connect(srv)
  assert(c:send(bytes))
  local closed = c:wait_closed(timeout or 3)
  local list = client.parse_responses(c.buf, { closed = true })
  c:close()
  return list, closed, c.buf
end

--- A fresh client still gets 200 for GET / (the server survived).
local function assert_still_serving(srv)
  local c = connect(srv)
  assert(c:send(request { path = "/" }))
  local list = c:read_responses(1)
  c:close()
  assert.are.equal(200, list[1] and list[1].status, "server no longer serves a fresh client")
end

--- Asserts exactly one 400 with Connection: close, then a close, within 3 s.
local function assert_400_close(srv, bytes)
  local list, closed, raw = send_and_wait_close(srv, bytes, 3)
  assert.are.equal(1, #list, "expected exactly one response, got:\n" .. raw)
  assert.are.equal(400, list[1].status, "got:\n" .. raw)
  assert.are.equal("close", (list[1].headers.connection or ""):lower(), "no Connection: close in:\n" .. raw)
  assert.is_true(closed, "the server did not close the connection after 400")
  assert_still_serving(srv)
end

--- One echo.lua exchange on a fresh connection; returns the response and
-- the fields echo.lua reported.
local function echo(srv, bytes)
  local c = connect(srv)
  assert(c:send(bytes))
  local list = c:read_responses(1)
  c:close()
  local r = list[1]
  assert(r, "no response; got:\n" .. c.buf)
  return r, client.echo_fields(r.body)
end

describe("HTTP/1.1 framing (RFC 9112) #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/echo.lua" } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers 400 + close to Transfer-Encoding in an HTTP/1.0 request (6.1)", function()
    assert_400_close(srv, "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5\r\nhello\r\n0\r\n\r\n" .. "GET /smuggled HTTP/1.0\r\n\r\n")
    assert_400_close(srv, "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
  end)

  it("answers 400 + close to more than one Host header (3.2)", function()
    assert_400_close(srv, "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
    assert_400_close(srv, "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n")
    assert_400_close(srv, "GET / HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
  end)

  it("answers 400 + close to an HTTP/1.1 request without Host, also in absolute form (3.2)", function()
    assert_400_close(srv, "GET / HTTP/1.1\r\n\r\n")
    assert_400_close(srv, "GET http://a.example/ HTTP/1.1\r\n\r\n")
  end)

  it("answers 400 + close to obs-fold: a header line starting with SP or HTAB (5.2)", function()
    assert_400_close(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  c\r\n\r\n")
    assert_400_close(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n")
    -- A folded value whose first line is empty: the smuggler's form.
    assert_400_close(srv, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n"
      .. "Content-Length: 3\r\n\r\n0\r\n\r\n")
    assert_400_close(srv, "GET / HTTP/1.1\r\nX-A:\r\n\tb\r\nHost: x\r\n\r\n")
  end)

  it("answers 400 + close to obs-fold split across reads", function()
    for _, cut in ipairs { { "X-A: b\r\n", " c\r\n\r\n" }, { "X-A: b\r", "\n c\r\n\r\n" },
                           { "X-A:\r\n", " c\r\n\r\n" }, { "X-A: b", "\r\n\tc\r\n\r\n" } } do
      local c = connect(srv)
      assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n" .. cut[1]))
      util.sleep(0.05)
      assert(c:send(cut[2]))
      local closed = c:wait_closed(3)
      local list = client.parse_responses(c.buf, { closed = true })
      c:close()
      assert.are.equal(1, #list, "cut " .. cut[1]:gsub("[\r\n\t]", "~") .. ": " .. c.buf)
      assert.are.equal(400, list[1].status)
      assert.is_true(closed)
    end
  end)

  it("answers 400 + close at once to a request line without an HTTP version (HTTP/0.9 style)", function()
    for _, bytes in ipairs { "GET /\r\n\r\n", "GET /\r\n", "GET /\n", "GET /index.html\r\nHost: x\r\n\r\n" } do
      local t0 = util.now()
      local list, closed, raw = send_and_wait_close(srv, bytes, 3)
      assert.are.equal(1, #list, ("%q got: %s"):format(bytes, raw))
      assert.are.equal(400, list[1].status, raw)
      assert.are.equal("close", (list[1].headers.connection or ""):lower())
      assert.is_true(closed, ("%q: connection left open"):format(bytes))
      assert.is_true(util.now() - t0 < 2, ("%q: answered after %.1f s"):format(bytes, util.now() - t0))
    end
    assert_still_serving(srv)
  end)

  it("takes req.host from an absolute-form target's authority over Host (3.2.2)", function()
    local r, f = echo(srv, "GET http://A.Example:8080/x/y?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert.are.equal(200, r.status)
    assert.are.equal("a.example", f.host)
    assert.are.equal("/x/y", f.path)
    assert.are.equal("q=1", f.query)
  end)

  it("gives an absolute-form target without a path the path /", function()
    local _, f = echo(srv, "GET http://a.example?q=2 HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert.are.equal("a.example", f.host)
    assert.are.equal("/", f.path)
    assert.are.equal("q=2", f.query)
    _, f = echo(srv, "GET https://[::1]:8443 HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert.are.equal("[::1]", f.host)
    assert.are.equal("/", f.path)
    assert.are.equal("nil", f.query)
  end)

  it("answers 400 + close to an absolute-form target with userinfo or no host", function()
    assert_400_close(srv, "GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert_400_close(srv, "GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n")
  end)

  it("drops chunked trailer fields: they never become request headers", function()
    local bytes = "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Test: head\r\n\r\n"
      .. "5\r\nhello\r\n0\r\nX-Test: trailer\r\nX-Trail: t\r\nHost: evil.example\r\n\r\n"
      .. request { path = "/after", headers = { ["X-Test"] = "next" } }
    local c = connect(srv)
    assert(c:send(bytes))
    local list = c:read_responses(2)
    c:close()
    assert.are.equal(2, #list, c.buf)
    local f = client.echo_fields(list[1].body)
    assert.are.equal("head", f["x-test"])
    assert.are.equal("head", list[1].headers["x-echo"])
    assert.are.equal("host,transfer-encoding,x-test", f.header_names)
    assert.are.equal("x", f.host)
    assert.are.equal("hello", f.body)
    assert.are.equal("next", client.echo_fields(list[2].body)["x-test"])
  end)
end)

---------------------------------------------------------------------------
-- Half-close: the client shuts down its sending side after its requests.
---------------------------------------------------------------------------

--- Plain TCP to the cleartext listener: sends bytes, shuts down the sending
-- side, reads until the server closes (at most `timeout` s).
local function plain_half_close(srv, bytes, timeout)
  local t = socket.tcp4()
  t:settimeout(2)
  assert(t:connect("127.0.0.1", srv.plain_port))
  assert(t:send(bytes))
  assert(t:shutdown("send"))
  local parts, closed = {}, false
  local deadline = util.now() + (timeout or 5)
  while util.now() < deadline do
    t:settimeout(math.max(0.01, deadline - util.now()))
    local data, err, partial = t:receive(16384)
    local got = data or partial
    if got and #got > 0 then parts[#parts + 1] = got end
    if err == "closed" then closed = true break end
    if err and err ~= "timeout" then break end
  end
  t:close()
  local raw = table.concat(parts)
  return client.parse_responses(raw, { closed = closed }), closed, raw
end

--- TLS 1.3, then a TCP FIN under the TLS session (no close_notify: edge
-- treats an EOF like one). Returns the responses read before the server closed.
local function tls_half_close(srv, bytes, timeout)
  local tcp = socket.tcp4()
  tcp:settimeout(5)
  assert(tcp:connect("127.0.0.1", srv.port))
  local conn = assert(ssl.wrap(tcp, { mode = "client", protocol = "tlsv1_3", verify = "none",
    options = "all", alpn = "http/1.1" }))
  conn:settimeout(5)
  assert(conn:dohandshake())
  assert(conn:send(bytes))
  -- ssl.wrap moved the descriptor into conn: lend it back to the TCP object
  -- for the shutdown, then take it away again so only conn closes it.
  tcp:setfd(conn:getfd())
  local ok, err = tcp:shutdown("send")
  tcp:setfd(socket._SOCKETINVALID)
  assert(ok, err)
  local parts, closed = {}, false
  local deadline = util.now() + (timeout or 5)
  while util.now() < deadline do
    conn:settimeout(math.max(0.01, deadline - util.now()))
    local data, rerr, partial = conn:receive(16384)
    local got = data or partial
    if got and #got > 0 then parts[#parts + 1] = got end
    if rerr and rerr ~= "timeout" and rerr ~= "wantread" then closed = true break end
  end
  conn:close()
  local raw = table.concat(parts)
  return client.parse_responses(raw, { closed = closed }), closed, raw
end

describe("HTTP/1.1 half-closed clients #e2e", function()
  local srv

  lazy_setup(function()
    -- info: a cancelled request would be logged ("cancelled: client closed").
    srv = server.start { script = "spec/fixtures/sleepy.lua", plain = true, args = { "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers an HTTP/1.0 request whose client shut down its sending side (printf | nc)", function()
    local list, closed, raw = plain_half_close(srv, "GET /h10?s=0.2 HTTP/1.0\r\n\r\n")
    assert.are.equal(1, #list, raw)
    assert.are.equal(200, list[1].status)
    assert.matches("slept path=/h10 ", list[1].body)
    assert.is_true(closed)
    assert.is_nil(srv:log():find("cancelled: client closed", 1, true), srv:log())
  end)

  it("answers an HTTP/1.1 request, with Connection: close, then closes", function()
    local list, closed, raw = plain_half_close(srv, request { path = "/h11?s=0.2" })
    assert.are.equal(1, #list, raw)
    assert.are.equal(200, list[1].status)
    assert.are.equal("close", (list[1].headers.connection or ""):lower())
    assert.is_true(closed)
  end)

  it("answers every complete pipelined request, in order, before closing", function()
    local bytes = request { path = "/p1?s=0.1" } .. request { path = "/p2?s=0" } .. request { path = "/p3?s=0.05" }
    local list, closed, raw = plain_half_close(srv, bytes)
    assert.are.equal(3, #list, raw)
    for i = 1, 3 do assert.matches("slept path=/p" .. i .. " ", list[i].body) end
    assert.is_true(closed)
  end)

  it("closes without an answer when the request is incomplete at the end of input", function()
    local list, closed, raw = plain_half_close(srv, "GET /never?s=0 HTTP/1.1\r\nHost: x\r\n", 3)
    assert.are.equal(0, #list, raw)
    assert.is_true(closed, "the server kept a half-closed connection with an incomplete request")
    list, closed, raw = plain_half_close(srv, request { path = "/one?s=0" } .. "GET /two HTTP/1.1\r\n", 3)
    assert.are.equal(1, #list, raw)
    assert.matches("slept path=/one ", list[1].body)
    assert.is_true(closed)
  end)

  it("answers over TLS after an EOF that follows a complete request", function()
    local list, closed, raw = tls_half_close(srv, request { path = "/tls?s=0.2" } .. request { path = "/tls2?s=0" })
    assert.are.equal(2, #list, raw)
    assert.matches("slept path=/tls ", list[1].body)
    assert.matches("slept path=/tls2 ", list[2].body)
    assert.is_true(closed)
  end)
end)

---------------------------------------------------------------------------
-- Pipelining to a slow reader
---------------------------------------------------------------------------

--- Sends `n` pipelined GETs for /m/<i>?size=<size> (each padded to `req_size`
-- bytes when given) to the cleartext listener, reading slowly while it
-- sends: reads of at most 16 KiB with 1 ms pauses. Checks each response as
-- it completes (status, length, marker) and keeps only the unparsed rest.
-- Returns the number of complete responses in order, and why it stopped.
local function pipeline_slowly(srv, n, size, req_size, budget)
  local parts = {}
  for i = 1, n do
    local path = string.format("/m/%05d?size=%d", i, size)
    local r = request { path = path }
    if req_size then
      local pad = string.rep("p", req_size - #r - #"X-Pad: \r\n")
      r = request { path = path, headers = { ["X-Pad"] = pad } }
      assert(#r == req_size)
    end
    parts[i] = r
  end
  local bytes = table.concat(parts)
  assert(#bytes > 65536, "the requests must exceed the 64 KiB input buffer")
  local t = socket.tcp4()
  t:settimeout(2)
  assert(t:connect("127.0.0.1", srv.plain_port))
  t:settimeout(0)
  local sent, got, buf, why = 0, 0, "", "timeout"
  local deadline, last = util.now() + budget, util.now()
  while util.now() < deadline do
    if sent < #bytes then
      local k, _, part = t:send(bytes, sent + 1)
      sent = k or part or sent
    end
    local data, err, partial = t:receive(16384)
    data = data or partial
    if data and #data > 0 then buf = buf .. data; last = util.now() end
    while true do   -- take complete responses off the front
      local hend = buf:find("\r\n\r\n", 1, true)
      if not hend then break end
      local head = buf:sub(1, hend)
      local len = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)"))
      assert(head:match("^HTTP/1%.1 200 "), "bad response head: " .. head:sub(1, 200))
      assert(len == size, "bad length in: " .. head)
      if #buf < hend + 3 + len then break end
      got = got + 1
      local marker = buf:sub(hend + 4, hend + 30):match("^marker=/m/(%d+)\n")
      assert(tonumber(marker) == got, ("response %d carries marker %s"):format(got, tostring(marker)))
      buf = buf:sub(hend + 4 + len)
    end
    if got == n then why = "done" break end
    if err == "closed" then why = "closed" break end
    if util.now() - last > 3 then why = "stalled: nothing for 3 s" break end
    socket.sleep(0.001)
  end
  t:close()
  return got, why
end

describe("HTTP/1.1 pipelining to a slow reader #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/sized.lua", plain = true } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  -- 16 requests of exactly 4 KiB fill the 64 KiB input buffer, so reading
  -- pauses with only complete requests buffered; each 2 MiB response is more
  -- than the kernel takes at once, so every flush leaves output pending, also
  -- the one after the last buffered request was parsed.
  it("answers 24 pipelined 4 KiB GETs (96 KiB) with 2 MiB bodies, all in order", function()
    local got, why = pipeline_slowly(srv, 24, 2 * 1024 * 1024, 4096, 40)
    assert.are.equal("done", why)
    assert.are.equal(24, got)
  end)

  it("answers 1,500 pipelined GETs (over 64 KiB) with 16 KiB bodies, all in order", function()
    local got, why = pipeline_slowly(srv, 1500, 16384, nil, 40)
    assert.are.equal("done", why)
    assert.are.equal(1500, got)
  end)
end)
