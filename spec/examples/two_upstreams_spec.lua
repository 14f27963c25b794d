-- Specs for lua/examples/two_upstreams.lua: in-process (the routing and the
-- headers, with edge.proxy replaced by a recorder: busted has no origin),
-- then against the real server (#e2e) with two real origins (second edges
-- running spec/fixtures/upstream_origin.lua, which answer
-- "NAME METHOD HOST PATH?QUERY").
local edge = require "edge"
local server = require "support.server"

local SCRIPT = "lua/examples/two_upstreams.lua"

describe("examples/two_upstreams.lua in-process", function()
  local app, calls, real_proxy

  before_each(function()
    edge.upstream.reset()
    app = dofile(SCRIPT)
    calls = {}
    real_proxy = edge.proxy
    edge.proxy = function(req, target, opts)
      calls[#calls + 1] = { req = req, target = target, opts = opts }
      local res = { status = 200, headers = { ["content-type"] = "text/plain" } }
      if opts and opts.on_response then opts.on_response(res) end
      return res
    end
  end)
  after_each(function()
    edge.proxy = real_proxy
    edge.upstream.reset()
  end)

  it("defines the two upstreams", function()
    assert.are.same({ "api", "web" }, edge.upstream.names())
    assert.are.equal("127.0.0.1:8081", edge.upstream.get("api").servers[1][1])
    assert.are.equal("127.0.0.1:8082", edge.upstream.get("web").servers[1][1])
  end)

  it("routes /api and /api/* to api, the rest (even /apix) to web", function()
    for path, want in pairs { ["/api"] = "api", ["/api/users/1"] = "api", ["/"] = "web",
                              ["/apix"] = "web", ["/static/app.js"] = "web" } do
      app.respond { method = "GET", path = path, headers = {} }
      assert.are.equal("http://" .. want, calls[#calls].target, path)
    end
  end)

  it("adds the security headers to every response", function()
    local res = app.respond { method = "GET", path = "/", headers = {} }
    assert.are.equal("nosniff", res.headers["x-content-type-options"])
    assert.truthy(res.headers["strict-transport-security"]:find("^max%-age=%d+"))
  end)
end)

describe("examples/two_upstreams.lua against the real server #e2e", function()
  local srv, api, web

  lazy_setup(function()
    api = server.start { script = "spec/fixtures/upstream_origin.lua", plain = true, workers = 1,
                         env = { EDGE_SPEC_VALUE = "api" } }
    web = server.start { script = "spec/fixtures/upstream_origin.lua", plain = true, workers = 1,
                         env = { EDGE_SPEC_VALUE = "web" } }
    srv = server.start { script = SCRIPT, workers = 1,
                         env = { API_SERVERS = "127.0.0.1:" .. api.plain_port,
                                 WEB_SERVERS = "127.0.0.1:" .. web.plain_port } }
  end)
  lazy_teardown(function() server.stop_and_check(srv, api, web) end)

  for _, h2 in ipairs { false, true } do
    local proto = h2 and "HTTP/2" or "HTTP/1.1"
    it("sends /api/* to the api upstream, with the client's Host and the query (" .. proto .. ")", function()
      local res = srv:get("/api/users/1?fields=name", { http2 = h2, headers = { host = "shop.example" } })
      assert.are.equal(200, res.status, res.error)
      assert.are.equal("api GET shop.example /api/users/1?fields=name", res.body)
      assert.are.equal("api", res.headers["x-origin"])
      assert.are.equal("nosniff", res.headers["x-content-type-options"])
      assert.truthy(res.headers["strict-transport-security"])
    end)

    it("sends everything else to the web upstream (" .. proto .. ")", function()
      local res = srv:get("/apix/index.html", { http2 = h2, headers = { host = "shop.example" } })
      assert.are.equal(200, res.status, res.error)
      assert.are.equal("web GET shop.example /apix/index.html", res.body)
      assert.are.equal("nosniff", res.headers["x-content-type-options"])
    end)
  end

  it("passes the origin's status and a POST through, headers added to errors too", function()
    -- upstream_origin.lua answers /status/N with N: a web path.
    local res = srv:post("/status/404", "x=1", { headers = { host = "shop.example" } })
    assert.are.equal(404, res.status)
    assert.are.equal("web POST shop.example /status/404", res.body)
    assert.are.equal("nosniff", res.headers["x-content-type-options"])
  end)
end)
