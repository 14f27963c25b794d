-- edge.proxy and the cache (issue 12, PROXY.md): proxied responses stored as
-- the origin's Cache-Control allows, the privacy rules, --cache-max-object,
-- HEAD sent to the origin as GET, coalescing, and nothing stored when the
-- origin fails mid-body. The edge under test runs spec/fixtures/proxy_edge.lua
-- with X-Cache-Key: on (router.default_key plus the target).
local server = require "support.server"
local origin = require "support.origin"
local proxy_nginx = require "support.proxy_nginx"
local raw_origin = require "support.proxy_raw_origin"
local proc = require "support.proc"
local util = require "support.util"

local EDGE = "spec/fixtures/proxy_edge.lua"

local function get(srv, to, path, opts)
  opts = opts or {}
  local headers = { ["x-target"] = to, ["x-cache-key"] = "on" }
  if opts.mode then headers["x-mode"] = opts.mode end
  return srv:request { method = opts.method, path = path, headers = headers, http2 = opts.http2,
                       timeout = opts.timeout, curl_args = { "-S" } }
end

describe("edge.proxy: caching what the origin allows #e2e", function()
  local srv, ngx

  lazy_setup(function()
    ngx = proxy_nginx.start()
    srv = server.start { script = EDGE, workers = 1, args = { "--cache-max-object", "1m", "--log-level", "info" } }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  for _, p in ipairs { { name = "HTTP/1.1", http2 = false }, { name = "HTTP/2", http2 = true } } do
    it("Cache-Control: max-age=60: the second request is a HIT with Age (" .. p.name .. ")", function()
      local path = "/cc/max-age?p=" .. p.name
      local a = get(srv, ngx:target(), path, { http2 = p.http2 })
      assert.are.equal(200, a.status, a.error)
      assert.are.equal("MISS", a.headers["x-cache"])
      local b = get(srv, ngx:target(), path, { http2 = p.http2 })
      assert.are.equal(200, b.status, b.error)
      assert.are.equal("HIT", b.headers["x-cache"])
      assert.truthy(tonumber(b.headers["age"]), "no Age on a hit")
      assert.are.equal(a.body, b.body)                       -- nginx's $request_id: the same answer
      assert.are.equal("max-age=60", b.headers["cache-control"])
      assert.are.equal(1, #ngx:requests_for(path))
    end)
  end

  for _, case in ipairs { "no-store", "private", "cookie" } do
    it("never stores " .. (case == "cookie" and "a response with Set-Cookie" or "Cache-Control: " .. case), function()
      local path = "/cc/" .. case
      local bodies = {}
      for i = 1, 3 do
        local r = get(srv, ngx:target(), path)
        assert.are.equal(200, r.status, r.error)
        assert.are_not.equal("HIT", r.headers["x-cache"], "request " .. i)
        bodies[r.body] = true
      end
      local n = 0
      for _ in pairs(bodies) do n = n + 1 end
      assert.are.equal(3, n)
      assert.are.equal(3, #ngx:requests_for(path))
    end)
  end

  it("serves a response larger than --cache-max-object complete, and never as a HIT", function()
    local want = proxy_nginx.pattern(2 * 1024 * 1024)
    for i = 1, 2 do
      local r = get(srv, ngx:target(), "/cc/files/big")
      assert.are.equal(200, r.status, r.error)
      assert.are_not.equal("HIT", r.headers["x-cache"], "request " .. i)
      assert.are.equal(#want, #r.body)
      assert.is_true(r.body == want, "the body differs")
    end
    assert.are.equal(2, #ngx:requests_for("/cc/files/big"))
  end)

  it("a HEAD miss goes to the origin as GET; the GET after it is a HIT", function()
    local path = "/cc/max-age/head"
    local h = get(srv, ngx:target(), path, { method = "HEAD" })
    assert.are.equal(200, h.status, h.error)
    assert.are.equal("", h.body)
    local g = get(srv, ngx:target(), path)
    assert.are.equal(200, g.status, g.error)
    assert.are.equal("HIT", g.headers["x-cache"])
    assert.truthy(#g.body > 0, "the hit has no body")
    local seen = ngx:requests_for(path)
    assert.are.equal(1, #seen, "the origin saw " .. #seen .. " requests")
    assert.are.equal("GET", seen[1].method)
  end)
end)

describe("edge.proxy: coalescing #e2e", function()
  local srv, slow

  lazy_setup(function()
    slow = server.start { script = "spec/fixtures/proxy_origin.lua", plain = true, workers = 1 }
    srv = server.start { script = EDGE, plain = true, workers = 1 }
  end)
  lazy_teardown(function() server.stop_and_check(srv, slow) end)

  it("5 identical requests at once to a slow origin: the origin sees one", function()
    local to = "http://127.0.0.1:" .. slow.plain_port
    local url = srv:plain_url("/slow?s=1&cc=max-age%3D60")
    local list = {}
    for i = 1, 5 do
      list[i] = proc.spawn({ "curl", "-s", "--http1.1", "--max-time", "10", "-D", "-",
                             "-H", "x-target: " .. to, "-H", "x-cache-key: on", url }, { timeout = 15 })
    end
    local bodies = {}
    for i, c in ipairs(list) do
      assert.are.equal(0, c:wait(12), "curl " .. i .. ": " .. c:stderr())
      local out = c:stdout()
      assert.truthy(out:find("^HTTP/1.1 200"), out)
      bodies[out:match("\r\n\r\n(.*)$")] = true
    end
    local n = 0
    for _ in pairs(bodies) do n = n + 1 end
    assert.are.equal(1, n, "the clients got different answers")
    local res = srv:request { plain = true, path = "/count", headers = { ["x-target"] = to } }
    assert.are.equal("1", res.body)
  end)
end)

describe("edge.proxy: an origin that fails mid-body stores nothing #e2e", function()
  local srv, bad, raw

  lazy_setup(function()
    bad = origin.bad()
    raw = raw_origin.start()
    srv = server.start { script = EDGE, workers = 1 }
  end)
  lazy_teardown(function()
    if bad then bad:stop() end
    if raw then raw:stop() end
    server.stop_and_check(srv)
  end)

  local CASES = {
    { what = "Content-Length 100, 7 bytes (bad_origin, ttl 60)", to = function() return "http://127.0.0.1:" .. bad.port end,
      path = "/close-mid-body", mode = "ttl" },
    { what = "chunked, no last chunk, max-age=60", to = function() return raw:target() end, path = "/chunked-cut" },
    { what = "Content-Length 1000000, 100000 bytes, max-age=60", to = function() return raw:target() end, path = "/cl-cut" },
  }
  for _, case in ipairs(CASES) do
    it("HTTP/1.1: the client sees a failure, and the next request is a MISS again: " .. case.what, function()
      for i = 1, 2 do
        local r = get(srv, case.to(), case.path, { mode = case.mode })
        -- An origin that fails before the script saw its head (head, 7 bytes
        -- and close in one go) is a 502: nothing had reached the client.
        local early_502 = r.curl.exit == 0 and r.status == 502
        assert.truthy(early_502 or r.curl.exit == 18 or r.curl.exit == 56,
          ("request %d: curl exit %s (want 18 or 56): %s"):format(i, tostring(r.curl.exit), r.curl.stderr))
        assert.are_not.equal("HIT", r.headers["x-cache"], "request " .. i .. ":\n" .. r.curl.raw_headers)
        if r.status ~= 0 then assert.are.equal("MISS", r.headers["x-cache"], r.curl.raw_headers) end
      end
    end)

    it("HTTP/2: the stream is reset, and the next request is a MISS again: " .. case.what, function()
      for i = 1, 2 do
        local r = get(srv, case.to(), case.path, { mode = case.mode, http2 = true })
        -- curl: 92 (HTTP/2 stream error) or 16 / 56 / 18, never a success
        -- but a 502 when the origin failed before its head reached the script.
        local early_502 = r.curl.exit == 0 and r.status == 502
        assert.truthy(early_502 or r.curl.exit ~= 0, "request " .. i .. " succeeded: " .. r.curl.raw_headers)
        assert.truthy(early_502 or r.curl.exit == 92 or r.curl.stderr:find("INTERNAL_ERROR", 1, true)
          or r.curl.stderr:find("stream", 1, true),
          ("request %d: curl exit %s: %s"):format(i, tostring(r.curl.exit), r.curl.stderr))
        assert.are_not.equal("HIT", r.headers["x-cache"], "request " .. i .. ":\n" .. r.curl.raw_headers)
      end
    end)
  end
end)
