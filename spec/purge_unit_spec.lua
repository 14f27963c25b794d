-- Unit specs for edge.cache.purge, purge_prefix and purge_tag through
-- `require "edge"` (build/lua/edge.so): the real C cache (src/cache.c), in
-- plain busted. edge.now() there is the virtual clock (edge.testing.clock):
-- a soft purge marks entries stale as of that clock. The module's cache
-- is one per process, shared with the other unit specs of the run: every
-- key here starts with "purge-unit/", and counts are checked on the values
-- the functions return and on deltas of stats().
local edge = require "edge"

local cache = edge.cache
local TTL = 3600
local P = "purge-unit/"

local function set(key, headers)
  assert(cache.set(key, { status = 200, headers = headers, body = "body of " .. key }, TTL))
  assert.truthy(cache.get(key), key .. " was not stored")
end

local function purged() return cache.stats().purged end

describe("edge.cache purge functions (unit, the C cache through edge.so)", function()
  it("purge(key) removes the key and every key derived from it, and says whether it found any", function()
    local k = P .. "page"
    set(k)
    set(k .. "\0vary\0accept-language=en")
    set(k .. "\0ce=br")
    set(k .. "s")                       -- only begins with k: not derived
    local before = purged()
    assert.is_true(cache.purge(k))
    assert.are.equal(3, purged() - before)
    assert.is_nil(cache.get(k))
    assert.is_nil(cache.get(k .. "\0ce=br"))
    assert.truthy(cache.get(k .. "s"))
    assert.is_false(cache.purge(k))
    -- A key with only derived entries left still counts as found.
    set(P .. "only-derived\0ce=gzip")
    assert.is_true(cache.purge(P .. "only-derived"))
    assert.is_nil(cache.get(P .. "only-derived\0ce=gzip"))
  end)

  it("purge_prefix(prefix) removes the keys that begin with it and returns the count", function()
    for i = 1, 5 do set(P .. "pre/a/" .. i) end
    set(P .. "pre/b/1")
    assert.are.equal(5, cache.purge_prefix(P .. "pre/a/"))
    for i = 1, 5 do assert.is_nil(cache.get(P .. "pre/a/" .. i)) end
    assert.truthy(cache.get(P .. "pre/b/1"))
    assert.are.equal(0, cache.purge_prefix(P .. "pre/a/"))
    assert.are.equal("integer", math.type(cache.purge_prefix(P .. "none/")))
  end)

  it("purge_tag(tag) removes the entries whose Surrogate-Key or Cache-Tag names it", function()
    set(P .. "tag/1", { ["surrogate-key"] = "red green" })
    set(P .. "tag/2", { ["cache-tag"] = "blue, red" })
    set(P .. "tag/3", { ["surrogate-key"] = "green", ["cache-tag"] = "yellow" })
    set(P .. "tag/4", { ["surrogate-key"] = "reddish" })
    assert.are.equal(2, cache.purge_tag("red"))
    assert.is_nil(cache.get(P .. "tag/1"))
    assert.is_nil(cache.get(P .. "tag/2"))
    assert.truthy(cache.get(P .. "tag/3"))
    assert.truthy(cache.get(P .. "tag/4"), "a tag is a whole word, not a prefix")
    assert.are.equal(1, cache.purge_tag("yellow"))
    assert.are.equal(0, cache.purge_tag("green"))      -- /tag/3 is gone already; /tag/1 too
    assert.are.equal(1, cache.purge_tag("reddish"))
  end)

  it("{ soft = true } makes the entry stale as of edge.now(): get no longer finds it", function()
    set(P .. "soft/1", { ["surrogate-key"] = "softy" })
    set(P .. "soft/2", { ["surrogate-key"] = "softy" })
    set(P .. "soft/3")
    local before = purged()
    assert.is_true(cache.purge(P .. "soft/3", { soft = true }))
    assert.is_nil(cache.get(P .. "soft/3"))
    assert.are.equal(2, cache.purge_tag("softy", { soft = true }))
    assert.is_nil(cache.get(P .. "soft/1"))
    assert.are.equal(3, purged() - before)
    -- A later set stores afresh.
    set(P .. "soft/3")
    assert.is_true(cache.purge(P .. "soft/3", { soft = false }))
    assert.is_nil(cache.get(P .. "soft/3"))
  end)

  it("checks its arguments: a string, and an options table with soft only", function()
    for _, f in ipairs { "purge", "purge_prefix", "purge_tag" } do
      local fn = cache[f]
      assert.has_error(function() fn(nil) end)
      assert.has_error(function() fn({}) end)
      local ok, err = pcall(fn, "x", { sofft = true })
      assert.is_false(ok)
      assert.truthy(err:find("edge.cache." .. f .. ": unknown option 'sofft' (known: soft)", 1, true), err)
      ok, err = pcall(fn, "x", { soft = true, a = 1, [2] = 3 })
      assert.is_false(ok)
      assert.truthy(err:find("unknown options", 1, true), err)
      assert.truthy(err:find("'a'", 1, true) and err:find("'2'", 1, true), err)
      ok, err = pcall(fn, "x", { soft = "yes" })
      assert.is_false(ok)
      assert.truthy(err:find("edge.cache." .. f .. ": opts.soft must be a boolean, not string", 1, true), err)
      ok, err = pcall(fn, "x", 5)
      assert.is_false(ok)
      assert.truthy(err:find("table expected", 1, true), err)
      assert.has_no.errors(function() fn(P .. "nothing", nil) end)
      assert.has_no.errors(function() fn(P .. "nothing", {}) end)
    end
  end)
end)
