-- Helpers for the issue 13 cache specs: the state directory of
-- spec/fixtures/stale_app.lua (modes and the calls file), Cache-Status
-- parsing (RFC 9211: a cache name, then parameters whose order carries no
-- meaning), concurrent curls with their timings, and /metrics samples.
--
--   local ce = require "support.cache_e2e"
--   local app = ce.start_app { workers = 2, admin = true, args = { ... } }
--   app.srv, app.dir, app.admin_port; ce.set_mode(app.dir, "/p", "error=1")
--   ce.calls(app.dir, "/p") -> list of { inm = ..., ims = bool }
--   ce.assert_status(res, "edge; fwd=miss; stored")
--   local list, wall = ce.parallel { { url = ..., http2 = true, headers = { ... } }, ... }
local server = require "support.server"
local admin = require "support.admin"
local proc = require "support.proc"
local util = require "support.util"
local luassert = require "luassert"

local ce = {}

ce.APP = "spec/fixtures/stale_app.lua"
ce.EDGE = "spec/fixtures/stale_edge.lua"

--- Starts edge running stale_app.lua with a fresh state directory.
-- opts: workers (default 1), admin (true: --admin on a free port), args,
-- nokey (the origin role: no cache key), plain (a cleartext listener).
-- Returns { srv, dir, admin_port }.
function ce.start_app(opts)
  opts = opts or {}
  local dir = util.tmpdir("stale-app")
  local args = {}
  local aport
  if opts.admin then
    aport = util.free_port()
    args = { "--admin", "127.0.0.1:" .. aport }
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local env = { EDGE_SPEC_DIR = dir }
  if opts.nokey then env.EDGE_SPEC_NOKEY = "1" end
  local srv = server.start { script = ce.APP, workers = opts.workers or 1, args = args, env = env,
                             plain = opts.plain }
  return { srv = srv, dir = dir, admin_port = aport }
end

--- The mode file of path: a query string laid over the request's arguments.
function ce.set_mode(dir, path, query)
  util.write_file(dir .. "/mode_" .. path:gsub("/", "_"), query or "")
end

--- The app's respond calls for path so far: { inm = "..." or nil, ims = bool }.
function ce.calls(dir, path)
  local out = {}
  for line in (util.read_file(dir .. "/calls") or ""):gmatch("[^\n]+") do
    local p, inm, ims = line:match("^(%S+) inm=(%S+) ims=(%d)$")
    if p == path then out[#out + 1] = { inm = inm ~= "-" and inm or nil, ims = ims == "1" } end
  end
  return out
end

--- Waits (bounded) until path has at least n calls; returns the count.
function ce.wait_calls(dir, path, n, timeout)
  local deadline = util.now() + (timeout or 5)
  local got = #ce.calls(dir, path)
  while got < n and util.now() < deadline do
    util.sleep(0.05)
    got = #ce.calls(dir, path)
  end
  return got
end

--- Sleeps until `t` (a util.now() value), if it is still ahead.
function ce.sleep_until(t)
  util.sleep(t - util.now())
end

---------------------------------------------------------------------------
-- Cache-Status
---------------------------------------------------------------------------

--- Parses one Cache-Status member: its cache name and { param = value or true }.
function ce.parse_status(value)
  if not value then return nil, {} end
  local name, params = nil, {}
  for part in (value .. ";"):gmatch("([^;]*);") do
    part = part:match("^%s*(.-)%s*$")
    if not name then
      name = part
    elseif part ~= "" then
      local k, v = part:match("^([^=]+)=(.*)$")
      if k then params[k] = v else params[part] = true end
    end
  end
  return name, params
end

local function same_params(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end

--- Whether the Cache-Status value `got` says exactly `want` (same cache
-- name, same parameters and values; their order is free, RFC 9211 §2).
-- A parameter written as `ttl=%d+` in want matches any number.
function ce.status_is(got, want)
  local gname, gparams = ce.parse_status(got)
  local wname, wparams = ce.parse_status(want)
  for k, v in pairs(wparams) do
    if v == "%d+" and type(gparams[k]) == "string" and gparams[k]:match("^%d+$") then wparams[k] = gparams[k] end
  end
  return gname == wname and same_params(gparams, wparams)
end

--- Asserts the response's Cache-Status is `want` (see status_is).
function ce.assert_status(res, want, what)
  local got = res.headers and res.headers["cache-status"]
  luassert.is_true(ce.status_is(got, want),
    string.format("%sCache-Status: want %q, got %q (status %s, X-Cache %s)", what and (what .. ": ") or "",
      want, tostring(got), tostring(res.status), tostring(res.headers and res.headers["x-cache"])))
end

---------------------------------------------------------------------------
-- Concurrent curls
---------------------------------------------------------------------------

--- Runs one curl per item at once (one shell starts them all, so they
-- start together however slow process creation is), each bounded by
-- --max-time (default 10 s). item: url, http2, headers ({ name = value }),
-- max_time. Returns a list of { status, headers, body, time (curl's
-- time_total), exit, stderr } in item order, and the wall time from the
-- start of the shell to the last curl's exit.
function ce.parallel(items)
  local dir = util.tmpdir("par")
  local lines, limit = {}, 0
  for i, it in ipairs(items) do
    local mt = it.max_time or 10
    limit = math.max(limit, mt)
    local argv = { "curl", "-sk", it.http2 and "--http2" or "--http1.1", "--max-time", tostring(mt),
                   "-D", ("%s/h%d"):format(dir, i), "-o", ("%s/b%d"):format(dir, i),
                   "-w", "%{http_code} %{time_total}" }
    for k, v in pairs(it.headers or {}) do
      argv[#argv + 1] = "-H"
      argv[#argv + 1] = k .. ": " .. v
    end
    argv[#argv + 1] = it.url
    lines[#lines + 1] = ("%s >%s 2>%s </dev/null & "):format(util.qall(argv), util.q(("%s/o%d"):format(dir, i)),
      util.q(("%s/e%d"):format(dir, i)))
  end
  local script = table.concat(lines) .. "wait"
  local t0 = util.now()
  local p = proc.spawn({ "sh", "-c", script }, { timeout = limit + 5 })
  p:wait(limit + 10)
  local wall = util.now() - t0
  local out = {}
  for i = 1, #items do
    local code, t = (util.read_file(("%s/o%d"):format(dir, i)) or ""):match("^(%d+) ([%d.]+)")
    local raw = util.read_file(("%s/h%d"):format(dir, i)) or ""
    local last = raw:match(".*(HTTP/[^\r\n]*\r\n.-)\r\n\r\n") or ""
    local headers = server.parse_header_lines(last:match("^[^\n]*\n(.*)$") or "")
    out[i] = { status = tonumber(code) or 0, headers = headers, body = util.read_file(("%s/b%d"):format(dir, i)) or "",
               time = tonumber(t) or math.huge, stderr = util.read_file(("%s/e%d"):format(dir, i)) or "" }
  end
  os.execute("rm -rf " .. util.q(dir))
  return out, wall
end

---------------------------------------------------------------------------
-- Metrics
---------------------------------------------------------------------------

--- A metric sample (0 when edge does not list it, so a missing counter
-- shows as "did not move" in the assertion that needs it).
function ce.metric(port, key)
  local samples = admin.scrape(port)
  return samples[key] or 0, samples[key] ~= nil
end

--- Every sample the specs read, at once.
function ce.metrics(port)
  local s = admin.scrape(port)
  local function v(k) return s[k] or 0 end
  return {
    grace = v('edge_cache_stale_served_total{reason="grace"}'),
    error = v('edge_cache_stale_served_total{reason="error"}'),
    refreshes = v("edge_cache_refreshes_total"),
    not_modified = v('edge_cache_revalidations_total{result="not_modified"}'),
    modified = v('edge_cache_revalidations_total{result="modified"}'),
    failed = v('edge_cache_revalidations_total{result="failed"}'),
    coalesced = v("edge_coalesced_waits_total"),
    raw = s,
  }
end

return ce
