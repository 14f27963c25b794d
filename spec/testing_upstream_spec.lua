-- Unit specs for lua/edge/testing/upstream.lua: a fake upstream that answers
-- edge.fetch from canned responses in busted and records the requests
-- (issue 11, point 11).
local edge = require "edge"
local fake = require "edge.testing.upstream"
local util = require "support.util"

describe("edge.testing.upstream", function()
  local real
  before_each(function() real = edge.fetch end)
  after_each(function()
    fake.uninstall()
    assert.are.equal(real, edge.fetch)
  end)

  it("answers edge.fetch from a canned response, a fresh copy each time", function()
    fake.respond("GET", "http://api/users/1", { status = 200, headers = { ["Content-Type"] = "application/json" },
                                                body = '{"id":1}' })
    fake.install()
    local res = assert(edge.fetch("http://api/users/1"))
    assert.are.same({ status = 200, headers = { ["content-type"] = "application/json" }, body = '{"id":1}' }, res)
    res.body = "changed"
    assert.are.equal('{"id":1}', edge.fetch("http://api/users/1").body)
  end)

  it("defaults to 200, no headers and an empty body", function()
    fake.respond("*", "http://api/ping", {})
    fake.install()
    assert.are.same({ status = 200, headers = {}, body = "" }, edge.fetch("http://api/ping", { method = "HEAD" }))
  end)

  it("returns nil and a message for a request no rule matches", function()
    fake.respond("GET", "http://api/users/1", { body = "one" })
    fake.install()
    local res, err = edge.fetch("http://api/x")
    assert.is_nil(res)
    assert.are.equal("no fake response for GET http://api/x", err)
    res, err = edge.fetch("http://api/users/1", { method = "DELETE" })
    assert.is_nil(res)
    assert.are.equal("no fake response for DELETE http://api/users/1", err)
  end)

  it("matches Lua patterns (a target starting with ^) and functions", function()
    fake.respond("GET", "^http://api/users/%d+$", { body = "a user" })
    fake.respond("POST", function(url, req) return url:find("/orders", 1, true) and req.body == "x" end,
                 { status = 201 })
    fake.install()
    assert.are.equal("a user", edge.fetch("http://api/users/42").body)
    assert.is_nil(edge.fetch("http://api/users/42/x"))
    assert.are.equal(201, edge.fetch("http://api/orders", { method = "POST", body = "x" }).status)
    assert.is_nil(edge.fetch("http://api/orders", { method = "POST", body = "y" }))
  end)

  it("takes a function as the response: computed answers and errors", function()
    fake.respond("GET", "^http://api/echo", function(req) return { body = req.method .. " " .. req.url } end)
    fake.respond("GET", "http://api/down", function() return nil, "connect refused: 10.0.0.1:8080" end)
    fake.install()
    assert.are.equal("GET http://api/echo?q=1", edge.fetch("http://api/echo?q=1").body)
    local res, err = edge.fetch("http://api/down")
    assert.is_nil(res)
    assert.are.equal("connect refused: 10.0.0.1:8080", err)
  end)

  it("lets the rule given last win", function()
    fake.respond("*", "^http://api/", { status = 404 })
    fake.respond("GET", "http://api/users/1", { status = 200 })
    fake.install()
    assert.are.equal(200, edge.fetch("http://api/users/1").status)
    assert.are.equal(404, edge.fetch("http://api/users/2").status)
    fake.respond("GET", "http://api/users/1", { status = 503 })
    assert.are.equal(503, edge.fetch("http://api/users/1").status)
  end)

  it("records every request in order: method, url, headers (lower-cased), body, opts", function()
    fake.respond("*", "^http://", {})
    fake.install()
    edge.fetch("http://api/a")
    edge.fetch("http://api/b", { method = "PUT", headers = { ["X-Id"] = "7" }, body = "b", timeout = 1 })
    edge.fetch("http://nowhere/") -- matched by the pattern too
    local reqs = fake.requests()
    assert.are.equal(3, #reqs)
    assert.are.same({ "GET", "http://api/a", {} }, { reqs[1].method, reqs[1].url, reqs[1].headers })
    assert.are.same({ "PUT", "http://api/b", { ["x-id"] = "7" }, "b", 1 },
      { reqs[2].method, reqs[2].url, reqs[2].headers, reqs[2].body, reqs[2].opts.timeout })
    assert.are.equal("http://nowhere/", reqs[3].url)
  end)

  it("records unmatched requests too, and starts a new record on install()", function()
    fake.install()
    edge.fetch("http://api/x")
    assert.are.equal(1, #fake.requests())
    fake.install()
    assert.are.same({}, fake.requests())
  end)

  it("works with named upstreams: the target is never resolved", function()
    edge.upstream.reset()
    edge.upstream.define("api", { servers = { "127.0.0.1:" .. util.free_port() } })
    fake.respond("GET", "http://api/users/1", { body = "from the fake" })
    fake.install()
    assert.are.equal("from the fake", edge.fetch("http://api/users/1").body)
    edge.upstream.reset()
  end)

  it("serves a script's respond hook loaded after install()", function()
    local app = load([[
      local edge = require "edge"
      return { respond = function(req)
        local res, err = edge.fetch("http://api" .. req.path)
        if not res then return { status = 502, body = err } end
        return { status = res.status, body = res.body }
      end }]])()
    fake.respond("GET", "http://api/users/1", { body = "ada" })
    fake.install()
    assert.are.same({ status = 200, body = "ada" }, app.respond { path = "/users/1" })
    assert.are.same({ status = 502, body = "no fake response for GET http://api/users/2" },
      app.respond { path = "/users/2" })
  end)

  it("uninstall() puts the real edge.fetch back and forgets the rules", function()
    fake.respond("GET", "http://127.0.0.1:1/", { body = "fake" })
    fake.install()
    assert.are.equal("fake", edge.fetch("http://127.0.0.1:1/").body)
    fake.uninstall()
    assert.are.equal(real, edge.fetch)
    local res, err = edge.fetch("http://127.0.0.1:1/")
    assert.is_nil(res)
    assert.are.equal("connect refused: 127.0.0.1:1", err)
    fake.install()
    assert.are.equal("no fake response for GET http://127.0.0.1:1/", select(2, edge.fetch("http://127.0.0.1:1/")))
  end)

  it("rejects malformed rules where they are written", function()
    assert.has_error(function() fake.respond("GET", "http://api/", { status = 99 }) end,
      "edge.testing.upstream: status must be an integer from 100 to 599, got 99")
    assert.has_error(function() fake.respond("GET", "http://api/", { body = 1 }) end,
      "edge.testing.upstream: body must be a string, got number")
    assert.has_error(function() fake.respond("GET", 5, {}) end)
    assert.has_error(function() fake.respond(nil, "http://api/", {}) end)
    assert.has_error(function() fake.respond("GET", "http://api/", "ok") end)
  end)
end)
