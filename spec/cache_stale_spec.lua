-- Issue 13, point 1: an entry's three lifetimes, end to end. Fresh (ttl),
-- then grace (stale-while-revalidate: served at once as STALE while exactly
-- one background refresh runs, across workers, not tied to the client),
-- then keep (stale-if-error: the origin is asked in the foreground and the
-- stale entry answers only when it fails). Lifetimes come from the script
-- (res.ttl / res.grace / res.keep), from Cache-Control (max-age,
-- stale-while-revalidate, stale-if-error; must-revalidate turns stale
-- serving off) or from --cache-grace / --cache-keep (default 0). Counted in
-- /metrics. Apps: spec/fixtures/stale_app.lua (the script answers, its
-- failures chosen per path through a mode file, its calls counted in a file
-- every worker appends to); proxied: spec/fixtures/stale_edge.lua in front
-- of stale_app.lua (a second edge) or of a port nobody listens on. Every
-- lifetime is short (ttl 1 s, grace / keep 2-8 s) and every wait bounded.
local server = require "support.server"
local util = require "support.util"
local ce = require "support.cache_e2e"

local PROTOCOLS = { { name = "HTTP/1.1", tag = "h1", http2 = false }, { name = "HTTP/2", tag = "h2", http2 = true } }

local function get(app, path, opts)
  opts = opts or {}
  return app.srv:get(path, { http2 = opts.http2, headers = opts.headers, timeout = opts.timeout })
end

--- How many lines of the log contain `text` (plain).
local function log_count(srv, text)
  local n = 0
  for line in srv:log():gmatch("[^\n]+") do
    if line:find(text, 1, true) then n = n + 1 end
  end
  return n
end

--- Asserts a fresh store: 200, MISS, "edge; fwd=miss; stored". Returns the
-- response and the time right after it (the entry was stored before).
local function store(app, q, opts)
  local r = get(app, q, opts)
  assert.are.equal(200, r.status, r.error)
  assert.are.equal("MISS", r.headers["x-cache"], q)
  ce.assert_status(r, "edge; fwd=miss; stored", q)
  return r, util.now()
end

local function assert_stale(r, want_body, want_status, what)
  assert.are.equal(200, r.status, (what or "") .. ": " .. tostring(r.error))
  assert.are.equal("STALE", r.headers["x-cache"], what)
  assert.are.equal(want_body, r.body, what)
  ce.assert_status(r, want_status, what)
end

describe("grace (stale-while-revalidate) from the script #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 2, admin = true } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  it("20 concurrent requests past ttl get the stale entry at once; one background refresh runs; then HIT with the new body", function()
    local path = "/grace/many"
    local q = path .. "?ttl=1&grace=8"
    local a, t = store(app, q)
    local b = get(app, q)
    assert.are.equal("HIT", b.headers["x-cache"])
    ce.assert_status(b, "edge; hit; ttl=%d+")
    ce.set_mode(app.dir, path, "s=1")          -- the refresh takes 1 s
    ce.sleep_until(t + 1.3)
    local m0 = ce.metrics(app.admin_port)
    local items = {}
    for i = 1, 20 do items[i] = { url = app.srv:url(q), http2 = i % 2 == 0 } end
    local list = ce.parallel(items)
    for i, r in ipairs(list) do
      assert_stale(r, a.body, "edge; hit; detail=stale", "client " .. i .. " " .. r.stderr)
      -- Served at once: a client that waited for the refresh took its 1 s.
      assert.truthy(r.time < 0.9, ("client %d took %.3f s"):format(i, r.time))
    end
    assert.are.equal(2, ce.wait_calls(app.dir, path, 2, 5), "the refresh never ran")
    -- Until the refresh stores its answer, still STALE; then the new body.
    local stale, c = #list, nil
    local deadline = util.now() + 5
    repeat
      c = get(app, q)
      if c.headers["x-cache"] == "STALE" then stale = stale + 1 util.sleep(0.1) end
    until c.headers["x-cache"] ~= "STALE" or util.now() > deadline
    assert.are.equal("HIT", c.headers["x-cache"], c.body)
    assert.are.equal(path .. " call 2", c.body)
    util.sleep(0.3)
    assert.are.equal(2, #ce.calls(app.dir, path), "more than one refresh ran")
    local m1 = ce.metrics(app.admin_port)
    assert.are.equal(m0.grace + stale, m1.grace, "edge_cache_stale_served_total{reason=\"grace\"}")
    assert.are.equal(m0.refreshes + 1, m1.refreshes, "edge_cache_refreshes_total")
  end)

  for _, p in ipairs(PROTOCOLS) do
    it("the refresh goes on after the client that started it has gone (" .. p.name .. ")", function()
      local path = "/grace/leave-" .. p.tag
      local q = path .. "?ttl=1&grace=10"
      local a, t = store(app, q, p)
      ce.set_mode(app.dir, path, "s=1")
      ce.sleep_until(t + 1.3)
      -- curl gets the stale entry and exits, closing its connection, while
      -- the refresh it started sleeps for 1 s.
      local b = get(app, q, p)
      assert_stale(b, a.body, "edge; hit; detail=stale", p.name)
      assert.are.equal(2, ce.wait_calls(app.dir, path, 2, 3), "the refresh never ran")
      util.sleep(1.4)
      local c = get(app, q, p)
      assert.are.equal("HIT", c.headers["x-cache"], "the refresh did not store: " .. c.body)
      assert.are.equal(path .. " call 2", c.body)
      assert.are.equal(2, #ce.calls(app.dir, path))
    end)
  end

  for i, f in ipairs { { mode = "error=1", what = "raises", past = 500 },
                       { mode = "status=503", what = "answers 503", past = 503 } } do
    it("a background refresh that " .. f.what .. " keeps the stale entry (logged); past grace the error goes out", function()
      local path = "/grace/fail-" .. i
      local q = path .. "?ttl=1&grace=3"
      local a, t = store(app, q)
      ce.set_mode(app.dir, path, f.mode)
      ce.sleep_until(t + 1.3)
      local logged = log_count(app.srv, "background refresh failed")
      local m0 = ce.metrics(app.admin_port)
      assert_stale(get(app, q), a.body, "edge; hit; detail=stale", "first stale")
      assert.truthy(ce.wait_calls(app.dir, path, 2, 3) >= 2, "the refresh never ran")
      local deadline = util.now() + 3
      while log_count(app.srv, "background refresh failed") == logged and util.now() < deadline do util.sleep(0.05) end
      assert.are.equal(logged + 1, log_count(app.srv, "background refresh failed"),
        "no 'background refresh failed' line:\n" .. app.srv:log_tail(10))
      assert_stale(get(app, q), a.body, "edge; hit; detail=stale", "after the failed refresh")
      local m1 = ce.metrics(app.admin_port)
      assert.truthy(m1.refreshes >= m0.refreshes + 1, "edge_cache_refreshes_total did not move")
      assert.truthy(m1.grace >= m0.grace + 2, "edge_cache_stale_served_total{reason=\"grace\"} did not move")
      ce.sleep_until(t + 1 + 3 + 0.4)              -- past grace, no keep
      local d = get(app, q)
      assert.are.equal(f.past, d.status, d.body)
      assert.are_not.equal("STALE", d.headers["x-cache"])
    end)
  end
end)

describe("keep (stale-if-error) from the script #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1, admin = true } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  for i, f in ipairs { { mode = "error=1", what = "raises", fwd = 0, past = 500 },
                       { mode = "status=503", what = "answers 503", fwd = 503, past = 503 } } do
    it("the script " .. f.what .. " within keep: the stale entry (HTTP/1.1, HTTP/2), logged and counted; past keep the error", function()
      local path = "/keep/fail-" .. i
      local q = path .. "?ttl=1&keep=3"
      local a, t = store(app, q)
      ce.set_mode(app.dir, path, f.mode)
      ce.sleep_until(t + 1.3)
      local logged = log_count(app.srv, "stale-if-error")
      local m0 = ce.metrics(app.admin_port)
      local want = ("edge; fwd=stale; fwd-status=%d; detail=stale-if-error"):format(f.fwd)
      for _, p in ipairs(PROTOCOLS) do
        assert_stale(get(app, q, p), a.body, want, p.name)
      end
      assert.are.equal(3, #ce.calls(app.dir, path), "the script was not asked in the foreground each time")
      local m1 = ce.metrics(app.admin_port)
      assert.are.equal(m0.error + 2, m1.error, "edge_cache_stale_served_total{reason=\"error\"}")
      assert.are.equal(m0.grace, m1.grace, "edge_cache_stale_served_total{reason=\"grace\"}")
      -- logged: the first at once; the next within the second only counted (see below)
      assert.is_true(log_count(app.srv, "stale-if-error") > logged, "log:\n" .. app.srv:log_tail(10))
      ce.sleep_until(t + 1 + 3 + 0.4)              -- past keep: the entry is gone
      local d = get(app, q)
      assert.are.equal(f.past, d.status, d.body)
      assert.are_not.equal("STALE", d.headers["x-cache"])
    end)
  end

  it("the script answers within keep: the new answer is served and stored (MISS, fwd=stale), then HIT", function()
    local path = "/keep/ok"
    local q = path .. "?ttl=1&keep=3"
    store(app, q)
    local t = util.now()
    ce.sleep_until(t + 1.3)
    local b = get(app, q)
    assert.are.equal(200, b.status, b.error)
    assert.are.equal("MISS", b.headers["x-cache"])
    assert.are.equal(path .. " call 2", b.body)
    ce.assert_status(b, "edge; fwd=stale; fwd-status=200; stored")
    local c = get(app, q)
    assert.are.equal("HIT", c.headers["x-cache"])
    assert.are.equal(path .. " call 2", c.body)
  end)

  it("logs stale-if-error at most once a second per worker, the next line counting the others", function()
    local path = "/keep/many"
    local q = path .. "?ttl=1&keep=10"
    local a, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1.3)
    ce.sleep_until(util.now() + 1.1)             -- a second since any earlier stale-if-error line
    local logged = log_count(app.srv, "stale-if-error")
    local t0 = util.now()
    for _ = 1, 5 do assert_stale(get(app, q), a.body, "edge; fwd=stale; fwd-status=0; detail=stale-if-error") end
    if util.now() - t0 < 0.9 then
      assert.are.equal(logged + 1, log_count(app.srv, "stale-if-error"), app.srv:log_tail(12))
    end
    ce.sleep_until(util.now() + 1.1)
    get(app, q)
    local elapsed = util.now() - t0
    -- Judged from the lines themselves, not from how fast the requests went
    -- (a loaded machine can take over a second for the five): every stale
    -- answer after the first is either logged or counted in the next line,
    -- and there is at most one line a second.
    local lines, counted, n = {}, 0, 0
    for line in app.srv:log():gmatch("[^\n]+") do
      if line:find("stale-if-error", 1, true) then
        n = n + 1
        if n > logged then
          lines[#lines + 1] = line
          if #lines > 1 then counted = counted + 1 + (tonumber(line:match("; (%d+) more since the last such line")) or 0) end
        end
      end
    end
    local all = table.concat(lines, "\n")
    assert.is_true(#lines >= 2, all)                              -- the first of the five, and the last request
    assert.are.equal(5, counted, "the 4 other stale answers and the last request, logged or counted:\n" .. all)
    assert.is_true(#lines <= 1 + math.floor(elapsed), ("%d lines in %.1f s:\n%s"):format(#lines, elapsed, all))
  end)

  it("past grace, within keep: the script is asked in the foreground; a failure gets the stale entry", function()
    local path = "/keep/after-grace"
    local q = path .. "?ttl=1&grace=1&keep=5"
    local a, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1 + 1 + 0.4)              -- past grace (1 s), within keep (5 s)
    local m0 = ce.metrics(app.admin_port)
    assert_stale(get(app, q), a.body, "edge; fwd=stale; fwd-status=0; detail=stale-if-error")
    assert.are.equal(2, #ce.calls(app.dir, path))
    local m1 = ce.metrics(app.admin_port)
    assert.are.equal(m0.error + 1, m1.error)
    assert.are.equal(m0.refreshes, m1.refreshes, "a foreground request is no background refresh")
  end)
end)

describe("lifetimes from Cache-Control and the defaults #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1 } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  local function cc(v) return "cc=" .. v:gsub("[ ,=]", function(c) return ("%%%02X"):format(c:byte()) end) end

  it("stale-while-revalidate=N gives grace", function()
    local path = "/cc/swr"
    local q = path .. "?" .. cc("max-age=1, stale-while-revalidate=5")
    local a, t = store(app, q)
    ce.sleep_until(t + 1.3)
    assert_stale(get(app, q), a.body, "edge; hit; detail=stale")
    assert.are.equal(2, ce.wait_calls(app.dir, path, 2, 3), "no refresh ran")
  end)

  it("stale-if-error=N gives keep", function()
    local path = "/cc/sie"
    local q = path .. "?" .. cc("max-age=1, stale-if-error=5")
    local a, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1.3)
    assert_stale(get(app, q), a.body, "edge; fwd=stale; fwd-status=0; detail=stale-if-error")
  end)

  for _, d in ipairs { "must-revalidate", "proxy-revalidate" } do
    it(d .. " turns stale serving off: past max-age a failure is the error, an answer a plain miss", function()
      local path = "/cc/" .. d
      local q = path .. "?" .. cc("max-age=1, " .. d .. ", stale-while-revalidate=5, stale-if-error=5")
      local _, t = store(app, q)
      ce.set_mode(app.dir, path, "error=1")
      ce.sleep_until(t + 1.3)
      local b = get(app, q)
      assert.are.equal(500, b.status, b.body)
      assert.are_not.equal("STALE", b.headers["x-cache"])
      ce.set_mode(app.dir, path, "")
      local c = get(app, q)
      assert.are.equal(200, c.status, c.error)
      assert.are.equal("MISS", c.headers["x-cache"])
      assert.are.equal(path .. " call 3", c.body)
      ce.assert_status(c, "edge; fwd=miss; stored")
    end)
  end

  it("without grace or keep (--cache-grace and --cache-keep default 0) an expired entry is a plain miss", function()
    local path = "/cc/none"
    local q = path .. "?ttl=1"
    local _, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1.3)
    local b = get(app, q)
    assert.are.equal(500, b.status, b.body)
    ce.set_mode(app.dir, path, "")
    local c = get(app, q)
    assert.are.equal("MISS", c.headers["x-cache"])
    ce.assert_status(c, "edge; fwd=miss; stored")
  end)
end)

describe("--cache-grace and --cache-keep #e2e", function()
  local app

  lazy_setup(function()
    app = ce.start_app { workers = 1, admin = true, args = { "--cache-grace", "2", "--cache-keep", "6" } }
  end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  it("give an entry without stale directives its grace, then its keep", function()
    local path = "/defaults/a"
    local q = path .. "?ttl=1"
    local a, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1.3)                        -- in grace: served, refreshed (and failing) behind
    assert_stale(get(app, q), a.body, "edge; hit; detail=stale", "grace")
    ce.sleep_until(t + 1 + 2 + 0.4)                -- past grace, within keep
    assert_stale(get(app, q), a.body, "edge; fwd=stale; fwd-status=0; detail=stale-if-error", "keep")
  end)

  it("the script's res.grace / res.keep win over them", function()
    local path = "/defaults/script"
    local q = path .. "?ttl=1&grace=0.5&keep=1"
    local _, t = store(app, q)
    ce.set_mode(app.dir, path, "error=1")
    ce.sleep_until(t + 1 + 1 + 0.4)                -- past the script's keep, within the defaults'
    local b = get(app, q)
    assert.are.equal(500, b.status, b.body)
  end)
end)

describe("keep (stale-if-error) in front of an origin #e2e", function()
  local origin, edge_srv, aport, dead

  lazy_setup(function()
    origin = ce.start_app { nokey = true, plain = true }
    aport = util.free_port()
    dead = util.free_port()                        -- nothing listens there
    edge_srv = server.start { script = ce.EDGE, workers = 1, args = { "--admin", "127.0.0.1:" .. aport } }
  end)
  lazy_teardown(function() server.stop_and_check(edge_srv, origin and origin.srv) end)

  local function target() return "http://127.0.0.1:" .. origin.srv.plain_port end

  local function via(path, to, opts)
    opts = opts or {}
    local h = { ["x-target"] = to }
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    return edge_srv:get(path, { headers = h, http2 = opts.http2 })
  end

  -- Each kind: how to make the origin fail, the fwd-status, the error past keep.
  local KINDS = {
    { what = "connect refused", to = function() return "http://127.0.0.1:" .. dead end, fwd = 0, past = 502 },
    { what = "read timeout", mode = "s=2", headers = { ["x-mode"] = "rt" }, fwd = 0, past = 504 },
    { what = "a 503", mode = "status=503", fwd = 503, past = 503 },
    { what = "a 500", mode = "status=500", fwd = 500, past = 500 },
  }

  it("each failure within keep gets the stale entry (STALE, stale-if-error, logged, counted); past keep the error", function()
    local cc = "cc=max-age%3D1%2C%20stale-if-error%3D4"
    local stored, t = {}, nil
    for i, k in ipairs(KINDS) do
      k.path = "/sie/" .. i
      k.q = k.path .. "?" .. cc
      local r = via(k.q, target())
      assert.are.equal(200, r.status, r.error)
      assert.are.equal("MISS", r.headers["x-cache"])
      stored[i] = r.body
      t = t or util.now()
    end
    -- Judged from the last store: on a loaded machine the four stores can
    -- take a second, and "past keep" must be past every entry's keep.
    local t_first, t_last = t, util.now()
    t = t_last
    for _, k in ipairs(KINDS) do
      if k.mode then ce.set_mode(origin.dir, k.path, k.mode) end
    end
    ce.sleep_until(t + 1.3)
    local m0 = ce.metrics(aport)
    local logged = log_count(edge_srv, "stale-if-error")
    -- Every kind is asked before any is judged, so that one report shows them all.
    local want, got = {}, {}
    for i, k in ipairs(KINDS) do
      local to = k.to and k.to() or target()
      local r = via(k.q, to, { headers = k.headers, http2 = i % 2 == 0 })
      assert.are.equal(200, r.status, k.what .. ": " .. tostring(r.error))
      assert.are.equal("STALE", r.headers["x-cache"], k.what)
      assert.are.equal(stored[i], r.body, k.what)
      local w = ("edge; fwd=stale; fwd-status=%d; detail=stale-if-error"):format(k.fwd)
      want[k.what] = w
      got[k.what] = ce.status_is(r.headers["cache-status"], w) and w or r.headers["cache-status"]
    end
    local m1 = ce.metrics(aport)
    assert.is_true(util.now() < t_first + 1 + 4, "the within-keep requests ran past the first entry's keep")
    assert.are.equal(m0.error + #KINDS, m1.error, "edge_cache_stale_served_total{reason=\"error\"}")
    assert.is_true(log_count(edge_srv, "stale-if-error") > logged, edge_srv:log_tail(10))
    ce.sleep_until(t + 1 + 4 + 0.5)                -- past keep
    for _, k in ipairs(KINDS) do
      local to = k.to and k.to() or target()
      local r = via(k.q, to, { headers = k.headers })
      want[k.what .. ", past keep"] = k.past .. " MISS"
      got[k.what .. ", past keep"] = r.status .. " " .. tostring(r.headers["x-cache"])
    end
    assert.are.same(want, got)
  end)

  it("res.keep from the script (the origin says max-age only) serves stale when the origin is down", function()
    local q = "/sie/script?cc=max-age%3D1"
    local life = { ["x-life"] = "keep=5" }
    local a = via(q, target(), { headers = life })
    assert.are.equal("MISS", a.headers["x-cache"], a.error)
    local t = util.now()
    ce.sleep_until(t + 1.3)
    local b = via(q, "http://127.0.0.1:" .. dead, { headers = life })
    assert_stale(b, a.body, "edge; fwd=stale; fwd-status=0; detail=stale-if-error")
  end)

  it("the origin answers within keep: served and stored (MISS, fwd=stale; fwd-status=200; stored)", function()
    local q = "/sie/ok?cc=max-age%3D1%2C%20stale-if-error%3D5"
    local a = via(q, target())
    local t = util.now()
    ce.sleep_until(t + 1.3)
    local b = via(q, target())
    assert.are.equal(200, b.status, b.error)
    assert.are.equal("MISS", b.headers["x-cache"])
    assert.are_not.equal(a.body, b.body)
    ce.assert_status(b, "edge; fwd=stale; fwd-status=200; stored")
    local c = via(q, target())
    assert.are.equal("HIT", c.headers["x-cache"])
    assert.are.equal(b.body, c.body)
  end)

  it("grace through edge.proxy: 20 concurrent requests get the stale entry at once, the origin sees one refresh", function()
    local path = "/swr/many"
    local q = path .. "?cc=max-age%3D1%2C%20stale-while-revalidate%3D8"
    local a = via(q, target())
    assert.are.equal("MISS", a.headers["x-cache"], a.error)
    local t = util.now()
    ce.set_mode(origin.dir, path, "s=1")          -- the refresh's origin answer takes 1 s
    ce.sleep_until(t + 1.3)
    local items = {}
    for i = 1, 20 do
      items[i] = { url = edge_srv:url(q), http2 = i % 2 == 0, headers = { ["x-target"] = target() } }
    end
    for i, r in ipairs(ce.parallel(items)) do
      assert_stale(r, a.body, "edge; hit; detail=stale", "client " .. i .. " " .. r.stderr)
      assert.truthy(r.time < 0.9, ("client %d took %.3f s"):format(i, r.time))
    end
    assert.are.equal(2, ce.wait_calls(origin.dir, path, 2, 3), "the refresh never reached the origin")
    local c
    local deadline = util.now() + 5
    repeat
      c = via(q, target())
      if c.headers["x-cache"] == "STALE" then util.sleep(0.1) end
    until c.headers["x-cache"] ~= "STALE" or util.now() > deadline
    assert.are.equal("HIT", c.headers["x-cache"])
    assert.are.equal(path .. " call 2", c.body)
    assert.are.equal(2, #ce.calls(origin.dir, path), "more than one refresh reached the origin")
  end)

  it("a HEAD in grace starts a refresh sent as GET: the entry it stores has the whole body", function()
    local path = "/swr/head"
    local q = path .. "?cc=max-age%3D1%2C%20stale-while-revalidate%3D8"
    local a = via(q, target())
    assert.are.equal("MISS", a.headers["x-cache"], a.error)
    local t = util.now()
    ce.sleep_until(t + 1.3)
    local h = edge_srv:request { method = "HEAD", path = q, headers = { ["x-target"] = target() } }
    assert.are.equal(200, h.status, h.error)
    assert.are.equal("STALE", h.headers["x-cache"])
    ce.assert_status(h, "edge; hit; detail=stale", "HEAD")
    assert.are.equal(2, ce.wait_calls(origin.dir, path, 2, 3), "no refresh")
    local c
    local deadline = util.now() + 3
    repeat
      c = via(q, target())
      if c.headers["x-cache"] == "STALE" then util.sleep(0.05) end
    until c.headers["x-cache"] ~= "STALE" or util.now() > deadline
    assert.are.equal("HIT", c.headers["x-cache"])
    assert.are.equal(path .. " call 2", c.body)
  end)

  it("a proxied refresh goes on after its client has gone (HTTP/2)", function()
    local path = "/swr/leave"
    local q = path .. "?cc=max-age%3D1%2C%20stale-while-revalidate%3D10"
    local a = via(q, target(), { http2 = true })
    local t = util.now()
    ce.set_mode(origin.dir, path, "s=1")
    ce.sleep_until(t + 1.3)
    assert_stale(via(q, target(), { http2 = true }), a.body, "edge; hit; detail=stale")
    assert.are.equal(2, ce.wait_calls(origin.dir, path, 2, 3), "no refresh")
    util.sleep(1.4)
    local c = via(q, target(), { http2 = true })
    assert.are.equal("HIT", c.headers["x-cache"], "the refresh did not store: " .. c.body)
    assert.are.equal(path .. " call 2", c.body)
  end)

  it("a background refresh through a dead origin keeps the stale entry (grace), logged", function()
    local q = "/swr/dead?cc=max-age%3D1%2C%20stale-while-revalidate%3D5"
    local a = via(q, target())
    local t = util.now()
    ce.sleep_until(t + 1.3)
    local logged = log_count(edge_srv, "background refresh failed")
    local to = "http://127.0.0.1:" .. dead
    assert_stale(via(q, to), a.body, "edge; hit; detail=stale")
    local deadline = util.now() + 3
    while log_count(edge_srv, "background refresh failed") == logged and util.now() < deadline do util.sleep(0.05) end
    assert.are.equal(logged + 1, log_count(edge_srv, "background refresh failed"), edge_srv:log_tail(10))
    assert_stale(via(q, to), a.body, "edge; hit; detail=stale", "after the failed refresh")
  end)
end)
