-- Unit specs for edge.limit (src/lua_limit.c) in plain busted: the real C
-- limiters on a real shared dictionary, timed by the virtual clock
-- (edge.testing.clock), so every admit / delay / reject is exact.
local edge = require "edge"
local clock = require "edge.testing.clock"

local DICT = "limit_unit_spec"
edge.shared.define(DICT, "1m")

-- Every test gets keys no other test used: the dictionary lives for the
-- whole busted process.
local serial = 0
local function fresh_key()
  serial = serial + 1
  return "client-" .. serial
end

-- The clock is shared by every spec file: only ever move it forward, to a
-- whole second so that sums of the steps below (powers of two) stay exact.
local function start_clock()
  local t = math.floor(clock.now()) + 1000
  clock.set(t)
  return t
end

local function near(expected, got)
  assert.is_number(got)
  assert.is_true(math.abs(expected - got) < 1e-9, ("expected %.9f, got %.9f"):format(expected, got))
end

-- incoming's three results as one table, so that a sequence reads as a list.
local function check(lim, key, commit)
  return { lim:incoming(key, commit) }
end

local function assert_admitted(r, delay, excess)
  assert.are.equal(2, #r, "expected admitted, got " .. tostring(r[2]))
  near(delay, r[1])
  near(excess, r[2])
end

local function assert_rejected(r, retry_after)
  assert.is_nil(r[1])
  assert.are.equal("rejected", r[2])
  near(retry_after, r[3])
end

describe("edge.limit.req (leaky bucket)", function()
  before_each(start_clock)

  it("admits burst + 1 at once: the first without delay, then 1/rate apart, then rejects", function()
    local lim, key = edge.limit.req(DICT, 2, 1), fresh_key()
    assert_admitted(check(lim, key, true), 0, 0)
    assert_admitted(check(lim, key, true), 0.5, 1)
    -- the bucket holds 1.0 s of work; the burst allows 0.5 s: 0.5 s to wait
    assert_rejected(check(lim, key, true), 0.5)
    assert_rejected(check(lim, key, true), 0.5)   -- a rejection takes nothing
  end)

  it("leaks at the rate: after retry_after the next one is admitted at the burst's edge", function()
    local lim, key = edge.limit.req(DICT, 2, 1), fresh_key()
    check(lim, key, true)
    check(lim, key, true)
    local r = check(lim, key, true)
    assert_rejected(r, 0.5)
    clock.advance(r[3])
    assert_admitted(check(lim, key, true), 0.5, 1)
    clock.advance(0.25)
    assert_rejected(check(lim, key, true), 0.25)
  end)

  it("a part-drained bucket gives a fractional excess and delay, as resty.limit.req", function()
    local lim, key = edge.limit.req(DICT, 2, 2), fresh_key()
    assert_admitted(check(lim, key, true), 0, 0)
    clock.advance(0.25)
    -- resty: max(0 - 2 * 0.25 + 1, 0) = 0.5 excess, 0.5 / 2 = 0.25 s
    assert_admitted(check(lim, key, true), 0.25, 0.5)
    clock.advance(10)
    assert_admitted(check(lim, key, true), 0, 0)
  end)

  it("burst 0: one request per 1/rate, retry_after counting down", function()
    local lim, key = edge.limit.req(DICT, 1, 0), fresh_key()
    assert_admitted(check(lim, key, true), 0, 0)
    assert_rejected(check(lim, key, true), 1)
    clock.advance(0.25)
    assert_rejected(check(lim, key, true), 0.75)
    clock.advance(0.75)
    assert_admitted(check(lim, key, true), 0, 0)
  end)

  it("at the server's clock (1.7e9 s, steps of 2.4e-7 s) waiting retry_after is enough", function()
    -- Other spec files expect the clock near 0, where decimals add up exactly.
    local before = clock.now()
    finally(function() clock.set(before + 1000) end)
    clock.set(1.7e9 + 0.123)
    local lim, key = edge.limit.req(DICT, 3, 2), fresh_key()
    for i = 0, 2 do
      local r = check(lim, key, true)
      assert.are.equal(2, #r, "request " .. i .. " refused")
      assert.is_true(math.abs(r[1] - i / 3) < 1e-6)
    end
    local r = check(lim, key, true)
    assert.are.equal("rejected", r[2])
    assert.is_true(math.abs(r[3] - 1 / 3) < 1e-6)
    clock.advance(r[3])
    r = check(lim, key, true)
    assert.are.equal(2, #r, "refused after waiting retry_after")
    assert.is_true(math.abs(r[1] - 2 / 3) < 1e-6)
  end)

  it("commit = false (or nil) answers without taking", function()
    local lim, key = edge.limit.req(DICT, 1, 0), fresh_key()
    for _ = 1, 3 do
      assert_admitted(check(lim, key, false), 0, 0)
      assert_admitted(check(lim, key, nil), 0, 0)
    end
    assert_admitted(check(lim, key, true), 0, 0)
    assert_rejected(check(lim, key, false), 1)
  end)

  it("uncommit gives the last request back; an unknown key is not found", function()
    local lim, key = edge.limit.req(DICT, 1, 0), fresh_key()
    assert_admitted(check(lim, key, true), 0, 0)
    assert_rejected(check(lim, key, false), 1)
    assert.is_true(lim:uncommit(key))
    assert_admitted(check(lim, key, true), 0, 0)
    local ok, err = lim:uncommit(fresh_key())
    assert.is_nil(ok)
    assert.are.equal("not found", err)
  end)

  it("keys are independent", function()
    local lim, a, b = edge.limit.req(DICT, 1, 0), fresh_key(), fresh_key()
    assert_admitted(check(lim, a, true), 0, 0)
    assert_rejected(check(lim, a, true), 1)
    assert_admitted(check(lim, b, true), 0, 0)
  end)

  it("two limiters on one dictionary share a key's budget (as two workers do)", function()
    local one, two, key = edge.limit.req(DICT, 1, 0), edge.limit.req(DICT, 1, 0), fresh_key()
    assert_admitted(check(one, key, true), 0, 0)
    assert_rejected(check(two, key, true), 1)
  end)

  it("keeps a key only while it holds work: it expires once drained", function()
    local lim, key = edge.limit.req(DICT, 2, 4), fresh_key()
    for _ = 1, 3 do check(lim, key, true) end
    clock.advance(1.4)      -- three requests at 2 r/s: drained after 1.5 s
    assert.is_not_nil(edge.shared[DICT]:get(key))
    clock.advance(0.2)
    assert.is_nil(edge.shared[DICT]:get(key))
  end)
end)

describe("edge.limit.count (fixed window)", function()
  before_each(start_clock)

  it("admits limit requests with the remaining count, then rejects until the window resets", function()
    local lim, key = edge.limit.count(DICT, 3, 60), fresh_key()
    for remaining = 2, 0, -1 do
      assert.are.same({ 0, remaining }, check(lim, key, true))
    end
    assert_rejected(check(lim, key, true), 60)
    clock.advance(20)
    assert_rejected(check(lim, key, true), 40)
    clock.advance(40)
    assert.are.same({ 0, 2 }, check(lim, key, true))
  end)

  it("the window starts at the key's first request", function()
    local lim, key = edge.limit.count(DICT, 1, 2), fresh_key()
    clock.advance(0.5)
    assert.are.same({ 0, 0 }, check(lim, key, true))
    clock.advance(1.5)
    assert_rejected(check(lim, key, true), 0.5)
    clock.advance(0.5)
    assert.are.same({ 0, 0 }, check(lim, key, true))
  end)

  it("commit = false answers without taking, a fresh key included", function()
    local lim, key = edge.limit.count(DICT, 2, 10), fresh_key()
    assert.are.same({ 0, 1 }, check(lim, key, false))
    assert.are.same({ 0, 1 }, check(lim, key, nil))
    assert.are.same({ 0, 1 }, check(lim, key, true))
    assert.are.same({ 0, 0 }, check(lim, key, false))
    assert.are.same({ 0, 0 }, check(lim, key, true))
    assert_rejected(check(lim, key, false), 10)
  end)

  it("rejected requests take nothing: one uncommit frees one place", function()
    local lim, key = edge.limit.count(DICT, 2, 10), fresh_key()
    check(lim, key, true)
    check(lim, key, true)
    for _ = 1, 5 do assert_rejected(check(lim, key, true), 10) end
    assert.are.equal(1, lim:uncommit(key))
    assert.are.same({ 0, 0 }, check(lim, key, true))
    assert_rejected(check(lim, key, true), 10)
  end)

  it("uncommit of an unknown key is not found", function()
    local ok, err = edge.limit.count(DICT, 2, 10):uncommit(fresh_key())
    assert.is_nil(ok)
    assert.are.equal("not found", err)
  end)

  it("keys are independent; limiters on one dictionary share a key", function()
    local one, two = edge.limit.count(DICT, 1, 10), edge.limit.count(DICT, 1, 10)
    local a, b = fresh_key(), fresh_key()
    assert.are.same({ 0, 0 }, check(one, a, true))
    assert_rejected(check(two, a, true), 10)
    assert.are.same({ 0, 0 }, check(two, b, true))
  end)
end)

describe("edge.limit arguments", function()
  it("an unknown dictionary is a clear error naming it", function()
    assert.has_error(function() edge.limit.req("no_such_dict", 1, 0) end,
      'edge.limit.req: no shared dict "no_such_dict" (define it first: edge.shared.define("no_such_dict", '
      .. 'size) or --shared-dict no_such_dict:size)')
    assert.error_matches(function() edge.limit.count("no_such_dict", 1, 1) end,
      'edge.limit.count: no shared dict "no_such_dict"', 1, true)
  end)

  it("req: rate > 0, burst >= 0", function()
    for _, bad in ipairs({ { 0, 0 }, { -1, 0 }, { 0 / 0, 0 }, { math.huge, 0 } }) do
      assert.error_matches(function() edge.limit.req(DICT, bad[1], bad[2]) end, "rate must be a number > 0", 1, true)
    end
    assert.error_matches(function() edge.limit.req(DICT, 1, -1) end, "burst must be a number >= 0", 1, true)
    assert.error_matches(function() edge.limit.req(DICT, "fast", 1) end, "number expected", 1, true)
  end)

  it("count: limit a whole number >= 1, window > 0", function()
    for _, bad in ipairs({ 0, 1.5, -3 }) do
      assert.error_matches(function() edge.limit.count(DICT, bad, 1) end, "limit must be a whole number >= 1", 1, true)
    end
    assert.error_matches(function() edge.limit.count(DICT, 1, 0) end, "window must be a number of seconds > 0", 1,
      true)
  end)

  it("incoming and uncommit need a limiter and a non-empty key", function()
    local req, count = edge.limit.req(DICT, 1, 0), edge.limit.count(DICT, 1, 1)
    assert.error_matches(function() req.incoming({}, "k", true) end, "edge.limit.req expected", 1, true)
    assert.error_matches(function() count.incoming(req, "k", true) end, "edge.limit.count expected", 1, true)
    assert.error_matches(function() req:incoming("", true) end, "key must not be empty", 1, true)
    assert.error_matches(function() count:incoming(("k"):rep(65536), true) end, "key too long", 1, true)
    assert.error_matches(function() count:uncommit(nil) end, "string expected", 1, true)
  end)
end)

describe("examples/ratelimit.lua in-process (rate 10, burst 20)", function()
  local fake = require "edge.testing.request"
  local app

  before_each(function()
    start_clock()
    app = dofile("lua/examples/ratelimit.lua")
  end)

  -- Commits n requests of addr at once, as simultaneous requests would (a
  -- larger burst lets them past the example's: the key holds one arrival
  -- time whatever the limiter's burst).
  local function fill(addr, n)
    local lim = edge.limit.req("ratelimit", 10, 100)
    for _ = 1, n do assert.is_not_nil(lim:incoming(addr, true)) end
  end

  it("paces a client that waits for each answer to the rate, never refusing it", function()
    local t0, req = clock.now(), fake.new { remote_addr = "192.0.2.1" }
    for _ = 1, 30 do assert.is_nil(app.access(req)) end
    near(2.9, clock.now() - t0)    -- the first at once, the next 29 each 0.1 s later
  end)

  it("beyond the burst: 429 with Retry-After in whole seconds, rounded up; admitted after it", function()
    fill("192.0.2.2", 36)    -- 3.6 s of work; the burst holds 2.0 s: 1.6 s to wait
    local req = fake.new { remote_addr = "192.0.2.2" }
    local res = app.access(req)
    assert.are.same({
      status = 429,
      headers = { ["content-type"] = "text/plain", ["retry-after"] = "2" },
      body = "Too many requests: retry in 2 s.\n",
    }, res)
    clock.advance(2)
    assert.is_nil(app.access(req))
  end)

  it("limits each client address apart; respond is lua/default.lua's", function()
    fill("192.0.2.3", 21)
    local t0 = clock.now()
    assert.is_nil(app.access(fake.new { remote_addr = "192.0.2.4" }))
    assert.are.equal(t0, clock.now())
    assert.are.equal(429, app.access(fake.new { remote_addr = "192.0.2.3" }).status)
    assert.are.equal("Hello from edge!", app.respond(fake.new {}).body)
  end)
end)
