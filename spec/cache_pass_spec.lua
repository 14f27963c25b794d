-- Issue 13, point 6: hit-for-pass. A GET whose answer may not be stored
-- (Cache-Control: no-store, res.cache = false, ...) leaves a pass marker for
-- --cache-pass-ttl seconds (default 120): the requests for that key then go
-- to the script / origin in parallel, without coalescing behind a leader
-- ("edge; fwd=bypass; detail=hit-for-pass"); a later storable answer
-- replaces the marker; with --cache-pass-ttl 0 they coalesce as before.
-- The proof of "in parallel": 10 concurrent requests to a script that
-- sleeps 1 s take about 1 s each (coalesced, the waiters take at least 2 s:
-- the leader's second, then their own), and edge_coalesced_waits_total stays.
-- App: spec/fixtures/stale_app.lua (two workers); proxied: nginx.
local server = require "support.server"
local proxy_nginx = require "support.proxy_nginx"
local util = require "support.util"
local ce = require "support.cache_e2e"

local N = 10

local function get(app, path, opts)
  opts = opts or {}
  return app.srv:request { path = path, http2 = opts.http2, headers = opts.headers }
end

local function concurrent(app, q)
  local items = {}
  for i = 1, N do items[i] = { url = app.srv:url(q), http2 = i % 2 == 0 } end
  return ce.parallel(items)
end

describe("hit-for-pass #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 2, admin = true } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  for _, c in ipairs { { what = "Cache-Control: no-store", q = "cc=no-store" },
                       { what = "res.cache = false", q = "cache=false&ttl=60" } } do
    it("after an answer with " .. c.what .. ", " .. N .. " concurrent requests run in parallel, uncoalesced", function()
      local path = "/pass/" .. c.q:gsub("[^%w]", "_")
      local q = path .. "?s=1&" .. c.q
      local a = get(app, q)
      assert.are.equal(200, a.status, a.error)
      ce.assert_status(a, "edge; fwd=miss", "the first answer")
      local m0 = ce.metrics(app.admin_port)
      local list = concurrent(app, q)
      local slowest = 0
      for i, r in ipairs(list) do
        assert.are.equal(200, r.status, "client " .. i .. ": " .. r.stderr)
        assert.are.equal("MISS", r.headers["x-cache"], "client " .. i)
        ce.assert_status(r, "edge; fwd=bypass; detail=hit-for-pass", "client " .. i)
        slowest = math.max(slowest, r.time)
      end
      -- Every client's request ran respond (the bodies' call numbers are not
      -- proof: two workers may count the shared calls file at the same moment).
      assert.are.equal(N + 1, #ce.calls(app.dir, path), "the clients shared answers")
      -- In parallel: each about 1 s (coalesced: the waiters >= 2 s; one at a time: up to 10 s).
      assert.truthy(slowest < 1.8, ("the slowest of %d requests took %.2f s"):format(N, slowest))
      local m1 = ce.metrics(app.admin_port)
      assert.are.equal(m0.coalesced, m1.coalesced, "edge_coalesced_waits_total moved")
    end)
  end

  it("a storable answer replaces the marker: stored from the bypass, then a HIT", function()
    local path = "/pass/turn"
    local q = path .. "?ttl=60"
    ce.set_mode(app.dir, path, "cc=no-store")
    local a = get(app, q)
    ce.assert_status(a, "edge; fwd=miss", "no-store")
    local b = get(app, q)
    ce.assert_status(b, "edge; fwd=bypass; detail=hit-for-pass", "the marker")
    ce.set_mode(app.dir, path, "")
    local c = get(app, q)
    assert.are.equal(200, c.status, c.error)
    assert.are.equal("MISS", c.headers["x-cache"])
    ce.assert_status(c, "edge; fwd=bypass; detail=hit-for-pass; stored", "storable again")
    local d = get(app, q, { http2 = true })
    assert.are.equal("HIT", d.headers["x-cache"])
    assert.are.equal(c.body, d.body)
    assert.are.equal(3, #ce.calls(app.dir, path))
  end)

  it("an error (500) leaves no marker: the next request is a plain miss", function()
    local path = "/pass/error"
    local q = path .. "?ttl=60"
    ce.set_mode(app.dir, path, "error=1")
    assert.are.equal(500, get(app, q).status)
    ce.set_mode(app.dir, path, "")
    local r = get(app, q)
    assert.are.equal(200, r.status)
    ce.assert_status(r, "edge; fwd=miss; stored")
  end)
end)

describe("--cache-pass-ttl 0 #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 2, admin = true, args = { "--cache-pass-ttl", "0" } } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  it("leaves no marker: concurrent requests coalesce behind a leader as before", function()
    local path = "/pass0/no-store"
    local q = path .. "?s=1&cc=no-store"
    ce.assert_status(get(app, q), "edge; fwd=miss", "the first answer")
    local m0 = ce.metrics(app.admin_port)
    local list = concurrent(app, q)
    local slowest = 0
    for i, r in ipairs(list) do
      assert.are.equal(200, r.status, "client " .. i .. ": " .. r.stderr)
      ce.assert_status(r, "edge; fwd=miss", "client " .. i)
      slowest = math.max(slowest, r.time)
    end
    local m1 = ce.metrics(app.admin_port)
    assert.truthy(m1.coalesced > m0.coalesced, "edge_coalesced_waits_total did not move")
    -- The waiters waited for the leader's second before their own.
    assert.truthy(slowest >= 1.9, ("the slowest of %d requests took only %.2f s"):format(N, slowest))
  end)
end)

describe("--cache-pass-ttl 1 #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1, args = { "--cache-pass-ttl", "1" } } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  it("the marker lasts that long: then a plain miss again", function()
    local q = "/pass1/no-store?cc=no-store"
    ce.assert_status(get(app, q), "edge; fwd=miss")
    local t = util.now()
    ce.assert_status(get(app, q), "edge; fwd=bypass; detail=hit-for-pass")
    ce.sleep_until(t + 1.3)
    ce.assert_status(get(app, q), "edge; fwd=miss", "after --cache-pass-ttl")
  end)
end)

describe("hit-for-pass in front of nginx #e2e", function()
  local ngx, srv

  lazy_setup(function()
    ngx = proxy_nginx.start()
    srv = server.start { script = ce.EDGE, workers = 1 }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  it("Cache-Control: no-store from the origin leaves a marker", function()
    local path = "/cc/no-store/pass"
    local h = { ["x-target"] = ngx:target() }
    local a = srv:get(path, { headers = h })
    assert.are.equal(200, a.status, a.error)
    ce.assert_status(a, "edge; fwd=miss")
    for i = 1, 2 do
      local r = srv:get(path, { headers = h, http2 = i == 2 })
      assert.are.equal(200, r.status, r.error)
      ce.assert_status(r, "edge; fwd=bypass; detail=hit-for-pass", "request " .. i)
      assert.are_not.equal(a.body, r.body)
    end
    assert.are.equal(3, #ngx:requests_for(path))
  end)
end)
