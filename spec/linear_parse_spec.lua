-- Helpers that parse client input run in linear time (issue 9.7): a hostile
-- Cookie header, query or header line of 200 KB parses in well under 0.5 s
-- of CPU. A backtracking pattern such as "(.-)%s*$" made request.cookies
-- quadratic: 40 KB of spaces took 12 s.
--
-- Each case runs in its own lua5.4 process under timeout(1), so a quadratic
-- parser fails the spec after a few seconds instead of hanging the suite.
-- The child measures its own CPU time (os.clock), which two busy cores
-- shared with other jobs do not inflate.

local SIZE = 200 * 1024
local CPU_BOUND = 0.5 -- seconds; the linear parsers take about 0.01 s
local WALL_LIMIT = 5  -- seconds before timeout(1) stops a quadratic child

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Runs `body` (Lua source; `input` holds the adversarial string, built by
-- `make_input`) in a child lua5.4 with this process's package paths.
-- Returns the CPU seconds the parse took, or nil and what went wrong.
local function cpu_time_of(make_input, body)
  local src = table.concat({
    "package.path = " .. string.format("%q", package.path),
    "package.cpath = " .. string.format("%q", package.cpath),
    "local N = " .. SIZE,
    "local input = " .. make_input,
    "local t0 = os.clock()",
    body,
    "io.write(string.format('cpu %.6f', os.clock() - t0))",
  }, "\n")
  local p = io.popen("timeout -k 1 " .. WALL_LIMIT .. " lua5.4 -e " .. q(src) .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  local cpu = tonumber(out:match("^cpu ([%d.]+)$"))
  if cpu then return cpu end
  if code == 124 then return nil, "still running after " .. WALL_LIMIT .. " s (quadratic?)" end
  return nil, "child failed (" .. tostring(code) .. "): " .. out
end

local function assert_linear(make_input, body)
  local cpu, err = cpu_time_of(make_input, body)
  assert(cpu, err)
  assert(cpu < CPU_BOUND, string.format("took %.3f s of CPU for %d bytes (bound %.1f s)",
    cpu, SIZE, CPU_BOUND))
end

local COOKIES = 'local r = require "edge.request"; local c = r.cookies({ headers = { cookie = input } })'

describe("edge.request.cookies on hostile input", function()
  it("parses a 200 KB cookie name of spaces without '=' in linear time", function()
    assert_linear('"a" .. string.rep(" ", N) .. "b"', COOKIES)
  end)

  it("parses a 200 KB cookie value with a run of spaces inside in linear time", function()
    assert_linear('"a=b" .. string.rep(" ", N) .. "c"', COOKIES .. '; assert(#c.a == N + 2)')
  end)

  it("parses 200 KB of spaces around '=' and tabs in linear time", function()
    assert_linear('"a" .. string.rep(" \\t", N // 4) .. "=" .. string.rep("\\t ", N // 4) .. "v"',
      COOKIES .. '; assert(c.a == "v")')
  end)

  it("parses 200 KB of pairs without '=' before a late '=' in linear time", function()
    assert_linear('string.rep("a;", N // 2) .. "b=1"', COOKIES .. '; assert(c.b == "1")')
  end)

  it("parses 200 KB of a single space-only cookie header in linear time", function()
    assert_linear('string.rep(" ", N)', COOKIES .. '; assert(next(c) == nil)')
  end)

  it("parses Cookie split over many HTTP/2 headers in linear time", function()
    assert_linear('(function() local t = {} for i = 1, N // 8 do t[i] = "k" .. i .. "= v  " end return t end)()',
      COOKIES .. '; assert(c.k1 == "v")')
  end)
end)

describe("query and header helpers on hostile input", function()
  it("parses a 200 KB query of '%', '+' and '=' in linear time", function()
    assert_linear('string.rep("%+=%2", N // 5)',
      'local r = require "edge.request"; r.parse_args(input); r.arg({ query = input }, "x")')
  end)

  it("parses a 200 KB query of '&' and spaces in linear time", function()
    assert_linear('string.rep("& =", N // 3)', 'require("edge.request").parse_args(input)')
  end)

  it("finds a header among 200 KB of names in linear time", function()
    assert_linear('(function() local h = {} for i = 1, N // 16 do h["X-Name-" .. i] = "v" end return h end)()',
      'local r = require "edge.request"; for _ = 1, 10 do r.header({ headers = input }, "Absent") end')
  end)

  it("parses a 200 KB response header line with spaces inside in linear time", function()
    assert_linear('"x-a: b" .. string.rep(" ", N) .. "c" .. string.rep(" ", N)',
      'local s = require "edge.testing.server"; local h = s.parse_header_lines(input); '
        .. 'assert(#h["x-a"] == N + 2)')
  end)
end)

describe("the linear parsers keep their meaning", function()
  local request = require "edge.request"
  it("trims every kind of space around names and values", function()
    local c = request.cookies({ headers = { cookie = "\t a \t=\r b c \v;\fd=  ;  =x; e f = 1" } })
    assert.are.same({ a = "b c", d = "", ["e f"] = "1" }, c)
  end)

  it("parses header lines as before", function()
    local server = require "edge.testing.server"
    local h, list = server.parse_header_lines("A: 1 \r\nbad line\r\n b: x\r\nC:\r\nD:  two  words \r\n:x\r\n")
    assert.are.same({ a = "1", c = "", d = "two  words" }, h)
    assert.are.same({ { "a", "1" }, { "c", "" }, { "d", "two  words" } }, list)
  end)
end)
