-- edge.upstream.define / get / names: every option's default, every
-- validation error (raised at the caller's file:line, naming the upstream
-- and the option), redefinition, get's copy, names; unit specs through
-- `require "edge"` (build/lua/edge.so, src/lua_upstream.c). Then, against
-- the real binary (#e2e): a bad option fails `edge -t` and start-up with
-- file:line, define in a hook is an error, tls.verify = false warns, and a
-- reload builds the new script's upstreams.
local edge = require "edge"
local server = require "support.server"
local util = require "support.util"

local up = edge.upstream

local THIS = "upstream_define_spec.lua"

--- Calls define from a Lua function on a known line; returns ok, err and
-- that line (define's caller, which the error must name).
local function define_at(name, opts)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() up.define(name, opts) end)
  return ok, err, line
end

--- Asserts that define(name, opts) fails with message msg, prefixed by this
-- file's name, the caller's line and "edge.upstream.define('name'): ".
local function assert_rejects(opts, msg, name)
  name = name or "bad"
  local before = table.concat(up.names(), ",")
  local ok, err, line = define_at(name, opts)
  assert.is_false(ok, "accepted: " .. msg)
  local want = THIS .. ":" .. line .. ": edge.upstream.define('" .. name .. "'): " .. msg
  assert.truthy(tostring(err):find(want, 1, true), "want: " .. want .. "\ngot:  " .. tostring(err))
  assert.are.equal(before, table.concat(up.names(), ","), "a failed define left a definition")
end

local function one(extra)
  local opts = { servers = { "10.0.0.1:8080" } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return opts
end

describe("edge.upstream.define: defaults", function()
  before_each(function() up.reset() end)

  it("fills every option with the default an nginx user expects", function()
    up.define("api", { servers = { "10.0.0.1:8080" } })
    assert.are.same({
      servers = { { "10.0.0.1:8080", weight = 1, backup = false } },
      balance = "round_robin",
      keepalive = { size = 64, idle_timeout = 60, max_requests = 1000 },
      timeout = { connect = 5, send = 60, read = 60 },
      retries = { tries = 2, on = { "connect", "error", "timeout" } },
      health = { passive = { max_fails = 1, fail_timeout = 10 }, active = false },
      tls = false,
      dns = {},
    }, up.get("api"))
  end)

  it("gives a server without a port 80, or 443 with tls, and keeps IPv6 in brackets", function()
    up.define("plain", { servers = { "a.internal", "[::1]", "[2001:db8::1]:8443", "127.0.0.1" } })
    up.define("secure", { servers = { "a.internal", "[::1]" }, tls = true })
    local function addrs(name)
      local out = {}
      for i, s in ipairs(up.get(name).servers) do out[i] = s[1] end
      return out
    end
    assert.are.same({ "a.internal:80", "[::1]:80", "[2001:db8::1]:8443", "127.0.0.1:80" }, addrs("plain"))
    assert.are.same({ "a.internal:443", "[::1]:443" }, addrs("secure"))
    assert.are.same({ verify = true }, up.get("secure").tls)
  end)

  it("fills health.active's defaults once active is a table", function()
    up.define("checked", one { health = { active = {} } })
    assert.are.same({ path = "/", interval = 2, rise = 2, fall = 3, timeout = 1 }, up.get("checked").health.active)
    assert.are.same({ max_fails = 1, fail_timeout = 10 }, up.get("checked").health.passive)
  end)

  it("keeps every option given, normalised", function()
    local key = function(req) return req.path end
    up.define("full", {
      servers = { "10.0.0.1:8080", { "api.internal:443", weight = 2 }, { "10.0.0.3:8080", weight = 3.0 } },
      balance = "hash",
      hash_key = key,
      keepalive = { size = 0, idle_timeout = 2.5, max_requests = 7 },
      timeout = { connect = 1, send = 5, read = 30 },
      retries = { tries = 16, on = { 502, "timeout", "connect", "504", "non_idempotent" } },
      health = { passive = { max_fails = 0, fail_timeout = 30 },
                 active = { path = "/healthz", interval = 1.5, rise = 3, fall = 4, timeout = 0.5 } },
      tls = { verify = false, sni = "api.internal", ca_file = "/dev/null" },
      dns = { valid = 30 },
    })
    local got = up.get("full")
    assert.are.equal(key, got.hash_key)
    got.hash_key = nil
    assert.are.same({
      servers = { { "10.0.0.1:8080", weight = 1, backup = false }, { "api.internal:443", weight = 2, backup = false },
                  { "10.0.0.3:8080", weight = 3, backup = false } },
      balance = "hash",
      keepalive = { size = 0, idle_timeout = 2.5, max_requests = 7 },
      timeout = { connect = 1, send = 5, read = 30 },
      retries = { tries = 16, on = { "connect", "timeout", "502", "504", "non_idempotent" } },
      health = { passive = { max_fails = 0, fail_timeout = 30 },
                 active = { path = "/healthz", interval = 1.5, rise = 3, fall = 4, timeout = 0.5 } },
      tls = { verify = false, sni = "api.internal", ca_file = "/dev/null" },
      dns = { valid = 30 },
    }, got)
  end)

  it("takes backup servers, least_conn, retries.on = {} and explicit false for tls and active", function()
    up.define("b", one { servers = { "a:1", { "b:2", backup = true } }, balance = "least_conn",
                         retries = { on = {} }, tls = false, health = { active = false } })
    local got = up.get("b")
    assert.are.equal("least_conn", got.balance)
    assert.is_true(got.servers[2].backup)
    assert.are.same({}, got.retries.on)
    assert.is_false(got.tls)
    assert.is_false(got.health.active)
  end)
end)

describe("edge.upstream.get and names", function()
  before_each(function() up.reset() end)

  it("get returns a fresh copy each time; changing it changes nothing", function()
    up.define("api", one())
    local a = up.get("api")
    a.servers[1][1] = "evil:1"
    a.keepalive.size = 1
    a.balance = "hash"
    local b = up.get("api")
    assert.are.equal("10.0.0.1:8080", b.servers[1][1])
    assert.are.equal(64, b.keepalive.size)
    assert.are.equal("round_robin", b.balance)
    assert.are_not.equal(a, b)
  end)

  it("get of an unknown name is nil; names lists the defined ones, sorted", function()
    assert.is_nil(up.get("nope"))
    assert.are.same({}, up.names())
    for _, n in ipairs { "zeta", "alpha", "mid-1", "mid_0", "a.b" } do up.define(n, one()) end
    assert.are.same({ "a.b", "alpha", "mid-1", "mid_0", "zeta" }, up.names())
  end)

  it("define(other, get(name)) defines the same upstream", function()
    up.define("orig", { servers = { "a:1", { "b:2", weight = 5, backup = true } }, balance = "least_conn",
                        retries = { tries = 3, on = { "502" } }, tls = { sni = "x.test" },
                        health = { active = { path = "/ok" } }, dns = { valid = 5 } })
    up.define("copy", up.get("orig"))
    assert.are.same(up.get("orig"), up.get("copy"))
  end)

  it("reset forgets every definition (the module outside the server only)", function()
    up.define("api", one())
    up.reset()
    assert.are.same({}, up.names())
    up.define("api", one())
    assert.are.same({ "api" }, up.names())
  end)
end)

describe("edge.upstream.define: errors at the caller's file:line", function()
  before_each(function() up.reset() end)

  it("refuses to define a name twice, naming where the first one was", function()
    local line = debug.getinfo(1, "l").currentline + 1
    up.define("api", one())
    assert_rejects(one(), "an upstream named 'api' is already defined at ", "api")
    local _, err = define_at("api", one())
    assert.truthy(err:find("already defined at [^\n]*" .. THIS .. ":" .. line), err)
    assert.are.same({ "api" }, up.names())
  end)

  it("checks the name and the options argument", function()
    for _, name in ipairs { "", "a b", "a/b", string.rep("n", 65) } do
      local ok, err, line = define_at(name, one())
      assert.is_false(ok)
      assert.truthy(err:find(THIS .. ":" .. line .. ": bad argument #1 to 'define'", 1, true), err)
    end
    local ok, err, line = define_at("x", nil)
    assert.is_false(ok)
    assert.truthy(err:find(THIS .. ":" .. line .. ": bad argument #2 to 'define' (table expected", 1, true), err)
    up.define(string.rep("n", 64), one())
  end)

  it("checks servers", function()
    local many = {}
    for i = 1, 65 do many[i] = "10.0.0." .. i .. ":80" end
    local cases = {
      { {}, "servers is required: a list of" },
      { { servers = "a:80" }, "servers must be a list of servers, got 'a:80'" },
      { { servers = {} }, "servers must list at least one server" },
      { { servers = many }, "servers lists 65 servers; at most 64 are allowed" },
      { { servers = { x = "a:80" } }, "servers must be a list; it has the key 'x'" },
      { { servers = { "a:80", 7 } }, 'servers[2] must be "host:port" or { "host:port", weight = N, backup = true }, got 7' },
      { { servers = { "a:80", { weight = 2 } } }, 'servers[2][1] must be the address "host:port", got nil' },
      { { servers = { "a:1", { "b:2", weight = -1 } } }, "servers[2].weight must be a positive integer (at most 100), got -1" },
      { { servers = { { "b:2", weight = 0 } } }, "servers[1].weight must be a positive integer (at most 100), got 0" },
      { { servers = { { "b:2", weight = 2.5 } } }, "servers[1].weight must be a positive integer (at most 100), got 2.5" },
      { { servers = { { "b:2", weight = 101 } } }, "servers[1].weight must be a positive integer (at most 100), got 101" },
      { { servers = { { "b:2", weight = "2" } } }, "servers[1].weight must be a positive integer (at most 100), got '2'" },
      { { servers = { { "b:2", backup = "yes" } } }, "servers[1].backup must be true or false, got 'yes'" },
      { { servers = { { "b:2", wieght = 2 } } }, "unknown option 'servers[1].wieght' (known: weight, backup)" },
      { { servers = { { "b:2", "c:3" } } }, "servers[1] has an unexpected key 2 (known: weight, backup)" },
      { { servers = { "a:0" } }, "servers[1]: bad address 'a:0': the port must be a number from 1 to 65535" },
      { { servers = { "a:65536" } }, "servers[1]: bad address 'a:65536': the port must be a number from 1 to 65535" },
      { { servers = { "a:" } }, "servers[1]: bad address 'a:': the port must be a number from 1 to 65535" },
      { { servers = { "a:8o" } }, "servers[1]: bad address 'a:8o': the port must be a number from 1 to 65535" },
      { { servers = { ":80" } }, "servers[1]: bad address ':80': the host must be 1 to 253 characters" },
      { { servers = { "::1:80" } }, "servers[1]: bad address '::1:80': an IPv6 address needs brackets: '[::1]:8080'" },
      { { servers = { "[::1" } }, "servers[1]: bad address '[::1': no ']' after an IPv6 address" },
      { { servers = { "[zz::1]:80" } }, "servers[1]: bad address '[zz::1]:80': not an IPv6 address between the brackets" },
      { { servers = { "[::1]x" } }, "servers[1]: bad address '[::1]x': expected ':port' after ']'" },
      { { servers = { "a b:80" } }, "servers[1]: bad address 'a b:80': the host may hold only letters, digits" },
      { { servers = { "http://a:80" } }, "servers[1]: bad address 'http://a:80': an IPv6 address needs brackets" },
      { { servers = { "-a:80" } }, "servers[1]: bad address '-a:80': the host may not start with '-' or '.'" },
      { { servers = { "a:80", "b:80", "a:80" } }, "servers[3]: 'a:80' is listed twice (servers[1]); give it a weight instead" },
    }
    for _, c in ipairs(cases) do assert_rejects(c[1], c[2]) end
  end)

  it("checks balance and hash_key", function()
    assert_rejects(one { balance = "random" }, "balance must be 'round_robin', 'least_conn' or 'hash', got 'random'")
    assert_rejects(one { balance = 1 }, "balance must be 'round_robin', 'least_conn' or 'hash', got 1")
    assert_rejects(one { balance = "hash" }, "balance = 'hash' needs hash_key = function(req) returning the key")
    assert_rejects(one { hash_key = function() end },
      "hash_key is used only with balance = 'hash' (balance is 'round_robin')")
    assert_rejects(one { balance = "hash", hash_key = "path" }, "hash_key must be a function(req) returning the key, got 'path'")
    assert_rejects({ servers = { "a:1", { "b:2", backup = true } }, balance = "hash", hash_key = print },
      "servers[2]: backup servers cannot be used with balance = 'hash'")
  end)

  it("checks keepalive and timeout", function()
    local secs = "must be a number of seconds > 0 (at most a year, 31536000), got "
    local cases = {
      { { keepalive = 64 }, "keepalive must be a table, got 64" },
      { { keepalive = { sise = 1 } }, "unknown option 'keepalive.sise' (known: size, idle_timeout, max_requests)" },
      { { keepalive = { size = -1 } }, "keepalive.size must be an integer from 0 to 65535, got -1" },
      { { keepalive = { size = 65536 } }, "keepalive.size must be an integer from 0 to 65535, got 65536" },
      { { keepalive = { idle_timeout = 0 } }, "keepalive.idle_timeout " .. secs .. "0" },
      { { keepalive = { max_requests = 0 } }, "keepalive.max_requests must be a positive integer (at most 1000000000), got 0" },
      { { timeout = 5 }, "timeout must be a table, got 5" },
      { { timeout = { conect = 1 } }, "unknown option 'timeout.conect' (known: connect, send, read)" },
      { { timeout = { connect = 0 } }, "timeout.connect " .. secs .. "0" },
      { { timeout = { connect = "1" } }, "timeout.connect " .. secs .. "'1'" },
      { { timeout = { send = -2 } }, "timeout.send " .. secs .. "-2" },
      { { timeout = { read = 31536001 } }, "timeout.read " .. secs .. "31536001" },
      { { timeout = { read = 0 / 0 } }, "timeout.read " .. secs },
      { { timeout = { read = math.huge } }, "timeout.read " .. secs .. "inf" },
    }
    for _, c in ipairs(cases) do assert_rejects(one(c[1]), c[2]) end
  end)

  it("checks retries", function()
    local on = "must be one of 'connect', 'error', 'timeout', 'invalid_header', '500', '502', '503', '504', " ..
               "'429', 'non_idempotent', got "
    local cases = {
      { { retries = 2 }, "retries must be a table, got 2" },
      { { retries = { try = 2 } }, "unknown option 'retries.try' (known: tries, on)" },
      { { retries = { tries = 0 } }, "retries.tries must be a positive integer (at most 16), got 0" },
      { { retries = { tries = 17 } }, "retries.tries must be a positive integer (at most 16), got 17" },
      { { retries = { tries = 1.5 } }, "retries.tries must be a positive integer (at most 16), got 1.5" },
      { { retries = { tries = math.maxinteger } }, "retries.tries must be a positive integer (at most 16), got " .. math.maxinteger },
      { { retries = { on = "502" } }, "retries.on must be a table, got '502'" },
      { { retries = { on = { "timeout", "501" } } }, "retries.on[2] " .. on .. "'501'" },
      { { retries = { on = { 501 } } }, "retries.on[1] " .. on .. "501" },
      { { retries = { on = { true } } }, "retries.on[1] " .. on .. "true" },
      { { retries = { on = { x = "502" } } }, "retries.on must be a list; it has the key 'x'" },
    }
    for _, c in ipairs(cases) do assert_rejects(one(c[1]), c[2]) end
  end)

  it("checks health", function()
    local secs = "must be a number of seconds > 0 (at most a year, 31536000), got "
    local cases = {
      { { health = true }, "health must be a table, got true" },
      { { health = { pasive = {} } }, "unknown option 'health.pasive' (known: passive, active)" },
      { { health = { passive = 1 } }, "health.passive must be a table, got 1" },
      { { health = { passive = { max_fail = 1 } } }, "unknown option 'health.passive.max_fail' (known: max_fails, fail_timeout)" },
      { { health = { passive = { max_fails = -1 } } }, "health.passive.max_fails must be an integer from 0 to 1000000, got -1" },
      { { health = { passive = { fail_timeout = 0 } } }, "health.passive.fail_timeout " .. secs .. "0" },
      { { health = { active = true } }, "health.active must be a table { path, interval, rise, fall, timeout } or false, got true" },
      { { health = { active = { url = "/" } } }, "unknown option 'health.active.url' (known: path, interval, rise, fall, timeout)" },
      { { health = { active = { path = "healthz" } } }, "health.active.path must be a path that starts with '/', got 'healthz'" },
      { { health = { active = { path = "/a b" } } }, "health.active.path must be a non-empty string without spaces (at most 2048 bytes), got '/a b'" },
      { { health = { active = { path = "" } } }, "health.active.path must be a non-empty string without spaces (at most 2048 bytes), got ''" },
      { { health = { active = { interval = 0 } } }, "health.active.interval " .. secs .. "0" },
      { { health = { active = { rise = 0 } } }, "health.active.rise must be a positive integer (at most 1000), got 0" },
      { { health = { active = { fall = 1001 } } }, "health.active.fall must be a positive integer (at most 1000), got 1001" },
      { { health = { active = { timeout = -1 } } }, "health.active.timeout " .. secs .. "-1" },
    }
    for _, c in ipairs(cases) do assert_rejects(one(c[1]), c[2]) end
  end)

  it("checks tls and dns", function()
    local cases = {
      { { tls = "yes" }, "tls must be true, false or a table { verify, sni, ca_file }, got 'yes'" },
      { { tls = { verfy = false } }, "unknown option 'tls.verfy' (known: verify, sni, ca_file)" },
      { { tls = { verify = "no" } }, "tls.verify must be true or false, got 'no'" },
      { { tls = { sni = "" } }, "tls.sni must be a non-empty string without spaces (at most 253 bytes), got ''" },
      { { tls = { sni = 5 } }, "tls.sni must be a non-empty string without spaces (at most 253 bytes), got 5" },
      { { tls = { ca_file = "/nonexistent/ca.pem" } }, "tls.ca_file: cannot read '/nonexistent/ca.pem': No such file or directory" },
      { { dns = 30 }, "dns must be a table, got 30" },
      { { dns = { ttl = 30 } }, "unknown option 'dns.ttl' (known: valid)" },
      { { dns = { valid = 0 } }, "dns.valid must be a number of seconds > 0 (at most a year, 31536000), got 0" },
    }
    for _, c in ipairs(cases) do assert_rejects(one(c[1]), c[2]) end
  end)

  it("refuses unknown top-level options and keys that are not names", function()
    assert_rejects(one { sevrers = {} }, "unknown option 'sevrers' (known: servers, balance, hash_key, keepalive, " ..
      "timeout, retries, health, tls, dns)")
    assert_rejects({ servers = { "a:1" }, [1] = "x" }, "the options table has an unexpected key 1")
  end)
end)

---------------------------------------------------------------------------
-- Against the real binary
---------------------------------------------------------------------------

local function write(dir, name, text)
  local path = dir .. "/" .. name
  util.write_file(path, text)
  return path
end

local BAD = [[
local edge = require "edge"

-- line 3 calls define:
edge.upstream.define("api", {
  servers = { "10.0.0.1:8080", { "b:80", weight = -1 } },
})

return { respond = function() return { status = 200 } end }
]]

local IN_HOOK = [[
local edge = require "edge"
edge.upstream.define("api", { servers = { "127.0.0.1:9" }, balance = "least_conn" })
edge.upstream.define("web", { servers = { "127.0.0.1:10" } })
local key_err
return {
  cache_key = function(req)
    if req.path == "/key" then
      local ok, err = pcall(edge.upstream.define, "late_key", { servers = { "127.0.0.1:9" } })
      key_err = tostring(ok) .. " " .. tostring(err)
    end
  end,
  respond = function(req)
    local body
    if req.path == "/key" then
      body = key_err
    elseif req.path == "/respond" then
      local ok, err = pcall(function() edge.upstream.define("late", { servers = { "127.0.0.1:9" } }) end)
      body = tostring(ok) .. " " .. tostring(err)
    else
      body = table.concat(edge.upstream.names(), ",") .. " " .. edge.upstream.get("api").balance
        .. " reset=" .. tostring(edge.upstream.reset)
    end
    return { status = 200, body = body .. "\n" }
  end,
}
]]

describe("edge.upstream in the server #e2e", function()
  local dir
  lazy_setup(function() dir = util.tmpdir("upstream") end)

  it("a bad option fails edge -t with file:line, and says which option", function()
    local path = write(dir, "bad.lua", BAD)
    local code, out, err = util.run { util.edge_bin(), "-t", "-s", path }
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("bad.lua:4: edge.upstream.define('api'): servers[2].weight must be a positive " ..
      "integer (at most 100), got -1", 1, true), err)
  end)

  it("a bad option fails start-up with file:line, at once", function()
    local path = write(dir, "bad_start.lua", BAD)
    local t0 = util.now()
    local code, out, err = util.run({ util.edge_bin(), "-s", path, "-l", "127.0.0.1:" .. util.free_port(), "-w", "2" },
      { timeout = 10 })
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("bad_start.lua:4: edge.upstream.define('api'): servers[2].weight", 1, true), err)
    assert.is_true(util.now() - t0 < 5)
  end)

  it("edge -t passes a good definition and warns about tls.verify = false", function()
    local path = write(dir, "noverify.lua", [[
local edge = require "edge"
edge.upstream.define("api", { servers = { "127.0.0.1:8443" }, tls = { verify = false } })
return { respond = function() return { status = 200 } end }
]])
    local code, out, err = util.run { util.edge_bin(), "-t", "-s", path }
    assert.are.equal(0, code, out .. err)
    assert.truthy(err:find("[warn]", 1, true) and err:find("noverify.lua:2: edge.upstream.define('api'): " ..
      "tls.verify = false", 1, true), err)
  end)

  describe("hooks", function()
    local srv
    lazy_setup(function() srv = server.start { script = write(dir, "in_hook.lua", IN_HOOK) } end)
    lazy_teardown(function() server.stop_and_check(srv) end)

    it("see the upstreams the script defined; reset does not exist in the server", function()
      local res = srv:get("/")
      assert.are.equal(200, res.status)
      assert.are.equal("api,web least_conn reset=nil\n", res.body)
    end)

    it("cannot define: in respond it is an error at file:line", function()
      local res = srv:get("/respond")
      assert.are.equal(200, res.status)
      assert.truthy(res.body:find("^false [^\n]*in_hook%.lua:17: edge%.upstream%.define%('late'%): must be " ..
        "called at the script's top level, while it loads %(not from a hook%)"), res.body)
    end)

    it("cannot define: in cache_key it is an error too", function()
      local res = srv:get("/key")
      assert.are.equal(200, res.status)
      assert.truthy(res.body:find("^false [^\n]*edge%.upstream%.define%('late_key'%): must be called at the " ..
        "script's top level"), res.body)
      assert.are.equal("api,web least_conn reset=nil\n", srv:get("/").body, "a failed define in a hook left a definition")
    end)
  end)

  describe("reload", function()
    local srv, path
    lazy_setup(function()
      path = write(dir, "reload.lua", [[
local edge = require "edge"
edge.upstream.define("one", { servers = { "127.0.0.1:9" } })
return { respond = function() return { status = 200, body = table.concat(edge.upstream.names(), ",") } end }
]])
      srv = server.start { script = path, workers = 2 }
    end)
    lazy_teardown(function() server.stop_and_check(srv) end)

    local function reloads()
      local n = 0
      for _ in srv:log():gmatch(" reloaded") do n = n + 1 end
      return n
    end

    local function wait_reloads(n)
      local deadline = util.now() + 5
      while reloads() < n and util.now() < deadline do util.sleep(0.05) end
      return reloads() >= n
    end

    it("builds the new script's upstreams; a bad define keeps the old ones", function()
      assert.are.equal("one", srv:get("/").body)
      util.write_file(path .. ".tmp", [[
local edge = require "edge"
edge.upstream.define("one", { servers = { "127.0.0.1:9" } })
edge.upstream.define("two", { servers = { "127.0.0.1:10" } })
return { respond = function() return { status = 200, body = table.concat(edge.upstream.names(), ",") } end }
]])
      assert(os.rename(path .. ".tmp", path))
      srv:signal("HUP")
      assert.is_true(wait_reloads(2), "no reload:\n" .. srv:log_tail())
      for _ = 1, 4 do assert.are.equal("one,two", srv:get("/").body) end

      util.write_file(path .. ".tmp", [[
local edge = require "edge"
edge.upstream.define("three", { servers = { "127.0.0.1:9" }, balance = "fastest" })
return { respond = function() return { status = 200, body = "three" } end }
]])
      assert(os.rename(path .. ".tmp", path))
      srv:signal("HUP")
      assert.truthy(srv:wait_log("reload failed[^\n]*reload%.lua:2: edge%.upstream%.define%('three'%): balance", 5),
        srv:log_tail())
      for _ = 1, 4 do assert.are.equal("one,two", srv:get("/").body) end
    end)
  end)
end)
