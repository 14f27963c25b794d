-- Routing benchmark for lua/edge/router.lua: routes matched per second with
-- 10 and with 300 routes (half static, half with parameters, a few
-- wildcards), lookups hitting random routes plus misses (404 and 405).
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" lua5.4 scripts/bench-router.lua [--seconds S]
--
-- About S seconds (default 2) of CPU time per route count: the mixed workload
-- (45% static hits, 45% parameter hits, 10% misses) for most of it, then each
-- kind alone, and a linear scan over Lua patterns (what the router avoids)
-- for comparison. Figures are r:match(method, path) calls per CPU second
-- (os.clock), single thread; r:respond adds the handler call on top.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local router = require "edge.router"

local seconds = 2
for i = 1, #arg do
  if arg[i] == "--seconds" then seconds = tonumber(arg[i + 1]) or seconds end
end

math.randomseed(42)

local WORDS = { "users", "orders", "items", "search", "static", "api", "v1", "v2", "admin",
                "reports", "billing", "accounts", "files", "images", "health", "metrics" }

local function word(i) return WORDS[(i - 1) % #WORDS + 1] .. (i // #WORDS) end

--- n routes: n/2 static (/a/b/c), n/2 with parameters (/a/:id/b/:x), every
-- tenth parameter route a wildcard (/a/files/*); GET, some also POST.
local function build(n)
  local r = router.new()
  local static, param, patterns = {}, {}, {}
  local handler = function() return { status = 200 } end
  for i = 1, n do
    local a, b = word(i), word(i * 7 + 3)
    if i % 2 == 1 then
      local p = "/" .. a .. "/" .. b .. "/list"
      r:get(p, handler)
      if i % 3 == 0 then r:post(p, handler) end
      static[#static + 1] = p
      patterns[#patterns + 1] = { "^/" .. a .. "/" .. b .. "/list$", "GET" }
    elseif i % 10 == 0 then
      r:get("/" .. a .. "/files/*", handler)
      param[#param + 1] = "/" .. a .. "/files/x/y/z.png"
      patterns[#patterns + 1] = { "^/" .. a .. "/files/(.*)$", "GET" }
    else
      r:get("/" .. a .. "/:id/" .. b .. "/:x", handler)
      param[#param + 1] = "/" .. a .. "/" .. (1000 + i) .. "/" .. b .. "/abc"
      patterns[#patterns + 1] = { "^/" .. a .. "/([^/]+)/" .. b .. "/([^/]+)$", "GET" }
    end
  end
  local miss = {}
  for i = 1, 64 do
    if i % 2 == 0 then
      miss[#miss + 1] = { "GET", "/nothing/" .. i .. "/here" }                  -- 404
    else
      miss[#miss + 1] = { "DELETE", static[(i % #static) + 1] }                 -- 405
    end
  end
  return r, static, param, miss, patterns
end

--- A list of 4096 { method, path } lookups drawn from the given kinds.
local function workload(static, param, miss, mix)
  local list = {}
  for i = 1, 4096 do
    local x = math.random()
    if x < mix.static then
      list[i] = { "GET", static[math.random(#static)] }
    elseif x < mix.static + mix.param then
      list[i] = { "GET", param[math.random(#param)] }
    else
      list[i] = miss[math.random(#miss)]
    end
  end
  return list
end

--- Runs fn(method, path) over list for about `budget` CPU seconds; returns
-- calls per second.
local function measure(list, fn, budget)
  local n, count = #list, 0
  local t0 = os.clock()
  local deadline = t0 + budget
  local t = t0
  while t < deadline do
    for i = 1, n do
      local q = list[i]
      fn(q[1], q[2])
    end
    count = count + n
    t = os.clock()
  end
  return count / (t - t0)
end

local function linear(patterns)
  return function(method, path)
    for i = 1, #patterns do
      local p = patterns[i]
      if method == p[2] and path:match(p[1]) then return p end
    end
  end
end

local function fmt(x)
  local s = string.format("%.0f", x)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

print(string.format("edge.router benchmark (%s, %.1f s CPU per route count)", _VERSION, seconds))
print(string.format("%-7s %-40s %16s", "routes", "workload", "matches/s"))
for _, n in ipairs { 10, 300 } do
  local r, static, param, miss, patterns = build(n)
  local match = function(m, p) return r:match(m, p) end
  -- Sanity: every lookup gives what it should.
  for _, p in ipairs(static) do assert(r:match("GET", p), p) end
  for _, p in ipairs(param) do assert(r:match("GET", p), p) end
  for _, q in ipairs(miss) do assert(not r:match(q[1], q[2]), q[2]) end
  local rows = {
    { "mixed: 45% static, 45% param, 10% miss", { static = 0.45, param = 0.45 }, 0.5, match },
    { "static hits", { static = 1, param = 0 }, 0.1, match },
    { "parameter/wildcard hits", { static = 0, param = 1 }, 0.1, match },
    { "misses (404 and 405)", { static = 0, param = 0 }, 0.1, match },
    { "mixed, linear scan of Lua patterns", { static = 0.45, param = 0.45 }, 0.2, linear(patterns) },
  }
  for _, row in ipairs(rows) do
    local list = workload(static, param, miss, row[2])
    local rate = measure(list, row[4], seconds * row[3])
    print(string.format("%-7d %-40s %16s", n, row[1], fmt(rate)))
  end
end
