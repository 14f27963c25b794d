-- edge.response: builders for the response table `respond` returns
-- ({ status, headers, body }). Each call returns a new table the caller may
-- change (e.g. set .ttl).
--
--   local response = require "edge.response"
--   return response.json({ id = 1, tags = { "a", "b" } })          -- 200 application/json
--   return response.json({ error = "no such user" }, 404)
--   return response.text("ok\n", 200, { ["cache-control"] = "no-store" })
--   return response.redirect("/new/place", 301)
--
-- JSON is encoded by lua-cjson (Debian's lua-cjson 2.1.0, with its defaults):
-- an empty Lua table encodes as {} (an object); a Lua sequence as an array;
-- cjson.null as null; numbers with 14 significant digits, so integers above
-- 10^14 lose precision (send them as strings); "/" is written as "/", not
-- cjson's "\/" (application/json, as every other encoder writes it). A value
-- cjson cannot encode (a function, NaN, a sparse array) raises an error
-- naming the caller's line.
local cjson = require("cjson").new()   -- a private instance: settings elsewhere do not leak in

local response = {}

local type, pairs, error, format = type, pairs, error, string.format
local lower, find, gsub, floor = string.lower, string.find, string.gsub, math.floor

local JSON = "application/json"
local TEXT = "text/plain; charset=utf-8"

-- lua-cjson 2.1.0 (Debian) always escapes '/', and has no
-- encode_escape_forward_slash (newer forks do): turn it off where it exists,
-- and unescape otherwise. In cjson's output a '/' only ever appears inside a
-- string, always as the escape "\/": an escaped backslash is "\\", whose
-- second backslash is followed by a character that is never a bare '/'. So
-- every "\/" found left to right is an escaped '/', and "/" is exact.
local unescape_slash = true
if type(cjson.encode_escape_forward_slash) == "function" then
  cjson.encode_escape_forward_slash(false)
  unescape_slash = false
end

local function encode(value)
  local body = cjson.encode(value)
  if unescape_slash and find(body, "\\/", 1, true) then
    body = gsub(body, "\\/", "/")
  end
  return body
end

--- Checks status (default `default`); `level` is the caller's error level.
local function check_status(status, default, level)
  if status == nil then return default end
  if type(status) ~= "number" or status ~= floor(status) or status < 200 or status > 599 then
    error(format("status must be an integer from 200 to 599, got %s", tostring(status)), level)
  end
  return floor(status)
end

--- A new headers table: { ["content-type"] = content_type } plus `extra`
-- (names lower-cased, so "Content-Type" replaces the default instead of
-- adding a second one).
local function merge_headers(content_type, extra, level)
  local h = { ["content-type"] = content_type }
  if extra == nil then return h end
  if type(extra) ~= "table" then
    error("headers must be a table of name -> value, got " .. type(extra), level)
  end
  for name, value in pairs(extra) do
    if type(name) ~= "string" then
      error("header names must be strings, got " .. type(name), level)
    end
    h[lower(name)] = value
  end
  return h
end

--- 200 (or status) with body cjson.encode(value) and content-type
-- application/json; headers (optional) are added, overriding the default.
function response.json(value, status, headers)
  local ok, body = pcall(encode, value)
  if not ok then
    error("edge.response.json: cannot encode the value: " .. tostring(body), 2)
  end
  return { status = check_status(status, 200, 3), headers = merge_headers(JSON, headers, 3),
           body = body }
end

--- 200 (or status) with a text/plain body (a string; a number is converted).
function response.text(body, status, headers)
  local t = type(body)
  if t == "number" then
    body = tostring(body)
  elseif t ~= "string" then
    error("edge.response.text: body must be a string, got " .. t, 2)
  end
  return { status = check_status(status, 200, 3), headers = merge_headers(TEXT, headers, 3),
           body = body }
end

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

--- A redirect to url: status 302 by default (301, 303, 307, 308 allowed),
-- with a Location header and an empty body.
function response.redirect(url, status, headers)
  if type(url) ~= "string" or url == "" then
    error("edge.response.redirect: url must be a non-empty string, got "
      .. (url == "" and "\"\"" or type(url)), 2)
  end
  if find(url, "[%c]") then
    error("edge.response.redirect: url must not contain control characters (CR, LF, ...)", 2)
  end
  status = status or 302
  if not REDIRECT[status] then
    error("edge.response.redirect: status must be 301, 302, 303, 307 or 308, got "
      .. tostring(status), 2)
  end
  local h = merge_headers(TEXT, headers, 3)
  h.location = url
  return { status = status, headers = h, body = "" }
end

return response
