-- Compression (issue 13, point 7): gzip or brotli by the client's
-- Accept-Encoding for compressible types above --compress-min-size; the
-- body identical after decoding, over HTTP/1.1 and HTTP/2; Vary,
-- Content-Encoding and ETag as CONTRACT.md says; a cached entry compressed
-- once per encoding, its copy stored and served as stored; edge.proxy
-- bodies compressed as they stream, with back-pressure, and a client that
-- leaves mid-stream cancelling the origin read.
--
-- Decoding: gzip -dc for gzip; curl --compressed (built with brotli) for br.
local server = require "support.server"
local proxy_nginx = require "support.proxy_nginx"
local client = require "support.client"
local util = require "support.util"

local FIXTURE = "spec/fixtures/compress.lua"
local PROXY = "spec/fixtures/proxy_edge.lua"

local PROTOCOLS = { { name = "HTTP/1.1", http2 = false }, { name = "HTTP/2", http2 = true } }

--- The fixture's body of n bytes, as edge sends it uncompressed.
local function identity(srv, n)
  local r = srv:request { path = "/nokey/identity?size=" .. n }
  assert.are.equal(200, r.status, r.error)
  assert.is_nil(r.headers["content-encoding"])
  assert.are.equal(n, #r.body)
  return r.body
end

--- GET path with Accept-Encoding ae (nil: none); opts: http2, decode (curl
-- --compressed: decodes what it gets), method, headers.
local function get(srv, path, ae, opts)
  opts = opts or {}
  local headers = opts.headers or {}
  if ae then headers["accept-encoding"] = ae end
  return srv:request { path = path, method = opts.method, headers = headers, http2 = opts.http2,
                       timeout = opts.timeout, curl_args = opts.decode and { "--compressed" } or nil }
end

local function gunzip(data)
  local code, out, err = util.run({ "gzip", "-dc" }, { stdin = data })
  assert.are.equal(0, code, "gzip -dc: " .. err)
  return out
end

--- Asserts that r is the untouched identity response: no Content-Encoding,
-- and Vary: Accept-Encoding only when vary says so.
local function assert_untouched(r, body, vary)
  assert.are.equal(200, r.status, r.error)
  assert.is_nil(r.headers["content-encoding"])
  if vary then assert.are.equal("Accept-Encoding", r.headers["vary"])
  else assert.is_nil(r.headers["vary"]) end
  if body then assert.is_true(r.body == body, "the body differs from the identity") end
end

describe("compression: whole bodies #e2e", function()
  local srv, BODY

  lazy_setup(function()
    srv = server.start { script = FIXTURE, workers = 1 }
    BODY = identity(srv, 8192)
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  for _, p in ipairs(PROTOCOLS) do
    it("curl --compressed gets br, decoded byte-identical; without it, the identity (" .. p.name .. ")", function()
      local r = get(srv, "/nokey/a", nil, { http2 = p.http2, decode = true })
      assert.are.equal(200, r.status, r.error)
      assert.are.equal(p.http2 and "2" or "1.1", r.http_version)
      assert.are.equal("br", r.headers["content-encoding"])
      assert.are.equal("Accept-Encoding", r.headers["vary"])
      assert.is_true(r.body == BODY, "the decoded body differs")
      assert_untouched(get(srv, "/nokey/a", nil, { http2 = p.http2 }), BODY, true)
    end)

    it("Accept-Encoding: gzip gets gzip that gzip -d decodes byte-identical (" .. p.name .. ")", function()
      local r = get(srv, "/nokey/b", "gzip", { http2 = p.http2 })
      assert.are.equal(200, r.status, r.error)
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.are.equal(tostring(#r.body), r.headers["content-length"])
      assert.is_true(#r.body < #BODY, "not smaller: " .. #r.body)
      assert.are.equal("\31\139", r.body:sub(1, 2))
      assert.is_true(gunzip(r.body) == BODY, "the decoded body differs")
    end)

    it("Accept-Encoding: br gets brotli, with its own length, that decodes byte-identical (" .. p.name .. ")", function()
      local raw = get(srv, "/nokey/c", "br", { http2 = p.http2 })
      assert.are.equal(200, raw.status, raw.error)
      assert.are.equal("br", raw.headers["content-encoding"])
      assert.are.equal(tostring(#raw.body), raw.headers["content-length"])
      assert.is_true(#raw.body < #BODY, "not smaller: " .. #raw.body)
      local dec = get(srv, "/nokey/c", "br", { http2 = p.http2, decode = true })
      assert.are.equal("br", dec.headers["content-encoding"])
      assert.is_true(dec.body == BODY, "the decoded body differs")
    end)
  end

  it("negotiates by q-value: br over gzip at equal q, q=0 excludes, * for the rest", function()
    local cases = {
      { "gzip, br", "br" }, { "br;q=0.8, gzip;q=0.8", "br" }, { "gzip;q=1, br;q=0.5", "gzip" },
      { "br;q=0, gzip", "gzip" }, { "gzip;q=0, br;q=0", nil }, { "*", "br" }, { "*;q=0.5, gzip", "gzip" },
      { "br;q=0, *", "gzip" }, { "*;q=0", nil }, { "identity", nil }, { "deflate", nil }, { "", nil },
      { "GZIP", "gzip" }, { "x-gzip", "gzip" }, { "gzip ; q=0.001", "gzip" }, { "br;q=1.5", nil },
      { "br;q=abc, gzip", "gzip" }, { " br ; Q=0.5 , gzip;q=0.4", "br" },
    }
    for _, c in ipairs(cases) do
      local r = get(srv, "/nokey/q", c[1])
      assert.are.equal(200, r.status, r.error)
      assert.are.equal(c[2], r.headers["content-encoding"], "Accept-Encoding: " .. c[1])
      assert.are.equal("Accept-Encoding", r.headers["vary"], "Accept-Encoding: " .. c[1])
    end
    -- Two fields count as one list.
    local r = srv:request { path = "/nokey/q", curl_args = { "-H", "Accept-Encoding: br;q=0", "-H", "Accept-Encoding: gzip" } }
    assert.are.equal("gzip", r.headers["content-encoding"])
  end)

  it("compresses the compressible types, with parameters and any case", function()
    for _, t in ipairs { "text/plain", "text/css; charset=utf-8", "Text/HTML", "application/json",
                         "application/json;charset=utf-8", "application/javascript", "application/xml",
                         "image/svg+xml", "application/ld+json", "application/atom+xml" } do
      local r = get(srv, "/nokey/t?type=" .. t:gsub("[ ;=+]", function(ch) return ("%%%02X"):format(ch:byte()) end), "gzip")
      assert.are.equal("gzip", r.headers["content-encoding"], t)
      assert.are.equal(t, r.headers["content-type"])
      assert.is_true(gunzip(r.body) == BODY, t)
    end
  end)

  it("leaves other types alone, without Vary", function()
    for _, t in ipairs { "image/png", "application/octet-stream", "application/zip", "video/mp4", "none",
                         "application/jsonx", "textual/plain" } do
      local r = get(srv, "/nokey/u?type=" .. t, "gzip, br")
      assert_untouched(r, BODY, false)
    end
  end)

  it("leaves bodies under --compress-min-size (1k) alone, without Vary", function()
    local small = get(srv, "/nokey/s?size=1023", "gzip, br")
    assert_untouched(small, identity(srv, 1023), false)
    assert.are.equal("1023", small.headers["content-length"])
    local r = get(srv, "/nokey/s?size=1024", "br", { decode = true })
    assert.are.equal("br", r.headers["content-encoding"])
    assert.is_true(r.body == identity(srv, 1024))
  end)

  it("leaves a response alone that has Content-Encoding, Cache-Control: no-transform or Content-Range", function()
    local r = get(srv, "/nokey/e?ce=identity", "gzip, br")
    assert.are.equal("identity", r.headers["content-encoding"])
    assert.is_nil(r.headers["vary"])
    assert.is_true(r.body == BODY)
    assert_untouched(get(srv, "/nokey/e?cc=public,%20no-transform", "gzip, br"), BODY, false)
    assert_untouched(get(srv, "/nokey/e?cc=No-Transform", "gzip, br"), BODY, false)
    local part = get(srv, "/nokey/e?status=206", "gzip, br")
    assert.are.equal(206, part.status, part.error)
    assert.is_nil(part.headers["content-encoding"])
    assert.is_true(part.body == BODY)
  end)

  it("compresses another status with a body (404); never a HEAD, which still gets Vary", function()
    local r = get(srv, "/nokey/n?status=404", "gzip")
    assert.are.equal(404, r.status)
    assert.are.equal("gzip", r.headers["content-encoding"])
    assert.is_true(gunzip(r.body) == BODY)
    for _, p in ipairs(PROTOCOLS) do
      local h = get(srv, "/nokey/h", "gzip, br", { method = "HEAD", http2 = p.http2 })
      assert.are.equal(200, h.status, h.error)
      assert.is_nil(h.headers["content-encoding"], p.name)
      assert.are.equal("Accept-Encoding", h.headers["vary"], p.name)
      assert.are.equal("8192", h.headers["content-length"], p.name)
    end
  end)

  it("res.compress = false: untouched, without Vary, missed or hit; true changes nothing", function()
    for i = 1, 2 do
      local r = get(srv, "/off?off=1", "gzip, br")
      assert_untouched(r, BODY, false)
      assert.are.equal(i == 1 and "MISS" or "HIT", r.headers["x-cache"])
    end
    assert.are.equal("gzip", get(srv, "/nokey/on?on=1", "gzip").headers["content-encoding"])
  end)

  it("Vary: Accept-Encoding is merged into the response's Vary, never repeated", function()
    local r = get(srv, "/nokey/v?vary=Origin", "br")
    assert.are.equal("br", r.headers["content-encoding"])
    assert.are.equal("Origin, Accept-Encoding", r.headers["vary"])
    r = get(srv, "/nokey/v?vary=Origin", nil)
    assert.are.equal("Origin, Accept-Encoding", r.headers["vary"])
    r = get(srv, "/nokey/v?vary=accept-encoding", "br")
    assert.are.equal("accept-encoding", r.headers["vary"])
    r = get(srv, "/nokey/v?vary=*", "br")
    assert.are.equal("*", r.headers["vary"])
  end)

  it("a strong ETag becomes weak when compressed; a weak one stays; Accept-Ranges goes", function()
    local r = get(srv, "/nokey/g?ar=1&etag=%22v1%22", "gzip")
    assert.are.equal("gzip", r.headers["content-encoding"])
    assert.are.equal('W/"v1"', r.headers["etag"])
    assert.is_nil(r.headers["accept-ranges"])
    r = get(srv, "/nokey/g?ar=1&etag=%22v1%22", nil)
    assert.are.equal('"v1"', r.headers["etag"])
    assert.are.equal("bytes", r.headers["accept-ranges"])
    r = get(srv, "/nokey/g?etag=W/%22v2%22", "br")
    assert.are.equal('W/"v2"', r.headers["etag"])
  end)
end)

describe("compression: cached entries #e2e", function()
  local srv, BODY

  local function stats()
    local r = srv:request { path = "/api/stats" }
    assert.are.equal(200, r.status, r.error)
    return tonumber(r.body:match("entries=(%d+)"))
  end

  --- The stored entry at key (ce: its compressed copy): body, Content-Encoding, age; nil when none.
  local function entry(key, ce)
    local encoded = key:gsub("[%%?=&]", function(ch) return ("%%%02X"):format(ch:byte()) end)
    local r = srv:request { path = "/api/entry?key=" .. encoded .. (ce and ("&ce=" .. ce) or "") }
    if r.status == 404 then return nil end
    assert.are.equal(200, r.status, r.error)
    return { body = r.body, ce = r.headers["x-entry-ce"], age = tonumber(r.headers["x-entry-age"]) }
  end

  lazy_setup(function()
    srv = server.start { script = FIXTURE, workers = 1 }
    BODY = identity(srv, 8192)
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("the first hit that wants br stores the copy; later hits serve it as stored", function()
    local base = stats()
    local miss = get(srv, "/c1", "br", { decode = true })
    assert.are.equal("MISS", miss.headers["x-cache"])
    assert.are.equal("br", miss.headers["content-encoding"])
    assert.is_true(miss.body == BODY)
    assert.are.equal(base + 1, stats())                     -- the identity entry
    assert.is_nil(entry("/c1?", "br"))
    assert.are.equal("none", entry("/c1?").ce)               -- stored as identity

    local first = get(srv, "/c1", "br")
    assert.are.equal("HIT", first.headers["x-cache"])
    assert.are.equal("br", first.headers["content-encoding"])
    assert.are.equal(base + 2, stats())                     -- + the copy
    local copy = entry("/c1?", "br")
    assert.are.equal("br", copy.ce)
    assert.is_true(copy.body == first.body, "the hit's bytes are not the stored copy's")

    util.sleep(1.1)
    for _, p in ipairs(PROTOCOLS) do
      local again = get(srv, "/c1", "br", { http2 = p.http2 })
      assert.are.equal("HIT", again.headers["x-cache"])
      assert.is_true(again.body == copy.body, p.name .. ": not the stored copy's bytes")
      assert.are.equal(tostring(#copy.body), again.headers["content-length"])
      assert.are.equal("Accept-Encoding", again.headers["vary"])
      local dec = get(srv, "/c1", "br", { http2 = p.http2, decode = true })
      assert.is_true(dec.body == BODY, p.name .. ": decoded body differs")
    end
    assert.are.equal(base + 2, stats())                     -- no copy made again...
    local later = entry("/c1?", "br")
    assert.is_true(later.age >= copy.age + 1, ("the copy was stored again (age %.3f, then %.3f)")
      :format(copy.age, later.age))                         -- ...nor replaced
    assert.are.equal("1", srv:request { path = "/calls?p=/c1" }.body:match("respond=(%d+)"))
  end)

  it("gzip gets a copy of its own; identity hits add none; Age counts from the entry", function()
    local base = stats()
    assert.are.equal("MISS", get(srv, "/c2?etag=%22e%22", nil).headers["x-cache"])
    assert.are.equal(base + 1, stats())
    for _ = 1, 3 do
      local r = get(srv, "/c2?etag=%22e%22", nil)
      assert_untouched(r, BODY, true)
      assert.are.equal('"e"', r.headers["etag"])
    end
    assert.are.equal(base + 1, stats())
    local gz = get(srv, "/c2?etag=%22e%22", "gzip")
    assert.are.equal("HIT", gz.headers["x-cache"])
    assert.are.equal('W/"e"', gz.headers["etag"])
    assert.is_true(gunzip(gz.body) == BODY)
    assert.are.equal(base + 2, stats())
    assert.are.equal("gzip", entry("/c2?etag=%22e%22", "gzip").ce)
    util.sleep(1.1)
    local br = get(srv, "/c2?etag=%22e%22", "br")
    assert.are.equal("br", br.headers["content-encoding"])
    assert.are.equal(base + 3, stats())
    assert.is_true(tonumber(br.headers["age"]) >= 1, "Age " .. tostring(br.headers["age"]))
  end)

  it("HEAD hits and small entries make no copy", function()
    local base = stats()
    get(srv, "/c3", nil)
    get(srv, "/c3", "br", { method = "HEAD" })
    get(srv, "/c4?size=100", nil)
    assert_untouched(get(srv, "/c4?size=100", "br"), nil, false)
    assert.are.equal(base + 2, stats())
  end)

  it("an entry in grace is served from its copy; the refreshed entry gets a copy of its own", function()
    local path = "/c6?ttl=1&grace=30"
    get(srv, path, nil)
    local first = get(srv, path, "br")
    assert.are.equal("HIT", first.headers["x-cache"])
    local copy = entry(path, "br")
    assert.truthy(copy)
    util.sleep(1.2)
    local stale = get(srv, path, "br")                      -- grace: served at once, one refresh runs
    assert.are.equal("STALE", stale.headers["x-cache"])
    assert.are.equal("br", stale.headers["content-encoding"])
    assert.is_true(stale.body == copy.body, "not the stored copy's bytes")
    assert.truthy(util.wait_until(function()
      return srv:request { path = "/calls?p=/c6" }.body == "respond=2"
    end, 5), "no background refresh")
    local fresh = util.wait_until(function()
      local r = get(srv, path, "br")
      return r.headers["x-cache"] == "HIT" and r
    end, 5)
    assert.truthy(fresh, "the refreshed entry is not served")
    local again = entry(path, "br")
    assert.is_true(again.age < 1, "the copy of the stale entry was served for the refreshed one")
    assert.is_true(fresh.body == again.body)
    assert.is_true(get(srv, path, "br", { decode = true }).body == BODY)
  end)

  it("purging the entry's key purges its copies", function()
    get(srv, "/c7", nil)
    get(srv, "/c7", "br")
    get(srv, "/c7", "gzip")
    assert.truthy(entry("/c7?", "br"))
    assert.truthy(entry("/c7?", "gzip"))
    assert.are.equal("true", srv:request { path = "/api/purge?key=%2Fc7%3F" }.body)
    assert.is_true(entry("/c7?") == nil, "the entry outlived its purge")
    assert.is_true(entry("/c7?", "br") == nil, "the br copy outlived the purge of its key")
    assert.is_true(entry("/c7?", "gzip") == nil, "the gzip copy outlived the purge of its key")
  end)

  it("a copy lives as long as its entry: after the entry expires, the next copy is made anew", function()
    get(srv, "/c5?ttl=2", nil)
    local first = get(srv, "/c5?ttl=2", "gzip")
    assert.are.equal("HIT", first.headers["x-cache"])
    assert.truthy(entry("/c5?ttl=2", "gzip"))
    util.sleep(2.2)
    assert.is_nil(entry("/c5?ttl=2", "gzip"))
    assert.are.equal("MISS", get(srv, "/c5?ttl=2", "gzip").headers["x-cache"])
    local again = get(srv, "/c5?ttl=2", "gzip")
    assert.are.equal("HIT", again.headers["x-cache"])
    assert.is_true(entry("/c5?ttl=2", "gzip").age < 1)
    assert.is_true(gunzip(again.body) == BODY)
  end)
end)

describe("compression: switched off #e2e", function()
  local off, big

  lazy_setup(function()
    off = server.start { script = FIXTURE, workers = 1, args = { "--compress", "off" } }
    big = server.start { script = FIXTURE, workers = 1, args = { "--compress-min-size", "16k" } }
  end)
  lazy_teardown(function() server.stop_and_check(off, big) end)

  it("--compress off: nothing compressed, no Vary, missed or hit", function()
    local body = identity(off, 8192)
    for i = 1, 2 do
      local r = get(off, "/x", "gzip, br")
      assert_untouched(r, body, false)
      assert.are.equal(i == 1 and "MISS" or "HIT", r.headers["x-cache"])
    end
  end)

  it("--compress-min-size 16k: 8k bodies go as they are, 16k ones compressed", function()
    assert_untouched(get(big, "/nokey/m", "gzip"), identity(big, 8192), false)
    local r = get(big, "/nokey/m?size=16384", "gzip")
    assert.are.equal("gzip", r.headers["content-encoding"])
    assert.is_true(gunzip(r.body) == identity(big, 16384))
  end)

  it("rejects a bad --compress or --compress-min-size", function()
    for _, args in ipairs { { "--compress", "yes" }, { "--compress-min-size", "-1" }, { "--compress-min-size", "1x" } } do
      local code, _, err = util.run({ util.edge_bin(), "-s", FIXTURE, "-t", args[1], args[2] })
      assert.are.equal(2, code, table.concat(args, " "))
      assert.truthy(err:find("--" .. args[1]:sub(3), 1, true), err)
    end
  end)
end)

describe("compression: streamed edge.proxy bodies #e2e", function()
  local srv, ngx
  local BIG = proxy_nginx.pattern(2 * 1024 * 1024)
  local MID = proxy_nginx.pattern(3 * 1024 * 1024)
  local RAND_SIZE                -- bytes of files/rand: random base64 text (compresses about 4:3)

  local function via(path, ae, opts)
    opts = opts or {}
    opts.headers = { ["x-target"] = ngx:target(), ["x-cache-key"] = opts.key and "on" or nil,
                     ["x-mode"] = opts.mode }
    opts.timeout = opts.timeout or 20
    return get(srv, path, ae, opts)
  end

  lazy_setup(function()
    ngx = proxy_nginx.start()
    assert(os.execute("head -c 18874368 /dev/urandom | base64 -w 76 > " .. util.q(ngx.dir .. "/files/rand")))
    RAND_SIZE = #util.read_file(ngx.dir .. "/files/rand")
    srv = server.start { script = PROXY, workers = 1 }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  for _, p in ipairs(PROTOCOLS) do
    it("a 2 MiB file with Content-Length arrives br-compressed, without a length, byte-identical (" .. p.name .. ")", function()
      local r = via("/files/big", nil, { http2 = p.http2, decode = true })
      assert.are.equal(200, r.status, r.error)
      assert.are.equal("br", r.headers["content-encoding"])
      assert.are.equal("Accept-Encoding", r.headers["vary"])
      assert.is_nil(r.headers["content-length"])
      if not p.http2 then assert.are.equal("chunked", r.headers["transfer-encoding"]) end
      assert.is_true(r.body == BIG, "the decoded body differs (" .. #r.body .. " bytes)")
    end)

    it("a chunked origin body arrives gzip-compressed and gzip -d gives it back (" .. p.name .. ")", function()
      local r = via("/chunked/mid", "gzip", { http2 = p.http2 })
      assert.are.equal(200, r.status, r.error)
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.is_true(#r.body < #MID / 10, "hardly compressed: " .. #r.body)
      assert.is_true(gunzip(r.body) == MID, "the decoded body differs")
    end)
  end

  it("res.compress = false on a proxied response: untouched, streamed and from the cache", function()
    local own = server.start { script = FIXTURE, workers = 1 }
    local ok, err = pcall(function()
      for i = 1, 2 do
        local r = get(own, "/proxy/files/big?off=1", "gzip, br", { headers = { ["x-target"] = ngx:target() }, timeout = 20 })
        assert.are.equal(200, r.status, r.error)
        assert.are.equal(i == 1 and "MISS" or "HIT", r.headers["x-cache"])
        assert_untouched(r, BIG, false)
        assert.are.equal(tostring(#BIG), r.headers["content-length"])
      end
      local r = get(own, "/proxy/files/big", "gzip", { headers = { ["x-target"] = ngx:target() }, timeout = 20 })
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.is_true(gunzip(r.body) == BIG)
    end)
    server.stop_and_check(own)
    assert(ok, err)
  end)

  it("without Accept-Encoding the stream is untouched, with the origin's length", function()
    local r = via("/files/big", nil)
    assert.are.equal(200, r.status, r.error)
    assert.is_nil(r.headers["content-encoding"])
    assert.are.equal("Accept-Encoding", r.headers["vary"])
    assert.are.equal(tostring(#BIG), r.headers["content-length"])
    assert.is_true(r.body == BIG)
  end)

  it("the cache stores the identity bytes of a stream sent compressed; hits are compressed from it", function()
    local a = via("/files/big?cached", "br", { key = true, mode = "ttl", decode = true })
    assert.are.equal("MISS", a.headers["x-cache"])
    assert.are.equal("br", a.headers["content-encoding"])
    assert.is_true(a.body == BIG)
    local b = via("/files/big?cached", nil, { key = true, mode = "ttl" })
    assert.are.equal("HIT", b.headers["x-cache"])
    assert.is_nil(b.headers["content-encoding"])
    assert.is_true(b.body == BIG, "the stored entry is not the identity")
    local c = via("/files/big?cached", "gzip", { key = true, mode = "ttl" })
    assert.are.equal("HIT", c.headers["x-cache"])
    assert.are.equal("gzip", c.headers["content-encoding"])
    assert.are.equal(tostring(#c.body), c.headers["content-length"])
    assert.is_true(gunzip(c.body) == BIG)
    assert.are.equal(1, #ngx:requests_for("/files/big?cached"))
  end)

  it("a slow client (4 MB/s) gets a 24 MiB stream gzip-compressed, whole after gunzip", function()
    local dir = util.tmpdir("slow")
    local code, out, err = util.run({ "curl", "-sk", "--http1.1", "-o", dir .. "/gz", "--limit-rate", "4M",
                                      "--max-time", "60", "-H", "accept-encoding: gzip", "-H", "x-target: " .. ngx:target(),
                                      "-w", "%{http_code}", srv:url("/files/rand") }, { timeout = 70 })
    assert.are.equal(0, code, err)
    assert.are.equal("200", out)
    local rc = os.execute("gzip -dc " .. util.q(dir .. "/gz") .. " | cmp -s - " .. util.q(ngx.dir .. "/files/rand"))
    os.execute("rm -rf " .. util.q(dir))
    assert.is_true(rc == true or rc == 0, "the decoded body differs from the file")
  end)

  for _, p in ipairs(PROTOCOLS) do
    it("a client that leaves mid-stream stops the origin read; edge goes on (" .. p.name .. ")", function()
      local before = #ngx:requests_for("/files/rand")
      local code = util.run({ "curl", "-sk", p.http2 and "--http2" or "--http1.1", "-o", "/dev/null",
                              "--limit-rate", "200k", "--max-time", "1", "-H", "accept-encoding: br",
                              "-H", "x-target: " .. ngx:target(), srv:url("/files/rand") }, { timeout = 10 })
      assert.are.equal(28, code)                            -- curl's timeout: it left mid-body
      local log = util.wait_until(function()
        local l = ngx:requests_for("/files/rand")
        return #l > before and l
      end, 10)
      assert.truthy(log, "nginx logged no request for /files/rand")
      assert.is_true(log[#log].bytes < RAND_SIZE, ("the origin sent all %d bytes"):format(log[#log].bytes))
      local r = via("/files/big", "br", { http2 = p.http2, decode = true })
      assert.are.equal(200, r.status, r.error)
      assert.is_true(r.body == BIG)
    end)
  end
end)

-- Not #e2e: under ASan the quarantine keeps freed memory, so RSS says
-- nothing there; the release pass runs it.
describe("compression: a client that reads nothing holds back a compressed stream #compress_rss", function()
  local srv, ngx, RAND_SIZE

  lazy_setup(function()
    ngx = proxy_nginx.start()
    assert(os.execute("head -c 18874368 /dev/urandom | base64 -w 76 > " .. util.q(ngx.dir .. "/files/rand")))
    RAND_SIZE = #util.read_file(ngx.dir .. "/files/rand")
    srv = server.start { script = PROXY, workers = 1 }
  end)
  lazy_teardown(function()
    if ngx then ngx:stop() end
    server.stop_and_check(srv)
  end)

  -- Without back-pressure through the transform, edge would read all 25 MB
  -- from nginx within a few seconds and hold about 19 MB of gzip for the
  -- client: RSS would grow by that much, and nginx would send the whole file.
  it("edge holds a bounded part, and the origin sends no more than the pipes and sockets take", function()
    local warm = get(srv, "/files/big", "gzip", { headers = { ["x-target"] = ngx:target() } })
    assert.are.equal(200, warm.status, warm.error)
    local base = assert(srv:rss_kb())
    local c = assert(client.tls(srv.port, { alpn = "http/1.1" }))
    assert(c:send(client.request { path = "/files/rand", headers = { ["accept-encoding"] = "gzip",
                                                                      ["x-target"] = ngx:target() } }))
    local peak = base
    local deadline = util.now() + 4
    while util.now() < deadline do
      local kb = srv:rss_kb()
      if kb and kb > peak then peak = kb end
      util.sleep(0.1)
    end
    local head = c:read_until(function(buf) return buf:find("\r\n\r\n", 1, true) end, 5)
    assert.truthy(head:lower():find("content-encoding: gzip\r\n", 1, true), head:sub(1, 300))
    c:close()
    local grown_mib = (peak - base) / 1024
    assert.is_true(grown_mib < 8, ("edge's RSS grew by %.1f MiB while the client read nothing"):format(grown_mib))
    local log = util.wait_until(function()
      local l = ngx:requests_for("/files/rand")
      return #l > 0 and l
    end, 10)
    assert.truthy(log, "nginx logged no request for /files/rand")
    assert.is_true(log[1].bytes < RAND_SIZE / 2, ("the origin sent %d of %d bytes"):format(log[1].bytes, RAND_SIZE))
  end)
end)
