-- edge.shared in plain busted: the real C (src/shared_dict.c, src/lua_shared.c
-- in build/lua/edge.so). Every method and its OpenResty return values, TTLs on
-- the virtual clock (edge.testing.clock), LRU eviction with forcible, safe_*'s
-- "no memory", incr's init/init_ttl, get_keys, flush_all/flush_expired and the
-- errors for bad arguments. Dicts are the process's: each test uses its own
-- names, so nothing leaks from one test into the next.
local edge = require "edge"
local clock = require "edge.testing.clock"
local util = require "support.util"

local seq = 0
--- A new dict with a name no other test uses.
local function fresh(size)
  seq = seq + 1
  return edge.shared.define("unit" .. seq, size or "1m"), "unit" .. seq
end

--- The bytes one key of klen bytes with a vlen-byte string takes, measured.
local function node_bytes(klen, vlen)
  local d = fresh("64k")
  local before = d:free_space()
  d:set(string.rep("k", klen), string.rep("v", vlen))
  return before - d:free_space()
end

before_each(function() clock.set(1000) end)

describe("edge.shared.define", function()
  it("returns the dict, also reachable as edge.shared.NAME and edge.shared[name]", function()
    local d = edge.shared.define("unit_named", "512k")
    assert.are.equal(d, edge.shared.unit_named)
    assert.are.equal(d, edge.shared["unit_named"])
    assert.are.equal("edge.shared.dict: unit_named", tostring(d))
    assert.are.equal(512 * 1024, d:capacity())
    assert.is_nil(edge.shared.never_defined)
    assert.is_nil(edge.shared[42])
  end)

  it("takes sizes as bytes, k, m or g, as a string or a number", function()
    assert.are.equal(10 * 1048576, edge.shared.define("unit_10m", "10m"):capacity())
    assert.are.equal(4096, edge.shared.define("unit_4096", 4096):capacity())
    assert.are.equal(2048, edge.shared.define("unit_2k", "2K"):capacity())
  end)

  it("with the same size returns the same dict, contents kept (a reload)", function()
    local d = edge.shared.define("unit_again", "1m")
    d:set("kept", "yes")
    local again = edge.shared.define("unit_again", 1048576)
    assert.are.equal(d, again)
    assert.are.equal("yes", again:get("kept"))
  end)

  it("with another size raises, naming both sizes", function()
    edge.shared.define("unit_sized", "1m")
    local ok, err = pcall(edge.shared.define, "unit_sized", "2m")
    assert.is_false(ok)
    assert.truthy(err:find("shared dict 'unit_sized' is already defined with 1048576 bytes, not 2097152: " ..
      "changing its size needs a restart", 1, true), err)
  end)

  it("refuses bad sizes and names clearly", function()
    local cases = {
      { { "unit_bad", "10q" }, "edge.shared.define: bad size '10q' for 'unit_bad'" },
      { { "unit_bad", "-1" }, "bad size '-1'" },
      { { "unit_bad", "" }, "bad size ''" },
      { { "unit_bad", "100" }, "bad size for shared dict 'unit_bad': 100 bytes, expected 1k to 1024g" },
      { { "unit_bad", 0 }, "size must be > 0" },
      { { "bad name", "1m" }, "bad shared dict name 'bad name'" },
      { { "", "1m" }, "bad shared dict name ''" },
      { { "define", "1m" }, "(and not 'define')" },
      { { "unit_bad", {} }, "string expected, got table" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(edge.shared.define, table.unpack(c[1]))
      assert.is_false(ok, "accepted " .. tostring(c[1][1]) .. " " .. tostring(c[1][2]))
      assert.truthy(tostring(err):find(c[2], 1, true), "want: " .. c[2] .. "\ngot: " .. tostring(err))
    end
    assert.is_nil(edge.shared.unit_bad)
  end)

  it("is read-only: assigning a field raises", function()
    local ok, err = pcall(function() edge.shared.x = 1 end)
    assert.is_false(ok)
    assert.truthy(err:find("edge.shared is read-only", 1, true), err)
  end)
end)

describe("get and set", function()
  it("store strings, numbers and booleans, and give them back as they were", function()
    local d = fresh()
    local big = string.rep("0123456789", 300) .. "\0end"    -- past the 512-byte fast path
    for _, v in ipairs { "hello", "", "a\0b", big, 42, -7, 3.25, 1e300, true, false } do
      local ok, err, forcible = d:set("k", v)
      assert.are.same({ true, nil, false }, { ok, err, forcible })
      assert.are.equal(v, d:get("k"))
      assert.are.equal(math.type(v), math.type(d:get("k")))
    end
  end)

  it("get of a missing key is nil (one value); set to nil deletes", function()
    local d = fresh()
    assert.are.equal(1, select("#", d:get("missing")))
    assert.is_nil(d:get("missing"))
    d:set("k", "v")
    assert.are.same({ true, nil, false }, { d:set("k", nil) })
    assert.is_nil(d:get("k"))
  end)

  it("a number key is its string", function()
    local d = fresh()
    d:set(1, "one")
    assert.are.equal("one", d:get("1"))
  end)

  it("bad keys give nil and OpenResty's message; a table key raises", function()
    local d = fresh()
    assert.are.same({ nil, "nil key" }, { d:get(nil) })
    assert.are.same({ nil, "empty key" }, { d:set("", 1) })
    assert.are.same({ nil, "key too long" }, { d:get(string.rep("k", 65536)) })
    assert.are.same({ true, nil, false }, { d:set(string.rep("k", 65535), 1) })
    local ok, err = pcall(function() return d:get({}) end)
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1 to 'get' (string expected, got table)", 1, true), err)
  end)

  it("bad values and exptimes: nil, 'bad value type'; a negative exptime or flags raise", function()
    local d = fresh()
    assert.are.same({ nil, "bad value type" }, { d:set("k", {}) })
    assert.are.same({ nil, "bad value type" }, { d:set("k", print) })
    local ok, err = pcall(d.set, d, "k", 1, -1)
    assert.is_false(ok)
    assert.truthy(err:find('bad "exptime" argument', 1, true), err)
    ok, err = pcall(d.set, d, "k", 1, 0, 7)
    assert.is_false(ok)
    assert.truthy(err:find("user flags are not supported", 1, true), err)
  end)

  it("a method called without the dict says what it wanted", function()
    local d = fresh()
    local ok, err = pcall(d.get, "k")
    assert.is_false(ok)
    assert.truthy(err:find("edge.shared.dict expected, got string", 1, true), err)
  end)
end)

describe("TTL on the virtual clock", function()
  it("a key lives exptime seconds; then get is nil and get_stale gives it, stale", function()
    local d = fresh()
    d:set("k", "v", 10)
    clock.advance(9.5)
    assert.are.equal("v", d:get("k"))
    assert.are.same({ "v", nil, false }, { d:get_stale("k") })
    assert.is_true(math.abs(d:ttl("k") - 0.5) < 1e-6)
    clock.advance(0.5)
    assert.is_nil(d:get("k"))
    assert.are.same({ "v", nil, true }, { d:get_stale("k") })
    assert.are.same({ nil, "not found" }, { d:ttl("k") })
    assert.is_nil(d:get_stale("never"))
  end)

  it("exptime 0 or none: no expiry, ttl 0", function()
    local d = fresh()
    d:set("a", 1)
    d:set("b", 1, 0)
    clock.advance(1e6)
    assert.are.same({ 1, 1, 0, 0 }, { d:get("a"), d:get("b"), d:ttl("a"), d:ttl("b") })
  end)

  it("expire sets a live key's ttl (0: none); a missing or expired key is not found", function()
    local d = fresh()
    d:set("k", "v", 5)
    assert.is_true(d:expire("k", 100))
    assert.are.equal(100, d:ttl("k"))
    assert.is_true(d:expire("k", 0))
    assert.are.equal(0, d:ttl("k"))
    assert.are.same({ nil, "not found" }, { d:expire("missing", 1) })
    d:set("short", 1, 1)
    clock.advance(2)
    assert.are.same({ nil, "not found" }, { d:expire("short", 10) })
    local ok, err = pcall(d.expire, d, "k")
    assert.is_false(ok)
    assert.truthy(err:find("number expected", 1, true), err)
  end)
end)

describe("add, replace and delete", function()
  it("add only when absent or expired", function()
    local d = fresh()
    assert.are.same({ true, nil, false }, { d:add("k", 1) })
    assert.are.same({ false, "exists", false }, { d:add("k", 2) })
    assert.are.equal(1, d:get("k"))
    d:set("t", "old", 1)
    clock.advance(1)
    assert.are.same({ true, nil, false }, { d:add("t", "new") })
    assert.are.equal("new", d:get("t"))
    assert.are.same({ nil, "attempt to add or replace nil values" }, { d:add("n", nil) })
  end)

  it("replace only when present and live", function()
    local d = fresh()
    assert.are.same({ false, "not found", false }, { d:replace("k", 1) })
    assert.is_nil(d:get("k"))
    d:set("k", 1)
    assert.are.same({ true, nil, false }, { d:replace("k", "two") })
    assert.are.equal("two", d:get("k"))
    d:set("t", 1, 1)
    clock.advance(1)
    assert.are.same({ false, "not found", false }, { d:replace("t", 2) })
    assert.are.same({ nil, "attempt to add or replace nil values" }, { d:replace("k", nil) })
  end)

  it("delete removes (expired keys too) and returns true", function()
    local d = fresh()
    d:set("k", 1)
    d:set("t", 1, 1)
    clock.advance(1)
    assert.is_true(d:delete("k"))
    assert.is_true(d:delete("t"))
    assert.is_true(d:delete("missing"))
    assert.is_nil(d:get("k"))
    assert.is_nil(d:get_stale("t"))
    assert.are.equal(d:capacity(), d:free_space())
  end)
end)

describe("incr", function()
  it("adds to a number and keeps its ttl", function()
    local d = fresh()
    d:set("n", 10, 5)
    assert.are.same({ 13, nil, false }, { d:incr("n", 3) })
    assert.are.same({ 12.5, nil, false }, { d:incr("n", -0.5) })
    assert.are.equal(5, d:ttl("n"))
    clock.advance(5)
    assert.is_nil(d:get("n"))
  end)

  it("a missing key: nil, 'not found' without init; init + delta with init_ttl", function()
    local d = fresh()
    assert.are.same({ nil, "not found", false }, { d:incr("n", 1) })
    assert.are.same({ 6, nil, false }, { d:incr("n", 1, 5) })
    assert.are.equal(0, d:ttl("n"))
    assert.are.same({ 7, nil, false }, { d:incr("n", 1, 100) })   -- init only for a missing key
    assert.are.same({ 1, nil, false }, { d:incr("w", 1, 0, 10) })
    assert.are.equal(10, d:ttl("w"))
    clock.advance(10)
    assert.are.same({ 2, nil, false }, { d:incr("w", 2, 0, 3) })  -- expired: init again, new ttl
    assert.are.equal(3, d:ttl("w"))
  end)

  it("on a string: nil, 'not a number'", function()
    local d = fresh()
    d:set("s", "12")
    assert.are.same({ nil, "not a number", false }, { d:incr("s", 1) })
    assert.are.equal("12", d:get("s"))
  end)

  it("bad delta, init or init_ttl raise", function()
    local d = fresh()
    local cases = {
      { { "n", "x" }, "number expected" },
      { { "n", 1, "x" }, "number expected" },
      { { "n", 1, nil, 5 }, 'must provide "init" when providing "init_ttl"' },
      { { "n", 1, 0, -1 }, 'bad "init_ttl" argument' },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(d.incr, d, table.unpack(c[1], 1, 4))
      assert.is_false(ok)
      assert.truthy(err:find(c[2], 1, true), "want " .. c[2] .. " got " .. err)
    end
    assert.are.same({ nil, "nil key" }, { d:incr(nil, 1) })
  end)

  it("counts exactly past 2^31 and keeps whole numbers integers", function()
    local d = fresh()
    d:set("n", 2 ^ 31)
    for _ = 1, 1000 do d:incr("n", 1) end
    assert.are.equal(2147484648, d:get("n"))
    assert.are.equal("integer", math.type(d:get("n")))
  end)
end)

describe("memory: LRU eviction, forcible, safe_*", function()
  local VLEN = 100
  local value = string.rep("v", VLEN)

  --- Fills d with keys k1, k2, ... (2-byte-ish keys, VLEN-byte values)
  -- until the next one would not fit; returns how many.
  local function fill(d, ttl)
    local per = node_bytes(2, VLEN)
    local n = 0
    while d:free_space() >= per + 8 do
      n = n + 1
      local ok, err, forcible = d:set("k" .. n, value, ttl)
      assert.are.same({ true, nil, false }, { ok, err, forcible })
    end
    return n
  end

  it("a write into a full dict evicts the least recently used key, forcible", function()
    local d = fresh("1k")
    local n = fill(d)
    assert.is_true(n >= 3, "only " .. n .. " keys fit")
    assert.are.equal(value, d:get("k1"))         -- k1 is now the most recently used
    local ok, err, forcible = d:set("new", value)
    assert.are.same({ true, nil, true }, { ok, err, forcible })
    assert.are.equal(value, d:get("k1"))
    assert.is_nil(d:get("k2"), "k2 was the least recently used")
    for i = 3, n do assert.are.equal(value, d:get("k" .. i)) end
    assert.are.equal(value, d:get("new"))
  end)

  it("expired keys go first: no forcible while they make room", function()
    local d = fresh("1k")
    local n = fill(d, 5)
    clock.advance(5)
    for i = 1, n do
      local ok, err, forcible = d:set("live" .. i, value)
      assert.are.same({ true, nil, false }, { ok, err, forcible }, "write " .. i)
    end
  end)

  it("safe_set and safe_add never evict a live key: false, 'no memory'; the old value stays", function()
    local d = fresh("1k")
    local n = fill(d)
    assert.are.same({ false, "no memory", false }, { d:safe_set("new", value) })
    assert.are.same({ false, "no memory", false }, { d:safe_add("new", value) })
    assert.are.same({ false, "no memory", false }, { d:safe_set("k1", value:rep(4)) })
    assert.are.equal(value, d:get("k1"))
    for i = 1, n do assert.are.equal(value, d:get("k" .. i)) end
    assert.is_nil(d:get("new"))
    -- Rewriting a key at the same size needs no room.
    assert.are.same({ true, nil, false }, { d:safe_set("k1", string.rep("w", VLEN)) })
    -- Once keys expire, safe_set reuses their room.
    d:expire("k2", 1)
    clock.advance(1)
    assert.are.same({ true, nil, false }, { d:safe_set("new", value) })
  end)

  it("safe_add says exists before no memory; add evicts like set", function()
    local d = fresh("1k")
    fill(d)
    assert.are.same({ false, "exists", false }, { d:safe_add("k1", 1) })
    assert.are.same({ true, nil, true }, { d:add("other", value) })
  end)

  it("a value larger than the dict: false, 'no memory', nothing evicted", function()
    local d = fresh("1k")
    d:set("small", 1)
    assert.are.same({ false, "no memory", false }, { d:set("huge", string.rep("x", 2000)) })
    assert.are.equal(1, d:get("small"))
  end)

  it("incr with init evicts too, and says forcible", function()
    local d = fresh("1k")
    fill(d)
    local i, v, err, forcible = 0, nil, nil, false
    while not forcible and i < 100 do
      i = i + 1
      v, err, forcible = d:incr("c" .. i, 1, 0)
      assert.are.same({ 1, nil }, { v, err })
    end
    assert.is_true(forcible, "no incr evicted")
    assert.is_nil(d:get("k1"), "k1 was the least recently used")
  end)

  it("counts bytes: free_space comes back to capacity when every key is gone", function()
    local d = fresh("1k")
    fill(d)
    assert.is_true(d:free_space() < 200)
    d:flush_all()
    d:flush_expired()
    assert.are.equal(d:capacity(), d:free_space())
  end)
end)

describe("get_keys, flush_all, flush_expired", function()
  it("get_keys: at most 1024 by default, max, 0 for all; never expired keys", function()
    local d = fresh("1m")
    for i = 1, 1100 do d:set("k" .. i, i) end
    d:set("gone", 1, 1)
    clock.advance(1)
    assert.are.equal(1024, #d:get_keys())
    assert.are.equal(10, #d:get_keys(10))
    local all = d:get_keys(0)
    assert.are.equal(1100, #all)
    local seen = {}
    for _, k in ipairs(all) do seen[k] = true end
    assert.is_true(seen.k1 and seen.k1100)
    assert.is_nil(seen.gone)
    assert.are.same({}, fresh():get_keys())
  end)

  it("flush_all expires every key: get is nil, get_stale still sees them until flush_expired", function()
    local d = fresh()
    d:set("a", 1)
    d:set("b", "two", 100)
    d:flush_all()
    assert.is_nil(d:get("a"))
    assert.are.same({ "two", nil, true }, { d:get_stale("b") })
    assert.are.same({}, d:get_keys(0))
    assert.are.equal(2, d:flush_expired())
    assert.is_nil(d:get_stale("b"))
    assert.are.equal(0, d:flush_expired())
  end)

  it("flush_expired(max) frees at most max, and only expired keys", function()
    local d = fresh()
    for i = 1, 10 do d:set("t" .. i, i, 1) end
    d:set("live", 1)
    clock.advance(1)
    assert.are.equal(3, d:flush_expired(3))
    assert.are.equal(7, d:flush_expired())
    assert.are.equal(1, d:get("live"))
  end)
end)

describe("edge.shared follows edge.now", function()
  it("edge.sleep moves a key towards its expiry", function()
    local d = fresh()
    d:set("k", 1, 0.3)
    edge.sleep(0.2)
    assert.are.equal(1, d:get("k"))
    edge.sleep(0.1)
    assert.is_nil(d:get("k"))
  end)
end)

-- spec/c/shared_dict_test.c: 8 threads on one small dict (set/get/incr/update/
-- delete/expire/flush_expired/get_keys, evicting all the time). `make
-- shared-dict-test` (a prerequisite of `make test`) builds it under TSan and
-- under ASan + UBSan.
describe("shared dicts under 8 threads (C)", function()
  local function sanitizer_lines(text)
    local found = {}
    for line in text:gmatch("[^\n]+") do
      if line:find("ThreadSanitizer", 1, true) or line:find("AddressSanitizer", 1, true)
        or line:find("LeakSanitizer", 1, true) or line:find("runtime error:", 1, true) then
        found[#found + 1] = line
      end
    end
    return found
  end

  local function check(bin, name)
    assert(util.exists(bin), bin .. " is missing: build it with `make shared-dict-test` (make test does)")
    local code, out, err = util.run({ bin, "2" }, { timeout = 30 })
    -- Some kernels map memory where TSan's fixed layout expects none: retry with ASLR off.
    if name == "tsan" and (out .. err):find("unexpected memory mapping", 1, true) then
      local p = io.popen("uname -m")
      local arch = p:read("l") or "x86_64"
      p:close()
      code, out, err = util.run({ "setarch", arch, "-R", bin, "2" }, { timeout = 30 })
    end
    out = out .. err
    assert.are.equal(0, #sanitizer_lines(out), name .. " report:\n" .. out:sub(1, 6000))
    assert.are.equal(0, code, name .. " exited " .. tostring(code) .. ":\n" .. out:sub(1, 6000))
    assert.truthy(out:find("shared_dict_test: ok:", 1, true), "no success line:\n" .. out:sub(1, 6000))
  end

  it("counts every incr and update exactly, never tears a value, stays in its bound (TSan)", function()
    check("build/test/shared_dict_test_tsan", "tsan")
  end)

  it("the same under AddressSanitizer + UBSan (no use after free, no leak)", function()
    check("build/test/shared_dict_test_asan", "asan")
  end)
end)
