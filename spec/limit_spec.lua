-- End-to-end specs for lua/examples/ratelimit.lua (edge.limit in an access
-- hook) under the real server, with real clients: concurrent TLS connections
-- from 127.0.0.1 send at once, so the bucket cannot drain between them.
local client = require "support.client"
local server = require "support.server"
local util = require "support.util"

-- 2 requests per second and a burst of 1: of a simultaneous batch, the first
-- goes at once, the second after 0.5 s, every other one gets 429 with
-- Retry-After: 1 (the bucket holds 1.0 s of work, the burst 0.5 s of it).
local ENV = { RATELIMIT_RATE = 2, RATELIMIT_BURST = 1 }
local BATCH = 6

local function connect(srv, n)
  local conns = {}
  for i = 1, n do
    conns[i] = assert(client.tls(srv.port))
  end
  return conns
end

local function close_all(conns)
  for _, c in ipairs(conns) do c:close() end
end

--- Sends GET path on every connection, then polls them all until each has
-- its response (at most timeout s). Returns the responses and, for each, the
-- seconds from the sending to its arrival.
local function request_all(conns, path, timeout)
  for _, c in ipairs(conns) do c.buf = "" end
  local t0 = util.now()
  for _, c in ipairs(conns) do assert(c:send(client.request { path = path })) end
  local got, took, left = {}, {}, #conns
  local deadline = t0 + (timeout or 5)
  while left > 0 and util.now() < deadline do
    for i, c in ipairs(conns) do
      if not got[i] then
        c:read_some(0.002)
        local res = client.final_responses(client.parse_responses(c.buf))[1]
        if res or c.closed then
          got[i], took[i], left = res or { status = 0 }, util.now() - t0, left - 1
        end
      end
    end
  end
  assert.are.equal(0, left, "responses missing after the timeout")
  return got, took
end

--- The statuses' counts, and the arrival times of the 200s, sorted.
local function tally(responses, took)
  local count, admitted = {}, {}
  for i, res in ipairs(responses) do
    count[res.status] = (count[res.status] or 0) + 1
    if res.status == 200 then admitted[#admitted + 1] = took[i] end
  end
  table.sort(admitted)
  return count, admitted
end

local function assert_too_many(res)
  assert.are.equal(429, res.status)
  assert.are.equal("1", res.headers["retry-after"])
  assert.are.equal("text/plain", res.headers["content-type"])
  assert.are.equal("Too many requests: retry in 1 s.\n", res.body)
end

describe("examples/ratelimit.lua #e2e", function()
  local srv

  after_each(function()
    if srv then server.stop_and_check(srv) end
    srv = nil
  end)

  it("a burst from one client: one 200 at once, one delayed by 1/rate, then 429 + Retry-After", function()
    srv = server.start { script = "lua/examples/ratelimit.lua", env = ENV }
    local conns = connect(srv, BATCH)
    local responses, took = request_all(conns, "/")
    close_all(conns)
    local count, admitted = tally(responses, took)
    assert.are.same({ [200] = 2, [429] = BATCH - 2 }, count)
    assert.is_true(admitted[2] - admitted[1] >= 0.4,
      ("the second 200 came %.3f s after the first, not delayed by ~0.5 s"):format(admitted[2] - admitted[1]))
    for _, res in ipairs(responses) do
      if res.status == 200 then
        assert.are.equal("Hello from edge!", res.body)
      else
        assert_too_many(res)
      end
    end

    -- A client that waits as told is admitted.
    util.sleep(1)
    local res = srv:get("/")
    assert.are.equal(200, res.status, res.error)
    assert.are.equal("Hello from edge!", res.body)
  end)

  it("-w 2: both workers draw on one budget", function()
    srv = server.start { script = "spec/fixtures/ratelimit_workers.lua", env = ENV, workers = 2 }
    -- Sort connections by the worker that serves them (GET /worker is not
    -- limited) until each worker has half the batch.
    local by_worker, spare = {}, {}
    for _ = 1, 40 do
      local c = assert(client.tls(srv.port))
      local res = request_all({ c }, "/worker")[1]
      assert.are.equal(200, res.status)
      local list = by_worker[res.headers["x-worker"]] or {}
      by_worker[res.headers["x-worker"]] = list
      if #list < BATCH / 2 then list[#list + 1] = c else spare[#spare + 1] = c end
      local full = 0
      for _, l in pairs(by_worker) do if #l == BATCH / 2 then full = full + 1 end end
      if full == 2 then break end
    end
    close_all(spare)
    local conns, workers = {}, 0
    for _, list in pairs(by_worker) do
      workers = workers + 1
      for _, c in ipairs(list) do conns[#conns + 1] = c end
    end
    assert.are.equal(2, workers)
    assert.are.equal(BATCH, #conns, "40 connections did not reach both workers evenly")

    local responses, took = request_all(conns, "/")
    close_all(conns)
    local count = tally(responses, took)
    -- Two budgets would admit four.
    assert.are.same({ [200] = 2, [429] = BATCH - 2 }, count)
    -- Each connection stays with its worker: both answered this batch.
    local answered_by, n = {}, 0
    for _, res in ipairs(responses) do
      local w = res.headers["x-worker"]
      if not answered_by[w] then answered_by[w], n = true, n + 1 end
    end
    assert.are.equal(2, n)
  end)
end)
