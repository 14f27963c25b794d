-- The phases of issue 14 (point 2), end to end, per CONTRACT.md "Phases":
-- access (every request, hits included, before the key; may end the
-- request, rewrite it, wait), on_response (every response with a status,
-- before the headers go out; never changes the stored entry), log (after the
-- response, as a task: never delays the client), their order, and a script
-- without them behaving as before. HTTP/1.1 and HTTP/2 where the protocol
-- writes the headers.
--
-- The script: spec/fixtures/phases.lua (its header lists the routes); each
-- hook appends "RUN PHASE details" to a file, RUN being the X-Run header
-- the spec sends. The origin of edge.proxy: a second edge running
-- spec/fixtures/proxy_origin.lua (it answers the path and headers it got).
local server = require "support.server"
local util = require "support.util"

local SCRIPT = "spec/fixtures/phases.lua"
local ORIGIN = "spec/fixtures/proxy_origin.lua"

local PROTOS = { { name = "HTTP/1.1", http2 = false }, { name = "HTTP/2", http2 = true } }

local seq = 0
--- A fresh X-Run value.
local function new_run(what)
  seq = seq + 1
  return ("%s-%d-%d"):format(what:gsub("[^%w]", ""), seq, math.floor(util.now() * 1000) % 1000000)
end

--- The records ("PHASE details" lines) the hooks wrote for one run.
local function records(file, run)
  local out = {}
  for _, line in ipairs(util.lines(util.read_file(file) or "")) do
    local r, rest = line:match("^(%S+) (.*)$")
    if r == run then out[#out + 1] = rest end
  end
  return out
end

--- The phase names of a run's records, joined with " ".
local function phase_names(file, run)
  local names = {}
  for _, rec in ipairs(records(file, run)) do names[#names + 1] = rec:match("^(%S+)") end
  return table.concat(names, " ")
end

--- Waits (bounded) until the run has a record of `phase`; returns that record.
local function wait_record(file, run, phase, timeout)
  return util.wait_until(function()
    for _, rec in ipairs(records(file, run)) do
      if rec:match("^(%S+)") == phase then return rec end
    end
  end, timeout or 3)
end

describe("phases #e2e", function()
  local srv, origin_srv, file

  lazy_setup(function()
    origin_srv = server.start { script = ORIGIN, plain = true, workers = 1 }
    file = util.tmpdir("phases") .. "/records"
    util.write_file(file, "")
    srv = server.start { script = SCRIPT, workers = 1, plain = true,
                         env = { PHASES_LOG = file,
                                 PHASES_ORIGIN = ("http://127.0.0.1:%d"):format(origin_srv.plain_port) } }
  end)
  lazy_teardown(function() server.stop_and_check(srv, origin_srv) end)

  --- GET path with X-Run; returns the response and the run.
  local function get(path, opts)
    opts = opts or {}
    local run = new_run(path)
    local headers = { ["x-run"] = run }
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    local res = srv:request { path = path, headers = headers, http2 = opts.http2, timeout = opts.timeout }
    return res, run
  end

  describe("access", function()
    it("runs on a hit as on a miss, before cache_key", function()
      local res, run = get("/c/access-on-hit")
      assert.are.equal("MISS", res.headers["x-cache"], res.body .. srv:log_tail())
      assert.are.equal("access cache_key respond on_response", (phase_names(file, run):gsub(" log$", "")))
      res, run = get("/c/access-on-hit")
      assert.are.equal("HIT", res.headers["x-cache"])
      assert.truthy(wait_record(file, run, "log"), srv:log_tail())
      assert.are.equal("access cache_key on_response log", phase_names(file, run))
    end)

    for _, p in ipairs(PROTOS) do
      it("a 403 it returns ends the request: no X-Cache, no cache_key, no respond (" .. p.name .. ")", function()
        local res, run = get("/deny/c/x", { http2 = p.http2 })
        assert.are.equal(403, res.status, res.body .. srv:log_tail())
        assert.are.equal("denied\n", res.body)
        assert.are.equal("access", res.headers["x-from"])
        assert.is_nil(res.headers["x-cache"])
        assert.is_nil(res.headers["cache-status"])
        assert.truthy(wait_record(file, run, "log"), srv:log_tail())
        assert.are.equal("access on_response log", phase_names(file, run))
      end)

      it("a 302 it returns is what the client gets, never stored (" .. p.name .. ")", function()
        local res, run = get("/redirect/c/y", { http2 = p.http2 })
        assert.are.equal(302, res.status, res.body .. srv:log_tail())
        assert.are.equal("https://example.test/login", res.headers["location"])
        assert.is_nil(res.headers["x-cache"])
        res = get("/redirect/c/y", { http2 = p.http2 })
        assert.are.equal(302, res.status)
        assert.is_nil(res.headers["x-cache"])
        assert.truthy(wait_record(file, run, "log"))
        assert.is_nil(phase_names(file, run):find("respond", 1, true))
      end)
    end

    it("rewrites req.path: cache_key and respond see the new path, which keys the entry", function()
      local res, run = get("/old/page")
      assert.are.equal(200, res.status, res.body .. srv:log_tail())
      assert.truthy(res.body:find("path=/new/page\n", 1, true), res.body)
      assert.are.equal("MISS", res.headers["x-cache"])
      local recs = records(file, run)
      assert.are.equal("access path=/old/page", recs[1])
      assert.are.equal("cache_key path=/new/page", recs[2])
      assert.are.equal("respond path=/new/page", recs[3])
      assert.are.equal("/new/page", res.headers["x-path-seen"])
      -- log's req is a copy with access's rewrite.
      local rec = wait_record(file, run, "log")
      assert.truthy(rec and rec:find(" path=/new/page ", 1, true), rec)
      -- The entry is the rewritten path's: asking for it directly HITs.
      res = get("/new/page")
      assert.are.equal("HIT", res.headers["x-cache"])
      assert.truthy(res.body:find("path=/new/page\n", 1, true), res.body)
    end)

    for _, p in ipairs(PROTOS) do
      it("rewrites the path and headers edge.proxy sends: set_header / clear_header (" .. p.name .. ")", function()
        local res = get("/proxy/echo/x?q=1", { http2 = p.http2,
          headers = { ["x-secret"] = "s3cret", ["x-kept"] = "kept", ["x-added"] = "from-client" } })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("yes", res.headers["x-origin"])
        local body = res.body
        assert.truthy(body:find("path=/echo/x\n", 1, true), body)
        assert.truthy(body:find("query=q=1\n", 1, true), body)
        assert.truthy(body:find("h:x-added=by-access\n", 1, true), body)
        assert.truthy(body:find("h:x-kept=kept\n", 1, true), body)
        assert.is_nil(body:find("h:x-secret=", 1, true), body)
        assert.is_nil(body:find("from-client", 1, true), body)
        -- What respond saw afterwards: the same rewritten fields.
        assert.are.equal("path=/echo/x x-added=by-access x-secret=nil", res.headers["x-seen"])
      end)
    end

    it("may wait (edge.sleep), then the request goes on", function()
      local t0 = util.now()
      local res, run = get("/slow-access/z")
      assert.are.equal(200, res.status, res.body .. srv:log_tail())
      assert.is_true(util.now() - t0 >= 0.2)
      assert.are.equal("plain path=/slow-access/z waited=0.2\n", res.body)
      assert.are.equal("access cache_key respond on_response", (phase_names(file, run):gsub(" log$", "")))
    end)

    it("an error in access: 500, logged with file:line; on_response still runs on the 500", function()
      local res, run = get("/access-err")
      assert.are.equal(500, res.status, res.body)
      assert.are.equal("yes", res.headers["x-on-response"])
      assert.truthy(srv:wait_log("phases%.lua:%d+: access blew up", 2), srv:log_tail())
      assert.is_nil(phase_names(file, run):find("respond", 1, true))
    end)
  end)

  describe("on_response", function()
    for _, p in ipairs(PROTOS) do
      local tag = p.http2 and "h2" or "h1"

      it("adds a header on a MISS and on a HIT, and sees the cache's label (" .. p.name .. ")", function()
        local path = "/c/hm-" .. tag
        local res = get(path, { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("MISS", res.headers["x-cache"])
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal("MISS", res.headers["x-saw-cache"])
        local r1, body = res.headers["x-random"], res.body
        res = get(path, { http2 = p.http2 })
        assert.are.equal("HIT", res.headers["x-cache"])
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal("HIT", res.headers["x-saw-cache"])
        assert.are.equal(body, res.body)
        -- A new one per response: the hit's is not the stored one's.
        assert.truthy(r1 and res.headers["x-random"])
        assert.are_not.equal(r1, res.headers["x-random"])
      end)

      it("sets cookies (two Set-Cookie fields) on a hit (" .. p.name .. ")", function()
        local path = "/c/ck-" .. tag .. "/cookie"
        get(path, { http2 = p.http2 })
        local res = get(path, { http2 = p.http2 })
        assert.are.equal("HIT", res.headers["x-cache"], srv:log_tail())
        local cookies = {}
        for _, h in ipairs(res.header_list) do
          if h[1] == "set-cookie" then cookies[#cookies + 1] = h[2] end
        end
        assert.are.same({ "a=1; Path=/", "b=2; Path=/" }, cookies)
      end)

      it("changes the status and removes a header (" .. p.name .. ")", function()
        local res = get("/c/st-" .. tag .. "/status", { http2 = p.http2 })
        assert.are.equal(202, res.status, res.body .. srv:log_tail())
        res = get("/c/st-" .. tag .. "/status", { http2 = p.http2 })
        assert.are.equal(202, res.status)
        assert.are.equal("HIT", res.headers["x-cache"])
        res = get("/c/rm-" .. tag .. "/remove", { http2 = p.http2 })
        assert.are.equal(200, res.status)
        assert.is_nil(res.headers["x-remove-me"])
        res = get("/plain/kept")
        assert.are.equal("here", res.headers["x-remove-me"])
      end)

      it("a returned { status, headers } table is what the client gets (" .. p.name .. ")", function()
        local res = get("/c/rt-" .. tag .. "/returns", { http2 = p.http2 })
        assert.are.equal(203, res.status, res.body .. srv:log_tail())
        assert.are.equal("yes", res.headers["x-returned"])
      end)

      it("framing fields it sets are ignored (" .. p.name .. ")", function()
        local res = get("/plain/framing", { http2 = p.http2 })
        assert.are.equal(200, res.status, (res.error or "") .. srv:log_tail())
        assert.are.equal("plain path=/plain/framing\n", res.body)
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal(tostring(#res.body), res.headers["content-length"])
        assert.is_nil(res.headers["transfer-encoding"])
        assert.is_nil(res.headers["connection"])
      end)
    end

    for _, p in ipairs(PROTOS) do
      local tag = p.http2 and "h2" or "h1"
      it("sees the 304 and the 206 the cache answers with on a hit (" .. p.name .. ")", function()
        local path = "/c/cond-" .. tag
        get(path, { http2 = p.http2 })
        local res, run = get(path, { http2 = p.http2, headers = { ["if-none-match"] = '"e1"' } })
        assert.are.equal(304, res.status, srv:log_tail())
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal("on_response status=304 x-cache=HIT", wait_record(file, run, "on_response"))
        res, run = get(path, { http2 = p.http2, headers = { range = "bytes=0-3" } })
        assert.are.equal(206, res.status, srv:log_tail())
        assert.are.equal("made", res.body)
        assert.are.equal("yes", res.headers["x-on-response"])
        assert.are.equal("on_response status=206 x-cache=HIT", wait_record(file, run, "on_response"))
      end)
    end

    it("never changes the stored entry: status, headers and body as respond made them", function()
      get("/c/stored/status")
      local res = get("/c/stored/status")
      assert.are.equal(202, res.status)
      assert.are.equal("HIT", res.headers["x-cache"])
      local peek = get("/peek?key=" .. "phases%20/c/stored/status")
      assert.are.equal(200, peek.status, peek.body)
      assert.truthy(peek.body:find("status=200\n", 1, true), peek.body)
      local names = peek.body:match("headers=([^\n]*)")
      assert.truthy(names:find("x-remove-me", 1, true), names)
      assert.is_nil(names:find("x-on-response", 1, true), names)
      assert.is_nil(names:find("x-random", 1, true), names)
      assert.is_nil(names:find("x-saw-cache", 1, true), names)
      assert.truthy(peek.body:find("body=made n=%d+ path=/c/stored/status\n"), peek.body)
    end)

    it("runs on a 500 from a script error in respond", function()
      local res, run = get("/err")
      assert.are.equal(500, res.status, res.body)
      assert.are.equal("yes", res.headers["x-on-response"])
      local rec = wait_record(file, run, "on_response")
      assert.are.equal("on_response status=500 x-cache=nil", rec)
      assert.truthy(srv:wait_log("phases%.lua:%d+: respond blew up", 2), srv:log_tail())
    end)

    it("an error in on_response: 500, logged with file:line", function()
      local res, run = get("/onresp-err")
      assert.are.equal(500, res.status, res.body)
      -- on_response is not run again on that 500; log sees the 500.
      local rec = wait_record(file, run, "log")
      assert.truthy(rec and rec:find("status=500", 1, true), rec)
      assert.are.equal("access cache_key respond on_response log", phase_names(file, run))
      local line = srv:wait_log("[^\n]*phases%.lua:%d+: on_response blew up[^\n]*", 2)
      assert.truthy(line, srv:log_tail())
      assert.truthy(line:find("on_response", 1, true), line)
      assert.truthy(line:find("[error]", 1, true), line)
      -- The worker goes on.
      assert.are.equal(200, get("/plain/after-onresp-err").status)
    end)

    for _, p in ipairs(PROTOS) do
      it("may wait (edge.sleep) before the headers go out (" .. p.name .. ")", function()
        local t0 = util.now()
        local res = get("/c/w-" .. (p.http2 and "h2" or "h1") .. "/wait", { http2 = p.http2 })
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.are.equal("yes", res.headers["x-waited"])
        assert.is_true(util.now() - t0 >= 0.2)
      end)
    end
  end)

  describe("log", function()
    for _, p in ipairs(PROTOS) do
      it("runs after the response: the client has it before a log that waits 1 s ends (" .. p.name .. ")", function()
        local t0 = util.now()
        local res, run = get("/slow-log/a", { http2 = p.http2 })
        local took = util.now() - t0
        assert.are.equal(200, res.status, res.body .. srv:log_tail())
        assert.is_true(took < 0.6, "the client waited " .. took .. " s for the log hook")
        assert.is_nil(wait_record(file, run, "log-done", 0))
        local rec = wait_record(file, run, "log-done", 3)
        assert.truthy(rec, srv:log_tail())
        assert.is_true(util.now() - t0 >= 1)
        assert.truthy(rec:find("status=200", 1, true), rec)
      end)
    end

    it("does not hold up the next request on the same HTTP/1.1 connection", function()
      local run = new_run("keepalive")
      local t0 = util.now()
      local code, out, err = util.run({ "curl", "-sk", "--http1.1", "--max-time", "10", "-H", "x-run: " .. run,
        "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", srv:url("/slow-log/1"),
        "-o", "/dev/null", srv:url("/slow-log/2") }, { timeout = 15 })
      local took = util.now() - t0
      assert.are.equal(0, code, err)
      assert.are.equal("200 1\n200 0\n", out)
      assert.is_true(took < 0.8, "two requests took " .. took .. " s")
      -- Both log hooks ran to their end, a second later.
      assert.truthy(util.wait_until(function()
        return #records(file, run) >= 6 and phase_names(file, run):find("log%-done.*log%-done")
      end, 3), table.concat(records(file, run), "\n"))
    end)

    it("sees res.status, res.cache and bytes_sent (the body's bytes, as the access log)", function()
      local res, run = get("/c/logged")
      assert.are.equal(200, res.status)
      local rec = wait_record(file, run, "log")
      assert.truthy(rec, srv:log_tail())
      assert.are.equal(("log status=200 cache=MISS bytes_sent=%d path=/c/logged duration=number headers=table")
        :format(#res.body), rec)
      res, run = get("/c/logged")
      rec = wait_record(file, run, "log")
      assert.are.equal(("log status=200 cache=HIT bytes_sent=%d path=/c/logged duration=number headers=table")
        :format(#res.body), rec)
      res, run = get("/deny/logged")
      rec = wait_record(file, run, "log")
      assert.are.equal(("log status=403 cache=nil bytes_sent=%d path=/deny/logged duration=number headers=table")
        :format(#res.body), rec)
      -- The status on_response set is the one logged.
      res, run = get("/plain/status")
      assert.are.equal(202, res.status)
      rec = wait_record(file, run, "log")
      assert.truthy(rec and rec:find("status=202 cache=nil", 1, true), rec)
    end)

    it("an error in log is logged with file:line; the request got its 200", function()
      local res = get("/log-err")
      assert.are.equal(200, res.status, res.body)
      local line = srv:wait_log("[^\n]*phases%.lua:%d+: log blew up[^\n]*", 2)
      assert.truthy(line, srv:log_tail())
      assert.truthy(line:find("[error]", 1, true), line)
    end)
  end)

  describe("a client that leaves", function()
    it("while access waits: respond never runs, the worker goes on, log still runs", function()
      local client = require "support.client"
      local run = new_run("leaves")
      local c = assert(client.tcp(srv.plain_port))
      c.conn:setoption("linger", { on = true, timeout = 0 })
      assert(c:send(client.request { path = "/slow-access/gone", headers = { ["x-run"] = run } }))
      assert.truthy(wait_record(file, run, "access", 2))
      c:close()
      util.sleep(0.4)
      local res = get("/plain/after-leave")
      assert.are.equal(200, res.status, srv:log_tail())
      local rec = wait_record(file, run, "log", 3)
      assert.truthy(rec, table.concat(records(file, run), "\n") .. "\n" .. srv:log_tail())
      -- Some status (the access log says 499 there); CONTRACT.md names none.
      assert.matches("^log status=%d+ ", rec)
      assert.is_nil(phase_names(file, run):find("respond", 1, true), phase_names(file, run))
      assert.is_nil(srv:sanitizer_report())
    end)
  end)

  describe("a client that leaves (HTTP/2)", function()
    it("while access waits: the connection closes, log still runs", function()
      local run = new_run("leaves-h2")
      local code = util.run({ "curl", "-sk", "--http2", "--max-time", "0.1", "-H", "x-run: " .. run,
                              "-o", "/dev/null", srv:url("/slow-access/gone-h2") }, { timeout = 5 })
      assert.are.equal(28, code)   -- curl: operation timed out
      local rec = wait_record(file, run, "log", 3)
      assert.truthy(rec, table.concat(records(file, run), "\n") .. "\n" .. srv:log_tail())
      assert.matches("^log status=%d+ ", rec)
      assert.are.equal(200, get("/plain/after-leave-h2", { http2 = true }).status)
    end)
  end)

  describe("order", function()
    for _, p in ipairs(PROTOS) do
      it("access, cache_key, respond, on_response, log on a miss; no respond on a hit (" .. p.name .. ")", function()
        local path = "/c/order-" .. (p.http2 and "h2" or "h1")
        local _, run = get(path, { http2 = p.http2 })
        assert.truthy(wait_record(file, run, "log"), srv:log_tail())
        assert.are.equal("access cache_key respond on_response log", phase_names(file, run))
        _, run = get(path, { http2 = p.http2 })
        assert.truthy(wait_record(file, run, "log"), srv:log_tail())
        assert.are.equal("access cache_key on_response log", phase_names(file, run))
        _, run = get("/plain/order", { http2 = p.http2 })
        assert.truthy(wait_record(file, run, "log"), srv:log_tail())
        assert.are.equal("access cache_key respond on_response log", phase_names(file, run))
      end)
    end
  end)
end)

describe("phases: a script without them behaves as before #e2e", function()
  local srv

  lazy_setup(function() srv = server.start { script = "spec/fixtures/phases_none.lua", workers = 1 } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  --- The response's header names, sorted.
  local function names(res)
    local out = {}
    for _, h in ipairs(res.header_list) do out[#out + 1] = h[1] end
    table.sort(out)
    return table.concat(out, ",")
  end

  for _, p in ipairs(PROTOS) do
    it("the same fields on a miss, a hit and an uncached answer (" .. p.name .. ")", function()
      local path = "/c/none-" .. (p.http2 and "h2" or "h1")
      local res = srv:get(path, { http2 = p.http2 })
      assert.are.equal(200, res.status)
      assert.are.equal("cache-status,content-length,content-type,date,server,x-app,x-cache", names(res))
      assert.are.equal("edge; fwd=miss; stored", res.headers["cache-status"])
      res = srv:get(path, { http2 = p.http2 })
      assert.are.equal("age,cache-status,content-length,content-type,date,server,x-app,x-cache", names(res))
      assert.matches("^edge; hit; ttl=%d+$", res.headers["cache-status"])
      assert.are.equal("path=" .. path .. "\n", res.body)
      res = srv:get("/u", { http2 = p.http2 })
      assert.are.equal("content-length,content-type,date,server,x-app", names(res))
      assert.are.equal("path=/u\n", res.body)
    end)
  end
end)
