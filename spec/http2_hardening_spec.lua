-- End-to-end specs for HTTP/2 hardening (issue 9, points 1, 6 and 8): every
-- stream that waits on the client has a deadline, early answers do not pin a
-- stream, request-body windows stay within --max-body, stream ids only grow,
-- CONNECT gets 501, and the open-connections gauge does not drift. The real
-- binary ($EDGE_BIN) on loopback, talked to with spec/support/h2raw.lua and
-- curl --http2.
local server = require "support.server"
local client = require "support.client"
local admin = require "support.admin"
local h2raw = require "support.h2raw"
local util = require "support.util"

local hpack = h2raw.hpack
local KiB = 1024

--- A raw HTTP/2 connection that has read the server's SETTINGS.
local function h2(srv, opts)
  local c, err = h2raw.connect(srv.port, opts)
  assert(c, "HTTP/2 connect failed: " .. tostring(err))
  local s, why = c:handshake(3)
  assert(s, "no SETTINGS from the server (" .. tostring(why) .. "):\n" .. c:trace())
  return c
end

--- A request's HEADERS frame; opts as h2raw.request_fields, plus end_stream
-- and end_headers (both default false / true as h2raw.headers).
local function headers_frame(id, opts)
  return h2raw.headers(id, hpack.encode(h2raw.request_fields(opts)),
    { end_stream = opts.end_stream, end_headers = opts.end_headers })
end

--- Sends `bytes` that open stream `id` (raw frames) and moves the
-- connection's next stream id past it.
local function send_opening(c, id, bytes)
  assert(c:send(bytes))
  if id >= c.next_stream then c.next_stream = id + 2 end
end

--- Reads until `pred(c)` or `timeout`; returns seconds taken and how it ended.
local function time_until(c, pred, timeout)
  local t0 = util.now()
  local how = c:read_until(pred, timeout)
  return util.now() - t0, how
end

--- curl --http2 gets 200 (other clients are served).
local function assert_h2_serving(srv, path)
  local status, _, _, version, info = client.curl { "--http2", "--max-time", "3", srv:url(path or "/") }
  assert.are.equal(200, status, "a fresh HTTP/2 client was not served: " .. tostring(info.stderr))
  assert.are.equal("2", version)
end

--- Stream frames of `ftype` the server sent on stream `id`.
local function frames_on(c, ftype, id)
  local n = 0
  for _, f in ipairs(c.frames) do
    if f.type == ftype and f.stream == id then n = n + 1 end
  end
  return n
end

--- server.start with --admin on a free port: the server and the admin port.
local function start_with_admin(opts)
  local aport
  for _ = 1, 20 do
    aport = util.free_port()
    if aport ~= opts.port then break end
  end
  local args = { "--admin", "127.0.0.1:" .. aport }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  opts.args = args
  local srv = server.start(opts)
  local deadline = util.now() + 5
  repeat
    local c = client.tcp(aport, 1)
    if c then c:close() return srv, aport end
    util.sleep(0.05)
  until util.now() > deadline
  srv:stop()
  error("the admin listener never accepted a connection:\n" .. srv:log_tail(), 2)
end

local function h2_gauge(aport)
  return admin.value(admin.scrape(aport), 'edge_connections{protocol="h2"}')
end

--- Polls the h2 connections gauge until it reads `want` (bounded).
local function wait_gauge(aport, want, timeout)
  local deadline = util.now() + (timeout or 3)
  local v = h2_gauge(aport)
  while v ~= want and util.now() < deadline do
    util.sleep(0.05)
    v = h2_gauge(aport)
  end
  return v
end

describe("HTTP/2 stream deadlines #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua",
      args = { "--header-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "30",
               "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("resets a stream whose header block never ends after --header-timeout (RST_STREAM CANCEL)", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { path = "/h", end_headers = false }))
    local took, how = time_until(c, function() return c:stream(1).rst ~= nil end, 4)
    c:close()
    assert.are.equal("matched", how, "no RST_STREAM for the incomplete header block:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.CANCEL), h2raw.error_name(c:stream(1).rst))
    assert.is_true(took > 0.7 and took < 2.5, "reset after " .. took .. " s")
    assert.truthy(srv:log():find("header block incomplete", 1, true), srv:log_tail())
  end)

  it("answers 408 to a body that stops, then RST_STREAM NO_ERROR; the connection serves on", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/b" }) .. h2raw.data(1, "abc", false))
    local took, how = time_until(c, function() return c:stream(1).rst ~= nil end, 4)
    local after = c:get({ path = "/after" }, 3)
    c:close()
    assert.are.equal("matched", how, "the stalled stream lives on:\n" .. c:trace())
    assert.are.equal(408, c:stream(1).status, c:trace())
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c:stream(1).rst))
    assert.is_true(took > 0.7 and took < 2.5, "answered after " .. took .. " s")
    assert.are.equal(200, after.status, "a request after the 408:\n" .. c:trace())
  end)

  it("answers 408 to HEADERS without END_STREAM and no DATA at all", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/nobody" }))
    local _, how = time_until(c, function() return c:stream(1).rst ~= nil end, 4)
    c:close()
    assert.are.equal("matched", how, c:trace())
    assert.are.equal(408, c:stream(1).status, c:trace())
  end)

  it("stops the deadlines of streams whose connection closed (FIN and RST) before they fire", function()
    for _, rst in ipairs { false, true } do
      local c = h2(srv, { rst = rst })
      send_opening(c, 1, headers_frame(1, { method = "POST", path = "/gone" }) ..
        headers_frame(3, { path = "/gone2", end_headers = false }))
      util.sleep(0.1)
      c:close()
    end
    util.sleep(1.5)                 -- past --header-timeout and --body-timeout
    local c = h2(srv)
    local res = c:get({ path = "/alive" }, 3)
    c:close()
    assert.are.equal(200, res.status, c:trace())
    assert.is_nil(srv:sanitizer_report())
  end)

  it("keeps a body that progresses slower than --body-timeout overall alive", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/slow" }))
    for i = 1, 4 do                 -- 4 x 0.5 s: twice --body-timeout in all
      util.sleep(0.5)
      assert(c:send(h2raw.data(1, "part" .. i, i == 4)))
    end
    local res = c:response(1, 3)
    c:close()
    assert.are.equal(200, res.status, c:trace())
    assert.matches("body=part1part2part3part4", res.body)
  end)
end)

describe("HTTP/2 idle connections with streams waiting on the client #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua",
      args = { "--header-timeout", "30", "--body-timeout", "30", "--keepalive-timeout", "1",
               "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("sends GOAWAY NO_ERROR and closes after --keepalive-timeout although three streams are open", function()
    local c = h2(srv)
    for id = 1, 5, 2 do send_opening(c, id, headers_frame(id, { method = "POST", path = "/q" .. id })) end
    local t0 = util.now()
    local closed = c:wait_closed(4)
    local took = util.now() - t0
    c:close()
    assert.is_true(closed, "a connection holding only silent streams stayed open:\n" .. c:trace())
    assert.truthy(c.goaway, "no GOAWAY:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c.goaway.code))
    assert.is_true(took > 0.5 and took < 3, "closed after " .. took .. " s")
    assert.truthy(srv:log():find("streams waiting on the client: GOAWAY", 1, true), srv:log_tail())
  end)
end)

describe("HTTP/2 early answers and request-body windows #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/bodylen.lua",
      args = { "--max-body", "1024", "--max-header-size", "2048", "--body-timeout", "30",
               "--keepalive-timeout", "30" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("resets a stream answered 413 whose body never ends (RST_STREAM NO_ERROR, at once)", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/big" }) .. h2raw.data(1, string.rep("z", 2000), false))
    local took, how = time_until(c, function() return c:stream(1).rst ~= nil end, 3)
    local after = c:get({ method = "POST", path = "/small", body = "abc" }, 3)
    c:close()
    assert.are.equal("matched", how, "the 413 stream was left open:\n" .. c:trace())
    assert.are.equal(413, c:stream(1).status)
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c:stream(1).rst))
    assert.is_true(took < 1, "reset after " .. took .. " s")
    assert.are.equal(200, after.status, c:trace())
    assert.matches("^len=3 ", after.body)
  end)

  it("resets a stream answered 431 whose body never ends", function()
    local c = h2(srv)
    local big = { { "x-big", string.rep("h", 3000) } }
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/h", headers = big }))
    local _, how = time_until(c, function() return c:stream(1).rst ~= nil end, 3)
    c:close()
    assert.are.equal("matched", how, c:trace())
    assert.are.equal(431, c:stream(1).status)
    assert.are.equal(h2raw.error_name(h2raw.NO_ERROR), h2raw.error_name(c:stream(1).rst))
  end)

  it("grants no stream window past --max-body, but gives the connection window back", function()
    -- 6 rejected streams x 200 KiB: more than the 1 MiB connection window,
    -- each within the 256 KiB stream window.
    local c = h2(srv)
    for i = 0, 5 do
      local id = 1 + 2 * i
      send_opening(c, id, headers_frame(id, { method = "POST", path = "/r" .. id }) ..
        h2raw.data(id, string.rep("r", 200 * KiB), false))
      c:read_until(function() return c:stream(id).rst ~= nil end, 3)
    end
    local res = c:get({ method = "POST", path = "/after", body = string.rep("a", 1000) }, 3)
    c:close()
    for i = 0, 5 do
      local id = 1 + 2 * i
      assert.are.equal(413, c:stream(id).status, "stream " .. id .. ":\n" .. c:trace())
      assert.are.equal(0, frames_on(c, h2raw.WINDOW_UPDATE, id), "window granted to rejected stream " .. id)
    end
    assert.are.equal(200, res.status, "no connection window left after rejected bodies:\n" .. c:trace())
    assert.matches("^len=1000 ", res.body)
  end)
end)

describe("HTTP/2 silent streams at scale #e2e", function()
  local srv, aport

  lazy_setup(function()
    srv, aport = start_with_admin { script = "lua/default.lua",
      args = { "--header-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "2" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("resets or closes 20 connections x 10 silent streams within the timeouts; serves others; RSS bounded", function()
    local rss0 = srv:rss_kb()
    local conns = {}
    for i = 1, 20 do
      local c = h2(srv)
      local parts = {}
      for s = 1, 10 do
        local id = 2 * s - 1
        -- Half stop after their HEADERS, half after a little of their body.
        parts[#parts + 1] = headers_frame(id, { method = "POST", path = "/s" .. i .. "-" .. s })
        if s % 2 == 0 then parts[#parts + 1] = h2raw.data(id, string.rep("d", 900), false) end
      end
      send_opening(c, 19, table.concat(parts))
      conns[i] = c
    end
    assert.are.equal(20, wait_gauge(aport, 20, 2), "the h2 gauge does not count the 20 connections")
    assert_h2_serving(srv, "/meanwhile")
    local function settled(c)
      if c.closed then return true end
      for s = 1, 10 do
        if c:stream(2 * s - 1).rst == nil then return false end
      end
      return true
    end
    local deadline = util.now() + 4      -- the timeouts are 1 s (streams) and 2 s (idle)
    local pending
    repeat
      pending = 0
      for _, c in ipairs(conns) do
        if not settled(c) then
          c:read_until(settled, 0.05)
          if not settled(c) then pending = pending + 1 end
        end
      end
    until pending == 0 or util.now() > deadline
    local rss1 = srv:rss_kb()
    for _, c in ipairs(conns) do c:close() end
    assert.are.equal(0, pending, pending .. " connections still hold silent streams:\n" .. conns[1]:trace())
    for i, c in ipairs(conns) do
      for s = 1, 10 do
        local st = c:stream(2 * s - 1)
        assert.is_true(c.closed or st.status == 408 or st.rst == h2raw.CANCEL,
          "connection " .. i .. " stream " .. st.id .. ":\n" .. c:trace())
      end
    end
    assert_h2_serving(srv, "/after")
    assert.are.equal(0, wait_gauge(aport, 0, 5), "h2 connections left open")
    assert.is_true(rss1 - rss0 < 64 * KiB, string.format("RSS grew from %d to %d KiB", rss0, rss1))
  end)
end)

describe("HTTP/2 stream identifiers and CONNECT #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = "spec/fixtures/echo.lua", args = { "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("answers HEADERS opening stream 3 after stream 5 with GOAWAY PROTOCOL_ERROR", function()
    local c = h2(srv)
    local five = c:get({ stream = 5, path = "/five" }, 3)
    assert.are.equal(200, five.status, c:trace())
    assert(c:send(headers_frame(3, { path = "/three", end_stream = true })))
    local g = c:wait_goaway(3)
    local closed = c:wait_closed(3)
    c:close()
    assert.truthy(g, "no GOAWAY for a lower stream id:\n" .. c:trace())
    assert.are.equal(h2raw.error_name(h2raw.PROTOCOL_ERROR), h2raw.error_name(g.code))
    assert.is_true(closed, "connection left open")
    assert.is_nil(c:stream(3).status, "stream 3 was served:\n" .. c:trace())
    assert.truthy(srv:log():find("below stream 5", 1, true), srv:log_tail())
  end)

  it("takes trailers on an older open stream after a newer one opened, not as request headers", function()
    local c = h2(srv)
    send_opening(c, 1, headers_frame(1, { method = "POST", path = "/t" }) .. h2raw.data(1, "body", false))
    local three = c:get({ stream = 3, path = "/three" }, 3)
    assert(c:send(h2raw.headers(1, hpack.encode { { "x-trailer", "1" } }, { end_stream = true })))
    local one = c:response(1, 3)
    c:close()
    assert.are.equal(200, three.status, c:trace())
    assert.are.equal(200, one.status, c:trace())
    assert.is_nil(c.goaway, c:trace())
    assert.matches("body=body", one.body)
    assert.is_nil(one.body:find("x-trailer", 1, true), "a trailer became a request header")
  end)

  it("answers CONNECT with 501, as over HTTP/1.1; the connection serves on", function()
    local c = h2(srv)
    local id = c:request { fields = { { ":method", "CONNECT" }, { ":authority", "example.com:443" } },
                           end_stream = false }
    local res = c:response(id, 3)
    local after = c:get({ path = "/after" }, 3)
    c:close()
    assert.are.equal(501, res.status, c:trace())
    assert.are.equal(200, after.status, c:trace())
    assert.is_nil(res.body:find("method=CONNECT", 1, true), "CONNECT reached the script")
  end)
end)
