-- edge.router: routes requests by method and path pattern, with per-route
-- cache keys. A script built on it is simply:
--
--   local router = require "edge.router"
--   local response = require "edge.response"
--
--   local app = router.new()
--   app:get("/health", function(req) return response.text("ok\n") end, { cache = false })
--   app:get("/users/:id", function(req, params)
--     return response.json({ id = params.id })
--   end, { ttl = 30 })
--   app:get("/static/*", function(req, params) ... params["*"] ... end)
--   return app:hooks()          -- { cache_key = function, respond = function }
--
-- Patterns (matched against req.path as sent: not percent-decoded):
--   /health          exact
--   /users/:id       a named parameter: one whole, non-empty segment
--   /static/*        trailing wildcard: "/static/" and everything below it;
--                    params["*"] is the rest after "/static/" ("" for "/static/")
--   /files/*path     the same, also captured as params.path
-- When several patterns match, a static segment beats a parameter, which beats
-- a wildcard, segment by segment (with backtracking), whatever the order the
-- routes were added in. A trailing slash is significant ("/users" and
-- "/users/" are different routes). A path with a "." or ".." segment (also
-- percent-encoded, "%2e%2e") is answered 400 and never reaches a handler.
--
-- Methods: HEAD is served by the GET handler unless a HEAD route exists (edge
-- drops the body). No route: 404. A route for the path but not the method:
-- 405 with an Allow header listing the methods that would match.
--
-- Cache keys (the cache_key hook): a route's opts.cache = false: never
-- cached; opts.cache_key = function(req, params) -> string or nil: that key
-- (called for every method the route serves); otherwise GET and HEAD share
-- router.default_key(req), "GET " .. host .. path [.. "?" .. query]: what
-- selects the response (another Host or query is another entry), and other
-- methods are not cached. No route (404, 405, 400): not cached. opts.ttl sets
-- the response's ttl when the handler did not; edge applies it to the
-- heuristically cacheable statuses only (200, 203, 204, 206, 300, 301, 308,
-- 404, 405, 410, 414, 501). opts.cache_statuses = { 302, 503 } lists more
-- statuses the route's responses are stored with (response.cache =
-- "any-status", unless the handler set cache itself).
--
-- Matching: a hash table of the fully static routes first, then a segment
-- tree (trie) walked once per request; no Lua patterns at request time.
local router = {}

local type, pairs, ipairs, error, setmetatable = type, pairs, ipairs, error, setmetatable
local find, sub, byte, lower, format, gsub = string.find, string.sub, string.byte, string.lower,
  string.format, string.gsub
local concat, sort = table.concat, table.sort

local Router = {}
Router.__index = Router

-- The order methods are listed in an Allow header; others follow sorted.
local METHOD_ORDER = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }
local METHOD_RANK = {}
for i, m in ipairs(METHOD_ORDER) do METHOD_RANK[m] = i end

local function new_node()
  return { static = {}, param = nil, wild = nil, handlers = nil }
end

--- Creates a router. opts (all optional):
--   not_found(req)                    -> response for 404 (default: text "not found")
--   method_not_allowed(req, allow)    -> response for 405; allow is the Allow
--                                        header value, which the response should carry
--   bad_path(req)                     -> response for 400 (a "." or ".." segment)
function router.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("router.new: opts must be a table or nil, got " .. type(opts), 2)
  end
  opts = opts or {}
  for _, k in ipairs { "not_found", "method_not_allowed", "bad_path" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error(format("router.new: opts.%s must be a function, got %s", k, type(opts[k])), 2)
    end
  end
  return setmetatable({
    root = new_node(),
    exact = {},          -- fully static pattern -> handlers table (method -> route)
    routes = {},         -- every route, in the order added
    not_found_fn = opts.not_found,
    method_not_allowed_fn = opts.method_not_allowed,
    bad_path_fn = opts.bad_path,
  }, Router)
end

---------------------------------------------------------------------------
-- Registration
---------------------------------------------------------------------------

--- Splits a pattern into segments and checks it. Returns the segment list,
-- the parameter positions and names, the wildcard position and name.
local function parse_pattern(pattern, level)
  if type(pattern) ~= "string" then
    error("route pattern must be a string, got " .. type(pattern), level)
  end
  if byte(pattern, 1) ~= 47 then
    error(format("route pattern %q must start with '/'", pattern), level)
  end
  if find(pattern, "[?#%s]") then
    error(format("route pattern %q must not contain '?', '#' or white space "
      .. "(match the query with a handler or a cache_key, not the pattern)", pattern), level)
  end
  local segs, pidx, pname, seen = {}, {}, {}, {}
  local wild_index, wild_name
  local pos = 2
  while true do
    local e = find(pattern, "/", pos, true)
    segs[#segs + 1] = e and sub(pattern, pos, e - 1) or sub(pattern, pos)
    if not e then break end
    pos = e + 1
  end
  for i, seg in ipairs(segs) do
    local c = byte(seg, 1)
    if c == 58 then -- ':'
      local name = sub(seg, 2)
      if not name:match("^[%a_][%w_]*$") then
        error(format("route pattern %q: bad parameter %q (a parameter is a whole segment "
          .. "':name', name made of letters, digits and '_')", pattern, seg), level)
      end
      if seen[name] then
        error(format("route pattern %q: parameter %q appears twice", pattern, name), level)
      end
      seen[name] = true
      pidx[#pidx + 1], pname[#pname + 1] = i, name
    elseif c == 42 then -- '*'
      if i ~= #segs then
        error(format("route pattern %q: '*' is only allowed as the last segment", pattern), level)
      end
      local name = sub(seg, 2)
      if name ~= "" then
        if not name:match("^[%a_][%w_]*$") then
          error(format("route pattern %q: bad wildcard name %q", pattern, seg), level)
        end
        if seen[name] then
          error(format("route pattern %q: parameter %q appears twice", pattern, name), level)
        end
        wild_name = name
      end
      wild_index = i
    else
      if seg == "" and i ~= #segs then
        error(format("route pattern %q: empty segment ('//')", pattern), level)
      end
      if seg == "." or seg == ".." then
        error(format("route pattern %q: '.' and '..' segments are not allowed", pattern), level)
      end
      if find(seg, ":", 1, true) or find(seg, "*", 1, true) then
        error(format("route pattern %q: ':' and '*' are only allowed at the start of a segment",
          pattern), level)
      end
    end
  end
  return segs, pidx, pname, wild_index, wild_name
end

--- Normalizes the methods argument to a list of method names ("*" = any).
local function parse_methods(methods, level)
  local list
  if type(methods) == "string" then
    list = { methods }
  elseif type(methods) == "table" and #methods > 0 then
    list = methods
  else
    error("route methods must be a method name or a non-empty list of them, got "
      .. type(methods), level)
  end
  for _, m in ipairs(list) do
    if type(m) ~= "string" or not (m == "*" or m:match("^[A-Z][A-Z0-9_-]*$")) then
      error(format("bad method %s (methods are upper-case names such as \"GET\", or \"*\" "
        .. "for any)", type(m) == "string" and format("%q", m) or type(m)), level)
    end
  end
  return list
end

local ROUTE_OPTS = { cache = true, cache_key = true, ttl = true, name = true,
                     cache_statuses = true }

--- Adds a route. methods: "GET", { "GET", "POST" } or "*" (any method).
-- handler(req, params) returns the response table. opts: cache (false: never
-- cached), cache_key (function(req, params) -> key or nil), ttl (seconds, for
-- responses that set none), cache_statuses (a list of statuses stored besides
-- the heuristically cacheable ones), name (shown in errors). Returns the router.
function Router:route(methods, pattern, handler, opts)
  self:_add(methods, pattern, handler, opts, 3)
  return self
end

-- level: the error level of the user's call, counted from _add (3 when the
-- user called a method that called _add, not as a tail call).
function Router:_add(methods, pattern, handler, opts, level)
  local list = parse_methods(methods, level + 1)
  local segs, pidx, pname, wild_index, wild_name = parse_pattern(pattern, level + 1)
  if type(handler) ~= "function" then
    error(format("route %s: handler must be a function(req, params), got %s", pattern,
      type(handler)), level)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(format("route %s: opts must be a table, got %s", pattern, type(opts)), level)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not ROUTE_OPTS[k] then
      error(format("route %s: unknown option %q (known: cache, cache_key, ttl, cache_statuses, "
        .. "name)", pattern, tostring(k)), level)
    end
  end
  if opts.cache ~= nil and opts.cache ~= false and opts.cache ~= true then
    error(format("route %s: opts.cache must be true or false", pattern), level)
  end
  if opts.cache_key ~= nil and type(opts.cache_key) ~= "function" then
    error(format("route %s: opts.cache_key must be a function(req, params), got %s", pattern,
      type(opts.cache_key)), level)
  end
  if opts.cache == false and opts.cache_key ~= nil then
    error(format("route %s: cache = false and a cache_key contradict each other", pattern), level)
  end
  if opts.ttl ~= nil and (type(opts.ttl) ~= "number" or opts.ttl <= 0) then
    error(format("route %s: opts.ttl must be a number > 0", pattern), level)
  end
  local statuses = nil
  if opts.cache_statuses ~= nil then
    if type(opts.cache_statuses) ~= "table" or #opts.cache_statuses == 0 then
      error(format("route %s: opts.cache_statuses must be a non-empty list of statuses", pattern),
        level)
    end
    statuses = {}
    for _, st in ipairs(opts.cache_statuses) do
      if math.type(st) ~= "integer" or st < 200 or st > 599 then
        error(format("route %s: opts.cache_statuses: %s is not a status from 200 to 599", pattern,
          tostring(st)), level)
      end
      statuses[st] = true
    end
  end

  local route = {
    methods = list, pattern = pattern, handler = handler, name = opts.name,
    cache = opts.cache ~= false, cache_key = opts.cache_key, ttl = opts.ttl, statuses = statuses,
    pidx = pidx, pname = pname, nparams = #pidx, wild_index = wild_index, wild_name = wild_name,
  }

  local node = self.root
  local last = wild_index and #segs - 1 or #segs
  for i = 1, last do
    local seg = segs[i]
    if byte(seg, 1) == 58 then
      node.param = node.param or new_node()
      node = node.param
    else
      local child = node.static[seg]
      if not child then
        child = new_node()
        node.static[seg] = child
      end
      node = child
    end
  end
  local target
  if wild_index then
    node.wild = node.wild or {}
    target = node.wild
  else
    node.handlers = node.handlers or {}
    target = node.handlers
  end
  for _, m in ipairs(list) do
    local prev = target[m]
    if prev then
      error(format("route %s %s already defined (as %s %s)", m, pattern, m, prev.pattern), level)
    end
  end
  for _, m in ipairs(list) do target[m] = route end
  if #pidx == 0 and not wild_index then self.exact[pattern] = target end
  self.routes[#self.routes + 1] = route
  return route
end

-- (Not tail calls, so error levels point at the caller's line.)
function Router:get(pattern, handler, opts) self:_add("GET", pattern, handler, opts, 3) return self end
function Router:head(pattern, handler, opts) self:_add("HEAD", pattern, handler, opts, 3) return self end
function Router:post(pattern, handler, opts) self:_add("POST", pattern, handler, opts, 3) return self end
function Router:put(pattern, handler, opts) self:_add("PUT", pattern, handler, opts, 3) return self end
function Router:patch(pattern, handler, opts) self:_add("PATCH", pattern, handler, opts, 3) return self end
function Router:delete(pattern, handler, opts) self:_add("DELETE", pattern, handler, opts, 3) return self end
function Router:options(pattern, handler, opts) self:_add("OPTIONS", pattern, handler, opts, 3) return self end
--- Any method (the route's handler sees req.method).
function Router:any(pattern, handler, opts) self:_add("*", pattern, handler, opts, 3) return self end

---------------------------------------------------------------------------
-- Matching
---------------------------------------------------------------------------

-- Scratch space for one match: matching never yields, so one per process.
local segs, starts = {}, {}

--- A handlers table's route for method (HEAD falls back to GET, then "*").
local function pick(h, method)
  local r = h[method]
  if r then return r end
  if method == "HEAD" then
    r = h.GET
    if r then return r end
  end
  return h["*"]
end

--- True for ".", "..", and their percent-encoded spellings.
local function is_dot_segment(seg)
  local c = byte(seg, 1)
  if c ~= 46 and c ~= 37 then return false end -- '.' or '%'
  if seg == "." or seg == ".." then return true end
  if #seg > 6 then return false end
  local d = gsub(lower(seg), "%%2e", ".")
  return d == "." or d == ".."
end

--- Splits path into segs/starts; returns the count, or nil for a path with a
-- dot segment.
local function split(path)
  local n, pos = 0, 2
  while true do
    local e = find(path, "/", pos, true)
    local seg = e and sub(path, pos, e - 1) or sub(path, pos)
    local c = byte(seg, 1)
    if (c == 46 or c == 37) and is_dot_segment(seg) then return nil end
    n = n + 1
    segs[n], starts[n] = seg, pos
    if not e then return n end
    pos = e + 1
  end
end

--- Depth-first search: static child, then parameter, then wildcard.
local function search(node, i, n, method)
  if i > n then
    local h = node.handlers
    if h then return pick(h, method) end
    return nil
  end
  local seg = segs[i]
  local child = node.static[seg]
  if child then
    local r = search(child, i + 1, n, method)
    if r then return r end
  end
  child = node.param
  if child and seg ~= "" then
    local r = search(child, i + 1, n, method)
    if r then return r end
  end
  local w = node.wild
  if w then return pick(w, method) end
  return nil
end

--- Collects into `set` every method some route for this path accepts.
local function collect(node, i, n, set)
  if i > n then
    if node.handlers then
      for m in pairs(node.handlers) do set[m] = true end
    end
    return
  end
  local seg = segs[i]
  local child = node.static[seg]
  if child then collect(child, i + 1, n, set) end
  child = node.param
  if child and seg ~= "" then collect(child, i + 1, n, set) end
  if node.wild then
    for m in pairs(node.wild) do set[m] = true end
  end
end

local function allow_header(set)
  if set.GET then set.HEAD = true end
  local list = {}
  for m in pairs(set) do list[#list + 1] = m end
  sort(list, function(a, b)
    local ra, rb = METHOD_RANK[a], METHOD_RANK[b]
    if ra and rb then return ra < rb end
    if ra or rb then return ra ~= nil end
    return a < b
  end)
  return concat(list, ", ")
end

local function params_of(route, path, n)
  local params = {}
  local pidx, pname = route.pidx, route.pname
  for k = 1, route.nparams do params[pname[k]] = segs[pidx[k]] end
  local wi = route.wild_index
  if wi then
    local rest = wi <= n and sub(path, starts[wi]) or ""
    params["*"] = rest
    if route.wild_name then params[route.wild_name] = rest end
  end
  return params
end

--- Finds the route for method and path. Returns the route and its params; or
-- nil and 404; or nil, 405 and the Allow header value; or nil and 400 (a dot
-- segment). A route is { pattern, methods, handler, name, ... }.
function Router:match(method, path)
  local h = self.exact[path]
  if h then
    local r = pick(h, method)
    if r then return r, {} end
  end
  if type(path) ~= "string" or byte(path, 1) ~= 47 then return nil, 404 end
  local n = split(path)
  if not n then return nil, 400 end
  local r = search(self.root, 1, n, method)
  if r then return r, params_of(r, path, n) end
  local set = {}
  collect(self.root, 1, n, set)
  if next(set) == nil then return nil, 404 end
  return nil, 405, allow_header(set)
end

---------------------------------------------------------------------------
-- The hooks
---------------------------------------------------------------------------

local function where(fn)
  local info = debug.getinfo(fn, "S")
  return format("%s:%d", info.short_src, info.linedefined)
end

local function describe(route, method)
  return format("%s %s%s", method, route.pattern, route.name and (" (" .. route.name .. ")") or "")
end

--- The key GET and HEAD share by default: the method class, the host, the
-- path and the query as sent. A script's own cache_key (or edge.cache.purge)
-- can build the same key from a plain table { host =, path =, query = }.
function router.default_key(req)
  local q = req.query
  local key = "GET " .. (req.host or "") .. req.path
  if q then key = key .. "?" .. q end
  return key
end

--- The cache key for req (see the header comment), or nil.
function Router:cache_key(req)
  local method = req.method
  local route, params = self:match(method, req.path)
  if not route or not route.cache then return nil end
  local fn = route.cache_key
  if fn then
    local key = fn(req, params)
    if key ~= nil and type(key) ~= "string" then
      error(format("cache_key of route %s (%s) returned %s; expected a string or nil",
        describe(route, method), where(fn), type(key)), 0)
    end
    return key
  end
  if method == "GET" or method == "HEAD" then return router.default_key(req) end
  return nil
end

local TEXT = "text/plain; charset=utf-8"

--- Runs the matching route's handler; 404, 405 or 400 when there is none.
function Router:respond(req)
  local method = req.method
  local route, params, allow = self:match(method, req.path)
  if not route then
    if params == 405 then
      if self.method_not_allowed_fn then return self.method_not_allowed_fn(req, allow) end
      return { status = 405, headers = { allow = allow, ["content-type"] = TEXT },
               body = "method not allowed\n" }
    elseif params == 400 then
      if self.bad_path_fn then return self.bad_path_fn(req) end
      return { status = 400, headers = { ["content-type"] = TEXT }, body = "bad path\n" }
    end
    if self.not_found_fn then return self.not_found_fn(req) end
    return { status = 404, headers = { ["content-type"] = TEXT }, body = "not found\n" }
  end
  local resp = route.handler(req, params)
  if type(resp) ~= "table" then
    error(format("handler of route %s (%s) returned %s; expected a response table "
      .. "{ status = integer, headers = table, body = string }", describe(route, method),
      where(route.handler), type(resp)), 0)
  end
  local ttl = route.ttl and resp.ttl == nil
  local any_status = route.statuses and resp.cache == nil and route.statuses[resp.status or 200]
  if ttl or any_status then
    local copy = {}                 -- the handler's table may be shared (a constant)
    for k, v in pairs(resp) do copy[k] = v end
    if ttl then copy.ttl = route.ttl end
    if any_status then copy.cache = "any-status" end
    resp = copy
  end
  return resp
end

--- The script's hook table: `return app:hooks()`.
function Router:hooks()
  return {
    cache_key = function(req) return self:cache_key(req) end,
    respond = function(req) return self:respond(req) end,
  }
end

router.Router = Router
return router
