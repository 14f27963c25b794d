-- Cache gauges count live entries (issue 10.6): expired entries are never
-- served, and a sweep (worker 0, every second) frees them, so
-- edge_cache_entries and edge_cache_bytes fall back once entries expire.
local server = require "support.server"
local client = require "support.client"
local util = require "support.util"
local admin = require "support.admin"

local CACHE = "spec/fixtures/cache.lua"

local wait_until = util.wait_until

describe("cache sweep #e2e", function()
  local srv, aport

  lazy_setup(function()
    aport = util.free_port()
    srv = server.start { script = CACHE, workers = 2, args = { "--admin", "127.0.0.1:" .. aport } }
    assert.truthy(wait_until(function() return admin.get(aport, "/healthz") == 200 end, 5))
  end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  it("drops expired entries from the gauges within seconds, and keeps fresh ones", function()
    -- One curl for the 40 entries of 1 s: filled well within their second.
    local argv = { "curl", "-sk", "--http1.1", "--max-time", "10", "-w", "%{http_code}\n" }
    for i = 1, 40 do
      for _, a in ipairs { "-o", "/dev/null", srv:url("/ttl1/sweep" .. i) } do argv[#argv + 1] = a end
    end
    local _, out = util.run(argv, { timeout = 15 })
    assert.are.equal(40, util.count(out, "200\n"), out)
    local status = client.curl { "--http1.1", srv:url("/plain/stays") }   -- --cache-ttl 60
    assert.are.equal(200, status)
    local m = admin.scrape(aport)
    -- Most are still counted (a slow machine may have swept a few already).
    assert.is_true(admin.value(m, "edge_cache_entries") > 10, tostring(admin.value(m, "edge_cache_entries")))
    local fresh_bytes
    -- ttl = 1 s; a sweep a second: gone within about 2 s, never looked up again.
    local swept = wait_until(function()
      local s = admin.scrape(aport)
      fresh_bytes = admin.value(s, "edge_cache_bytes")
      return admin.value(s, "edge_cache_entries") == 1
    end, 4)
    assert.truthy(swept, "expired entries still counted 4 s after they expired: "
      .. tostring(admin.value(admin.scrape(aport), "edge_cache_entries")))
    assert.is_true(fresh_bytes > 0 and fresh_bytes < 4096, "bytes " .. tostring(fresh_bytes))
    local _, headers = client.curl { "--http1.1", srv:url("/plain/stays") }
    assert.are.equal("HIT", headers["x-cache"])
  end)
end)
