-- Rate limiting per client IP, in the access phase, with edge.limit.
--
-- Each client address may make RATE requests per second on average, plus a
-- burst of BURST more: a request over the rate but within the burst is
-- delayed (edge.sleep) until the rate allows it, as nginx's limit_req does
-- with `burst=`; one beyond the burst is answered 429 Too Many Requests with
-- Retry-After (whole seconds) at once. access runs before the cache, so hits
-- count too. The budget lives in a shared dictionary: every worker thread
-- draws on the same one, and a reload (SIGHUP) keeps it.
--
--   edge -s lua/examples/ratelimit.lua
--   RATELIMIT_RATE=2 RATELIMIT_BURST=4 edge -s lua/examples/ratelimit.lua
local edge = require "edge"

local RATE = tonumber(os.getenv("RATELIMIT_RATE")) or 10     -- requests per second, per client
local BURST = tonumber(os.getenv("RATELIMIT_BURST")) or 20   -- requests delayed before refusing

-- A client's key takes 85 (IPv4) to 110 (IPv6) bytes and leaves as soon as
-- its bucket has drained: 10 MB hold some 100 000 clients being limited at
-- once; past that the least recently seen ones are evicted (and start afresh).
edge.shared.define("ratelimit", "10m")
local limiter = edge.limit.req("ratelimit", RATE, BURST)

local app = {}

-- Retry-After is whole seconds (RFC 9110): round up, so that a client that
-- waits as told is admitted.
local function too_many_requests(retry_after)
  local seconds = math.max(1, math.ceil(retry_after))
  return {
    status = 429,
    headers = { ["content-type"] = "text/plain", ["retry-after"] = tostring(seconds) },
    body = ("Too many requests: retry in %d s.\n"):format(seconds),
  }
end

function app.access(req)
  local delay, err, retry_after = limiter:incoming(req.remote_addr, true)
  if not delay then
    if err == "rejected" then
      return too_many_requests(retry_after)
    end
    -- The dictionary is full of other clients' buckets: serve this one
    -- rather than refuse everybody for want of memory.
    edge.log(edge.WARN, "rate limit not applied: ", err)
    return
  end
  -- Sub-millisecond delays are not worth a timer.
  if delay >= 0.001 then
    edge.sleep(delay)
  end
end

-- What is limited: lua/default.lua's greeting, cached by path.
local BODY = "Hello from edge!"
local HEADERS = { ["content-type"] = "text/plain" }

function app.cache_key(req)
  local m = req.method
  if m == "GET" or m == "HEAD" then
    return req.path
  end
end

function app.respond(req)
  edge.sleep(0.002)
  return { status = 200, headers = HEADERS, body = BODY, ttl = 60 }
end

return app
