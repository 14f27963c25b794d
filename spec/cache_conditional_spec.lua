-- Issue 13, points 2 and 3, end to end.
-- Client conditionals (RFC 9110 §13) on responses served from an entry
-- (HIT, STALE, REVALIDATED): If-None-Match matching the entry's ETag (weak
-- comparison, lists, "*") or If-Modified-Since not before Last-Modified ->
-- 304 without a body and without content metadata, the ETag kept;
-- otherwise 200 with the body. On a miss the client's conditionals are not
-- forwarded to the origin (nginx logs 200).
-- Revalidation: an expired entry with validators, held for its keep or
-- grace, is refreshed with If-None-Match; nginx's 304 makes it fresh again
-- with its body reused (REVALIDATED), a changed file's 200 replaces it.
-- Apps: spec/fixtures/stale_app.lua; spec/fixtures/stale_edge.lua in front
-- of Debian's nginx (spec/support/proxy_nginx.lua: /reval/, /swr/, /files/).
local server = require "support.server"
local client = require "support.client"
local proxy_nginx = require "support.proxy_nginx"
local util = require "support.util"
local ce = require "support.cache_e2e"

local PROTOCOLS = { { name = "HTTP/1.1", tag = "h1", http2 = false }, { name = "HTTP/2", tag = "h2", http2 = true } }

local LM = "Wed, 21 Oct 2015 07:28:00 GMT"           -- stale_app.lua's Last-Modified
local LATER = "Thu, 22 Oct 2015 07:28:00 GMT"
local EARLIER = "Tue, 20 Oct 2015 07:28:00 GMT"

local function get(srv, path, opts)
  opts = opts or {}
  return srv:request { method = opts.method, path = path, http2 = opts.http2, headers = opts.headers }
end

--- Asserts a 304 from the cache: no body, no content metadata, the ETag
-- (and Last-Modified) kept, X-Cache as given.
local function assert_304(r, etag, x_cache, what)
  what = (what or "") .. "\n" .. (r.curl and r.curl.raw_headers or "")
  assert.are.equal(304, r.status, what)
  assert.are.equal("", r.body, what)
  assert.are.equal(etag, r.headers["etag"], what)
  assert.is_nil(r.headers["content-type"], what)
  assert.is_nil(r.headers["content-length"], what)
  assert.is_nil(r.headers["transfer-encoding"], what)
  if x_cache then assert.are.equal(x_cache, r.headers["x-cache"], what) end
end

describe("client conditionals answered from a script's entry #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1 } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  local CASES = {
    { what = 'If-None-Match: "v1"', h = { ["if-none-match"] = '"v1"' }, want = 304 },
    { what = 'If-None-Match: W/"v1" (weak comparison)', h = { ["if-none-match"] = 'W/"v1"' }, want = 304 },
    { what = 'If-None-Match: a list naming it', h = { ["if-none-match"] = '"x", "v1"' }, want = 304 },
    { what = 'If-None-Match: a list naming its weak form', h = { ["if-none-match"] = '"x",W/"v1"' }, want = 304 },
    { what = "If-None-Match: *", h = { ["if-none-match"] = "*" }, want = 304 },
    { what = 'If-None-Match: "v2"', h = { ["if-none-match"] = '"v2"' }, want = 200 },
    { what = 'If-None-Match: "x", "y"', h = { ["if-none-match"] = '"x", "y"' }, want = 200 },
    { what = 'If-None-Match: "v1x" (a prefix is no match)', h = { ["if-none-match"] = '"v1x"' }, want = 200 },
    { what = "If-Modified-Since = Last-Modified", h = { ["if-modified-since"] = LM }, want = 304 },
    { what = "If-Modified-Since after Last-Modified", h = { ["if-modified-since"] = LATER }, want = 304 },
    { what = "If-Modified-Since before Last-Modified", h = { ["if-modified-since"] = EARLIER }, want = 200 },
    { what = "If-Modified-Since not a date", h = { ["if-modified-since"] = "yesterday" }, want = 200 },
    { what = "If-None-Match not matching wins over a matching If-Modified-Since",
      h = { ["if-none-match"] = '"v2"', ["if-modified-since"] = LM }, want = 200 },
    { what = "If-None-Match matching, If-Modified-Since before",
      h = { ["if-none-match"] = '"v1"', ["if-modified-since"] = EARLIER }, want = 304 },
  }

  for _, p in ipairs(PROTOCOLS) do
    it("a HIT: 304 or 200 as the validators say (" .. p.name .. ")", function()
      local q = "/cond/hit-" .. p.tag .. "?ttl=60&etag=v1&lm=1"
      local a = get(app.srv, q, p)
      assert.are.equal(200, a.status, a.error)
      assert.are.equal("MISS", a.headers["x-cache"])
      assert.are.equal('"v1"', a.headers["etag"])
      for _, c in ipairs(CASES) do
        local r = get(app.srv, q, { http2 = p.http2, headers = c.h })
        if c.want == 304 then
          assert_304(r, '"v1"', "HIT", c.what)
          assert.are.equal(LM, r.headers["last-modified"], c.what)
          ce.assert_status(r, "edge; hit; ttl=%d+", c.what)
        else
          assert.are.equal(200, r.status, c.what)
          assert.are.equal("HIT", r.headers["x-cache"], c.what)
          assert.are.equal(a.body, r.body, c.what)
          assert.are.equal("text/plain", r.headers["content-type"], c.what)
        end
      end
      assert.are.equal(1, #ce.calls(app.dir, q:match("^[^?]+")), "the script ran for a conditional")
    end)
  end

  it("a HEAD with a matching If-None-Match gets 304", function()
    local q = "/cond/head?ttl=60&etag=v1"
    assert.are.equal("MISS", get(app.srv, q).headers["x-cache"])
    local r = get(app.srv, q, { method = "HEAD", headers = { ["if-none-match"] = '"v1"' } })
    assert_304(r, '"v1"', "HIT")
  end)

  it("a weak ETag matches its strong and weak forms (weak comparison), and is kept weak", function()
    local q = "/cond/weak?ttl=60&etag=w1&weak=1"
    local a = get(app.srv, q)
    assert.are.equal('W/"w1"', a.headers["etag"])
    assert_304(get(app.srv, q, { headers = { ["if-none-match"] = '"w1"' } }), 'W/"w1"', "HIT", "strong form")
    assert_304(get(app.srv, q, { headers = { ["if-none-match"] = 'W/"w1"' } }), 'W/"w1"', "HIT", "weak form")
  end)

  it("an entry without validators answers a conditional with 200", function()
    local q = "/cond/none?ttl=60"
    local a = get(app.srv, q)
    local r = get(app.srv, q, { headers = { ["if-none-match"] = "*", ["if-modified-since"] = LATER } })
    -- "*" matches any current representation (RFC 9110 13.1.2): 304 is right too.
    if r.status == 304 then
      assert.are.equal("", r.body)
    else
      assert.are.equal(200, r.status)
      assert.are.equal(a.body, r.body)
    end
    local r2 = get(app.srv, q, { headers = { ["if-none-match"] = '"v1"', ["if-modified-since"] = LATER } })
    assert.are.equal(200, r2.status)
    assert.are.equal(a.body, r2.body)
  end)

  it("a STALE entry (grace) answers a matching conditional with 304; the refresh it starts does not carry it", function()
    local path = "/cond/stale"
    local q = path .. "?ttl=1&grace=10&etag=v1&lm=1"
    local a = get(app.srv, q)
    assert.are.equal("MISS", a.headers["x-cache"])
    local t = util.now()
    ce.set_mode(app.dir, path, "s=0.5")
    ce.sleep_until(t + 1.3)
    local r = get(app.srv, q, { headers = { ["if-none-match"] = '"v1"' } })
    assert_304(r, '"v1"', "STALE")
    ce.assert_status(r, "edge; hit; detail=stale")
    local r2 = get(app.srv, q, { headers = { ["if-none-match"] = '"v0"' } })
    assert.are.equal(200, r2.status)
    assert.are.equal("STALE", r2.headers["x-cache"])
    assert.are.equal(a.body, r2.body)
    assert.are.equal(2, ce.wait_calls(app.dir, path, 2, 3), "one refresh")
    local calls = ce.calls(app.dir, path)
    assert.is_nil(calls[2].inm, "the client's If-None-Match reached the refresh")
    assert.is_false(calls[2].ims, "the client's If-Modified-Since reached the refresh")
  end)
end)

describe("revalidation with the origin (nginx) #e2e", function()
  local ngx, srv, aport

  lazy_setup(function()
    ngx = proxy_nginx.start()
    aport = util.free_port()
    srv = server.start { script = ce.EDGE, workers = 1, args = { "--admin", "127.0.0.1:" .. aport } }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  local function via(path, opts)
    opts = opts or {}
    local h = { ["x-target"] = ngx:target() }
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    return srv:request { method = opts.method, path = path, http2 = opts.http2, headers = h }
  end

  local function file_body(name) return name .. ": " .. string.rep("0123456789", 100) .. "\n" end

  local function first(path, opts)
    local a = via(path, opts)
    assert.are.equal(200, a.status, a.error)
    assert.are.equal("MISS", a.headers["x-cache"])
    ce.assert_status(a, "edge; fwd=miss; stored", path)
    assert.truthy(a.headers["etag"], "nginx sent no ETag")
    return a, util.now()
  end

  --- Waits (bounded) until nginx logged n requests for uri; returns them.
  local function wait_origin(uri, n)
    local deadline = util.now() + 3
    local seen = ngx:requests_for(uri)
    while #seen < n and util.now() < deadline do
      util.sleep(0.05)
      seen = ngx:requests_for(uri)
    end
    return seen
  end

  for _, p in ipairs(PROTOCOLS) do
    it("expired within keep: If-None-Match to nginx, 304, REVALIDATED with the whole body, then fresh (" .. p.name .. ")", function()
      local name = "reval-" .. p.tag
      local uri = "/reval/" .. name
      ngx:write_file(name, file_body(name))
      local a, t = first(uri, p)
      assert.are.equal(file_body(name), a.body)
      assert.are.equal("HIT", via(uri, p).headers["x-cache"])
      ce.sleep_until(t + 1.3)
      local m0 = ce.metrics(aport)
      local r = via(uri, p)
      assert.are.equal(200, r.status, r.error)
      assert.are.equal("REVALIDATED", r.headers["x-cache"])
      assert.are.equal(file_body(name), r.body)
      assert.are.equal(a.headers["etag"], r.headers["etag"])
      ce.assert_status(r, "edge; fwd=stale; fwd-status=304; stored")
      local seen = ngx:requests_for(uri)
      assert.are.equal(2, #seen)
      assert.are.equal(200, seen[1].status)
      assert.is_nil(seen[1].inm)
      assert.are.equal(304, seen[2].status)
      assert.are.equal(a.headers["etag"], seen[2].inm)
      local h = via(uri, p)
      assert.are.equal("HIT", h.headers["x-cache"], "not fresh again after the 304")
      assert.are.equal(file_body(name), h.body)
      ce.assert_status(h, "edge; hit; ttl=%d+")
      local m1 = ce.metrics(aport)
      assert.are.equal(m0.not_modified + 1, m1.not_modified, 'edge_cache_revalidations_total{result="not_modified"}')
      assert.are.equal(2, #ngx:requests_for(uri))
    end)
  end

  it("a changed file: nginx answers the conditional with 200; the new body is served and stored, counted modified", function()
    local name = "changed"
    local uri = "/reval/" .. name
    ngx:write_file(name, "old\n")
    local a, t = first(uri)
    ngx:write_file(name, "the new body, longer than the old one\n")   -- another size: another ETag
    ce.sleep_until(t + 1.3)
    local m0 = ce.metrics(aport)
    local r = via(uri)
    assert.are.equal(200, r.status, r.error)
    assert.are.equal("the new body, longer than the old one\n", r.body)
    assert.are.equal("MISS", r.headers["x-cache"])
    ce.assert_status(r, "edge; fwd=stale; fwd-status=200; stored")
    assert.are_not.equal(a.headers["etag"], r.headers["etag"])
    local seen = ngx:requests_for(uri)
    assert.are.equal(2, #seen)
    assert.are.equal(200, seen[2].status)
    assert.are.equal(a.headers["etag"], seen[2].inm, "the refresh was not conditional")
    local m1 = ce.metrics(aport)
    assert.are.equal(m0.modified + 1, m1.modified, 'edge_cache_revalidations_total{result="modified"}')
    local h = via(uri)
    assert.are.equal("HIT", h.headers["x-cache"])
    assert.are.equal(r.body, h.body)
  end)

  it("a keep from the script (no Cache-Control from nginx) is revalidated too", function()
    local name = "script-keep"
    local uri = "/files/" .. name
    local life = { ["x-life"] = "ttl=1,keep=30" }
    ngx:write_file(name, file_body(name))
    local a, t = first(uri, { headers = life })
    ce.sleep_until(t + 1.3)
    local r = via(uri, { headers = life })
    assert.are.equal("REVALIDATED", r.headers["x-cache"], r.error)
    assert.are.equal(a.body, r.body)
    ce.assert_status(r, "edge; fwd=stale; fwd-status=304; stored")
    local seen = ngx:requests_for(uri)
    assert.are.equal(304, seen[2] and seen[2].status)
  end)

  it("in grace the background refresh is conditional: nginx 304, the entry fresh again with its body", function()
    local name = "grace"
    local uri = "/swr/" .. name
    ngx:write_file(name, file_body(name))
    local a, t = first(uri)
    ce.sleep_until(t + 1.3)
    local m0 = ce.metrics(aport)
    local r = via(uri)
    assert.are.equal("STALE", r.headers["x-cache"], r.error)
    ce.assert_status(r, "edge; hit; detail=stale")
    local seen = wait_origin(uri, 2)
    assert.are.equal(2, #seen, "no refresh reached nginx")
    assert.are.equal(304, seen[2].status)
    assert.are.equal(a.headers["etag"], seen[2].inm)
    local h
    local deadline = util.now() + 3
    repeat
      h = via(uri)
      if h.headers["x-cache"] == "STALE" then util.sleep(0.05) end
    until h.headers["x-cache"] ~= "STALE" or util.now() > deadline
    assert.are.equal("HIT", h.headers["x-cache"])
    assert.are.equal(a.body, h.body)
    local m1 = ce.metrics(aport)
    assert.are.equal(m0.not_modified + 1, m1.not_modified)
    assert.are.equal(m0.refreshes + 1, m1.refreshes)
    assert.are.equal(2, #ngx:requests_for(uri))
  end)

  it("a REVALIDATED response answers the client's matching If-None-Match with 304", function()
    local name = "reval-304"
    local uri = "/reval/" .. name
    ngx:write_file(name, file_body(name))
    local a, t = first(uri)
    ce.sleep_until(t + 1.3)
    local r = via(uri, { headers = { ["if-none-match"] = a.headers["etag"] } })
    assert_304(r, a.headers["etag"], "REVALIDATED")
    assert.are.equal(304, ngx:requests_for(uri)[2].status)
  end)

  it("a REVALIDATED 304 for a br client carries the compressed response's fields (weak ETag, Vary)", function()
    local name = "reval-304-br"
    local uri = "/reval/" .. name
    ngx:write_file(name, string.rep(file_body(name), 4))   -- text/plain, over --compress-min-size
    local a, t = first(uri)
    ce.sleep_until(t + 1.3)
    local r = via(uri, { headers = { ["if-none-match"] = a.headers["etag"], ["accept-encoding"] = "br" } })
    assert_304(r, "W/" .. a.headers["etag"], "REVALIDATED")
    assert.are.equal("Accept-Encoding", r.headers["vary"])
    assert.is_nil(r.headers["content-encoding"])
  end)

  it("on a miss the client's conditionals are not forwarded: nginx sends 200, the client gets the body", function()
    local name = "miss-cond"
    local uri = "/files/" .. name
    ngx:write_file(name, file_body(name))
    -- nginx's own ETag for the file, asked directly.
    local status, headers = client.curl { "--http1.1", ngx:url(uri) }
    assert.are.equal(200, status)
    local etag = headers["etag"]
    assert.truthy(etag)
    local cond = { ["if-none-match"] = etag, ["if-modified-since"] = "Fri, 01 Jan 2100 00:00:00 GMT",
                   ["x-life"] = "ttl=60" }
    local r = via(uri, { headers = cond })
    assert.are.equal(200, r.status, r.error)
    assert.are.equal(file_body(name), r.body)
    assert.are.equal("MISS", r.headers["x-cache"])
    local seen = ngx:requests_for(uri)
    assert.are.equal(2, #seen)
    assert.are.equal(200, seen[2].status, "the client's conditional reached nginx")
    assert.is_nil(seen[2].inm)
    -- Now the entry answers it.
    assert_304(via(uri, { headers = cond }), etag, "HIT")
    assert.are.equal(2, #ngx:requests_for(uri))
  end)
end)
