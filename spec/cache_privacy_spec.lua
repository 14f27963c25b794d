-- End-to-end specs for what the shared cache may store (spec/fixtures/privacy.lua):
-- it never serves one user's response to another (RFC 9111 3, 3.5: Authorization,
-- Set-Cookie, Vary), the router's default key holds host and query, a HEAD miss
-- stores nothing, a plain ttl applies only to the heuristically cacheable
-- statuses, and a response too large for --cache-max-object is logged. Every
-- response of the fixture counts and echoes what selects it, so a spec sees
-- whether it came from the cache. Servers are stopped by PID; waits are bounded.
local socket = require "socket"
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"

local FIXTURE = "spec/fixtures/privacy.lua"

--- The fixture's counter (n=N) in a body.
local function n_of(res)
  return tonumber((res.body or ""):match("^n=(%d+)"))
end

--- The value echoed for a field (host, query, lang, auth, ...) in a body.
local function echoed(res, field)
  return (res.body or ""):match(" " .. field .. "=(%S+)")
end

--- Sends each request ({ path, headers }) on its own TLS connection, all
-- handshakes first, then every request back to back; reads the answers as
-- they come (bounded). Returns the parsed responses (nil for none).
local function concurrent(srv, reqs, timeout)
  local conns, results, left = {}, {}, #reqs
  for i = 1, #reqs do conns[i] = assert(client.tls(srv.port, { alpn = "http/1.1" })) end
  for i, r in ipairs(reqs) do assert(conns[i]:send(client.request(r))) end
  local deadline = util.now() + (timeout or 10)
  while left > 0 and util.now() < deadline do
    local socks, index = {}, {}
    for i = 1, #reqs do
      if results[i] == nil then
        socks[#socks + 1] = conns[i].conn
        index[conns[i].conn] = i
      end
    end
    for _, s in ipairs(socket.select(socks, nil, 0.05) or {}) do
      local i = index[s]
      conns[i]:read_some(0)
      local list = client.parse_responses(conns[i].buf, { closed = conns[i].closed })
      if list[1] or conns[i].closed then
        results[i] = list[1] or false
        left = left - 1
      end
    end
  end
  for i = 1, #reqs do conns[i]:close() end
  return results
end

describe("cache privacy: what selects a response, and who may share it #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = FIXTURE, workers = 1 } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function get(path, headers, http2)
    local res = srv:get(path, { headers = headers, http2 = http2 })
    assert.are.equal(false, res.status == 0, res.error)
    return res
  end

  local function calls(path)
    return tonumber(get("/calls?p=" .. path).body:match("^respond=(%d+)$"))
  end

  it("keys the router's default by the query: /counter?q=a and ?q=b are two entries", function()
    local a = get("/counter?q=a")
    assert.are.equal("MISS", a.headers["x-cache"])
    assert.are.equal("q=a", echoed(a, "query"))
    local b = get("/counter?q=b")
    assert.are.equal("MISS", b.headers["x-cache"], "?q=b was served ?q=a's entry")
    assert.are.equal("q=b", echoed(b, "query"))
    local a2 = get("/counter?q=a", nil, true)
    assert.are.equal("HIT", a2.headers["x-cache"])
    assert.are.equal(a.body, a2.body)
    assert.is_not_nil(a2.headers["age"])
  end)

  it("keys the router's default by the host: another Host cannot poison a response built from req.host", function()
    local evil = get("/counter?q=host", { Host = "evil.example" })
    assert.are.equal("evil.example", echoed(evil, "host"))
    local mine = get("/counter?q=host")
    assert.are.equal("MISS", mine.headers["x-cache"], "served the entry another Host made")
    assert.are.equal("127.0.0.1", echoed(mine, "host"))
    local evil2 = get("/counter?q=host", { Host = "evil.example" }, true)
    assert.are.equal("HIT", evil2.headers["x-cache"])
    assert.are.equal("evil.example", echoed(evil2, "host"))
  end)

  it("does not store a response to a request with Authorization that does not say it may be shared", function()
    local alice = get("/auth", { Authorization = "Bearer alice" })
    assert.are.equal(200, alice.status)
    assert.are.equal("MISS", alice.headers["x-cache"])
    local bob = get("/auth", { Authorization = "Bearer bob" })
    assert.are.equal("MISS", bob.headers["x-cache"], "bob was served alice's response")
    assert.are.equal("Bearer", echoed(bob, "auth"))
    assert.matches("auth=Bearer bob", bob.body, 1, true)
    assert.are.equal(2, calls("/auth"))
  end)

  it("stores it when the response says public, s-maxage or must-revalidate", function()
    for _, p in ipairs { "/auth-public", "/auth-smaxage", "/auth-mustrev" } do
      local first = get(p, { Authorization = "Bearer alice" })
      assert.are.equal("MISS", first.headers["x-cache"], p)
      local again = get(p, { Authorization = "Bearer bob" })
      assert.are.equal("HIT", again.headers["x-cache"], p)
      assert.are.equal(first.body, again.body, p)
    end
  end)

  it("never stores a response with Set-Cookie for a plain ttl", function()
    for i = 1, 3 do
      local res = get("/cookie")
      assert.are.equal("MISS", res.headers["x-cache"], "request " .. i)
      assert.are.equal("session=" .. i, res.headers["set-cookie"], "request " .. i)
      assert.are.equal(i, n_of(res))
    end
  end)

  it("stores a response with Set-Cookie when the script says cache = \"force\"", function()
    local first = get("/cookie-force")
    assert.are.equal("MISS", first.headers["x-cache"])
    local again = get("/cookie-force", nil, true)
    assert.are.equal("HIT", again.headers["x-cache"])
    assert.are.equal("theme=dark", again.headers["set-cookie"])
    assert.are.equal(first.body, again.body)
  end)

  it("honours Vary: requests differing in a varied header never share an entry; equal ones do", function()
    local fr = get("/vary", { ["Accept-Language"] = "fr" })
    assert.are.equal("MISS", fr.headers["x-cache"])
    local de = get("/vary", { ["Accept-Language"] = "de" })
    assert.are.equal("MISS", de.headers["x-cache"], "de was served fr's entry")
    assert.are.equal("de", echoed(de, "lang"))
    local none = get("/vary")
    assert.are.equal("MISS", none.headers["x-cache"], "no Accept-Language was served a variant")
    assert.are.equal("nil", echoed(none, "lang"))
    local fr2 = get("/vary", { ["Accept-Language"] = "fr" }, true)
    assert.are.equal("HIT", fr2.headers["x-cache"])
    assert.are.equal(fr.body, fr2.body)
    assert.is_not_nil(fr2.headers["age"])
    local de2 = get("/vary", { ["Accept-Language"] = "de" })
    assert.are.equal("HIT", de2.headers["x-cache"])
    assert.are.equal(de.body, de2.body)
    local none2 = get("/vary", { ["Accept-Language"] = "" })   -- empty, not absent
    assert.are.equal("MISS", none2.headers["x-cache"])
    assert.are.equal(4, calls("/vary"))
    -- The base key holds no response a script could be handed by mistake.
    assert.are.equal("status=nil", get("/peek?p=/vary").body)
    assert.are.equal("status=200", get("/peek?p=/cookie-force").body)   -- stored above
  end)

  it("normalises white space in varied values, and varies by every field named", function()
    local a = get("/vary2?x", { ["Accept-Language"] = "fr, en", ["X-Test"] = "1" })
    assert.are.equal("MISS", a.headers["x-cache"])
    local same = get("/vary2?x", { ["Accept-Language"] = "fr,en", ["X-Test"] = "1" })
    assert.are.equal("HIT", same.headers["x-cache"])
    assert.are.equal(a.body, same.body)
    local other = get("/vary2?x", { ["Accept-Language"] = "fr,en", ["X-Test"] = "2" })
    assert.are.equal("MISS", other.headers["x-cache"], "X-Test 2 was served X-Test 1's entry")
    assert.are.equal("2", echoed(other, "x%-test"))
  end)

  it("never stores Vary: *", function()
    for i = 1, 2 do
      local res = get("/vary-star")
      assert.are.equal("MISS", res.headers["x-cache"], "request " .. i)
      assert.are.equal(i, n_of(res))
    end
  end)

  it("coalesces a varying miss correctly: waiters of another variant compute their own", function()
    local before = calls("/vary")
    local reqs = {}
    for i = 1, 6 do
      local lang = i % 2 == 1 and "fr" or "de"
      reqs[i] = { path = "/vary?s=0.3", host = "127.0.0.1", headers = { ["Accept-Language"] = lang } }
    end
    local results = concurrent(srv, reqs)
    for i, res in ipairs(results) do
      assert.is_truthy(res, "no answer to request " .. i)
      assert.are.equal(200, res.status)
      assert.are.equal(reqs[i].headers["Accept-Language"], echoed(res, "lang"),
        "request " .. i .. " got another variant's response")
    end
    -- The leader's variant was shared; the other variant's waiters computed.
    local computed = calls("/vary") - before
    assert.is_true(computed >= 2 and computed <= 4, computed .. " computations, not one leader and "
      .. "at most the three of the other variant")
    for _, lang in ipairs { "fr", "de" } do
      local res = get("/vary?s=0.3", { ["Accept-Language"] = lang })
      assert.are.equal("HIT", res.headers["x-cache"], lang)
      assert.are.equal(lang, echoed(res, "lang"))
    end
  end)

  it("stores nothing for a HEAD miss: a later GET is computed, then HEAD is served from its entry", function()
    local head = srv:request { method = "HEAD", path = "/head-empty" }
    assert.are.equal(200, head.status)
    assert.are.equal("MISS", head.headers["x-cache"])
    local g = get("/head-empty")
    assert.are.equal("MISS", g.headers["x-cache"], "GET was served the HEAD's bodiless entry")
    assert.matches("^n=%d+ path=/head%-empty", g.body)
    local head2 = srv:request { method = "HEAD", path = "/head-empty", http2 = true }
    assert.are.equal("HIT", head2.headers["x-cache"])
    assert.are.equal(tostring(#g.body), head2.headers["content-length"])
    local g2 = get("/head-empty")
    assert.are.equal("HIT", g2.headers["x-cache"])
    assert.are.equal(g.body, g2.body)
  end)

  it("applies a plain ttl only to heuristically cacheable statuses, never to 5xx, 400 or 302", function()
    for _, code in ipairs { 500, 503, 400, 302, 201 } do
      local p = "/status/" .. code
      for i = 1, 2 do
        local res = get(p)
        assert.are.equal(code, res.status, p)
        assert.are.equal("MISS", res.headers["x-cache"], p .. " request " .. i)
      end
    end
    for _, code in ipairs { 200, 203, 206, 300, 301, 308, 404, 405, 410, 414, 501 } do
      local p = "/status/" .. code
      local first = get(p)
      local again = get(p)
      assert.are.equal(code, again.status, p)
      assert.are.equal("HIT", again.headers["x-cache"], p)
      assert.are.equal(first.body, again.body, p)
    end
  end)

  it("applies --cache-ttl by the same list (308 and 206 included, 500 not)", function()
    for i = 1, 2 do
      assert.are.equal("MISS", get("/status-default/500").headers["x-cache"], "request " .. i)
    end
    for _, code in ipairs { 404, 308, 206 } do
      local p = "/status-default/" .. code
      get(p)
      assert.are.equal("HIT", get(p).headers["x-cache"], p)
    end
  end)

  it("stores other statuses that the script names: cache = \"force\", or the route's cache_statuses", function()
    for _, p in ipairs { "/status-force/500", "/status-force/302", "/status-listed/500", "/status-listed/302" } do
      local first = get(p)
      assert.are.equal("MISS", first.headers["x-cache"], p)
      local again = get(p)
      assert.are.equal(first.status, again.status, p)
      assert.are.equal("HIT", again.headers["x-cache"], p)
      assert.are.equal(first.body, again.body, p)
    end
    for i = 1, 2 do   -- not in the route's list
      assert.are.equal("MISS", get("/status-listed/503").headers["x-cache"], "request " .. i)
    end
  end)
end)

describe("cache privacy: --cache-max-object #e2e", function()
  local srv

  lazy_setup(function()
    srv = server.start { script = FIXTURE, workers = 1,
                         args = { "--cache-max-object", "64k", "--log-level", "info" } }
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("does not store a response larger than the limit, and logs at info its size and the limit", function()
    for i = 1, 2 do
      local res = srv:get("/big?kb=80")
      assert.are.equal(200, res.status, res.error)
      assert.are.equal("MISS", res.headers["x-cache"], "request " .. i)
      assert.are.equal(80 * 1024, #res.body)
    end
    local line = srv:wait_log("[^\n]*response not cached: %d+ bytes, more than %-%-cache%-max%-object 65536[^\n]*", 2)
    assert.is_truthy(line, srv:log())
    assert.is_true(tonumber(line:match("(%d+) bytes")) > 80 * 1024)
    srv:get("/big?kb=8")
    assert.are.equal("HIT", srv:get("/big?kb=8").headers["x-cache"])
  end)
end)

describe("cache privacy: --cache-max-object is checked at start #e2e", function()
  local bin = util.edge_bin()

  it("refuses a limit above a sixteenth of --cache-size, naming both", function()
    local code, _, err = util.run { bin, "-t", "-s", "lua/default.lua", "--cache-size", "16m",
                                    "--cache-max-object", "2m" }
    assert.are.equal(2, code, err)
    assert.matches("--cache-max-object 2097152 is larger than a sixteenth of --cache-size (1048576 bytes)",
      err, 1, true)
    code, _, err = util.run { bin, "-t", "-s", "lua/default.lua", "--cache-max-object", "0" }
    assert.are.equal(2, code, err)
    code, _, err = util.run { bin, "-t", "-s", "lua/default.lua", "--cache-size", "16m",
                              "--cache-max-object", "1m" }
    assert.are.equal(0, code, err)
  end)
end)
