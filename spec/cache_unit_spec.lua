-- Unit specs for the response cache through `require "edge"` (build/lua/edge.so):
-- edge.cache there is the real C cache (src/cache.c), 64 MiB in 16 shards of
-- 4 MiB, and edge.sleep advances the virtual clock edge.now() reads, so expiry
-- is tested without waiting.
--
-- The module's cache is one per process (shared with any other unit spec in
-- this busted run), so every check here works on deltas of stats() and on keys
-- of its own. Eviction is per shard: the order tests pick keys that land in
-- one shard, computing the cache's shard function in Lua (the top 4 bits of
-- the key's hash: FNV-1a 64 then MurmurHash3's finaliser, see hash_key and
-- shard_of in src/cache.c). A spec below checks that function against the
-- cache itself, so a change of hash in src/cache.c shows up there first.
local edge = require "edge"

local cache = edge.cache

local MiB = 1024 * 1024
local CACHE_BYTES = 64 * MiB
local SHARDS = 16
local SHARD_BYTES = CACHE_BYTES // SHARDS      -- 4 MiB
local LONG_TTL = 3600                           -- so no virtual-clock step expires them

--- FNV-1a, 64 bits, as src/cache.c computes it (Lua 5.4 integers wrap on *,
-- and a hex literal past 2^63 wraps to the same bits): offset basis
-- 14695981039346656037 = 0xcbf29ce484222325.
local function fnv1a64(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 0x100000001b3
  end
  return h
end

--- The cache's key hash (src/cache.c hash_key): FNV-1a, then MurmurHash3's
-- 64-bit finaliser (>> is a logical shift in Lua, as on uint64_t in C).
local function hash_key(s)
  local h = fnv1a64(s)
  h = h ~ (h >> 33)
  h = h * 0xff51afd7ed558ccd
  h = h ~ (h >> 33)
  h = h * 0xc4ceb93fe53a87cd
  h = h ~ (h >> 33)
  return h
end

--- The shard (0..15) a key lands in: the hash's top 4 bits.
local function shard_of(key)
  return (hash_key(key) >> 60) & (SHARDS - 1)
end

--- `n` keys "prefix<i>" that all land in shard `s` (bounded search).
local function keys_in_shard(prefix, s, n)
  local out = {}
  for i = 1, 100000 do
    local k = prefix .. i
    if shard_of(k) == s then
      out[#out + 1] = k
      if #out == n then return out end
    end
  end
  error("could not find " .. n .. " keys in shard " .. s)
end

--- Empties shard `s` of whatever earlier specs left there: one entry just
-- under the shard's share evicts every other entry of the shard, then it is
-- purged. Returns nothing; asserts it worked.
local function clear_shard(s, tag)
  local k = keys_in_shard("clear-" .. tag .. "-", s, 1)[1]
  assert(cache.set(k, { body = string.rep("c", SHARD_BYTES - 4096) }, LONG_TTL))
  assert.is_true(cache.purge(k))
end

local function stats() return cache.stats() end

describe("edge.cache (unit, the C cache through edge.so)", function()
  it("has the server's default bound: 64 MiB", function()
    assert.are.equal(CACHE_BYTES, stats().max_bytes)
  end)

  it("predicts the cache's shards: the spec's shard_of agrees with the cache itself", function()
    -- Observed, not computed: an anchor entry filling all but ~1 KiB of its
    -- shard is evicted by a 2 KiB entry exactly when that one lands in the
    -- same shard. If this fails, src/cache.c changed how it picks a shard:
    -- update hash_key/shard_of above (and in spec/c/cache_stress.c).
    local anchor = "probe-anchor"
    local ANCHOR = { body = string.rep("a", SHARD_BYTES - 1024) }
    local SMALL = { body = string.rep("s", 2048) }
    assert.is_true(cache.set(anchor, ANCHOR, LONG_TTL))
    local same, wrong = 0, {}
    for i = 1, 64 do
      local k = "probe-" .. i
      assert.is_true(cache.set(k, SMALL, LONG_TTL))
      local evicted = cache.get(anchor) == nil
      if evicted then
        same = same + 1
        assert.is_true(cache.set(anchor, ANCHOR, LONG_TTL))
      end
      cache.purge(k)
      if evicted ~= (shard_of(k) == shard_of(anchor)) then wrong[#wrong + 1] = k end
    end
    cache.purge(anchor)
    assert.are.equal(0, #wrong, "shard_of mispredicts the cache for: " .. table.concat(wrong, ", "))
    assert.is_true(same > 0, "no probe key shared the anchor's shard: the probe proves nothing")
  end)

  it("round-trips status, headers and body through set and get", function()
    local body = "hello\0binary\255body"
    assert.is_true(cache.set("rt-1", {
      status = 404,
      headers = { ["content-type"] = "text/plain", ["X-Mixed-Case"] = "v1", ["x-num"] = 42 },
      body = body,
    }))
    local e = cache.get("rt-1")
    assert.is_table(e)
    assert.are.equal(404, e.status)
    assert.are.equal(body, e.body)
    assert.are.equal("text/plain", e.headers["content-type"])
    assert.are.equal("v1", e.headers["x-mixed-case"])   -- names are stored lower-case
    assert.are.equal("42", e.headers["x-num"])
    local n = 0
    for _ in pairs(e.headers) do n = n + 1 end
    assert.are.equal(3, n)
    -- Defaults: status 200, empty body, no headers.
    assert.is_true(cache.set("rt-2", {}))
    e = cache.get("rt-2")
    assert.are.equal(200, e.status)
    assert.are.equal("", e.body)
    assert.are.same({}, e.headers)
    -- Replacing a key replaces the entry.
    assert.is_true(cache.set("rt-2", { status = 203, body = "second" }))
    e = cache.get("rt-2")
    assert.are.equal(203, e.status)
    assert.are.equal("second", e.body)
    -- Core headers the server sets itself are not stored.
    assert.is_true(cache.set("rt-3", { headers = { ["content-length"] = "5", connection = "close" }, body = "x" }))
    assert.are.same({}, cache.get("rt-3").headers)
    assert.is_nil(cache.get("rt-never-set"))
  end)

  it("round-trips a repeated header (a list, as respond may return) as a list", function()
    assert.is_true(cache.set("rt-list", { headers = { ["set-cookie"] = { "a=1", "b=2" } }, body = "x" }))
    local e = cache.get("rt-list")
    assert.are.same({ "a=1", "b=2" }, e.headers["set-cookie"])
  end)

  it("purge returns true for an entry, then false; the entry is gone", function()
    assert.is_true(cache.set("purge-1", { body = "p" }))
    local before = stats()
    assert.is_true(cache.purge("purge-1"))
    assert.is_false(cache.purge("purge-1"))
    assert.is_false(cache.purge("purge-never-set"))
    assert.is_nil(cache.get("purge-1"))
    local after = stats()
    assert.are.equal(before.entries - 1, after.entries)
    assert.is_true(after.bytes < before.bytes)
  end)

  it("stats count entries, bytes, hits, misses and evictions", function()
    local s0 = stats()
    assert.is_true(cache.set("st-1", { body = string.rep("b", 1000) }))
    local s1 = stats()
    assert.are.equal(s0.entries + 1, s1.entries)
    -- The entry counts its key and body, plus a fixed overhead.
    local size1 = s1.bytes - s0.bytes
    assert.is_true(size1 >= 1000 + #"st-1", "entry counted " .. size1 .. " bytes")
    assert.is_true(size1 < 1000 + #"st-1" + 256, "entry counted " .. size1 .. " bytes")
    assert.are.equal(s0.hits, s1.hits)
    assert.are.equal(s0.misses, s1.misses)

    assert.is_table(cache.get("st-1"))
    assert.is_table(cache.get("st-1"))
    assert.is_nil(cache.get("st-missing"))
    local s2 = stats()
    assert.are.equal(s1.hits + 2, s2.hits)
    assert.are.equal(s1.misses + 1, s2.misses)
    assert.are.equal(s1.entries, s2.entries)
    assert.are.equal(s1.bytes, s2.bytes)

    -- Replacing with a larger body: same count, bytes grow by the difference.
    assert.is_true(cache.set("st-1", { body = string.rep("b", 3000) }))
    local s3 = stats()
    assert.are.equal(s2.entries, s3.entries)
    assert.are.equal(s2.bytes + 2000, s3.bytes)

    assert.is_true(cache.purge("st-1"))
    local s4 = stats()
    assert.are.equal(s0.entries, s4.entries)
    assert.are.equal(s0.bytes, s4.bytes)
    assert.are.equal(s0.evictions, s4.evictions)
  end)

  it("expires an entry with the controllable clock (ttl 10: there at 9.9 s, gone at 10.1 s)", function()
    assert.is_true(cache.set("exp-1", { body = "soon gone" }, 10))
    local s0 = stats()
    edge.sleep(9.9)
    local e = cache.get("exp-1")
    assert.is_table(e, "gone before its ttl")
    assert.are.equal("soon gone", e.body)
    edge.sleep(0.2)
    assert.is_nil(cache.get("exp-1"), "still there after its ttl")
    -- The expired entry was dropped when looked up: a miss, one entry fewer.
    local s1 = stats()
    assert.are.equal(s0.entries - 1, s1.entries)
    assert.are.equal(s0.hits + 1, s1.hits)
    assert.are.equal(s0.misses + 1, s1.misses)
    assert.are.equal(s0.evictions, s1.evictions)  -- expiry is not eviction
    assert.is_false(cache.purge("exp-1"))
  end)

  it("takes the ttl from the argument, else response.ttl, else the default (60 s)", function()
    assert.is_true(cache.set("ttl-arg", { body = "a", ttl = 100 }, 5))
    assert.is_true(cache.set("ttl-resp", { body = "r", ttl = 7 }))
    assert.is_true(cache.set("ttl-default", { body = "d" }))
    local e1, e2, e3 = cache.get("ttl-arg"), cache.get("ttl-resp"), cache.get("ttl-default")
    assert.is_true(math.abs(e1.ttl - 5) < 1e-6, "ttl " .. e1.ttl)
    assert.is_true(math.abs(e2.ttl - 7) < 1e-6, "ttl " .. e2.ttl)
    assert.is_true(math.abs(e3.ttl - 60) < 1e-6, "ttl " .. e3.ttl)
    edge.sleep(6)
    assert.is_nil(cache.get("ttl-arg"))
    assert.is_table(cache.get("ttl-resp"))
    edge.sleep(1.5)
    assert.is_nil(cache.get("ttl-resp"))
    assert.is_table(cache.get("ttl-default"))
    assert.is_true(cache.purge("ttl-default"))
  end)

  it("get returns the remaining ttl and the age", function()
    assert.is_true(cache.set("age-1", { body = "aged" }, 30))
    local e = cache.get("age-1")
    assert.is_true(math.abs(e.ttl - 30) < 1e-6, "ttl " .. e.ttl)
    assert.is_true(math.abs(e.age) < 1e-6, "age " .. e.age)
    edge.sleep(5)
    e = cache.get("age-1")
    assert.is_true(math.abs(e.ttl - 25) < 1e-6, "ttl " .. e.ttl)
    assert.is_true(math.abs(e.age - 5) < 1e-6, "age " .. e.age)
    edge.sleep(12.5)
    e = cache.get("age-1")
    assert.is_true(math.abs(e.ttl - 12.5) < 1e-6, "ttl " .. e.ttl)
    assert.is_true(math.abs(e.age - 17.5) < 1e-6, "age " .. e.age)
    assert.is_true(cache.purge("age-1"))
  end)

  it("set rejects a response of the wrong shape with nil and a message, storing nothing", function()
    local bad = {
      { { status = "x" }, "status" },
      { { status = 99 }, "status" },
      { { status = 600 }, "status" },
      { { status = 200.5 }, "status" },
      { { body = {} }, "body" },
      { { body = 12 }, "body" },
      { { headers = "x" }, "headers" },
      { { headers = { ["bad name"] = "v" } }, "header" },
      { { headers = { ["x-a"] = "v\r\nInjected: 1" } }, "CR" },
      { { headers = { ["x-a"] = {} } }, nil },   -- an empty list: no header, accepted
      { { headers = { ["x-a"] = true } }, "header" },
      { { ttl = "long" }, "ttl" },
    }
    local s0 = stats()
    for i, case in ipairs(bad) do
      local key = "shape-" .. i
      local ok, msg = cache.set(key, case[1])
      if case[2] == nil then
        assert.is_true(ok, "case " .. i)
        assert.is_true(cache.purge(key))
      else
        assert.is_nil(ok, "case " .. i .. " was accepted")
        assert.is_string(msg, "case " .. i)
        assert.truthy(msg:find(case[2], 1, true), "case " .. i .. ": " .. tostring(msg))
        assert.is_nil(cache.get(key), "case " .. i .. " stored")
      end
    end
    -- Not a table at all: an argument error.
    assert.has_error(function() cache.set("shape-x", "text") end)
    assert.has_error(function() cache.set("shape-x") end)
    assert.has_error(function() cache.get() end)
    assert.has_error(function() cache.purge({}) end)
    local s1 = stats()
    assert.are.equal(s0.entries, s1.entries)
    assert.are.equal(s0.bytes, s1.bytes)
  end)

  it("refuses an entry larger than a shard's share (64 MiB / 16 = 4 MiB)", function()
    local s0 = stats()
    local ok, msg = cache.set("huge-1", { body = string.rep("h", SHARD_BYTES) })
    assert.is_nil(ok)
    assert.truthy(msg and msg:find("too large", 1, true), tostring(msg))
    assert.is_nil(cache.get("huge-1"))
    -- Headers count too: a small body with 4 MiB of headers is refused.
    ok = cache.set("huge-2", { headers = { ["x-big"] = string.rep("v", SHARD_BYTES) }, body = "x" })
    assert.is_nil(ok)
    local s1 = stats()
    assert.are.equal(s0.entries, s1.entries)
    assert.are.equal(s0.evictions, s1.evictions)   -- a refused entry evicts nothing
    -- Just under the share is stored.
    assert.is_true(cache.set("huge-3", { body = string.rep("h", SHARD_BYTES - 1024) }))
    assert.are.equal(SHARD_BYTES - 1024, #cache.get("huge-3").body)
    assert.is_true(cache.purge("huge-3"))
  end)

  it("counts headers toward an entry's bytes", function()
    local s0 = stats()
    assert.is_true(cache.set("hb-plain", { body = "x" }))
    local s1 = stats()
    assert.is_true(cache.set("hb-heads", { body = "x", headers = { ["x-big"] = string.rep("v", 10000) } }))
    local s2 = stats()
    local plain, heads = s1.bytes - s0.bytes, s2.bytes - s1.bytes
    -- Same key length and body: the difference is the header (name + value + its span).
    assert.is_true(heads - plain >= 10000 + #"x-big",
      string.format("entry with a 10000-byte header counted %d bytes, without %d", heads, plain))
    assert.is_true(cache.purge("hb-plain"))
    assert.is_true(cache.purge("hb-heads"))
  end)

  describe("eviction within one shard", function()
    local S = 5   -- any shard

    it("evicts the least recently used entry first; a get refreshes recency", function()
      clear_shard(S, "lru")
      local BODY = string.rep("L", 256 * 1024)
      local keys = keys_in_shard("lru-key-", S, 40)
      -- One entry's counted size, measured.
      local b0 = stats().bytes
      assert.is_true(cache.set(keys[1], { body = BODY }, LONG_TTL))
      local esize = stats().bytes - b0
      local cap = SHARD_BYTES // esize              -- entries of this size one shard holds
      assert.are.equal(15, cap, "entry size " .. esize)
      local ev0 = stats().evictions
      for i = 2, cap do assert.is_true(cache.set(keys[i], { body = BODY }, LONG_TTL)) end
      assert.are.equal(ev0, stats().evictions, "evicted before the shard was full")
      -- Recency now, oldest first: 1, 2, ..., cap. Touch 1 and 3.
      assert.is_table(cache.get(keys[1]))
      assert.is_table(cache.get(keys[3]))
      -- Oldest first now: 2, 4, 5, ..., cap, 1, 3. Each new entry evicts exactly one.
      assert.is_true(cache.set(keys[cap + 1], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 1, stats().evictions)
      assert.is_true(cache.set(keys[cap + 2], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 2, stats().evictions)
      assert.is_true(cache.set(keys[cap + 3], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 3, stats().evictions)
      -- Gone: 2, 4, 5. Kept: 1, 3, 6..cap+3 (checked newest first, so the
      -- gets, which refresh recency, do not change what a later set evicts).
      assert.is_nil(cache.get(keys[2]), "key 2 (least recently used) survived")
      assert.is_nil(cache.get(keys[4]), "key 4 survived")
      assert.is_nil(cache.get(keys[5]), "key 5 survived")
      for i = cap + 3, 6, -1 do assert.is_table(cache.get(keys[i]), "key " .. i .. " evicted") end
      assert.is_table(cache.get(keys[3]), "key 3 (refreshed by get) evicted")
      assert.is_table(cache.get(keys[1]), "key 1 (refreshed by get) evicted")
      -- Recency, oldest first: cap+3, ..., 6, 3, 1. Replacing an entry
      -- (set on an existing key) makes it the most recent one.
      assert.is_true(cache.set(keys[cap + 3], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 3, stats().evictions, "replacing evicted another entry")
      assert.is_true(cache.set(keys[cap + 4], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 4, stats().evictions)
      assert.is_table(cache.get(keys[cap + 3]), "a just-replaced entry was evicted")
      assert.is_nil(cache.get(keys[cap + 2]), "the least recently used entry survived")
      -- A purge frees room: the next set evicts nothing.
      assert.is_true(cache.purge(keys[1]))
      assert.is_true(cache.set(keys[cap + 5], { body = BODY }, LONG_TTL))
      assert.are.equal(ev0 + 4, stats().evictions)
      for i = 1, cap + 5 do cache.purge(keys[i]) end
    end)

    it("evicts by bytes, headers included: 256 KiB of headers weighs like a 256 KiB body", function()
      clear_shard(S, "hdr")
      local keys = keys_in_shard("hdr-key-", S, 40)
      local HEADERS = { ["x-pad"] = string.rep("H", 256 * 1024) }
      local ev0 = stats().evictions
      local s0 = stats()
      -- Small bodies: with headers counted, a shard still holds only 15 of them.
      for i = 1, 15 do assert.is_true(cache.set(keys[i], { headers = HEADERS, body = "b" }, LONG_TTL)) end
      local s1 = stats()
      assert.are.equal(ev0, s1.evictions)
      assert.is_true(s1.bytes - s0.bytes >= 15 * 256 * 1024, "15 entries counted " .. (s1.bytes - s0.bytes))
      assert.is_true(cache.set(keys[16], { headers = HEADERS, body = "b" }, LONG_TTL))
      assert.are.equal(ev0 + 1, stats().evictions, "the 16th entry with 256 KiB of headers evicted nothing")
      assert.is_nil(cache.get(keys[1]), "the oldest entry survived")
      for i = 16, 2, -1 do
        local e = cache.get(keys[i])
        assert.is_table(e, "key " .. i .. " evicted")
        assert.are.equal(256 * 1024, #e.headers["x-pad"])
      end
      for i = 1, 16 do cache.purge(keys[i]) end
    end)
  end)

  it("spreads keys that differ only at the end over the shards: 32 MiB of /users/N fits in 64 MiB", function()
    -- 512 entries of 64 KiB, half the bound. With keys spread evenly a shard
    -- gets ~32 of them (2 MiB of its 4 MiB) and nothing is evicted. Keys
    -- like /users/1 ... /users/512 (the usual shape of URLs) differ only in
    -- their last bytes; if the shard came from hash bits those bytes barely
    -- reach, a few shards would take them all and evict while the cache is
    -- half empty.
    local BODY = string.rep("u", 64 * 1024)
    local ev0 = stats().evictions
    local used = {}
    for i = 1, 512 do
      local k = "/users/" .. i
      used[shard_of(k)] = (used[shard_of(k)] or 0) + 1
      assert.is_true(cache.set(k, { body = BODY }, LONG_TTL))
    end
    local shards_used, max_load = 0, 0
    for _, n in pairs(used) do
      shards_used = shards_used + 1
      max_load = math.max(max_load, n)
    end
    local evicted = stats().evictions - ev0
    local present = 0
    for i = 1, 512 do
      if cache.get("/users/" .. i) then present = present + 1 end
    end
    for i = 1, 512 do cache.purge("/users/" .. i) end
    assert.are.equal(0, evicted, string.format(
      "%d of 512 entries (32 MiB in a 64 MiB cache) evicted; %d kept; the keys went to %d of 16 shards, "
        .. "up to %d in one (its share holds 63)", evicted, present, shards_used, max_load))
    assert.are.equal(512, present)
  end)

  it("stays within 64 MiB in all when 100 entries of 1 MiB are set; the newest survive", function()
    local BODY = string.rep("M", MiB)
    local ev0 = stats().evictions
    local keys = {}
    for i = 1, 100 do
      keys[i] = "bound-" .. i
      assert.is_true(cache.set(keys[i], { body = BODY }, LONG_TTL))
      assert.is_true(stats().bytes <= CACHE_BYTES, "over the bound after " .. i .. " entries")
    end
    local st = stats()
    assert.is_true(st.bytes <= CACHE_BYTES, "bytes " .. st.bytes)
    local per_shard = {}
    for i = 1, 100 do
      local s = shard_of(keys[i])
      per_shard[s] = per_shard[s] or {}
      table.insert(per_shard[s], keys[i])
    end
    -- A shard holds 3 entries of 1 MiB (4 x (1 MiB + overhead) > 4 MiB): each
    -- shard evicted at least all but 3 of the keys set there.
    local min_evictions = 0
    for _, list in pairs(per_shard) do min_evictions = min_evictions + math.max(0, #list - 3) end
    assert.is_true(min_evictions > 0)
    assert.is_true(st.evictions - ev0 >= min_evictions,
      string.format("evictions %d, expected at least %d", st.evictions - ev0, min_evictions))
    -- Per shard, the last three set there are kept and the older ones gone.
    for s, list in pairs(per_shard) do
      for j = #list, 1, -1 do   -- newest first: a get refreshes, but nothing is set after
        local e = cache.get(list[j])
        if j > #list - 3 then
          assert.is_table(e, "shard " .. s .. ": one of the 3 newest keys (" .. list[j] .. ") evicted")
          assert.are.equal(MiB, #e.body)
        else
          assert.is_nil(e, "shard " .. s .. ": older key " .. list[j] .. " survived")
        end
      end
    end
    assert.is_table(cache.get(keys[100]), "the last key set is gone")
    for i = 1, 100 do cache.purge(keys[i]) end
  end)
end)
