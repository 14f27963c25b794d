-- Issue 13, point 5: Cache-Status (RFC 9211, cache name "edge") on every
-- response with a cache key, next to X-Cache: a fresh hit says its
-- remaining ttl, a miss says whether it was stored, a Vary marker whose
-- variant is missing says vary-miss; a response without a key has neither
-- field. The stale, revalidated and hit-for-pass forms are checked where
-- they happen (cache_stale_spec, cache_conditional_spec, cache_pass_spec).
-- Apps: spec/fixtures/stale_app.lua; stale_edge.lua in front of nginx.
local server = require "support.server"
local proxy_nginx = require "support.proxy_nginx"
local ce = require "support.cache_e2e"

local PROTOCOLS = { { name = "HTTP/1.1", tag = "h1", http2 = false }, { name = "HTTP/2", tag = "h2", http2 = true } }

local function get(srv, path, opts)
  opts = opts or {}
  return srv:request { method = opts.method, path = path, http2 = opts.http2, headers = opts.headers }
end

--- The number of Cache-Status fields in the response.
local function fields(r, name)
  local n = 0
  for _, h in ipairs(r.header_list or {}) do if h[1] == name then n = n + 1 end end
  return n
end

describe("Cache-Status from a script's responses #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1 } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  for _, p in ipairs(PROTOCOLS) do
    it("a stored miss, then a fresh hit with its remaining ttl (" .. p.name .. ")", function()
      local q = "/status/hit-" .. p.tag .. "?ttl=60"
      local a = get(app.srv, q, p)
      assert.are.equal(200, a.status, a.error)
      assert.are.equal("MISS", a.headers["x-cache"])
      ce.assert_status(a, "edge; fwd=miss; stored")
      assert.are.equal(1, fields(a, "cache-status"))
      local b = get(app.srv, q, p)
      assert.are.equal("HIT", b.headers["x-cache"])
      ce.assert_status(b, "edge; hit; ttl=%d+")
      assert.are.equal(1, fields(b, "cache-status"))
      local _, params = ce.parse_status(b.headers["cache-status"])
      local ttl = tonumber(params.ttl)
      assert.truthy(ttl >= 55 and ttl <= 60, "ttl=" .. tostring(params.ttl) .. " for a 60 s entry")
      local h = get(app.srv, q, { http2 = p.http2, method = "HEAD" })
      assert.are.equal("HIT", h.headers["x-cache"])
      ce.assert_status(h, "edge; hit; ttl=%d+", "HEAD")
    end)
  end

  it("the remaining ttl counts down", function()
    local q = "/status/countdown?ttl=4"
    get(app.srv, q)
    local _, p1 = ce.parse_status(get(app.srv, q).headers["cache-status"])
    require("support.util").sleep(2.1)
    local _, p2 = ce.parse_status(get(app.srv, q).headers["cache-status"])
    assert.truthy(tonumber(p1.ttl) >= 3, "first ttl=" .. tostring(p1.ttl))
    assert.truthy(tonumber(p2.ttl) <= tonumber(p1.ttl) - 2, ("ttl %s then %s"):format(p1.ttl, p2.ttl))
  end)

  for _, c in ipairs {
    { what = "Cache-Control: no-store", q = "cc=no-store" },
    { what = "Cache-Control: private", q = "cc=private" },
    { what = "res.cache = false", q = "cache=false&ttl=60" },
    { what = "a status not stored by default (403)", q = "status=403&ttl=60" },
  } do
    it("a miss not stored says fwd=miss without stored: " .. c.what, function()
      local q = "/status/nostore-" .. c.q:gsub("[^%w]", "_") .. "?" .. c.q
      local r = get(app.srv, q)
      assert.are.equal("MISS", r.headers["x-cache"], r.error)
      ce.assert_status(r, "edge; fwd=miss")
    end)
  end

  it("Vary: the first variant is a stored miss, another a vary-miss, each then a hit", function()
    local q = "/status/vary?ttl=60&vary=accept-language"
    local function lang(l) return get(app.srv, q, { headers = { ["accept-language"] = l } }) end
    local en = lang("en")
    assert.are.equal("MISS", en.headers["x-cache"])
    ce.assert_status(en, "edge; fwd=miss; stored", "en")
    local fr = lang("fr")
    assert.are.equal("MISS", fr.headers["x-cache"])
    ce.assert_status(fr, "edge; fwd=vary-miss; stored", "fr")
    assert.truthy(fr.body:find("accept-language=fr", 1, true), fr.body)
    local fr2 = lang("fr")
    assert.are.equal("HIT", fr2.headers["x-cache"])
    assert.are.equal(fr.body, fr2.body)
    ce.assert_status(fr2, "edge; hit; ttl=%d+", "fr again")
    local en2 = lang("en")
    assert.are.equal(en.body, en2.body)
    ce.assert_status(en2, "edge; hit; ttl=%d+", "en again")
  end)

  it("a request without a cache key has neither Cache-Status nor X-Cache", function()
    local r = app.srv:post("/status/post?ttl=60", "x")
    assert.are.equal(200, r.status, r.error)
    assert.is_nil(r.headers["cache-status"])
    assert.is_nil(r.headers["x-cache"])
  end)
end)

describe("Cache-Status on proxied responses #e2e", function()
  local ngx, srv

  lazy_setup(function()
    ngx = proxy_nginx.start()
    srv = server.start { script = ce.EDGE, workers = 1 }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  local function via(path, opts)
    opts = opts or {}
    return srv:request { path = path, http2 = opts.http2, headers = { ["x-target"] = ngx:target() } }
  end

  for _, p in ipairs(PROTOCOLS) do
    it("max-age=60: a stored miss, then a hit (" .. p.name .. ")", function()
      local path = "/cc/max-age/status-" .. p.tag
      local a = via(path, p)
      assert.are.equal(200, a.status, a.error)
      ce.assert_status(a, "edge; fwd=miss; stored")
      local b = via(path, p)
      assert.are.equal("HIT", b.headers["x-cache"])
      ce.assert_status(b, "edge; hit; ttl=%d+")
      assert.are.equal(1, fields(b, "cache-status"))
    end)
  end

  it("no-store: fwd=miss, not stored", function()
    local r = via("/cc/no-store/status")
    assert.are.equal(200, r.status, r.error)
    ce.assert_status(r, "edge; fwd=miss")
  end)
end)
