-- End-to-end specs for purging (issue 13, point 4): the admin API
-- (PURGE/DELETE /cache?key=|prefix=|tag=[&soft=1]) on the real edge, its
-- bearer token (--admin-token-file) and start-up rules, and edge.cache.purge*
-- called from a script in the server (spec/fixtures/purge.lua). The same Lua
-- functions in plain busted: spec/purge_unit_spec.lua.
--
-- Entries are filled by real requests to the TLS listener; a page's body
-- counts the fixture's respond calls ("PATH #N"), so a MISS after a purge is
-- seen twice: X-Cache and a new N. One worker, so the count is one count.
-- Every server is stopped by PID in teardown and must exit 0 with no
-- sanitizer report; every wait is bounded; only 127.0.0.1.
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local cjson = require "cjson"

local FIXTURE = "spec/fixtures/purge.lua"

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

--- Starts edge with --admin 127.0.0.1:0 (plus args) and reads the admin
-- port the kernel gave from the "admin listening" log line.
local function start(args)
  local argv = { "--admin", "127.0.0.1:0" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local srv = server.start { script = FIXTURE, workers = 1, args = argv }
  local port = srv:wait_log("admin listening on http://127%.0%.0%.1:(%d+)", 5)
  if not port then
    srv:stop()
    error("no admin listening line in the log:\n" .. srv:log_tail(), 2)
  end
  return srv, tonumber(port)
end

--- One admin request with curl. target is sent as given; extra is a list
-- of more curl arguments (-H ..., -G --data-urlencode ...). Returns status,
-- headers, body.
local function admin(port, method, target, extra)
  local args = { "--globoff", "--path-as-is", "-X", method }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = "http://127.0.0.1:" .. port .. target
  local status, headers, body = server.curl(args)
  return status, headers, body
end

--- PURGE target; asserts a 200 JSON answer and returns its "purged" count.
local function purge(port, target, extra)
  local status, headers, body = admin(port, "PURGE", target, extra)
  assert.are.equal(200, status, target .. ": " .. tostring(body))
  assert.are.equal("application/json", headers["content-type"])
  assert.are.equal("\n", body:sub(-1), "the JSON answer ends in a newline")
  local doc = cjson.decode(body)
  assert.are.equal("number", type(doc.purged), body)
  return doc.purged
end

--- Asserts a 400 with a JSON error whose text contains `why`.
local function bad(port, target, why, method)
  local status, headers, body = admin(port, method or "PURGE", target)
  assert.are.equal(400, status, target .. ": " .. tostring(body))
  assert.are.equal("application/json", headers["content-type"], target)
  local doc = cjson.decode(body)
  assert.truthy(doc.error and doc.error:find(why, 1, true),
    target .. ": expected an error about '" .. why .. "', got " .. body)
end

--- GET path on the TLS listener (HTTP/1.1): X-Cache, the body, the response.
local function get(srv, path, headers)
  local res = srv:get(path, { headers = headers })
  assert.are.equal(200, res.status, path .. ": " .. tostring(res.error or res.body))
  return res.headers["x-cache"], res.body, res
end

--- Requests path until it is a HIT (the first is a MISS); returns the body.
local function fill(srv, path, headers)
  local xc, body = get(srv, path, headers)
  assert.are.equal("MISS", xc, path .. " was cached before the spec filled it")
  local xc2, body2 = get(srv, path, headers)
  assert.are.equal("HIT", xc2, path .. " was not stored")
  assert.are.equal(body, body2)
  return body
end

--- The respond count in a page body "PATH #N".
local function count_in(body) return tonumber(body:match("#(%d+)")) end

--- One raw HTTP/1.1 exchange on the admin port (methods: the requests'
-- methods, for HEAD); returns the parsed responses and whether the server
-- closed the connection.
local function raw(port, bytes, n, methods)
  local c = assert(client.tcp(port, 5))
  assert(c:send(bytes))
  local list = c:read_responses(n or 1, { timeout = 5, methods = methods })
  local closed = c:wait_closed(2)
  c:close()
  return list, closed, c.buf
end

---------------------------------------------------------------------------
-- 1. the admin API
---------------------------------------------------------------------------

describe("purge: the admin API #e2e", function()
  local srv, aport

  lazy_setup(function() srv, aport = start() end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("PURGE /cache?key=K removes the entry: the next request is a MISS, answered anew", function()
    local before = fill(srv, "/k/1")
    fill(srv, "/k/2")
    assert.are.equal(1, purge(aport, "/cache?key=/k/1"))
    local xc, body = get(srv, "/k/1")
    assert.are.equal("MISS", xc)
    assert.are.equal(count_in(before) + 1, count_in(body))
    assert.are.equal("HIT", (get(srv, "/k/2")), "another key was purged too")
    -- Nothing left to purge: 0, still 200.
    assert.are.equal(0, purge(aport, "/cache?key=/k/nothing"))
  end)

  it("DELETE is the same as PURGE", function()
    fill(srv, "/del/1")
    local status, headers, body = admin(aport, "DELETE", "/cache?key=/del/1")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.are.equal('{"purged":1}\n', body)
    assert.are.equal("MISS", (get(srv, "/del/1")))
  end)

  it("?prefix=P removes every key that begins with P, and no other", function()
    for _, p in ipairs { "/pre/a/1", "/pre/a/2", "/pre/a/3", "/pre/b/1", "/pre/ab" } do fill(srv, p) end
    assert.are.equal(3, purge(aport, "/cache?prefix=/pre/a/"))
    for _, p in ipairs { "/pre/a/1", "/pre/a/2", "/pre/a/3" } do
      assert.are.equal("MISS", (get(srv, p)), p)
    end
    assert.are.equal("HIT", (get(srv, "/pre/b/1")))
    assert.are.equal("HIT", (get(srv, "/pre/ab")))
  end)

  it("?tag=T removes the entries tagged T by Surrogate-Key (spaces) or Cache-Tag (commas)", function()
    local a = fill(srv, "/tag/1?sk=news+sport")
    fill(srv, "/tag/2?ct=weather,%20news")
    fill(srv, "/tag/3?sk=sport&ct=local")
    fill(srv, "/tag/4")
    -- The tag fields stay in what clients get.
    local _, _, res = get(srv, "/tag/1?sk=news+sport")
    assert.are.equal("news sport", res.headers["surrogate-key"])
    assert.are.equal(2, purge(aport, "/cache?tag=news"))
    local xc, body = get(srv, "/tag/1?sk=news+sport")
    assert.are.equal("MISS", xc)
    assert.are.equal(count_in(a) + 1, count_in(body))
    assert.are.equal("MISS", (get(srv, "/tag/2?ct=weather,%20news")))
    assert.are.equal("HIT", (get(srv, "/tag/3?sk=sport&ct=local")))
    assert.are.equal("HIT", (get(srv, "/tag/4")))
    -- Both fields tag: the Cache-Tag of /tag/3, then its Surrogate-Key.
    assert.are.equal(1, purge(aport, "/cache?tag=local"))
    assert.are.equal("MISS", (get(srv, "/tag/3?sk=sport&ct=local")))
    assert.are.equal(2, purge(aport, "/cache?tag=sport"))   -- /tag/1 (refilled) and /tag/3
    assert.are.equal(0, purge(aport, "/cache?tag=nosuchtag"))
  end)

  it("?key=K also removes the entries derived from K (the Vary variants)", function()
    fill(srv, "/vary/1", { ["X-Variant"] = "a" })
    fill(srv, "/vary/1", { ["X-Variant"] = "b" })
    fill(srv, "/vary/10", { ["X-Variant"] = "a" })
    -- The Vary marker at the key and both variants.
    assert.is_true(purge(aport, "/cache?key=/vary/1") >= 2)
    assert.are.equal("MISS", (get(srv, "/vary/1", { ["X-Variant"] = "a" })))
    assert.are.equal("MISS", (get(srv, "/vary/1", { ["X-Variant"] = "b" })))
    assert.are.equal("HIT", (get(srv, "/vary/10", { ["X-Variant"] = "a" })), "a key with K as prefix was purged")
  end)

  it("percent-decodes values ('+' is a space), as curl -G --data-urlencode sends them", function()
    -- The cache key is "enc /enc/1 q=a&b=c+d": a space, '&', '=' and '+'.
    fill(srv, "/enc/1?q=a%26b%3Dc%2Bd")
    fill(srv, "/enc/2?q=x")
    assert.are.equal(1, purge(aport, "/cache", { "-G", "--data-urlencode", "key=enc /enc/1 q=a&b=c+d" }))
    assert.are.equal("MISS", (get(srv, "/enc/1?q=a%26b%3Dc%2Bd")))
    assert.are.equal(1, purge(aport, "/cache?key=enc+%2Fenc%2F2+q%3dx"))
    assert.are.equal("MISS", (get(srv, "/enc/2?q=x")))
  end)

  it("soft=1 on an entry without grace: it is stale at once, so the next request is a MISS", function()
    local before = fill(srv, "/soft/1")
    fill(srv, "/soft/2?sk=softtag")
    assert.are.equal(1, purge(aport, "/cache?key=/soft/1&soft=1"))
    local xc, body = get(srv, "/soft/1")
    assert.are.equal("MISS", xc)
    assert.are.equal(count_in(before) + 1, count_in(body))
    assert.are.equal(1, purge(aport, "/cache?tag=softtag&soft=true"))
    assert.are.equal("MISS", (get(srv, "/soft/2?sk=softtag")))
    -- soft=0 / soft=false are hard purges.
    fill(srv, "/soft/3")
    assert.are.equal(1, purge(aport, "/cache?soft=false&prefix=/soft/3"))
    assert.are.equal("MISS", (get(srv, "/soft/3")))
  end)

  it("a hard purge of an entry with grace leaves nothing stale to serve: MISS", function()
    local before = fill(srv, "/hardgrace/1?swr=60")
    assert.are.equal(1, purge(aport, "/cache?key=/hardgrace/1"))
    local xc, body = get(srv, "/hardgrace/1?swr=60")
    assert.are.equal("MISS", xc)
    assert.are.equal(count_in(before) + 1, count_in(body))
  end)

  -- With the dispatcher's grace (issue 13 point 1): a stale entry in grace
  -- is served with X-Cache: STALE while one background refresh runs.
  it("soft=1 on an entry with grace: served STALE while one refresh runs, then the refreshed entry", function()
    local path = "/softgrace/1?swr=60"
    local before = fill(srv, path)
    assert.are.equal(1, purge(aport, "/cache?key=/softgrace/1&soft=1"))
    local xc, body, res = get(srv, path)
    assert.are.equal("STALE", xc)
    assert.are.equal(before, body, "the stale entry is the one stored before the purge")
    assert.truthy((res.headers["cache-status"] or ""):find("detail=stale", 1, true), res.headers["cache-status"])
    -- The background refresh replaces it: a HIT with the next count, soon.
    local fresh = util.wait_until(function()
      local x, b = get(srv, path)
      if x == "HIT" and count_in(b) == count_in(before) + 1 then return b end
    end, 5)
    assert.truthy(fresh, "the refresh never replaced the soft-purged entry")
  end)

  it("answers 400 with a JSON reason for a bad query", function()
    bad(aport, "/cache", "give one of key, prefix or tag")
    bad(aport, "/cache?soft=1", "give one of key, prefix or tag")
    bad(aport, "/cache?key=/a&tag=b", "exactly one")
    bad(aport, "/cache?key=/a&key=/b", "exactly one")
    bad(aport, "/cache?keys=/a", "unknown parameter 'keys'")
    bad(aport, "/cache?key=%zz", "bad percent-encoding")
    bad(aport, "/cache?key=/a%2", "bad percent-encoding")
    bad(aport, "/cache?tag=a%00b", "bad percent-encoding")
    bad(aport, "/cache?key=", "key is empty")
    bad(aport, "/cache?prefix=", "prefix is empty")
    bad(aport, "/cache?prefix", "prefix is empty")
    bad(aport, "/cache?tag=a&soft=yes", "soft must be 1, true, 0 or false")
    bad(aport, "/cache?tag=a&soft=1&soft=1", "soft is given twice")
    bad(aport, "/cache?tag=a&x%22y=1", "unknown parameter")
    -- The JSON stays JSON whatever the name holds.
    local list = raw(aport, 'PURGE /cache?"\\\1=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    local body = list[1] and list[1].body or ""
    assert.truthy(cjson.decode(body).error:find('unknown parameter \'"\\\1\'', 1, true), body)
  end)

  it("answers 405 with Allow for other methods on /cache, and keeps GET-only /metrics and /healthz", function()
    for _, m in ipairs { "GET", "POST", "PUT" } do
      local status, headers = admin(aport, m, "/cache?key=/a")
      assert.are.equal(405, status, m)
      assert.are.equal("PURGE, DELETE", headers["allow"], m)
    end
    local list = raw(aport, "HEAD /cache?key=/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1, { "HEAD" })
    assert.are.equal(405, list[1] and list[1].status)
    assert.are.equal("", list[1].body)
    local status, headers = admin(aport, "PURGE", "/metrics")
    assert.are.equal(405, status)
    assert.are.equal("GET, HEAD", headers["allow"])
    status = admin(aport, "DELETE", "/healthz")
    assert.are.equal(405, status)
    local s2, _, body = admin(aport, "GET", "/healthz")
    assert.are.equal(200, s2)
    assert.are.equal("ok\n", body)
    assert.are.equal(404, (admin(aport, "PURGE", "/nope")))
    assert.are.equal(404, (admin(aport, "PURGE", "/cache/x?key=/a")))
  end)

  it("refuses a request with a body (400, connection closed), so its bytes are never a request", function()
    fill(srv, "/body/1")
    local list, closed = raw(aport, "PURGE /cache?key=/body/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 34\r\n\r\n"
      .. "PURGE /cache?key=/body/1 HTTP/1.1")
    assert.are.equal(400, list[1] and list[1].status)
    assert.is_nil(list[2])
    assert.truthy(closed, "the connection stayed open after a request with a body")
    list = raw(aport, "PURGE /cache?key=/body/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert.are.equal(400, list[1] and list[1].status)
    assert.are.equal("HIT", (get(srv, "/body/1")), "a refused request purged")
    -- Content-Length: 0 is no body.
    list = raw(aport, "PURGE /cache?key=/body/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert.are.equal(200, list[1] and list[1].status)
    assert.are.equal('{"purged":1}\n', list[1].body)
  end)

  it("answers pipelined purges in order on one keep-alive connection", function()
    fill(srv, "/pipe/1")
    fill(srv, "/pipe/2")
    local list, _, buf = raw(aport, "PURGE /cache?key=/pipe/1 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "DELETE /cache?key=/pipe/2 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "PURGE /cache?key=/pipe/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
    assert.are.equal(3, #list, buf)
    assert.are.same({ '{"purged":1}\n', '{"purged":1}\n', '{"purged":0}\n' },
      { list[1].body, list[2].body, list[3].body })
  end)

  it("logs each purge with what, how many and how long", function()
    fill(srv, "/logged/1")
    purge(aport, "/cache?key=/logged/1&soft=1")
    assert.truthy(srv:wait_log('admin: soft purge by key "/logged/1": 1 entries in [%d.]+ ms', 3), srv:log_tail())
  end)
end)

---------------------------------------------------------------------------
-- 2. edge.cache.purge* from a script, in the server
---------------------------------------------------------------------------

describe("purge: edge.cache.purge* in the server #e2e", function()
  local srv, aport

  lazy_setup(function() srv, aport = start() end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function control(path)
    local res = srv:get(path)
    assert.are.equal(200, res.status, path .. ": " .. tostring(res.error or res.body))
    return res.body
  end

  it("purge(key) -> true when something was purged, and the next request is a MISS", function()
    fill(srv, "/l/1")
    assert.are.equal("true", control("/lua/purge?key=/l/1"))
    assert.are.equal("false", control("/lua/purge?key=/l/1"))
    assert.are.equal("MISS", (get(srv, "/l/1")))
    fill(srv, "/lvary/1")
    fill(srv, "/vary/l", { ["X-Variant"] = "z" })
    assert.are.equal("true", control("/lua/purge?key=/vary/l"))
    assert.are.equal("MISS", (get(srv, "/vary/l", { ["X-Variant"] = "z" })))
    assert.are.equal("true", control("/lua/purge?key=/lvary/1&soft=1"))
    assert.are.equal("MISS", (get(srv, "/lvary/1")))
  end)

  it("purge_prefix and purge_tag return the count", function()
    for i = 1, 4 do fill(srv, "/lp/" .. i .. "?sk=lt" .. (i % 2)) end
    assert.are.equal("2", control("/lua/purge_tag?tag=lt1"))
    assert.are.equal("MISS", (get(srv, "/lp/1?sk=lt1")))
    assert.are.equal("HIT", (get(srv, "/lp/2?sk=lt0")))
    -- /lp/1 (stored again by that MISS), /lp/2 and /lp/4.
    assert.are.equal("3", control("/lua/purge_prefix?prefix=/lp/&soft=1"))
    assert.are.equal("0", control("/lua/purge_tag?tag=lt0"))
  end)

  it("what a script purges, the admin no longer finds, and the other way round", function()
    fill(srv, "/both/1")
    assert.are.equal(1, purge(aport, "/cache?key=/both/1"))
    assert.are.equal("false", control("/lua/purge?key=/both/1"))
  end)

  it("rejects unknown options by name, and a soft that is not a boolean", function()
    for _, f in ipairs { "purge", "purge_prefix", "purge_tag" } do
      local body = control("/lua/bad_opts?which=" .. f)
      assert.matches("^false ", body)
      assert.truthy(body:find("unknown options", 1, true), body)
      assert.truthy(body:find("'sofft'", 1, true), body)
      assert.truthy(body:find("'1'", 1, true), body)
      assert.truthy(body:find("edge.cache." .. f .. ": ", 1, true), "the message names the function: " .. body)
    end
    local body = control("/lua/soft_type")
    assert.truthy(body:find("edge.cache.purge_tag: opts.soft must be a boolean", 1, true), body)
  end)
end)

---------------------------------------------------------------------------
-- 3. the admin token
---------------------------------------------------------------------------

describe("purge: --admin-token-file #e2e", function()
  local srv, aport, dir, file
  local TOKEN = "s3cret-Token_0123456789"

  lazy_setup(function()
    dir = util.tmpdir("purge-token")
    file = dir .. "/token"
    -- The first line, trimmed; what follows is ignored.
    util.write_file(file, "  " .. TOKEN .. " \r\nnot the token\n")
    srv, aport = start { "--admin-token-file", file }
  end)
  lazy_teardown(function()
    server.stop_and_check(srv)
    if dir then os.execute("rm -rf " .. util.q(dir)) end
  end)

  local function bearer(t) return { "-H", "Authorization: Bearer " .. t } end

  it("/cache and /metrics answer 401 with WWW-Authenticate without the token", function()
    local status, headers, body = admin(aport, "PURGE", "/cache?key=/t/1")
    assert.are.equal(401, status)
    assert.are.equal('Bearer realm="edge-admin"', headers["www-authenticate"])
    assert.are.equal("application/json", headers["content-type"])
    assert.truthy(cjson.decode(body).error)
    status, headers = admin(aport, "GET", "/metrics")
    assert.are.equal(401, status)
    assert.are.equal('Bearer realm="edge-admin"', headers["www-authenticate"])
  end)

  it("a wrong token is refused, also one that is a prefix or an extension of the token", function()
    fill(srv, "/t/wrong")
    for _, t in ipairs { "nope", TOKEN:sub(1, -2), TOKEN .. "x", TOKEN:upper(), "not the token" } do
      local status, headers = admin(aport, "PURGE", "/cache?key=/t/wrong", bearer(t))
      assert.are.equal(401, status, t)
      assert.are.equal('Bearer realm="edge-admin", error="invalid_token"', headers["www-authenticate"])
    end
    for _, h in ipairs { "Authorization: Basic " .. TOKEN, "Authorization: " .. TOKEN, "Authorization: Bearer" } do
      assert.are.equal(401, (admin(aport, "PURGE", "/cache?key=/t/wrong", { "-H", h })), h)
    end
    assert.are.equal("HIT", (get(srv, "/t/wrong")), "a refused purge purged")
  end)

  it("the token opens /cache and /metrics (scheme in any case)", function()
    fill(srv, "/t/right")
    assert.are.equal(1, purge(aport, "/cache?key=/t/right", bearer(TOKEN)))
    assert.are.equal("MISS", (get(srv, "/t/right")))
    local status = admin(aport, "GET", "/metrics", { "-H", "authorization: bearer   " .. TOKEN })
    assert.are.equal(200, status)
  end)

  it("/healthz stays open", function()
    local status, _, body = admin(aport, "GET", "/healthz")
    assert.are.equal(200, status)
    assert.are.equal("ok\n", body)
  end)

  it("SIGHUP re-reads the file; a file that lost its token keeps the previous one", function()
    local NEW = "rotated-" .. TOKEN
    util.write_file(file, NEW .. "\n")
    srv:signal("HUP")
    assert.truthy(srv:wait_log("admin token re%-read from", 5), srv:log_tail())
    assert.are.equal(401, (admin(aport, "GET", "/metrics", bearer(TOKEN))))
    assert.are.equal(200, (admin(aport, "GET", "/metrics", bearer(NEW))))
    util.write_file(file, "\n")
    srv:signal("HUP")
    assert.truthy(srv:wait_log("holds no token %(empty%); the previous admin token stays in force", 5),
      srv:log_tail())
    assert.are.equal(200, (admin(aport, "GET", "/metrics", bearer(NEW))))
  end)
end)

---------------------------------------------------------------------------
-- 4. start-up rules
---------------------------------------------------------------------------

describe("purge: admin start-up rules #e2e", function()
  local EDGE = util.edge_bin()
  local dir

  lazy_setup(function() dir = util.tmpdir("purge-start") end)
  lazy_teardown(function() if dir then os.execute("rm -rf " .. util.q(dir)) end end)

  --- Runs edge (cleartext listener only: no certificate) with args; the
  -- start must fail at once. Returns exit code and stderr.
  local function start_fails(...)
    local code, out, err = util.run({ EDGE, "-s", FIXTURE, "--listen-plain", "127.0.0.1:0", "-w", "1", ... },
      { timeout = 10 })
    return code, err, out
  end

  it("refuses a non-loopback --admin without --admin-token-file: exit 1, naming both options", function()
    local code, err = start_fails("--admin", "0.0.0.0:0")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("--admin 0.0.0.0:0 is not a loopback address", 1, true), err)
    assert.truthy(err:find("--admin-token-file", 1, true), err)
    local lines = util.lines(err)
    assert.are.equal(1, #lines, err)
    -- -t says so too.
    local tcode, _, terr = util.run({ EDGE, "-t", "-s", FIXTURE, "--listen-plain", "127.0.0.1:0",
                                      "--admin", ":0" }, { timeout = 10 })
    assert.are.equal(1, tcode)
    assert.truthy(terr:find("is not a loopback address", 1, true), terr)
  end)

  it("refuses a token file that is missing, empty or without --admin: exit 1", function()
    local code, err = start_fails("--admin", "127.0.0.1:0", "--admin-token-file", dir .. "/missing")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("cannot read --admin-token-file " .. dir .. "/missing: No such file", 1, true), err)
    util.write_file(dir .. "/empty", "   \n" .. "token-on-line-2\n")
    code, err = start_fails("--admin", "127.0.0.1:0", "--admin-token-file", dir .. "/empty")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("the first line holds no token", 1, true), err)
    util.write_file(dir .. "/spaced", "two words\n")
    code, err = start_fails("--admin", "127.0.0.1:0", "--admin-token-file", dir .. "/spaced")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("printable ASCII without spaces", 1, true), err)
    util.write_file(dir .. "/good", "tok\n")
    code, err = start_fails("--admin-token-file", dir .. "/good")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("without --admin", 1, true), err)
  end)

  it("-t checks the token file", function()
    util.write_file(dir .. "/good", "tok\n")
    local code, out, err = util.run({ EDGE, "-t", "-s", FIXTURE, "--listen-plain", "127.0.0.1:0",
                                      "--admin", "0.0.0.0:0", "--admin-token-file", dir .. "/good" },
                                    { timeout = 10 })
    assert.are.equal(0, code, err)
    assert.truthy(out:find("admin token file " .. dir .. "/good holds a token", 1, true), out)
    code, _, err = util.run({ EDGE, "-t", "-s", FIXTURE, "--listen-plain", "127.0.0.1:0",
                              "--admin", "127.0.0.1:0", "--admin-token-file", dir .. "/missing" },
                            { timeout = 10 })
    assert.are.equal(1, code)
    assert.truthy(err:find("cannot read --admin-token-file", 1, true), err)
  end)

  it("a loopback --admin (127.0.0.0/8, localhost) needs no token", function()
    for _, addr in ipairs { "localhost:0", "127.0.0.2:0" } do
      local srv = server.start { script = FIXTURE, workers = 1, args = { "--admin", addr } }
      local port = srv:wait_log("admin listening on http://127%.0%.0%.%d:(%d+)", 5)
      local ok, err = pcall(function()
        assert.truthy(port, srv:log_tail())
      end)
      server.stop_and_check(srv)
      assert(ok, err)
    end
  end)
end)
