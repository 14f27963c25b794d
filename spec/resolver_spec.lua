-- The upstream name resolver (src/resolver.c: c-ares on an ev loop), driven
-- by spec/c/resolver_driver.c against a fake DNS server on loopback
-- (spec/support/dns.lua) that counts the queries it gets. `make
-- resolver-driver` (a prerequisite of `make test`) builds the driver plain
-- and under ASan + UBSan; every case runs against both. No edge server is
-- involved, so this runs in the first pass only, like cache_stress_spec.
local util = require "support.util"
local proc = require "support.proc"
local dns = require "support.dns"

local BINARIES = {
  { name = "release", path = "build/test/resolver_driver" },
  { name = "asan", path = "build/test/resolver_driver_asan" },
}

local function sanitizer_lines(text)
  local found = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("ERROR: AddressSanitizer", 1, true) or line:find("ERROR: LeakSanitizer", 1, true)
      or line:find("runtime error:", 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

-- ------------------------------------------------------------ the driver

local Driver = {}
Driver.__index = Driver

--- Starts the driver with resolver options (servers, timeout, valid_min,
-- valid_max, family); commands go through a file it follows.
local function driver(bin, opts)
  assert(util.exists(bin), bin .. " is missing: build it with `make resolver-driver` (make test does)")
  local self = setmetatable({}, Driver)
  self.dir = util.tmpdir("resolver")
  self.cmdfile = self.dir .. "/commands"
  util.write_file(self.cmdfile, "")
  local argv = { bin, "--commands", self.cmdfile, "--max-seconds", "40" }
  for _, k in ipairs({ "servers", "timeout", "valid-min", "valid-max", "family" }) do
    local v = opts[k:gsub("-", "_")]
    if v then argv[#argv + 1] = "--" .. k; argv[#argv + 1] = tostring(v) end
  end
  self.proc = proc.spawn(argv, { timeout = 50 })
  self:wait_line("^ready$")
  return self
end

function Driver:send(line)
  local f = assert(io.open(self.cmdfile, "ab"))
  f:write(line, "\n")
  f:close()
end

function Driver:out() return self.proc:stdout() end
function Driver:lines() return util.lines(self:out()) end

--- Waits (at most `timeout` s, default 10) for a line of stdout (of stderr,
-- the resolver's log, when `stream` is "stderr") matching the Lua pattern;
-- returns it, or fails with the whole output.
function Driver:wait_line(pattern, timeout, stream)
  local read = function() return util.lines(stream == "stderr" and self.proc:stderr() or self:out()) end
  local deadline = util.now() + (timeout or 10)
  repeat
    for _, l in ipairs(read()) do
      if l:find(pattern) then return l end
    end
    util.sleep(0.01)
  until util.now() > deadline or not self.proc:running()
  for _, l in ipairs(read()) do
    if l:find(pattern) then return l end
  end
  error("no line matching " .. pattern .. " in:\n" .. self:out() .. "\nstderr:\n" .. self.proc:stderr())
end

local mark_seq = 0
--- Sends the commands, then waits until the driver has run them all.
function Driver:run(...)
  for _, c in ipairs({ ... }) do self:send(c) end
  mark_seq = mark_seq + 1
  local mark = "mark" .. mark_seq
  self:send("echo " .. mark)
  self:wait_line("^" .. mark .. "$")
end

--- The callback line of query `id` (nil when its callback has not run).
function Driver:cb(id)
  for _, l in ipairs(self:lines()) do
    if l:find("^cb " .. id:gsub("%p", "%%%0") .. " ") then return l end
  end
end

--- Waits for the callback line of query `id`.
function Driver:wait_cb(id, timeout)
  return self:wait_line("^cb " .. id:gsub("%p", "%%%0") .. " ", timeout)
end

function Driver:count(pattern)
  local n = 0
  for _, l in ipairs(self:lines()) do
    if l:find(pattern) then n = n + 1 end
  end
  return n
end

--- Quits, checks a clean exit: code 0, no FAIL line, no sanitizer report.
function Driver:quit()
  self:send("quit")
  local code = self.proc:wait(15)
  local out, err = self:out(), self.proc:stderr()
  assert.are.same({}, sanitizer_lines(err), err:sub(1, 6000))
  assert.are.equal(0, code, "driver exited " .. tostring(code) .. ":\n" .. out .. "\n" .. err:sub(1, 6000))
  assert.falsy(out:find("FAIL", 1, true), out)
  assert.truthy(out:find("\nbye\n", 1, true), out)
end

function Driver:kill() self.proc:kill() end

-- ------------------------------------------------------------ the cases

for _, b in ipairs(BINARIES) do
  describe("resolver (" .. b.name .. " driver)", function()
    local d, server

    after_each(function()
      if d then d:kill() end
      if server then server:stop() end
      d, server = nil, nil
    end)

    it("answers numeric addresses at once, brackets or not, with no DNS query", function()
      server = dns.start({})
      d = driver(b.path, { servers = server.server })
      d:run("resolve 1 127.0.0.1 80", "resolve 2 [::1] 443", "resolve 3 2001:db8::5 8080", "resolve 4 [1.2.3.4] 1")
      assert.are.equal("cb 1 ok sync 127.0.0.1:80", d:cb("1"))
      assert.are.equal("cb 2 ok sync [::1]:443", d:cb("2"))
      assert.are.equal("cb 3 ok sync [2001:db8::5]:8080", d:cb("3"))
      assert.are.equal("cb 4 error sync cannot resolve [1.2.3.4]: bad IPv6 address", d:cb("4"))
      d:quit()
      assert.are.equal(0, server:total_queries())
    end)

    it("fails malformed names at once, with no DNS query", function()
      server = dns.start({})
      d = driver(b.path, { servers = server.server })
      local long = string.rep(string.rep("a", 60) .. ".", 4) .. string.rep("b", 50) .. ".test"   -- 300 bytes
      d:run("resolve 1 a/b.edge.test 80", "resolve 2 " .. long .. " 80", "resolve 3 [zz] 80", "resolve 4 [::1 80")
      assert.are.equal("cb 1 error sync cannot resolve a/b.edge.test: not a valid host name", d:cb("1"))
      -- The name is cut at 253 bytes in the message.
      assert.are.equal("cb 2 error sync cannot resolve " .. long:sub(1, 253) .. ": not a valid host name", d:cb("2"))
      assert.are.equal("cb 3 error sync cannot resolve [zz]: bad IPv6 address", d:cb("3"))
      assert.are.equal("cb 4 error sync cannot resolve [::1: bad IPv6 address", d:cb("4"))
      d:quit()
      assert.are.equal(0, server:total_queries())
    end)

    it("keeps at most 1024 names per resolver, dropping the oldest answer first", function()
      local records, cmds = {}, {}
      for i = 1, 1030 do
        records["n" .. i .. ".edge.test"] = { a = { "10.1." .. (i // 256) .. "." .. (i % 256) }, ttl = 60 }
        cmds[i] = "resolve n" .. i .. " n" .. i .. ".edge.test 80"
      end
      server = dns.start(records)
      d = driver(b.path, { servers = server.server, family = 4, timeout = 10 })
      -- n1 alone first, so that it is the oldest answer; then the rest in
      -- batches, each answered before the next is sent. All at once, the
      -- queries overflowed the fake server's UDP receive buffer, and on a
      -- loaded machine a query dropped twice ran out of its 10 s.
      local ok_line = "^cb n%d+ ok async 10%.1%.%d+%.%d+:80$"
      local function resolve(from, to)
        d:run(table.unpack(cmds, from, to))
        local deadline = util.now() + 20
        while d:count(ok_line) < to and util.now() < deadline and not d:out():find("error") do util.sleep(0.02) end
        assert.are.equal(to, d:count(ok_line), d:out():sub(1, 3000))
      end
      resolve(1, 1)
      for from = 2, 1030, 64 do resolve(from, math.min(from + 63, 1030)) end
      local asked1, asked1030 = server:queries("n1.edge.test"), server:queries("n1030.edge.test")
      d:run("resolve again1030 n1030.edge.test 81", "resolve again1 n1.edge.test 81")
      assert.are.equal("cb again1030 ok sync 10.1.4.6:81", d:cb("again1030"))
      assert.are.equal("cb again1 ok async 10.1.0.1:81", d:wait_cb("again1"))
      assert.are.equal(asked1 + 1, server:queries("n1.edge.test"))
      assert.are.equal(asked1030, server:queries("n1030.edge.test"))
      d:quit()
    end)

    it("resolves localhost from /etc/hosts without asking DNS", function()
      server = dns.start({ ["localhost"] = { a = { "10.9.9.9" } } })
      d = driver(b.path, { servers = server.server })
      d:run("resolve 1 localhost 8080")
      assert.truthy(d:cb("1"):find("^cb 1 ok sync 127%.0%.0%.1:8080"), d:out())
      d:quit()
      assert.are.equal(0, server:total_queries())
    end)

    it("a caller's own valid (an upstream's dns.valid) overrides the TTL, shorter or longer", function()
      server = dns.start({ ["v.edge.test"] = { a = { "10.0.0.8" }, ttl = 60 } })
      d = driver(b.path, { servers = server.server })
      d:send("resolvev 1 v.edge.test 80 0.5")
      assert.are.equal("cb 1 ok async 10.0.0.8:80", d:wait_cb("1"))
      d:run("resolvev 2 v.edge.test 80 0.5", "resolve 3 v.edge.test 80")
      assert.are.equal("cb 2 ok sync 10.0.0.8:80", d:cb("2"))
      assert.are.equal("cb 3 ok sync 10.0.0.8:80", d:cb("3"))
      assert.are.equal(1, server:queries("v.edge.test", "A"))
      util.sleep(0.7)
      -- past valid = 0.5: asked again, although the TTL (60 s) still holds for other callers
      d:run("resolve 4 v.edge.test 80")
      assert.are.equal("cb 4 ok sync 10.0.0.8:80", d:cb("4"))
      d:send("resolvev 5 v.edge.test 80 0.5")
      assert.are.equal("cb 5 ok async 10.0.0.8:80", d:wait_cb("5"))
      assert.are.equal(2, server:queries("v.edge.test", "A"))
      d:quit()
    end)

    it("caches a DNS answer for its TTL (2 s), then asks again", function()
      server = dns.start({ ["ttl.edge.test"] = { a = { "10.0.0.7" }, ttl = 2 } })
      d = driver(b.path, { servers = server.server })
      d:send("resolve 1 ttl.edge.test 80")
      assert.are.equal("cb 1 ok async 10.0.0.7:80", d:wait_cb("1"))
      local t_answer = util.now()
      assert.are.equal(1, server:queries("ttl.edge.test", "A"))
      d:run("resolve 2 ttl.edge.test 81")
      assert.are.equal("cb 2 ok sync 10.0.0.7:81", d:cb("2"))
      assert.is_true(util.now() - t_answer < 1.5, "too slow to test within the TTL")
      assert.are.equal(1, server:queries("ttl.edge.test", "A"))
      util.sleep(2.3 - (util.now() - t_answer))
      d:send("resolve 3 ttl.edge.test 82")
      assert.are.equal("cb 3 ok async 10.0.0.7:82", d:wait_cb("3"))
      assert.are.equal(2, server:queries("ttl.edge.test", "A"))
      d:quit()
    end)

    it("coalesces 50 concurrent resolves of one name into one query", function()
      server = dns.start({ ["many.edge.test"] = { a = { "10.0.0.9" }, ttl = 30 } })
      d = driver(b.path, { servers = server.server, family = 4 })
      d:send("many 50 c many.edge.test 443")
      d:wait_cb("c50")
      d:run()
      assert.are.equal(50, d:count("^cb c%d+ ok async 10%.0%.0%.9:443$"), d:out())
      assert.are.equal(1, server:queries("many.edge.test"))
      d:quit()
    end)

    it("serves the last good answer when a refresh gets SERVFAIL, warns once, asks again later", function()
      server = dns.start({ ["stale.edge.test"] = { a = { "10.0.0.1" }, ttl = 1 } })
      d = driver(b.path, { servers = server.server, family = 4, timeout = 2 })
      d:send("resolve 1 stale.edge.test 80")
      assert.are.equal("cb 1 ok async 10.0.0.1:80", d:wait_cb("1"))
      server:set_mode("servfail")
      util.sleep(1.2)
      d:send("resolve 2 stale.edge.test 80")
      assert.are.equal("cb 2 ok async 10.0.0.1:80", d:wait_cb("2"))
      local asked = server:queries("stale.edge.test")
      assert.is_true(asked >= 2, "no refresh was asked")
      -- While failing: the stale answer at once, no new query on every call.
      d:run("resolve 3 stale.edge.test 80", "resolve 4 stale.edge.test 81")
      assert.are.equal("cb 3 ok sync 10.0.0.1:80", d:cb("3"))
      assert.are.equal("cb 4 ok sync 10.0.0.1:81", d:cb("4"))
      assert.are.equal(asked, server:queries("stale.edge.test"))
      local err = d.proc:stderr()
      assert.are.equal(1, util.count(err, "[warn]"), err)
      assert.truthy(err:find("cannot resolve stale.edge.test: no DNS server answered (" .. server.server
        .. ": SERVFAIL, REFUSED or unreachable); serving its last good answer", 1, true), err)
      -- Later (valid_min, at least 1 s) it asks again in the background; a
      -- new answer replaces the stale one.
      server:set_records({ ["stale.edge.test"] = { a = { "10.0.0.2" }, ttl = 30 } })
      server:set_mode("answer")
      util.sleep(1.2)
      d:run("resolve 5 stale.edge.test 80")
      assert.are.equal("cb 5 ok sync 10.0.0.1:80", d:cb("5"))
      d:wait_line("%[notice%].*resolved stale%.edge%.test again", 5, "stderr")
      assert.are.equal(1, util.count(d.proc:stderr(), "[warn]"))
      d:run("resolve 6 stale.edge.test 80")
      assert.are.equal("cb 6 ok sync 10.0.0.2:80", d:cb("6"))
      d:quit()
    end)

    it("fails a name never seen with a timeout error when the server is silent", function()
      server = dns.start({ ["quiet.edge.test"] = { a = { "10.0.0.3" } } })
      server:set_mode("silent")
      d = driver(b.path, { servers = server.server, timeout = 1 })
      local t0 = util.now()
      d:send("resolve 1 quiet.edge.test 80")
      local line = d:wait_cb("1", 5)
      local took = util.now() - t0
      assert.are.equal("cb 1 error async cannot resolve quiet.edge.test: DNS timeout after 1 s (servers "
        .. server.server .. ")", line)
      assert.is_true(took >= 0.9 and took < 2.5, "took " .. took .. " s")
      assert.is_true(server:queries("quiet.edge.test") >= 1)
      d:quit()
    end)

    it("never runs a cancelled callback, even when the answer comes", function()
      server = dns.start({ ["slow.edge.test"] = { a = { "10.0.0.4" }, ttl = 30 } })
      server:set_mode("silent")     -- the first try is lost; c-ares retries after timeout / 3
      d = driver(b.path, { servers = server.server, timeout = 3, family = 4 })
      d:run("resolve 1 slow.edge.test 80", "resolve 2 slow.edge.test 81", "cancel 1")
      assert.truthy(d:out():find("\ncancelled 1\n", 1, true), d:out())
      server:set_mode("answer")
      assert.are.equal("cb 2 ok async 10.0.0.4:81", d:wait_cb("2", 5))
      d:run()
      assert.is_nil(d:cb("1"))
      d:quit()
    end)

    it("lets a callback cancel another waiter and start a new resolve", function()
      server = dns.start({ ["chain.edge.test"] = { a = { "10.0.0.5" }, ttl = 30 } })
      d = driver(b.path, { servers = server.server, family = 4 })
      d:run("on a cancel c", "on b resolve d chain.edge.test 90",
        "resolve a chain.edge.test 80", "resolve b chain.edge.test 81", "resolve c chain.edge.test 82")
      d:wait_cb("b")
      d:run()
      assert.are.equal("cb a ok async 10.0.0.5:80", d:cb("a"))
      assert.are.equal("cb d ok sync 10.0.0.5:90", d:cb("d"))
      assert.is_nil(d:cb("c"))
      assert.truthy(d:out():find("\ncancelled c\n", 1, true), d:out())
      assert.are.equal(1, server:queries("chain.edge.test"))
      d:quit()
    end)

    it("fails pending callbacks with \"resolver shut down\" when freed", function()
      server = dns.start({ ["hang.edge.test"] = { silent = true }, ["hang2.edge.test"] = { silent = true } })
      d = driver(b.path, { servers = server.server, timeout = 5 })
      d:run("resolve 1 hang.edge.test 80", "resolve 2 hang.edge.test 80", "resolve 3 hang2.edge.test 80", "free")
      for _, id in ipairs({ "1", "2", "3" }) do
        assert.truthy(d:cb(id):find("^cb " .. id .. " error async cannot resolve hang2?%.edge%.test: resolver shut down$"),
          d:out())
      end
      d:quit()
    end)

    it("can be freed from inside a callback: the other waiters fail, nothing is touched after", function()
      server = dns.start({ ["ok.edge.test"] = { a = { "10.0.0.6" } }, ["hang.edge.test"] = { silent = true } })
      d = driver(b.path, { servers = server.server, family = 4 })
      d:run("on a free", "resolve a ok.edge.test 80", "resolve b ok.edge.test 81", "resolve c hang.edge.test 82")
      d:wait_line("^freed$")
      d:run()
      assert.are.equal("cb a ok async 10.0.0.6:80", d:cb("a"))
      assert.are.equal("cb b error async cannot resolve ok.edge.test: resolver shut down", d:cb("b"))
      assert.are.equal("cb c error async cannot resolve hang.edge.test: resolver shut down", d:cb("c"))
      d:quit()
    end)
  end)
end
