-- Shared dictionaries in the real server (#e2e): edge -w 2 serving
-- spec/fixtures/shared_dict.lua. Concurrent incr from many clients over both
-- workers sums exactly; --shared-dict makes a dict before the script loads;
-- values survive a SIGHUP reload; a reload that changes a dict's size is
-- refused and logged (the old script keeps serving); the same conflict at
-- start-up exits 1; /metrics shows each dict's bytes, capacity, keys and
-- evictions.
local admin = require "support.admin"
local proc = require "support.proc"
local server = require "support.server"
local util = require "support.util"

local FIXTURE = "spec/fixtures/shared_dict.lua"

local function body(res)
  return res and res.body and res.body:gsub("\n$", "")
end

--- The fixture with VERSION and the size of counts replaced.
local function fixture(version, counts_size)
  local text = util.read_file(FIXTURE)
  text = text:gsub('local VERSION = "v1"', 'local VERSION = "' .. version .. '"', 1)
  return (text:gsub('define%("counts", "1m"%)', 'define("counts", "' .. counts_size .. '")', 1))
end

--- Writes text to path atomically (a reload must never read half a file).
local function install(path, text)
  util.write_file(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

--- h2load's 2xx count.
local function h2load_ok(out)
  return tonumber(out:match("status codes: (%d+) 2xx"))
end

describe("shared dicts in the server #e2e", function()
  local srv, aport, dir, path

  lazy_setup(function()
    dir = util.tmpdir("shdict")
    path = dir .. "/app.lua"
    install(path, fixture("v1", "1m"))
    aport = util.free_port()
    srv = server.start { script = path, workers = 2,
                         args = { "--admin", "127.0.0.1:" .. aport, "--shared-dict", "cli:64k" } }
    assert.truthy(util.wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5),
      "no admin listener:\n" .. srv:log_tail())
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function get(p) return body(srv:get(p)) end

  it("sums concurrent incr from 40 clients over both workers exactly", function()
    local N = 4000
    local load = proc.spawn({ "h2load", "-n", tostring(N), "-c", "40", "-m", "4", srv:url("/incr") },
      { timeout = 60 })
    assert.are.equal(0, load:wait(60), "h2load: " .. load:stdout() .. load:stderr())
    assert.are.equal(N, h2load_ok(load:stdout()), load:stdout())
    assert.are.equal(tostring(N), get("/get?key=hits"))
    local w0, w1 = tonumber(get("/get?key=worker0")), tonumber(get("/get?key=worker1"))
    assert.truthy(w0 and w1 and w0 > 0 and w1 > 0, "both workers must count: " .. tostring(w0) .. " " .. tostring(w1))
    assert.are.equal(N, w0 + w1)
  end)

  it("--shared-dict makes a dict the script finds as edge.shared.NAME, in every worker", function()
    assert.are.equal("hello 65536", get("/cli?value=hello"))
    for _ = 1, 6 do assert.are.equal("hello 65536", get("/cli")) end
  end)

  it("/metrics shows each dict's bytes, capacity, keys and evictions", function()
    local forced = tonumber(get("/fill?n=40"))
    assert.truthy(forced and forced > 0, "no eviction in the 2k dict")
    local m, text = admin.scrape(aport)
    assert.are.equal(1048576, admin.value(m, 'edge_shared_dict_capacity_bytes{dict="counts"}'))
    assert.are.equal(2048, admin.value(m, 'edge_shared_dict_capacity_bytes{dict="tiny"}'))
    assert.are.equal(65536, admin.value(m, 'edge_shared_dict_capacity_bytes{dict="cli"}'))
    local keys = admin.value(m, 'edge_shared_dict_keys{dict="counts"}')
    assert.is_true(keys >= 3, "counts holds hits, worker0, worker1")
    local bytes = admin.value(m, 'edge_shared_dict_bytes{dict="counts"}')
    assert.is_true(bytes > 0 and bytes < 1048576)
    assert.are.equal(forced, admin.value(m, 'edge_shared_dict_evictions_total{dict="tiny"}'))
    assert.are.equal(0, admin.value(m, 'edge_shared_dict_evictions_total{dict="counts"}'))
    assert.is_true(admin.value(m, 'edge_shared_dict_bytes{dict="tiny"}') <= 2048)
    assert.truthy(text:find("# TYPE edge_shared_dict_evictions_total counter", 1, true), text)
    assert.truthy(text:find("# TYPE edge_shared_dict_bytes gauge", 1, true), text)
  end)

  it("keeps values across a SIGHUP reload; a size change is refused and logged", function()
    assert.are.equal("true", get("/set?key=kept&value=across"))
    install(path, fixture("v2", "1m"))
    srv:signal("HUP")
    assert.truthy(srv:wait_log("reloaded", 5), srv:log_tail())
    assert.truthy(util.wait_until(function()
      for _ = 1, 4 do if get("/version") ~= "v2" then return false end end
      return true
    end, 5), "the reload did not take:\n" .. srv:log_tail())
    for _ = 1, 4 do assert.are.equal("across", get("/get?key=kept")) end
    assert.are.equal("hello 65536", get("/cli"))

    install(path, fixture("v3", "2m"))
    srv:signal("HUP")
    local line = srv:wait_log("reload failed[^\n]*", 5)
    assert.truthy(line, srv:log_tail())
    assert.truthy(line:find("shared dict 'counts' is already defined with 1048576 bytes, not 2097152", 1, true), line)
    for _ = 1, 4 do
      assert.are.equal("v2", get("/version"))
      assert.are.equal("across", get("/get?key=kept"))
    end
  end)
end)

describe("shared dict sizes at start-up #e2e", function()
  it("a script redefining a --shared-dict with another size exits 1 with the message", function()
    local code, out, err = util.run({ util.edge_bin(), "-s", FIXTURE, "-l", "127.0.0.1:" .. util.free_port(),
                                      "-w", "2", "--shared-dict", "counts:2m" }, { timeout = 10 })
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("shared_dict.lua:7: edge.shared.define: shared dict 'counts' is already defined with " ..
      "2097152 bytes, not 1048576: changing its size needs a restart", 1, true), err)
  end)

  it("a bad --shared-dict is a usage error (exit 2)", function()
    for _, arg in ipairs { "nosize", "x:10q", "bad name:1m", "x:100" } do
      local code, out, err = util.run { util.edge_bin(), "-t", "-s", FIXTURE, "--shared-dict", arg }
      assert.are.equal(2, code, arg .. ": " .. out .. err)
      assert.truthy(err:find("invalid value '" .. arg .. "' for --shared-dict", 1, true), err)
    end
  end)
end)
