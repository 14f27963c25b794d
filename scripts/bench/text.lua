-- The compressed-hit benchmark's edge script (scripts/bench.sh --scenarios hit,hit-gzip,hit-br):
-- every GET is answered from the cache (keyed by path, an hour) with one 8 KiB text/html body of
-- English-like words (words, markup and ids: it compresses about as a web page does, to a third or a quarter), so a hit sends
-- it as it is, or its stored gzip or br copy when the client asks for one.
local edge = require "edge"

local SIZE = 8192
local WORDS = {
  "the", "edge", "cache", "serves", "a", "response", "from", "memory", "when", "origin", "is", "slow",
  "or", "down", "and", "every", "request", "that", "arrives", "while", "one", "refresh", "runs", "gets",
  "stale", "copy", "at", "once", "compression", "makes", "text", "smaller", "for", "clients", "which",
  "accept", "it", "brotli", "gzip", "header", "field", "value", "body", "bytes", "second", "worker",
  "thread", "loop", "event", "timer", "connection", "stream", "frame", "window", "buffer", "pipe",
  "<p>", "</p>", "<li>", "</li>", "<a href=\"/docs\">", "</a>", "<div class=\"note\">", "</div>",
}

-- Deterministic: the same words on every run (a linear congruential generator).
local function body()
  local out, len, x = {}, 0, 12345
  while len < SIZE do
    x = (x * 1103515245 + 12345) % 2147483648
    local w = WORDS[x % #WORDS + 1]
    if x % 11 == 0 then w = w .. ".\n" elseif x % 7 == 0 then w = w .. "," end
    if x % 5 == 0 then w = string.format('%s <span id="r%06x">%d</span>', w, x % 16777216, x % 9973) end
    out[#out + 1] = w
    len = len + #w + 1
  end
  return table.concat(out, " "):sub(1, SIZE)
end

local BODY = body()
local HEADERS = { ["content-type"] = "text/html; charset=utf-8" }

local app = {}

function app.cache_key(req)
  if req.method == "GET" or req.method == "HEAD" then return req.path end
end

function app.respond(req)
  return { status = 200, headers = HEADERS, body = BODY, ttl = 3600 }
end

return app
