-- Unit specs for the spec helpers' own HTTP response parser, so an
-- end-to-end failure is the server's, not the parser's.
local client = require "support.client"

describe("spec helper: HTTP/1.x response parser", function()
  it("splits pipelined responses by Content-Length", function()
    local data = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
      .. "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"
    local list, rest = client.parse_responses(data)
    assert.are.equal(2, #list)
    assert.are.equal("abc", list[1].body)
    assert.are.equal(404, list[2].status)
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", rest)
  end)

  it("decodes chunked bodies with trailers", function()
    local data = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3\r\nabc\r\na;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"
      .. "HTTP/1.1 204 No Content\r\n\r\n"
    local list = client.parse_responses(data)
    assert.are.equal(2, #list)
    assert.are.equal("abc0123456789", list[1].body)
    assert.are.equal(204, list[2].status)
  end)

  it("gives HEAD and 1xx responses no body", function()
    local data = "HTTP/1.1 100 Continue\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    local list = client.parse_responses(data, { methods = { "HEAD", "GET" } })
    assert.are.equal(3, #list)
    assert.are.equal(100, list[1].status)
    assert.are.equal("", list[2].body)
    assert.are.equal("16", list[2].headers["content-length"])
    assert.are.equal("hi", list[3].body)
    assert.are.equal(2, #client.final_responses(list))
  end)

  it("joins repeated headers and lower-cases names", function()
    local list = client.parse_responses("HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert.are.equal("1, 2", list[1].headers["x-a"])
  end)

  it("reads a body without length until close only when closed", function()
    local data = "HTTP/1.0 200 OK\r\n\r\nuntil close"
    assert.are.equal(0, #client.parse_responses(data))
    local list = client.parse_responses(data, { closed = true })
    assert.are.equal("until close", list[1].body)
  end)

  it("builds requests", function()
    assert.are.equal("POST /p HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi",
      client.request { method = "POST", path = "/p", body = "hi" })
  end)
end)

describe("spec helper: server process control", function()
  local server = require "support.server"
  local util = require "support.util"
  local dir

  --- Writes an executable shell script standing in for edge.
  local function fake(name, body)
    local path = dir .. "/" .. name
    util.write_file(path, "#!/bin/sh\n" .. body .. "\n")
    assert(os.execute("chmod +x " .. util.q(path)))
    return path
  end

  setup(function() dir = util.tmpdir("fake") end)

  it("reports a binary that exits at start-up, with its log", function()
    local bin = fake("exit3", "echo 'edge: cannot start' >&2; exit 3")
    local ok, err = pcall(server.start, { script = "x.lua", bin = bin })
    assert.is_false(ok)
    assert.matches("exited with 3", err)
    assert.matches("edge: cannot start", err)
  end)

  it("passes the documented arguments and captures the exit code", function()
    local bin = fake("args", "echo \"$@\" >&2; exit 0")
    local srv = server.start { script = "s.lua", bin = bin, wait = false, workers = 2, args = { "--x", "1" } }
    assert.are.equal(0, srv:wait_exit(5))
    assert.are.equal(string.format("-s s.lua -l 127.0.0.1:%d -w 2 --cert certs/server.crt --key certs/server.key --x 1\n",
      srv.port), srv:log())
    assert.are.equal(0, srv:stop_and_check())
  end)

  it("finds sanitizer reports in the log and fails stop_and_check on them", function()
    local bin = fake("asan", "echo '==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1' >&2\n"
      .. "echo 'x.c:1:2: runtime error: signed integer overflow' >&2; exit 0")
    local srv = server.start { script = "x.lua", bin = bin, wait = false }
    assert.are.equal(0, srv:wait_exit(5))
    local report = srv:sanitizer_report()
    assert.matches("heap%-use%-after%-free", report)
    assert.matches("runtime error:", report)
    assert.has_error(function() srv:stop_and_check() end)
  end)

  it("fails stop_and_check on a non-zero exit code", function()
    local bin = fake("exit7", "exit 7")
    local srv = server.start { script = "x.lua", bin = bin, wait = false }
    assert.are.equal(7, srv:wait_exit(5))
    local ok, err = pcall(srv.stop_and_check, srv)
    assert.is_false(ok)
    assert.matches("exited with 7", err)
  end)

  it("kills a process that ignores SIGTERM (bounded) and reports it", function()
    local bin = fake("stubborn", "trap '' TERM; exec sleep 30")
    local srv = server.start { script = "x.lua", bin = bin, wait = false, stop_timeout = 0.5 }
    util.sleep(0.1)
    local t0 = util.now()
    assert.are.equal(137, srv:stop())
    assert.is_true(util.now() - t0 < 3)
    local ok, err = pcall(srv.stop_and_check, srv)
    assert.is_false(ok)
    assert.matches("SIGKILL", err)
  end)
end)
