-- Issue 13's edges (found by reading the whole change): hit-for-pass under
-- Vary, byte ranges answered from the cache, background refreshes only for
-- GET/HEAD and never inside the client's request, a 304 with the fields of
-- the compressed response, error answers labelled, 429 as a failure, and
-- lifetimes bounded. App: spec/fixtures/stale_app.lua.
local server = require "support.server"
local util = require "support.util"
local ce = require "support.cache_e2e"

local function get(app, path, opts)
  opts = opts or {}
  return app.srv:request { method = opts.method, path = path, http2 = opts.http2, headers = opts.headers,
                           body = opts.body }
end

describe("cache edges #e2e", function()
  local app

  lazy_setup(function() app = ce.start_app { workers = 1 } end)
  lazy_teardown(function() if app then server.stop_and_check(app.srv) end end)

  it("an uncacheable variant leaves its pass marker at its variant: the other variants stay HIT", function()
    local en = { ["x-lang"] = "en" }
    local a = get(app, "/edges/vary?vary=X-Lang&ttl=60", { headers = en })
    ce.assert_status(a, "edge; fwd=miss; stored")
    local p = get(app, "/edges/vary?vary=X-Lang&cc=private", { headers = { ["x-lang"] = "private" } })
    ce.assert_status(p, "edge; fwd=vary-miss")
    local p2 = get(app, "/edges/vary?vary=X-Lang&cc=private", { headers = { ["x-lang"] = "private" } })
    ce.assert_status(p2, "edge; fwd=bypass; detail=hit-for-pass")
    local b = get(app, "/edges/vary?vary=X-Lang&ttl=60", { headers = en })
    assert.are.equal("HIT", b.headers["x-cache"], b.headers["cache-status"])
    assert.are.equal(a.body, b.body)
  end)

  describe("Range, answered from the cache", function()
    local q = "/edges/range?ttl=60"
    local whole

    lazy_setup(function()
      whole = get(app, q)
      assert.are.equal("MISS", whole.headers["x-cache"])
      assert.are.equal("/edges/range call 1", whole.body)
    end)

    for _, c in ipairs {
      { range = "bytes=0-5", status = 206, body = "/edges", cr = "bytes 0-5/19" },
      { range = "bytes=-6", status = 206, body = "call 1", cr = "bytes 13-18/19" },
      { range = "bytes=13-", status = 206, body = "call 1", cr = "bytes 13-18/19" },
      { range = "bytes=13-999", status = 206, body = "call 1", cr = "bytes 13-18/19" },
      { range = "bytes=19-", status = 416, body = "", cr = "bytes */19" },
      { range = "bytes=0-1,3-4", status = 200 },        -- several ranges: the whole body
      { range = "bytes=5-2", status = 200 },            -- invalid: ignored
      { range = "items=0-1", status = 200 },
    } do
      for _, h2 in ipairs { false, true } do
        it(("%s -> %d (%s)"):format(c.range, c.status, h2 and "HTTP/2" or "HTTP/1.1"), function()
          local r = get(app, q, { headers = { range = c.range }, http2 = h2 })
          assert.are.equal(c.status, r.status, r.body)
          assert.are.equal("HIT", r.headers["x-cache"])
          assert.are.equal(c.body or whole.body, r.body)
          assert.are.equal(c.cr, r.headers["content-range"])
        end)
      end
    end

    it("If-Range: a matching strong ETag gets the range, another tag or a weak one the whole body", function()
      local qe = "/edges/ifrange?ttl=60&etag=v1"
      get(app, qe)
      local ok = get(app, qe, { headers = { range = "bytes=0-5", ["if-range"] = '"v1"' } })
      assert.are.equal(206, ok.status)
      local other = get(app, qe, { headers = { range = "bytes=0-5", ["if-range"] = '"v2"' } })
      assert.are.equal(200, other.status)
      local weak = get(app, qe, { headers = { range = "bytes=0-5", ["if-range"] = 'W/"v1"' } })
      assert.are.equal(200, weak.status)
    end)

    it("a miss is answered whole; a HEAD ignores Range", function()
      local m = get(app, "/edges/range-miss?ttl=60", { headers = { range = "bytes=0-5" } })
      assert.are.equal("MISS", m.headers["x-cache"])
      assert.are.equal(206, m.status, "a whole-body miss is sliced like a hit")
      local h = get(app, q, { method = "HEAD", headers = { range = "bytes=0-5" } })
      assert.are.equal(200, h.status)
    end)
  end)

  it("a script that does not yield: the stale entry is served before its refresh runs", function()
    local q = "/edges/burn?ttl=1&grace=30&burn=0.6"
    local a = get(app, q)
    ce.sleep_until(util.now() + 1.2)
    local t0 = util.now()
    local b = get(app, q)
    local took = util.now() - t0
    ce.assert_status(b, "edge; hit; detail=stale")
    assert.are.equal(a.body, b.body)
    assert.is_true(took < 0.45, "the stale answer waited for the refresh: " .. took .. " s")
    assert.are.equal(2, ce.wait_calls(app.dir, "/edges/burn", 2, 5))
  end)

  it("a POST with a key in grace is served stale but never replayed as a refresh", function()
    local q = "/edges/post?keypost=1&ttl=1&grace=30"
    local a = get(app, q, { method = "POST", body = "x" })
    assert.are.equal("MISS", a.headers["x-cache"])
    ce.sleep_until(util.now() + 1.2)
    local b = get(app, q, { method = "POST", body = "x" })
    ce.assert_status(b, "edge; hit; detail=stale")
    util.sleep(0.5)
    assert.are.equal(1, #ce.calls(app.dir, "/edges/post"))
  end)

  it("a script error on a keyed request is labelled a miss", function()
    local r = get(app, "/edges/error?error=1")
    assert.are.equal(500, r.status)
    assert.are.equal("MISS", r.headers["x-cache"])
    ce.assert_status(r, "edge; fwd=miss")
  end)

  it("a 429 is a failure: no pass marker, the next request coalesces as before", function()
    local q = "/edges/429?status=429"
    assert.are.equal(429, get(app, q).status)
    ce.assert_status(get(app, q), "edge; fwd=miss")
  end)

  it("a lifetime past ten years is cut to ten years (Cache-Status ttl stays an integer)", function()
    local q = "/edges/huge?ttl=1e300"
    get(app, q)
    local r = get(app, q)
    local ttl = tonumber(r.headers["cache-status"]:match("ttl=(%d+)$"))
    assert.is_truthy(ttl, r.headers["cache-status"])
    assert.is_true(ttl > 315359000 and ttl <= 315360000, r.headers["cache-status"])
  end)
end)
