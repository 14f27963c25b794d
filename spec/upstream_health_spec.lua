-- End-to-end specs for active health checks of named upstreams
-- (health.active): real origins (a second edge on --listen-plain running
-- spec/fixtures/health_origin.lua, whose /healthz answers what a file says;
-- the misbehaving origin of spec/support/bad_origin.lua), edge running
-- spec/fixtures/upstream_health.lua with two workers and an admin listener.
-- What the checks decide is observed through the error log ("down after",
-- "up after"), the metric edge_upstream_server_up and the origins' request
-- counts (named-upstream edge.fetch is wired by another change).
local server = require "support.server"
local admin = require "support.admin"
local origin = require "support.origin"
local util = require "support.util"

local ORIGIN = "spec/fixtures/health_origin.lua"
local PROXY = "spec/fixtures/upstream_health.lua"

local function free_port_pair()
  local a = util.free_port()
  for _ = 1, 20 do
    local b = util.free_port()
    if b ~= a then return a, b end
  end
  error("no second free port")
end

--- An origin edge; its /healthz answers the status in its own file.
local function start_origin(dir, name)
  local status_file = dir .. "/" .. name .. ".status"
  util.write_file(status_file, "200")
  local o = server.start { script = ORIGIN, plain = true, env = { HEALTH_STATUS_FILE = status_file } }
  o.status_file = status_file
  o.addr_port = "127.0.0.1:" .. o.plain_port
  return o
end

local function set_health(o, status)
  util.write_file(o.status_file .. ".tmp", tostring(status))
  assert(os.rename(o.status_file .. ".tmp", o.status_file))
end

--- How many requests for path the origin answered (nil when it is gone).
local function count(o, path)
  local res = o:get("/count?p=" .. path, { plain = true, timeout = 2 })
  return res and res.status == 200 and tonumber(res.body) or nil
end

--- Writes the upstreams' options (a Lua chunk) through a rename.
local function write_conf(path, text)
  util.write_file(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

local function upstream_conf(name, servers, active)
  local list = {}
  for _, s in ipairs(servers) do list[#list + 1] = string.format("%q", s) end
  return string.format("%s = { servers = { %s }, health = { active = %s } },", name, table.concat(list, ", "), active)
end

local function start_proxy(conf_path)
  local port, aport = free_port_pair()
  local srv = server.start { script = PROXY, port = port, workers = 2, env = { HC_CONF = conf_path },
                             args = { "--admin", "127.0.0.1:" .. aport } }
  assert(util.wait_until(function()
    local ok = pcall(admin.scrape, aport)
    return ok
  end, 5), "the admin listener never answered:\n" .. srv:log_tail())
  return srv, aport
end

local function server_up(aport, upstream, addr)
  local m = admin.scrape(aport)
  return admin.value(m, string.format('edge_upstream_server_up{upstream="%s",server="%s"}', upstream, addr))
end

--- Occurrences of a plain string in the proxy's log.
local function log_count(srv, needle)
  return util.count(srv:log(), needle)
end

describe("upstream health: active checks #e2e", function()
  local dir, a, b, c, bad, proxy, aport, conf

  lazy_setup(function()
    dir = util.tmpdir("health")
    a = start_origin(dir, "a")
    b = start_origin(dir, "b")
    c = start_origin(dir, "c")
    bad = origin.bad()
    conf = dir .. "/upstreams.lua"
    write_conf(conf, "return {\n" ..
      upstream_conf("api", { a.addr_port, b.addr_port, c.addr_port },
        '{ path = "/healthz", interval = 0.2, rise = 2, fall = 3, timeout = 0.5 }') .. "\n" ..
      upstream_conf("slow", { "127.0.0.1:" .. bad.port },
        '{ path = "/never", interval = 0.2, rise = 1, fall = 2, timeout = 0.3 }') .. "\n" ..
      upstream_conf("malformed", { "127.0.0.1:" .. bad.port },
        '{ path = "/bad-status", interval = 0.2, rise = 1, fall = 2, timeout = 0.5 }') .. "\n" ..
      "}\n")
    proxy, aport = start_proxy(conf)
  end)

  lazy_teardown(function()
    local rc = proxy and proxy:stop()
    for _, o in ipairs({ a, b, c }) do if o then o:stop() end end
    if bad then bad:stop() end
    if proxy then
      assert.is_nil(proxy:sanitizer_report(), "sanitizer report:\n" .. proxy:log_tail(80))
      assert.are.equal(0, rc, proxy:log_tail(40))
    end
  end)

  it("checks every server every interval with GET path from each worker, and reports it up", function()
    local before = count(a, "/healthz")
    util.sleep(1.1)
    local grew = count(a, "/healthz") - before
    -- 2 workers, every 0.2 s: about 11 checks in 1.1 s; allow for scheduling noise
    assert.is_true(grew >= 5 and grew <= 20, "origin a got " .. grew .. " checks in 1.1 s")
    assert.are.equal(1, server_up(aport, "api", a.addr_port))
    assert.are.equal(1, server_up(aport, "api", b.addr_port))
    local _, text = admin.scrape(aport)
    assert.truthy(text:find("# TYPE edge_upstream_server_up gauge\n", 1, true), text)
    if util.run({ "sh", "-c", "command -v promtool" }) == 0 then
      local rc, out, err = util.run({ "promtool", "check", "metrics" }, { stdin = text, timeout = 20 })
      assert.are.equal(0, rc, "promtool check metrics failed:\n" .. out .. err .. "\n--- metrics ---\n" .. text)
    end
  end)

  it("a server whose /healthz answers 500 is taken out after fall failed checks and back after rise passes", function()
    local down = "upstream api: server " .. a.addr_port .. " down after 3 failed checks: status 500"
    local up = "upstream api: server " .. a.addr_port .. " up after 2 passed checks"
    assert.are.equal(0, log_count(proxy, down))
    set_health(a, 500)
    assert.truthy(util.wait_until(function() return log_count(proxy, down) == 2 end, 5),
      "no 'down' line from each worker:\n" .. proxy:log_tail())
    assert.are.equal(0, server_up(aport, "api", a.addr_port))
    assert.are.equal(1, server_up(aport, "api", b.addr_port))
    assert.is_truthy(proxy:log():find("%[warn%][^\n]*" .. down:gsub("%p", "%%%0")),
      "the down line is not at warn:\n" .. proxy:log_tail())
    -- it stays down while its checks keep failing
    util.sleep(0.6)
    assert.are.equal(0, server_up(aport, "api", a.addr_port))
    assert.are.equal(0, log_count(proxy, up))
    set_health(a, 200)
    assert.truthy(util.wait_until(function() return log_count(proxy, up) == 2 end, 5),
      "no 'up' line from each worker:\n" .. proxy:log_tail())
    assert.truthy(util.wait_until(function() return server_up(aport, "api", a.addr_port) == 1 end, 2))
  end)

  it("a 3xx answer passes, a 404 fails", function()
    set_health(b, 302)
    util.sleep(1)
    assert.are.equal(1, server_up(aport, "api", b.addr_port))
    set_health(b, 404)
    assert.truthy(util.wait_until(function()
      return log_count(proxy, "server " .. b.addr_port .. " down after 3 failed checks: status 404") == 2
    end, 5), proxy:log_tail())
    set_health(b, 200)
    assert.truthy(util.wait_until(function() return server_up(aport, "api", b.addr_port) == 1 end, 5))
  end)

  it("a server that never answers within timeout, and one that answers garbage, are down", function()
    local slow = "upstream slow: server 127.0.0.1:" .. bad.port .. " down after 2 failed checks: no answer within 0.3 s"
    local garbage = "upstream malformed: server 127.0.0.1:" .. bad.port .. " down after 2 failed checks"
    assert.truthy(util.wait_until(function() return log_count(proxy, slow) == 2 end, 5), proxy:log_tail())
    assert.truthy(util.wait_until(function() return log_count(proxy, garbage) == 2 end, 5), proxy:log_tail())
    assert.are.equal(0, server_up(aport, "slow", "127.0.0.1:" .. bad.port))
    assert.are.equal(0, server_up(aport, "malformed", "127.0.0.1:" .. bad.port))
  end)

  it("a stopped origin is detected as down (connect refused)", function()
    local addr = c.addr_port
    c:stop()
    c = nil
    local down = "upstream api: server " .. addr .. " down after 3 failed checks: connect refused"
    assert.truthy(util.wait_until(function() return log_count(proxy, down) == 2 end, 5), proxy:log_tail())
    assert.are.equal(0, server_up(aport, "api", addr))
  end)

  it("a reload stops the old script's checks, even while a request keeps the old VM, and starts the new one's", function()
    local conf_text = util.read_file(conf)
    local v2, n = conf_text:gsub('path = "/healthz"', 'path = "/healthz-v2"')
    assert.are.equal(1, n)
    write_conf(conf, v2)
    -- a request sleeping 3 s keeps its worker's old VM alive (retired) across the reload
    local curl = io.popen("curl -sk --max-time 6 " .. proxy:url("/sleep?s=3") .. " 2>/dev/null")
    util.sleep(0.2)
    local reloads = log_count(proxy, "reloaded")
    proxy:signal("HUP")
    assert.truthy(util.wait_until(function() return log_count(proxy, "reloaded") >= reloads + 2 end, 5),
      proxy:log_tail())
    util.sleep(0.3)     -- a check sent just before the reload may still be answered
    local old = count(a, "/healthz")
    local new = count(a, "/healthz-v2")
    util.sleep(1)
    assert.are.equal(old, count(a, "/healthz"), "the old script's checks went on after the reload")
    assert.is_true(count(a, "/healthz-v2") >= new + 4, "the new script's checks did not start")
    assert.are.equal(1, server_up(aport, "api", a.addr_port))
    local body = curl:read("a")
    curl:close()
    assert.are.equal("ok\n", body, "the request on the old VM did not finish")
  end)
end)

describe("upstream health: drain #e2e", function()
  it("SIGTERM stops every check at once, even while requests drain", function()
    local dir = util.tmpdir("health-drain")
    local a = start_origin(dir, "a")
    local conf = dir .. "/upstreams.lua"
    write_conf(conf, "return {\n" .. upstream_conf("api", { a.addr_port },
      '{ path = "/healthz", interval = 0.1, rise = 1, fall = 1, timeout = 0.5 }') .. "\n}\n")
    local proxy = start_proxy(conf)
    local ok, err = pcall(function()
      assert.truthy(util.wait_until(function() return (count(a, "/healthz") or 0) >= 4 end, 5))
      -- a request that sleeps 2 s keeps the workers draining after SIGTERM
      local curl = io.popen("curl -sk --max-time 5 " .. proxy:url("/sleep") .. " 2>/dev/null")
      util.sleep(0.3)
      proxy:signal("TERM")
      util.sleep(0.3)      -- a check in flight at the signal is cancelled, not answered later
      local at_term = count(a, "/healthz")
      util.sleep(1)
      assert.is_true(proxy:running(), "edge did not wait for the sleeping request")
      assert.are.equal(at_term, count(a, "/healthz"), "checks went on during the drain")
      local body = curl:read("a")
      curl:close()
      assert.are.equal("ok\n", body)
    end)
    local rc = proxy:stop()
    a:stop()
    assert(ok, err)
    assert.is_nil(proxy:sanitizer_report(), proxy:log_tail(80))
    assert.are.equal(0, rc, proxy:log_tail(40))
  end)
end)

describe("upstream health: what edge.fetch and /metrics see #e2e", function()
  local dir, a, b, proxy, aport

  lazy_setup(function()
    dir = util.tmpdir("health-fetch")
    a = start_origin(dir, "a")
    b = start_origin(dir, "b")
    local conf = dir .. "/upstreams.lua"
    -- one try per request and no passive health: only the active checks can keep a server out
    write_conf(conf, string.format([[
return { pair = { servers = { %q, %q }, retries = { tries = 1 },
                  health = { passive = { max_fails = 0 },
                             active = { path = "/healthz", interval = 0.2, rise = 1, fall = 1, timeout = 0.5 } } } }
]], a.addr_port, b.addr_port))
    proxy, aport = start_proxy(conf)
  end)

  lazy_teardown(function()
    local rc = proxy and proxy:stop()
    for _, o in ipairs({ a, b }) do if o then o:stop() end end
    if proxy then
      assert.is_nil(proxy:sanitizer_report(), "sanitizer report:\n" .. proxy:log_tail(80))
      assert.are.equal(0, rc, proxy:log_tail(40))
    end
  end)

  local function metric(key)
    return admin.value(admin.scrape(aport), key) or 0
  end

  local function fetch_through(n)
    for _ = 1, n do
      local res = proxy:get("/fetch?up=pair&p=/x", { timeout = 5 })
      assert.are.equal(200, res and res.status, res and res.body)
      assert.are.equal("origin\n", res.body)
    end
  end

  it("health checks count in edge_upstream_health_checks_total, never in the request metrics", function()
    assert.truthy(util.wait_until(function()
      return metric('edge_upstream_health_checks_total{upstream="pair",result="pass"}') >= 8
    end, 5), proxy:log_tail())
    assert.is_true((count(a, "/healthz") or 0) >= 4)
    for _, code in ipairs({ "2xx", "5xx", "error" }) do
      assert.are.equal(0, metric('edge_upstream_requests_total{upstream="",code="' .. code .. '"}'), code)
      assert.are.equal(0, metric('edge_upstream_requests_total{upstream="pair",code="' .. code .. '"}'), code)
    end
    assert.are.equal(0, metric("edge_upstream_connections_opened_total"))
    assert.are.equal(0, metric("edge_upstream_response_seconds_count"))
    assert.are.equal(0, metric('edge_upstream_health_checks_total{upstream="pair",result="fail"}'))
    -- a failing check counts as such; the script's own fetches count as requests
    set_health(a, 503)
    assert.truthy(util.wait_until(function()
      return metric('edge_upstream_health_checks_total{upstream="pair",result="fail"}') >= 2
    end, 5), proxy:log_tail())
    fetch_through(4)
    assert.are.equal(4, metric('edge_upstream_requests_total{upstream="pair",code="2xx"}'))
    assert.are.equal(0, metric('edge_upstream_requests_total{upstream="",code="5xx"}'))
    assert.are.equal(0, metric('edge_upstream_requests_total{upstream="pair",code="5xx"}'))
    set_health(a, 200)
    local _, text = admin.scrape(aport)
    assert.truthy(text:find("# TYPE edge_upstream_health_checks_total counter\n", 1, true), text)
    if util.run({ "sh", "-c", "command -v promtool" }) == 0 then
      local rc, out, err = util.run({ "promtool", "check", "metrics" }, { stdin = text, timeout = 20 })
      assert.are.equal(0, rc, "promtool check metrics failed:\n" .. out .. err .. "\n--- metrics ---\n" .. text)
    end
  end)

  it("edge.fetch sends nothing to a server its checks took out while another is up, and uses it again once up", function()
    local down = "upstream pair: server " .. a.addr_port .. " down after 1 failed checks"
    local up = "upstream pair: server " .. a.addr_port .. " up after 1 passed checks"
    -- the previous spec's round of 503s is over: each worker has a back up
    assert.truthy(util.wait_until(function() return log_count(proxy, up) == log_count(proxy, down) end, 5))
    local ups, downs = log_count(proxy, up), log_count(proxy, down)
    set_health(a, 500)
    assert.truthy(util.wait_until(function() return log_count(proxy, down) >= downs + 2 end, 5),
      "no 'down' line from each worker:\n" .. proxy:log_tail())
    local a_before, b_before = count(a, "/x"), count(b, "/x")
    fetch_through(20)
    assert.are.equal(a_before, count(a, "/x"), "a server down by its checks got requests")
    assert.are.equal(b_before + 20, count(b, "/x"))
    set_health(a, 200)
    assert.truthy(util.wait_until(function() return log_count(proxy, up) >= ups + 2 end, 5),
      "no 'up' line from each worker:\n" .. proxy:log_tail())
    a_before = count(a, "/x")
    fetch_through(20)
    assert.is_true(count(a, "/x") - a_before >= 5, "the server back up got no share of the requests")
  end)
end)
