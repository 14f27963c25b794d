-- edge.testing.phases: runs a script's hooks in the server's order on a
-- plain request table, for unit specs without a server (busted):
-- access -> cache_key -> (cache look-up) -> respond -> on_response -> log.
--
--   local phases = require "edge.testing.phases"
--   local fake   = require "edge.testing.request"
--   local app    = dofile("myapp.lua")
--
--   local res, info = phases.run(app, fake.get("/admin", { authorization = "Bearer t" }))
--   -- res: { status, headers, body }: what the client would get, after on_response
--   -- info.ran      { "access", "cache_key", "respond", "on_response", "log" }
--   -- info.ended_by "access" when access returned a response, else "respond"
--   --               ("cache" on a hit, "error" when a hook raised)
--   -- info.key      what cache_key returned (nil: not cached)
--   -- info.error    the message of a hook that raised (the client got 500)
--   -- info.log_res  the `res` log(req, res) was given; info.log_error its error
--
-- What it does, as the server does:
--   * access(req) first; a table it returns ends the request with it
--     (cache_key and respond do not run; never cached, no X-Cache).
--     `req:set_header(name, value)` and `req:clear_header(name)` work on a
--     plain table too (a table without a metatable gets one providing them):
--     they change req.headers (lower-case names).
--   * cache_key(req), then respond(req).
--   * on_response(req, res) with res = { status, headers } (lower-case
--     names; no body): what it changes, or the { status, headers } table it
--     returns, is what the client gets. Content-Length, Transfer-Encoding and
--     Connection set there are dropped (edge writes the framing).
--   * A hook that raises (or returns a bad value) makes the response 500
--     (body "500 Internal Server Error\n"), and on_response still runs on
--     it, unless on_response itself raised.
--   * log(req, res) last, with a copy of req and res = { status, headers,
--     bytes_sent (the body's length), duration (virtual seconds: edge.sleep
--     in the hooks moves the clock), cache }. Its error goes to info.log_error
--     and changes nothing else.
--
-- opts (phases.run(app, req, opts)):
--   cache   true: look the key up in edge.cache (the real cache of `require
--           "edge"`): an entry answers (cache "HIT", header x-cache: HIT,
--           respond not run); else respond runs (cache "MISS", x-cache: MISS)
--           and its response is stored with edge.cache.set(key, response),
--           which stores what it is given: the server's own rules (status,
--           Cache-Control, Set-Cookie, Vary) are not applied, and Age /
--           Cache-Status are not added. Default false: the cache is not
--           touched, respond always runs, res.cache is nil.
--   raise   true: a hook's error is raised (with the hook's name) instead of
--           becoming a 500, to see the traceback while writing a script.
--
-- Waiting: outside the server edge.sleep moves the virtual clock and
-- edge.fetch blocks (see edge.testing.clock), so every hook runs to its end
-- here, waits included. One difference: here a wait never refuses, even
-- where the server says "cannot wait here" (table.sort's comparator,
-- string.gsub's callback).
local phases = {}

local FRAMING = { ["content-length"] = true, ["transfer-encoding"] = true, ["connection"] = true }
local ERROR_BODY = "500 Internal Server Error\n"

local function edge_module()
  local ok, edge = pcall(require, "edge")
  if ok and type(edge) == "table" then return edge end
  return nil
end

--- Seconds on edge's clock (the virtual one in busted), or 0 without edge.
local function now()
  local edge = edge_module()
  return edge and edge.now() or 0
end

local function check_header_value(fname, value)
  if type(value) == "string" then return end
  if type(value) == "table" then
    for _, v in ipairs(value) do
      if type(v) ~= "string" then
        error(fname .. ": a list value must hold strings, got " .. type(v), 3)
      end
    end
    return
  end
  error(fname .. ": value must be a string or a list of strings, got " .. type(value), 3)
end

local req_methods = {}

--- req:set_header(name, value): sets (replaces) a request header.
function req_methods.set_header(req, name, value)
  if type(name) ~= "string" or name == "" then
    error("req:set_header: name must be a non-empty string, got " .. tostring(name), 2)
  end
  check_header_value("req:set_header", value)
  req.headers = req.headers or {}
  req.headers[name:lower()] = value
end

--- req:clear_header(name): removes a request header.
function req_methods.clear_header(req, name)
  if type(name) ~= "string" or name == "" then
    error("req:clear_header: name must be a non-empty string, got " .. tostring(name), 2)
  end
  if req.headers then req.headers[name:lower()] = nil end
end

local req_meta = { __index = req_methods }

--- Headers with lower-case names (a name given twice in two cases: a list).
local function lower_headers(h)
  local out = {}
  for name, value in pairs(h or {}) do
    local lname = tostring(name):lower()
    local prev = out[lname]
    if prev == nil then
      out[lname] = type(value) == "table" and { table.unpack(value) } or value
    else
      local list = type(prev) == "table" and prev or { prev }
      for _, v in ipairs(type(value) == "table" and value or { value }) do list[#list + 1] = v end
      out[lname] = list
    end
  end
  return out
end

local function copy_req(req)
  local c = {}
  for k, v in pairs(req) do c[k] = v end
  c.headers = lower_headers(req.headers)
  return setmetatable(c, getmetatable(req))
end

local function error_response()
  return { status = 500, headers = { ["content-type"] = "text/plain" }, body = ERROR_BODY }
end

--- The response table a hook returned, checked and normalised
-- ({ status, headers (lower-case names), body }), or nil and why not.
local function normalise(hook, r)
  if type(r) ~= "table" then
    return nil, hook .. " returned a bad value: expected a table, got " .. type(r)
  end
  local status = r.status == nil and 200 or r.status
  if math.type(status) ~= "integer" or status < 200 or status > 599 then
    return nil, hook .. " returned a bad value: status must be an integer 200-599, got " .. tostring(r.status)
  end
  if r.headers ~= nil and type(r.headers) ~= "table" then
    return nil, hook .. " returned a bad value: headers must be a table, got " .. type(r.headers)
  end
  if r.body ~= nil and type(r.body) ~= "string" then
    return nil, hook .. " returned a bad value: body must be a string, got " .. type(r.body)
  end
  return { status = status, headers = lower_headers(r.headers), body = r.body or "",
           ttl = r.ttl, grace = r.grace, keep = r.keep, cache = r.cache, compress = r.compress }
end

--- Calls app[name](...) when it exists. Returns true and its first result,
-- or false and the error message (raised instead with opts.raise).
local function call(app, name, opts, ...)
  local fn = app[name]
  if fn == nil then return true, nil end
  if type(fn) ~= "function" then
    return false, "script field " .. name .. " must be a function, got " .. type(fn)
  end
  local ok, r = xpcall(fn, debug.traceback, ...)
  if not ok and opts.raise then error("lua error in " .. name .. ": " .. tostring(r), 0) end
  return ok, r
end

--- access, cache_key, the look-up and respond: the response before
-- on_response. Fills info.
local function produce(app, req, opts, info)
  local ok, r = call(app, "access", opts, req)
  if app.access ~= nil then info.ran[#info.ran + 1] = "access" end
  if not ok then info.error, info.ended_by = r, "error" return error_response() end
  if r ~= nil then
    local res, err = normalise("access", r)
    if not res then info.error, info.ended_by = err, "error" return error_response() end
    info.ended_by = "access"
    return res
  end
  ok, r = call(app, "cache_key", opts, req)
  if app.cache_key ~= nil then info.ran[#info.ran + 1] = "cache_key" end
  if not ok then info.error, info.ended_by = r, "error" return error_response() end
  if r ~= nil and type(r) ~= "string" then
    info.error, info.ended_by = "cache_key returned a bad value: expected a string or nil, got " .. type(r), "error"
    return error_response()
  end
  info.key = r
  local edge = opts.cache and info.key and edge_module()
  if opts.cache and info.key and not edge then
    error("edge.testing.phases: opts.cache needs the edge module (build/lua/edge.so)", 3)
  end
  if edge then
    local entry = edge.cache.get(info.key)
    if entry then
      info.cache, info.ended_by = "HIT", "cache"
      local res = assert(normalise("the cache", entry))
      res.headers["x-cache"] = "HIT"
      return res
    end
    info.cache = "MISS"
  end
  if type(app.respond) ~= "function" then
    error("edge.testing.phases: the script has no respond function", 3)
  end
  ok, r = call(app, "respond", opts, req)
  info.ran[#info.ran + 1] = "respond"
  if not ok then info.error, info.ended_by = r, "error" return error_response() end
  local res, err = normalise("respond", r)
  if not res then info.error, info.ended_by = err, "error" return error_response() end
  info.ended_by = "respond"
  if edge then
    edge.cache.set(info.key, r)
    res.headers["x-cache"] = "MISS"
  end
  return res
end

--- on_response(req, { status, headers }): the final status and headers.
local function finish(app, req, res, opts, info)
  if app.on_response == nil then return res end
  local view = { status = res.status, headers = res.headers }
  local ok, r = call(app, "on_response", opts, req, view)
  info.ran[#info.ran + 1] = "on_response"
  if ok and r ~= nil then
    if type(r) == "table" then
      view = { status = r.status == nil and view.status or r.status, headers = r.headers or {} }
    else
      ok, r = false, "on_response returned a bad value: expected nothing or a table, got " .. type(r)
    end
  end
  if ok and (math.type(view.status) ~= "integer" or view.status < 200 or view.status > 599) then
    ok, r = false, "on_response set a bad status: " .. tostring(view.status)
  end
  if ok and type(view.headers) ~= "table" then
    ok, r = false, "on_response set bad headers: " .. type(view.headers)
  end
  if not ok then
    info.error = r
    return error_response()
  end
  local headers = lower_headers(view.headers)
  for name in pairs(FRAMING) do headers[name] = nil end
  return { status = view.status, headers = headers, body = res.body }
end

--- Runs app's hooks on req in the server's order; see the header comment.
-- Returns res { status, headers, body } and info.
function phases.run(app, req, opts)
  if type(app) ~= "table" then
    error("edge.testing.phases.run: app must be the script's table, got " .. type(app), 2)
  end
  if type(req) ~= "table" then
    error("edge.testing.phases.run: req must be a table (edge.testing.request.new), got " .. type(req), 2)
  end
  opts = opts or {}
  if getmetatable(req) == nil then setmetatable(req, req_meta) end
  req.headers = req.headers or {}
  local info = { ran = {} }
  local t0 = now()
  local res = finish(app, req, produce(app, req, opts, info), opts, info)
  local out = { status = res.status, headers = res.headers, body = res.body }
  if app.log ~= nil then
    info.log_res = { status = out.status, headers = lower_headers(out.headers), bytes_sent = #out.body,
                     duration = now() - t0, cache = info.cache }
    local ok, err = call(app, "log", opts, copy_req(req), info.log_res)
    info.ran[#info.ran + 1] = "log"
    if not ok then info.log_error = err end
  end
  return out, info
end

return phases
