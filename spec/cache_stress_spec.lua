-- Runs the C stress test of the cache (spec/c/cache_stress.c): 8 threads
-- hammering one shard with get/stale look-up/put/release, purges (exact, by
-- key with derived keys, by tag, by prefix; hard and soft) and flight
-- join/try-lead/done/leave, checking held entries stay intact (expiry
-- included) while evicted or purged, and that purge counts add up.
-- `make cache-stress` (a prerequisite of `make test`) builds it twice: under
-- ThreadSanitizer and under AddressSanitizer + UBSan. No server involved, so
-- this runs in the first pass only (the binaries carry their own sanitizers).
local util = require "support.util"

local SECONDS = 3          -- the hammer phase; the whole run is bounded by TIMEOUT
local TIMEOUT = 30

local function uname_m()
  local p = io.popen("uname -m")
  local m = p and p:read("l")
  if p then p:close() end
  return m or "x86_64"
end

--- Runs a stress binary; returns exit code and the combined output.
local function run(bin, under_setarch)
  local argv = { bin, tostring(SECONDS) }
  if under_setarch then argv = { "setarch", uname_m(), "-R", bin, tostring(SECONDS) } end
  local code, out, err = util.run(argv, { timeout = TIMEOUT })
  return code, out .. err
end

local function sanitizer_lines(text)
  local found = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("WARNING: ThreadSanitizer", 1, true) or line:find("ERROR: AddressSanitizer", 1, true)
      or line:find("ERROR: LeakSanitizer", 1, true) or line:find("runtime error:", 1, true)
      or line:find("FATAL: ThreadSanitizer", 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

local function check(bin, name)
  assert(util.exists(bin), bin .. " is missing: build it with `make cache-stress` (make test does)")
  local t0 = util.now()
  local code, out = run(bin)
  -- Some kernels map memory where TSan's fixed layout expects none; it then
  -- refuses to start ("unexpected memory mapping"). Retry with ASLR off.
  if name == "tsan" and out:find("unexpected memory mapping", 1, true) then
    code, out = run(bin, true)
  end
  local took = util.now() - t0
  local report = sanitizer_lines(out)
  assert.are.equal(0, #report, name .. " report:\n" .. out:sub(1, 6000))
  assert.are.equal(0, code, name .. " exited " .. tostring(code) .. ":\n" .. out:sub(1, 6000))
  assert.truthy(out:find("cache_stress: ok:", 1, true), "no success line:\n" .. out:sub(1, 6000))
  assert.falsy(out:find("FAIL", 1, true), out)
  assert.is_true(took < TIMEOUT, name .. " took " .. took .. " s")
end

describe("cache stress: 8 threads on one shard (C)", function()
  it("holds every invariant under ThreadSanitizer (no data race reported)", function()
    check("build/test/cache_stress_tsan", "tsan")
  end)

  it("holds every invariant under AddressSanitizer + UBSan (no use after free, no leak)", function()
    check("build/test/cache_stress_asan", "asan")
  end)
end)
