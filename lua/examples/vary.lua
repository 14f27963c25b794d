-- Varies the cache key by a request header: one cache entry per language the
-- site has, chosen from Accept-Language. Plain hooks, no router. Serve it
-- with `./edge -s lua/examples/vary.lua`; specs: spec/examples/vary_spec.lua.
--
--   curl -k -H 'Accept-Language: fr-CH, fr;q=0.9, en;q=0.8' https://localhost:8443/
--   -> "Bonjour !", Content-Language: fr, cached under "/?lang=fr"
--
-- The key holds the host, the path and the negotiated language, never the raw
-- header: browsers send thousands of Accept-Language spellings, and keying by
-- the raw value would store one copy per spelling (and let anyone fill the
-- cache). Each response says `Vary: Accept-Language` for caches downstream.
-- edge honours Vary too (each spelling would be its own variant), so the
-- response says cache = "force": this key already holds what selects it.
local edge = require "edge"
local request = require "edge.request"
local response = require "edge.response"

local GREETINGS = {
  en = "Hello!",
  fr = "Bonjour !",
  de = "Hallo!",
}
local DEFAULT = "en"

--- The best language we have for an Accept-Language value (RFC 9110
-- 12.5.4): highest q first, then the order given; "fr-CH" matches "fr";
-- q=0 excludes; "*" takes the default. Nil header: the default.
local function negotiate(header)
  if not header then return DEFAULT end
  local best, best_q, best_i = nil, 0, math.huge
  local i = 0
  for item in header:gmatch("[^,]+") do
    i = i + 1
    local tag = item:match("^%s*([%a%*][%w%-]*)")
    local qv = tonumber(item:match(";%s*[qQ]%s*=%s*([%d%.]+)")) or 1
    if tag and qv > 0 then
      tag = tag:lower()
      local lang = tag == "*" and DEFAULT or tag:match("^(%a+)")
      if GREETINGS[lang] and (qv > best_q or (qv == best_q and i < best_i)) then
        best, best_q, best_i = lang, qv, i
      end
    end
  end
  return best or DEFAULT
end

local app = {}

function app.cache_key(req)
  local m = req.method
  if m ~= "GET" and m ~= "HEAD" then return nil end
  return "GET " .. (req.host or "") .. req.path .. "?lang=" .. negotiate(request.header(req, "accept-language"))
end

function app.respond(req)
  local lang = negotiate(request.header(req, "accept-language"))
  if req.path ~= "/" then
    return response.text("not found\n", 404)
  end
  edge.sleep(0.002)                  -- rendering the page
  local res = response.text(GREETINGS[lang] .. "\n", 200, {
    ["content-language"] = lang,
    ["vary"] = "Accept-Language",
  })
  res.ttl = 60
  res.cache = "force"      -- stored despite Vary: the key holds the language
  return res
end

-- For specs: the negotiation on its own.
app.negotiate = negotiate

return app
