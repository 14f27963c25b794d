-- Runs the C property test of the balancer (spec/c/balancer_test.c against
-- src/balancer.c): smooth weighted round robin (5,1,1 gives a a b a c a a,
-- and 5000/1000/1000 of 7000), least connections with weights, consistent
-- hashing (a 5th server moves 12..28 % of 10,000 keys, all to itself;
-- removing one moves only its keys), the tried set, the retry cap and
-- passive health. `make balancer-test` (a prerequisite of `make test`)
-- builds it plainly and under AddressSanitizer + UBSan. No server involved,
-- so this runs in the first pass only (the binaries carry their own
-- sanitizers).
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
  assert(util.exists(bin), bin .. " is missing: build it with `make balancer-test` (make test does)")
  local code, out, err = util.run({ bin }, { timeout = TIMEOUT })
  local text = out .. err
  assert.are.equal(0, #sanitizer_lines(text), "sanitizer report:\n" .. text:sub(1, 6000))
  assert.falsy(text:find("FAIL", 1, true), text:sub(1, 6000))
  assert.are.equal(0, code, bin .. " exited " .. tostring(code) .. ":\n" .. text:sub(1, 6000))
  assert.truthy(text:find("balancer_test: ok:", 1, true), "no success line:\n" .. text:sub(1, 6000))
end

describe("balancer: choosing a server (C)", function()
  it("holds every balancing, hashing, retry and health property", function()
    check("build/test/balancer_test")
  end)

  it("holds them under AddressSanitizer + UBSan (no overflow, no leak, no undefined behaviour)", function()
    check("build/test/balancer_test_asan")
  end)
end)
