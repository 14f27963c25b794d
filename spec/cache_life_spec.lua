-- Runs the C property test of the cache's lifetimes, tags and purges
-- (spec/c/cache_life_test.c against src/cache.c, cache_tags.c and
-- cache_purge.c): fresh / grace / keep / gone across time, look-ups with
-- and without stale entries and what counts as a hit, sweeps; soft and hard
-- purges by key, prefix and tag, with derived keys (Vary variants,
-- compressed copies) purged with their base key and only theirs; tags read
-- from Surrogate-Key and Cache-Tag with their limits; byte accounting back
-- to 0; edge_cache_flight_try_lead. `make cache-life-test` (a prerequisite
-- of `make test`) builds it plainly and under AddressSanitizer + UBSan. No
-- server involved, so this runs in the first pass only (the binaries carry
-- their own sanitizers).
local util = require "support.util"

local TIMEOUT = 30

local function sanitizer_lines(text)
  local found = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("ERROR: AddressSanitizer", 1, true) or line:find("ERROR: LeakSanitizer", 1, true)
      or line:find("runtime error:", 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

local function check(bin)
  assert(util.exists(bin), bin .. " is missing: build it with `make cache-life-test` (make test does)")
  local code, out, err = util.run({ bin }, { timeout = TIMEOUT })
  local text = out .. err
  assert.are.equal(0, #sanitizer_lines(text), "sanitizer report:\n" .. text:sub(1, 6000))
  assert.falsy(text:find("FAIL", 1, true), text:sub(1, 6000))
  assert.are.equal(0, code, bin .. " exited " .. tostring(code) .. ":\n" .. text:sub(1, 6000))
  assert.truthy(text:find("cache_life_test: ok:", 1, true), "no success line:\n" .. text:sub(1, 6000))
end

describe("cache: lifetimes, tags and purges (C)", function()
  it("holds every lifetime, purge, tag and byte-accounting property", function()
    check("build/test/cache_life_test")
  end)

  it("holds them under AddressSanitizer + UBSan (no overflow, no leak, no undefined behaviour)", function()
    check("build/test/cache_life_test_asan")
  end)
end)
