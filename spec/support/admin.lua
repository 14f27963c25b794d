-- A client for edge's admin listener (--admin 127.0.0.1:PORT, plain HTTP):
-- one GET per connection, and a parser for the Prometheus text format.
--
--   local admin = require "support.admin"
--   local status, headers, body = admin.get(port, "/healthz")
--   local m = admin.scrape(port)       -- { ["name{labels}"] = number, ... }, plus the text
--   admin.value(m, 'edge_requests_total{protocol="h2",status="2xx"}')
local client = require "support.client"

local admin = {}

--- GET path on 127.0.0.1:port over plain HTTP/1.1 (bounded: 5 s). Returns
-- status (nil when no response), headers, body, and the raw bytes read.
function admin.get(port, path)
  local c, err = client.tcp(port, 5)
  if not c then return nil, nil, nil, "connect: " .. tostring(err) end
  local ok, serr = c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
  if not ok then c:close() return nil, nil, nil, "send: " .. tostring(serr) end
  c:read_all(5)
  c:close()
  local list = client.parse_responses(c.buf, { closed = true })
  local r = list[1]
  if not r then return nil, nil, nil, c.buf end
  return r.status, r.headers, r.body, c.buf
end

--- Parses Prometheus text: a table from "name{labels}" (labels exactly as
-- written) to the number, and the list of sample keys in order.
function admin.parse(text)
  local samples, order = {}, {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
      if name then
        local labels = ""
        if rest:sub(1, 1) == "{" then
          labels = rest:match("^(%b{})") or ""
          rest = rest:sub(#labels + 1)
        end
        local v = rest:match("^%s+(%S+)")
        local n = tonumber(v)
        if v == "+Inf" then n = math.huge elseif v == "-Inf" then n = -math.huge end
        local key = name .. labels
        samples[key] = n
        order[#order + 1] = key
      end
    end
  end
  return samples, order
end

--- GET /metrics and parse it. Returns the samples table (see parse) and the
-- text; raises when the scrape fails.
function admin.scrape(port)
  local status, _, body, raw = admin.get(port, "/metrics")
  assert(status == 200, "GET /metrics on the admin port failed: " .. tostring(status) .. " " .. tostring(raw))
  local samples = admin.parse(body)
  return samples, body
end

--- The value of one sample; raises (listing the text) when it is missing.
function admin.value(samples, key)
  local v = samples[key]
  if v == nil then error("metric sample missing: " .. key, 2) end
  return v
end

return admin
