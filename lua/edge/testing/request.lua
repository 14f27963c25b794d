-- edge.testing.request: builds a plain request table shaped like the
-- server's `req`, for calling a script's hooks in a unit spec.
--
--   local fake = require "edge.testing.request"
--   local req = fake.new { method = "GET", path = "/search?q=lua&page=2",
--                          headers = { ["Accept-Language"] = "fr" } }
--   -- req.path == "/search", req.query == "q=lua&page=2",
--   -- req.args == { q = "lua", page = "2" }, req.headers["accept-language"] == "fr"
--   local key = app.cache_key(req)
--   local res = app.respond(req)
--   fake.get("/users/1", headers), fake.post("/users", body, headers)
--
-- Fields (see README "req"): method (default "GET"), path and query (split
-- from `path` at "?" unless `query` is given), args (parsed like the server
-- does), headers (names lower-cased; a list value stays a list), host (from
-- the host header or opts.host, lower-case, without the port; default
-- "localhost"), scheme ("https"), version ("1.1"), remote_addr
-- ("127.0.0.1"), body (nil unless given), id (16 hex digits, a new one per
-- request). Any other field in opts is copied as is.
local request = require "edge.request"

local fake = {}

local seq = 0

function fake.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("edge.testing.request.new: opts must be a table, got " .. type(opts), 2)
  end
  local req = {}
  for k, v in pairs(opts) do req[k] = v end
  req.method = opts.method or "GET"
  local path = opts.path or "/"
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("edge.testing.request.new: path must be a string starting with '/', got "
      .. tostring(path), 2)
  end
  local p, q = path:match("^([^?]*)%?(.*)$")
  if p then path = p end
  req.path = path
  if opts.query ~= nil then q = opts.query end
  req.query = q
  req.args = opts.args or request.parse_args(q)
  local headers = {}
  for name, value in pairs(opts.headers or {}) do
    local lname = name:lower()
    local prev = headers[lname]
    if prev == nil then
      headers[lname] = value
    else  -- "Cookie" and "cookie" both given: a list, as a repeated header
      local list = {}
      for _, v in ipairs(type(prev) == "table" and prev or { prev }) do list[#list + 1] = v end
      if type(value) == "table" then
        for _, v in ipairs(value) do list[#list + 1] = v end
      else
        list[#list + 1] = value
      end
      headers[lname] = list
    end
  end
  req.headers = headers
  local host = opts.host or headers.host
  if type(host) == "table" then host = host[1] end
  host = (host or "localhost"):lower()
  if host:sub(1, 1) == "[" then host = host:match("^(%[.-%])") or host
  else host = host:match("^([^:]*)") end
  req.host = host
  req.scheme = opts.scheme or "https"
  req.version = opts.version or "1.1"
  req.remote_addr = opts.remote_addr or "127.0.0.1"
  seq = seq + 1
  req.id = opts.id or string.format("%016x", seq)
  return req
end

--- fake.new { method = "GET", path = path, headers = headers }
function fake.get(path, headers)
  return fake.new { method = "GET", path = path, headers = headers }
end

--- fake.new { method = "HEAD", path = path, headers = headers }
function fake.head(path, headers)
  return fake.new { method = "HEAD", path = path, headers = headers }
end

--- fake.new { method = "POST", path = path, body = body, headers = headers }
function fake.post(path, body, headers)
  return fake.new { method = "POST", path = path, body = body, headers = headers }
end

return fake
