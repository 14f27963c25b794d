--- A fake upstream for unit specs: canned answers for edge.fetch, and a record
-- of what was asked.
--
--   local fake = require "edge.testing.upstream"
--   fake.respond("GET", "http://api/users/1", { status = 200, body = "{}" })
--   fake.install()               -- edge.fetch now answers from the canned responses
--   ... call the script's hooks ...
--   fake.requests()              -- { { method, url, headers, body, opts }, ... }
--   fake.uninstall()             -- the real edge.fetch again; rules and records forgotten
--
-- A target is the string the script passes to edge.fetch, never resolved or
-- normalised: a URL, or a named upstream's (http://api/users/1). It matches
-- when it is equal, or, for a string starting with "^", the Lua pattern; or
-- give a function(url, req) returning true. The method is a string or "*"
-- (any). A response is a table { status = 200, headers = {}, body = "" }
-- (each call gets a fresh copy, header names lower-cased as edge.fetch's), or
-- a function(req) returning one, or nil and an error message, as edge.fetch
-- does. When several rules match, the one given last wins, so a spec can
-- override a before_each default. An unmatched request returns nil and
-- "no fake response for GET http://api/x".
local edge = require "edge"

local fake = {}

local rules, recorded, real_fetch = {}, {}, nil

local function check_response(res, level)
  if type(res) == "function" then return end
  if type(res) ~= "table" then
    error("edge.testing.upstream: a response must be a table or a function, got " .. type(res), level)
  end
  local status = res.status
  if status ~= nil and (math.type(status) ~= "integer" or status < 100 or status > 599) then
    error("edge.testing.upstream: status must be an integer from 100 to 599, got " .. tostring(status), level)
  end
  if res.body ~= nil and type(res.body) ~= "string" then
    error("edge.testing.upstream: body must be a string, got " .. type(res.body), level)
  end
  if res.headers ~= nil and type(res.headers) ~= "table" then
    error("edge.testing.upstream: headers must be a table, got " .. type(res.headers), level)
  end
end

--- Adds a canned answer for method (or "*") and target (see above).
function fake.respond(method, target, response)
  if type(method) ~= "string" then
    error("edge.testing.upstream.respond: method must be a string (\"*\": any), got " .. type(method), 2)
  end
  if type(target) ~= "string" and type(target) ~= "function" then
    error("edge.testing.upstream.respond: target must be a string or a function, got " .. type(target), 2)
  end
  check_response(response, 3)
  rules[#rules + 1] = { method = method, target = target, response = response }
end

local function matches(rule, req)
  if rule.method ~= "*" and rule.method ~= req.method then return false end
  local t = rule.target
  if type(t) == "function" then return t(req.url, req) and true or false end
  if t:sub(1, 1) == "^" then return req.url:find(t) ~= nil end
  return req.url == t
end

local function copy_headers(headers)
  local out = {}
  for name, value in pairs(headers or {}) do
    if type(value) == "table" then
      local list = {}
      for i, v in ipairs(value) do list[i] = v end
      value = list
    end
    out[string.lower(name)] = value
  end
  return out
end

local function answer(res)
  return { status = res.status or 200, headers = copy_headers(res.headers), body = res.body or "" }
end

-- The edge.fetch that install() puts in place.
local function fake_fetch(url, opts)
  if type(url) ~= "string" then error("bad argument #1 to 'fetch' (string expected, got " .. type(url) .. ")", 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'fetch' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local req = { method = opts.method or "GET", url = url, headers = copy_headers(opts.headers),
                body = opts.body, opts = opts }
  recorded[#recorded + 1] = req
  for i = #rules, 1, -1 do
    local rule = rules[i]
    if matches(rule, req) then
      local res = rule.response
      if type(res) == "function" then
        local got, err = res(req)
        if got == nil then return nil, err or "fake response function returned nothing" end
        check_response(got, 2)
        res = got
      end
      return answer(res)
    end
  end
  return nil, "no fake response for " .. req.method .. " " .. url
end

--- Puts the fake edge.fetch in the edge module (scripts that call
-- edge.fetch when a hook runs use it from now on). Starts a new record.
function fake.install()
  if real_fetch == nil then real_fetch = edge.fetch end
  edge.fetch = fake_fetch
  recorded = {}
end

--- Puts the real edge.fetch back; forgets the rules and the record.
function fake.uninstall()
  if real_fetch ~= nil then edge.fetch = real_fetch end
  real_fetch = nil
  fake.reset()
end

--- Forgets the rules and the record; stays installed.
function fake.reset()
  rules, recorded = {}, {}
end

--- The requests edge.fetch got since install() (or reset()), in order: a
-- copy, each { method, url, headers (lower-cased), body, opts }.
function fake.requests()
  local out = {}
  for i, r in ipairs(recorded) do out[i] = r end
  return out
end

return fake
