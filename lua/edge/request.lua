-- edge.request: small helpers over `req` that the contract does not already
-- give. They work on the server's req userdata and on a plain table (unit
-- specs) alike.
--
--   local request = require "edge.request"
--   request.header(req, "Accept-Language")   -- case-insensitive, first value of a list
--   request.cookies(req)                      -- { name = value, ... } from Cookie header(s)
--   request.arg(req, "q")                     -- first value of query argument q
--
-- What req already gives is not repeated: read req.args for the parsed query
-- (repeated keys as lists), req.headers[name] for a lower-case name, req.body.
local request = {}

local type, pairs = type, pairs
local lower, find, sub, gmatch, byte = string.lower, string.find, string.sub,
  string.gmatch, string.byte

--- The value(s) of header `name` (any case): a string, a list, or nil. The
-- server's req.headers has lower-case names; a plain table in a spec may use
-- any case, so it is scanned when the lower-case name is absent.
local function raw_header(req, name)
  local headers = req.headers
  if headers == nil then return nil end
  local lname = lower(name)
  local v = headers[lname]
  if v == nil and type(req) == "table" then
    for k, val in pairs(headers) do
      if type(k) == "string" and lower(k) == lname then return val end
    end
  end
  return v
end

--- The first value of header `name` (case-insensitive), or nil.
function request.header(req, name)
  if type(name) ~= "string" then
    error("request.header: name must be a string, got " .. type(name), 2)
  end
  local v = raw_header(req, name)
  if type(v) == "table" then return v[1] end
  return v
end

-- Client input is parsed in linear time: plain finds, single-class finds
-- and byte loops only. A pattern such as "(.-)%s*$" backtracks over every
-- run of spaces and makes a long Cookie header quadratic (seconds for 40 KB).

local function is_space(c) -- what %s matches: \t \n \v \f \r and ' '
  return c == 32 or (c >= 9 and c <= 13)
end

--- s[i..j] without leading and trailing spaces ("" when nothing is left).
-- The scan for the first non-space may pass j only over spaces, and stops
-- at len + 1 at the latest.
local function trim(s, i, j)
  i = find(s, "%S", i) or j + 1
  while j >= i and is_space(byte(s, j)) do j = j - 1 end
  return sub(s, i, j)
end

--- One "name=value" pair of a Cookie header: name and value trimmed, or nil
-- when there is no '=' or the name is empty.
local function cookie_pair(pair)
  local eq = find(pair, "=", 1, true)
  if eq == nil then return nil end
  local name = trim(pair, 1, eq - 1)
  if name == "" then return nil end
  return name, trim(pair, eq + 1, #pair)
end

--- The cookies the client sent: { name = value }, from every Cookie header
-- (HTTP/2 clients may split them over several). The first occurrence of a
-- name wins (browsers send the most specific path first); a value in double
-- quotes loses the quotes; values are not percent-decoded; pairs without '='
-- or with an empty name are skipped; spaces around names and values are
-- trimmed. Always a table (empty without cookies). Linear in the header's
-- length, whatever it holds.
function request.cookies(req)
  local out = {}
  local v = raw_header(req, "cookie")
  if v == nil then return out end
  local list = type(v) == "table" and v or { v }
  for i = 1, #list do
    for pair in gmatch(list[i], "[^;]+") do
      local name, value = cookie_pair(pair)
      if name and out[name] == nil then
        if #value >= 2 and byte(value, 1) == 34 and byte(value, -1) == 34 then
          value = sub(value, 2, -2)
        end
        out[name] = value
      end
    end
  end
  return out
end

local function hex(h) return string.char(tonumber(h, 16)) end

--- Percent-decodes s with '+' as a space, as the server does for req.args.
local function decode(s)
  if find(s, "+", 1, true) then s = s:gsub("+", " ") end
  if find(s, "%", 1, true) then s = s:gsub("%%(%x%x)", hex) end
  return s
end

-- The server's own parser (the C that builds req.args), when the edge
-- module exports it; the Lua below does the same otherwise.
local c_parse_args
do
  local ok, edge = pcall(require, "edge")
  if ok and type(edge) == "table" and type(edge.parse_args) == "function" then
    c_parse_args = edge.parse_args
  end
end

--- Parses a query string the way the server builds req.args (OpenResty's
-- ngx.req.get_uri_args): percent-decoded, '+' a space, a repeated key a
-- list, a key without '=' true, empty pairs and "=v" skipped. Used for plain
-- request tables that have a query but no args (see edge.testing.request).
function request.parse_args(query)
  if query ~= nil and type(query) ~= "string" then
    error("request.parse_args: query must be a string or nil, got " .. type(query), 2)
  end
  if c_parse_args then return c_parse_args(query or "") end
  local args = {}
  if query == nil or query == "" then return args end
  for pair in gmatch(query, "[^&]+") do
    local eq = find(pair, "=", 1, true)
    if eq ~= 1 then
      local k, v
      if eq then
        k, v = decode(sub(pair, 1, eq - 1)), decode(sub(pair, eq + 1))
      else
        k, v = decode(pair), true
      end
      local prev = args[k]
      if prev == nil then
        args[k] = v
      elseif type(prev) == "table" then
        prev[#prev + 1] = v
      else
        args[k] = { prev, v }
      end
    end
  end
  return args
end

--- The first value of query argument `name` (a string, or true for a key
-- without '='), or nil. Reads req.args; a plain table without args has its
-- query parsed instead.
function request.arg(req, name)
  local args = req.args
  if args == nil then
    local q = req.query
    if q == nil then return nil end
    args = request.parse_args(q)
  end
  local v = args[name]
  if type(v) == "table" then return v[1] end
  return v
end

return request
