-- The access log measures and correlates (issue 10.5): the request time runs
-- until the response's last byte was written, as nginx's $request_time; one
-- request id links the error log, the access log and X-Request-Id; a trusted
-- proxy's X-Request-Id is kept; the JSON line carries host, user_agent,
-- referer, bytes_received and tls_version; a client that leaves before its
-- response is logged as 499.
local cjson = require "cjson"
local socket = require "socket"
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"

local LOGS = "spec/fixtures/logs.lua"

local wait_until = util.wait_until

--- The lines of path that contain needle, once there is at least one (3 s).
local function lines_with(path, needle)
  local found = wait_until(function()
    local text = util.read_file(path)
    return text and text:find(needle, 1, true) and text
  end, 3)
  local out = {}
  for _, l in ipairs(found and util.lines(found) or {}) do
    if l:find(needle, 1, true) then out[#out + 1] = l end
  end
  return out
end

local function json_line(path, needle)
  local lines = lines_with(path, needle)
  assert.are.equal(1, #lines, "expected one line with " .. needle .. ":\n" .. table.concat(lines, "\n"))
  local ok, rec = pcall(cjson.decode, lines[1])
  assert.truthy(ok, "not JSON: " .. lines[1])
  return rec
end

describe("access log: request time until the last byte #e2e", function()
  local srv, logfile

  lazy_setup(function()
    logfile = util.tmpdir("rtlog") .. "/access.json"
    srv = server.start { script = LOGS, workers = 1,
                         args = { "--access-log", logfile, "--access-log-format", "json" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  for _, proto in ipairs { "1.1", "2" } do
    it("covers a slow reader's download over HTTP/" .. proto, function()
      local t0 = util.now()
      -- 32 MiB at 4 MB/s, about 8 s: the kernel's socket buffers (up to
      -- ~12 MB in all, seen under HTTP/2) hold only part of it, so edge's
      -- last write waits for the client to read the rest.
      local status = client.curl({ proto == "2" and "--http2" or "--http1.1", "--limit-rate", "4M",
                                   "--max-time", "20", srv:url("/big?p=" .. proto) })
      local took = util.now() - t0
      assert.are.equal(200, status)
      local rec = json_line(logfile, "/big?p=" .. proto)
      assert.are.equal(32 * 1048576, rec.bytes)
      -- Queued in microseconds; written over seconds.
      assert.is_true(rec.duration > 1.0, "duration " .. rec.duration .. " s for a download of "
        .. string.format("%.2f", took) .. " s: it stopped when the response was queued")
      assert.is_true(rec.duration <= took + 0.2, "duration " .. rec.duration .. " > " .. took)
    end)
  end
end)

describe("access log: request ids and fields #e2e", function()
  local srv, logfile

  lazy_setup(function()
    logfile = util.tmpdir("idlog") .. "/access.json"
    srv = server.start { script = LOGS, workers = 1,
                         args = { "--access-log", logfile, "--access-log-format", "json",
                                  "--request-id-header", "--trusted-proxies", "10.0.0.0/8, ::1" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("sends X-Request-Id, the id the script, the access log and the error log see", function()
    local status, headers, body = client.curl { "-H", "X-Request-Id: not-trusted-1",
                                                srv:url("/id-one") }
    assert.are.equal(200, status)
    local id = headers["x-request-id"]
    assert.truthy(id, "no X-Request-Id header")
    assert.are.equal("id=" .. id .. "\n", body)
    assert.are_not.equal("not-trusted-1", id, "127.0.0.1 is not a trusted proxy here")
    assert.are.equal(id, json_line(logfile, "/id-one").id)

    local st2, h2 = client.curl { srv:url("/boom") }
    assert.are.equal(500, st2)
    local boom_id = h2["x-request-id"]
    assert.truthy(srv:wait_log("request " .. boom_id, 3), "the error log line does not carry the id "
      .. tostring(boom_id) .. ":\n" .. srv:log_tail())
    assert.truthy(srv:log():find("logs.lua:13", 1, true), srv:log_tail())
    assert.are.equal(boom_id, json_line(logfile, "/boom").id)
  end)

  it("has host, user_agent, referer, bytes_received and tls_version", function()
    local status = client.curl { "--http1.1", "-A", "spec-agent/2", "-e", "https://from.example/",
                                 "--data-binary", "0123456789", srv:url("/fields") }
    assert.are.equal(200, status)
    local rec = json_line(logfile, "/fields")
    assert.are.equal("127.0.0.1", rec.host)
    assert.are.equal("spec-agent/2", rec.user_agent)
    assert.are.equal("https://from.example/", rec.referer)
    assert.matches("^TLSv1%.[23]$", rec.tls_version)
    assert.are.equal("POST", rec.method)
    -- The request line, its headers and the 10-byte body, as read off the wire.
    assert.is_true(rec.bytes_received > 60 and rec.bytes_received < 400, "bytes_received "
      .. tostring(rec.bytes_received))
    local st2 = client.curl { "--http2", srv:url("/fields-h2") }
    assert.are.equal(200, st2)
    local r2 = json_line(logfile, "/fields-h2")
    assert.are.equal(cjson.null, r2.referer)
    assert.is_true(r2.bytes_received > 9, "bytes_received " .. tostring(r2.bytes_received))
  end)
end)

describe("access log: a trusted proxy's X-Request-Id #e2e", function()
  local srv, logfile

  lazy_setup(function()
    logfile = util.tmpdir("tplog") .. "/access.log"
    srv = server.start { script = LOGS, workers = 1,
                         args = { "--access-log", logfile, "--access-log-format", "combined_id",
                                  "--request-id-header", "--trusted-proxies", "127.0.0.0/8" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("is kept as the request id, and logged in combined_id", function()
    local status, headers, body = client.curl { "-H", "X-Request-Id: lb-4711.a_b:c", srv:url("/kept") }
    assert.are.equal(200, status)
    assert.are.equal("lb-4711.a_b:c", headers["x-request-id"])
    assert.are.equal("id=lb-4711.a_b:c\n", body)
    local line = lines_with(logfile, "/kept")[1]
    assert.truthy(line, "no line for /kept")
    assert.matches('^127%.0%.0%.1 %- %- %[[^%]]+%] "GET /kept HTTP/2" 200 %d+ "%-" "[^"]*" '
      .. '"lb%-4711%.a_b:c" %d+%.%d%d%d$', line)
  end)

  it("is not kept when it is not a safe token", function()
    local status, headers = client.curl { "-H", "X-Request-Id: bad id\"quote", srv:url("/unsafe") }
    assert.are.equal(200, status)
    assert.matches("^%x+$", headers["x-request-id"])
  end)
end)

describe("access log: a client that resets before its response #e2e", function()
  local srv, logfile

  lazy_setup(function()
    logfile = util.tmpdir("499log") .. "/access.log"
    srv = server.start { script = LOGS, workers = 1, plain = true, args = { "--access-log", logfile } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("is logged as 499", function()
    local c = assert(socket.connect("127.0.0.1", srv.plain_port))
    c:send("GET /sleep?left=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    util.sleep(0.3)
    -- A reset: a FIN alone is a half-close, which still gets its answer.
    c:setoption("linger", { on = true, timeout = 0 })
    c:close()
    local line = lines_with(logfile, "/sleep?left=1")[1]
    assert.truthy(line, "the abandoned request was not logged:\n" .. (util.read_file(logfile) or ""))
    assert.matches('"GET /sleep%?left=1 HTTP/1%.1" 499 0 ', line)
  end)
end)
