-- Unit specs for lua/edge/router.lua: matching rules (exact, parameters,
-- wildcards, precedence), 404 / 405 + Allow / 400, HEAD, per-route cache
-- keys, the hooks, and the errors a scripter gets for a bad route.
local router = require "edge.router"
local fake = require "edge.testing.request"

--- A handler that answers with its name and the params it got.
local function tag(name)
  return function(req, params)
    return { status = 200, body = name, params = params, method = req.method }
  end
end

local function respond(app, method, path, headers)
  return app:respond(fake.new { method = method, path = path, headers = headers })
end

describe("edge.router matching", function()
  local app

  before_each(function()
    app = router.new()
    app:get("/", tag("root"))
    app:get("/health", tag("health"))
    app:get("/users", tag("users"))
    app:get("/users/", tag("users-slash"))
    app:get("/users/me", tag("me"))
    app:get("/users/:id", tag("user"))
    app:get("/users/:id/posts/:post", tag("post"))
    app:get("/users/:uid/friends", tag("friends"))
    app:get("/static/*", tag("static"))
    app:get("/files/*path", tag("files"))
    app:get("/a/b/c", tag("abc"))
    app:get("/a/:x/d", tag("axd"))
  end)

  it("matches exact routes", function()
    assert.are.equal("root", respond(app, "GET", "/").body)
    assert.are.equal("health", respond(app, "GET", "/health").body)
    assert.are.equal("users", respond(app, "GET", "/users").body)
  end)

  it("treats a trailing slash as significant", function()
    assert.are.equal("users-slash", respond(app, "GET", "/users/").body)
    assert.are.equal(404, respond(app, "GET", "/health/").status)
  end)

  it("captures named parameters, raw (not percent-decoded)", function()
    local res = respond(app, "GET", "/users/42")
    assert.are.equal("user", res.body)
    assert.are.same({ id = "42" }, res.params)
    res = respond(app, "GET", "/users/a%2Fb")
    assert.are.same({ id = "a%2Fb" }, res.params)
    res = respond(app, "GET", "/users/7/posts/hello-world")
    assert.are.equal("post", res.body)
    assert.are.same({ id = "7", post = "hello-world" }, res.params)
  end)

  it("lets different routes name the same position differently", function()
    local res = respond(app, "GET", "/users/9/friends")
    assert.are.equal("friends", res.body)
    assert.are.same({ uid = "9" }, res.params)
  end)

  it("never matches a parameter with an empty segment", function()
    assert.are.equal(404, respond(app, "GET", "/users//posts/1").status)
  end)

  it("prefers a static segment to a parameter, whatever the order of definition", function()
    assert.are.equal("me", respond(app, "GET", "/users/me").body)
    local r2 = router.new()
    r2:get("/users/:id", tag("user"))
    r2:get("/users/me", tag("me"))
    assert.are.equal("me", respond(r2, "GET", "/users/me").body)
    assert.are.equal("user", respond(r2, "GET", "/users/you").body)
  end)

  it("backtracks from a static segment to a parameter", function()
    -- /a/b/d: "b" matches the static child, which has no "d"; the parameter does.
    local res = respond(app, "GET", "/a/b/d")
    assert.are.equal("axd", res.body)
    assert.are.same({ x = "b" }, res.params)
    assert.are.equal("abc", respond(app, "GET", "/a/b/c").body)
  end)

  it("matches a trailing wildcard as a prefix, rest in params['*']", function()
    local res = respond(app, "GET", "/static/css/site.css")
    assert.are.equal("static", res.body)
    assert.are.same({ ["*"] = "css/site.css" }, res.params)
    res = respond(app, "GET", "/static/")
    assert.are.same({ ["*"] = "" }, res.params)
    -- The prefix is "/static/": "/static" alone is another path.
    assert.are.equal(404, respond(app, "GET", "/static").status)
    assert.are.equal(404, respond(app, "GET", "/staticx/y").status)
  end)

  it("names a wildcard with *name (also in params['*'])", function()
    local res = respond(app, "GET", "/files/a/b.txt")
    assert.are.same({ path = "a/b.txt", ["*"] = "a/b.txt" }, res.params)
  end)

  it("prefers parameters to a wildcard, and falls back to it", function()
    local r = router.new()
    r:get("/x/*", tag("wild"))
    r:get("/x/:id", tag("param"))
    r:get("/x/y", tag("static"))
    assert.are.equal("static", respond(r, "GET", "/x/y").body)
    assert.are.equal("param", respond(r, "GET", "/x/z").body)
    assert.are.equal("wild", respond(r, "GET", "/x/z/w").body)
    assert.are.equal("wild", respond(r, "GET", "/x/").body)
  end)

  it("matches everything with /*", function()
    local r = router.new()
    r:get("/*", tag("all"))
    assert.are.same({ ["*"] = "" }, respond(r, "GET", "/").params)
    assert.are.same({ ["*"] = "a/b" }, respond(r, "GET", "/a/b").params)
  end)

  it("answers 404 for no route", function()
    local res = respond(app, "GET", "/nope")
    assert.are.equal(404, res.status)
    assert.are.equal("not found\n", res.body)
    assert.are.equal(404, respond(app, "GET", "/users/1/posts").status)
  end)

  it("answers 400 for '.' and '..' segments, also percent-encoded", function()
    for _, p in ipairs { "/static/../etc/passwd", "/static/./x", "/users/..", "/files/%2e%2e/x",
                         "/files/%2E%2e/x", "/files/.%2E/x", "/files/%2e/x" } do
      local res = respond(app, "GET", p)
      assert.are.equal(400, res.status, p)
      assert.are.equal("bad path\n", res.body)
    end
    -- Dots inside a segment are fine.
    assert.are.same({ ["*"] = "a..b/.hidden/x.y" }, respond(app, "GET", "/static/a..b/.hidden/x.y").params)
  end)

  it("r:match returns the route and params, or the status", function()
    local route, params = app:match("GET", "/users/5")
    assert.are.equal("/users/:id", route.pattern)
    assert.are.same({ id = "5" }, params)
    assert.are.same({ nil, 404 }, { app:match("GET", "/zzz") })
    assert.are.same({ nil, 405, "GET, HEAD" }, { app:match("POST", "/users/5") })
    assert.are.same({ nil, 400 }, { app:match("GET", "/a/../b") })
    assert.are.same({ nil, 404 }, { app:match("GET", "*") })
  end)
end)

describe("edge.router methods", function()
  local app

  before_each(function()
    app = router.new()
    app:get("/items", tag("list"))
    app:post("/items", tag("create"))
    app:get("/items/:id", tag("show"))
    app:put("/items/:id", tag("replace"))
    app:patch("/items/:id", tag("update"))
    app:delete("/items/:id", tag("remove"))
    app:delete("/items/special", tag("remove-special"))
    app:route({ "GET", "POST" }, "/both", tag("both"))
    app:route("PURGE", "/cache/*", tag("purge"))
    app:any("/anything", tag("any"))
    app:get("/ping", tag("ping-get"))
    app:head("/ping", tag("ping-head"))
    app:options("/items", tag("options"))
  end)

  it("dispatches by method", function()
    assert.are.equal("list", respond(app, "GET", "/items").body)
    assert.are.equal("create", respond(app, "POST", "/items").body)
    assert.are.equal("show", respond(app, "GET", "/items/1").body)
    assert.are.equal("replace", respond(app, "PUT", "/items/1").body)
    assert.are.equal("update", respond(app, "PATCH", "/items/1").body)
    assert.are.equal("remove", respond(app, "DELETE", "/items/1").body)
    assert.are.equal("options", respond(app, "OPTIONS", "/items").body)
    assert.are.equal("both", respond(app, "GET", "/both").body)
    assert.are.equal("both", respond(app, "POST", "/both").body)
    assert.are.equal("purge", respond(app, "PURGE", "/cache/x").body)
  end)

  it("serves HEAD with the GET handler, which sees method HEAD", function()
    local res = respond(app, "HEAD", "/items/3")
    assert.are.equal("show", res.body)
    assert.are.equal("HEAD", res.method)
  end)

  it("prefers an explicit HEAD route", function()
    assert.are.equal("ping-head", respond(app, "HEAD", "/ping").body)
    assert.are.equal("ping-get", respond(app, "GET", "/ping").body)
  end)

  it("routes any method to an any() route", function()
    for _, m in ipairs { "GET", "HEAD", "POST", "DELETE", "PROPFIND" } do
      local res = respond(app, m, "/anything")
      assert.are.equal("any", res.body)
      assert.are.equal(m, res.method)
    end
  end)

  it("answers 405 with Allow listing the methods, HEAD wherever GET is", function()
    local res = respond(app, "PUT", "/items")
    assert.are.equal(405, res.status)
    assert.are.equal("GET, HEAD, POST, OPTIONS", res.headers.allow)
    res = respond(app, "POST", "/items/1")
    assert.are.equal("GET, HEAD, PUT, PATCH, DELETE", res.headers.allow)
    assert.are.equal("POST", respond(app, "DELETE", "/both").headers.allow:match("POST"))
    assert.are.equal("GET, HEAD, POST", respond(app, "DELETE", "/both").headers.allow)
    -- Non-standard methods come after the usual ones.
    assert.are.equal("PURGE", respond(app, "GET", "/cache/x").headers.allow)
  end)

  it("unions Allow over every route that matches the path", function()
    -- /items/special: DELETE on the static route, GET/PUT/PATCH/DELETE on /items/:id.
    local res = respond(app, "POST", "/items/special")
    assert.are.equal(405, res.status)
    assert.are.equal("GET, HEAD, PUT, PATCH, DELETE", res.headers.allow)
    assert.are.equal("remove-special", respond(app, "DELETE", "/items/special").body)
    -- A method only the parameter route has still reaches it.
    assert.are.equal("show", respond(app, "GET", "/items/special").body)
  end)

  it("answers 404, not 405, when no route matches the path at all", function()
    assert.are.equal(404, respond(app, "POST", "/nothing/here").status)
  end)

  it("lets the router's not_found, method_not_allowed and bad_path answer", function()
    local r = router.new {
      not_found = function(req) return { status = 404, body = "custom 404 " .. req.path } end,
      method_not_allowed = function(req, allow)
        return { status = 405, headers = { allow = allow }, body = "custom 405" }
      end,
      bad_path = function(req) return { status = 400, body = "custom 400" } end,
    }
    r:get("/x", tag("x"))
    assert.are.equal("custom 404 /y", respond(r, "GET", "/y").body)
    local res = respond(r, "POST", "/x")
    assert.are.equal("custom 405", res.body)
    assert.are.equal("GET, HEAD", res.headers.allow)
    assert.are.equal("custom 400", respond(r, "GET", "/../x").body)
  end)
end)

describe("edge.router cache keys", function()
  local app

  before_each(function()
    app = router.new()
    app:get("/users/:id", tag("user"))
    app:get("/health", tag("health"), { cache = false })
    app:get("/search", tag("search"), {
      cache_key = function(req, params)
        local q = req.args.q
        if type(q) == "string" then return req.path .. "?q=" .. q end
      end,
    })
    app:get("/greet/:name", tag("greet"), {
      cache_key = function(req, params)
        return "/greet/" .. params.name .. "|" .. (req.headers["accept-language"] or "-")
      end,
    })
    app:post("/users", tag("create"))
    app:put("/kv/:k", tag("put"), { cache_key = function(req, p) return "kv:" .. p.k end })
    app:get("/static/*", tag("static"))
  end)

  local function key(method, path, headers)
    return app:cache_key(fake.new { method = method, path = path, headers = headers })
  end

  it("keys GET and HEAD together by host, path and query by default", function()
    assert.are.equal("GET localhost/users/1", key("GET", "/users/1"))
    assert.are.equal("GET localhost/users/1", key("HEAD", "/users/1"))
    assert.are.equal("GET localhost/users/2?x=1", key("GET", "/users/2?x=1"))
    assert.are.equal("GET localhost/static/a/b", key("GET", "/static/a/b"))
  end)

  it("gives another query and another host another default key", function()
    assert.are_not.equal(key("GET", "/users/1?q=a"), key("GET", "/users/1?q=b"))
    assert.are_not.equal(key("GET", "/users/1", { Host = "a.example" }),
      key("GET", "/users/1", { Host = "b.example" }))
    assert.are.equal("GET b.example/users/1", key("GET", "/users/1", { Host = "B.example:8443" }))
  end)

  it("builds the default key from a plain table with router.default_key (for purges)", function()
    assert.are.equal("GET h/users/1", router.default_key { host = "h", path = "/users/1" })
    assert.are.equal("GET h/s?q=a", router.default_key { host = "h", path = "/s", query = "q=a" })
    assert.are.equal("GET /x", router.default_key { path = "/x" })
    assert.are.equal(key("GET", "/users/1?a=1"),
      router.default_key { host = "localhost", path = "/users/1", query = "a=1" })
  end)

  it("does not cache other methods by default", function()
    assert.is_nil(key("POST", "/users"))
  end)

  it("never caches a cache = false route", function()
    assert.is_nil(key("GET", "/health"))
    assert.is_nil(key("HEAD", "/health"))
  end)

  it("uses a route's cache_key(req, params), varying by a query argument", function()
    assert.are.equal("/search?q=lua", key("GET", "/search?q=lua&utm=x"))
    assert.are.equal("/search?q=c", key("GET", "/search?utm=y&q=c"))
    assert.is_nil(key("GET", "/search"))
  end)

  it("uses a route's cache_key(req, params), varying by a header", function()
    assert.are.equal("/greet/bob|fr", key("GET", "/greet/bob", { ["Accept-Language"] = "fr" }))
    assert.are.equal("/greet/bob|-", key("GET", "/greet/bob"))
  end)

  it("calls a route's cache_key for every method the route serves", function()
    assert.are.equal("kv:a", key("PUT", "/kv/a"))
  end)

  it("does not cache 404, 405 and 400", function()
    assert.is_nil(key("GET", "/nope"))
    assert.is_nil(key("DELETE", "/users/1"))
    assert.is_nil(key("GET", "/static/../x"))
  end)

  it("raises with the route when a cache_key returns a non-string", function()
    local r = router.new()
    r:get("/bad", tag("bad"), { cache_key = function() return 42 end })
    local ok, err = pcall(r.cache_key, r, fake.get("/bad"))
    assert.is_false(ok)
    assert.matches("cache_key of route GET /bad", err, 1, true)
    assert.matches("router_spec.lua:%d+", err)
    assert.matches("returned number; expected a string or nil", err, 1, true)
  end)

  it("sets a route's ttl on responses that have none", function()
    local r = router.new()
    r:get("/a", function() return { body = "a" } end, { ttl = 30 })
    r:get("/b", function() return { body = "b", ttl = 5 } end, { ttl = 30 })
    assert.are.equal(30, r:respond(fake.get("/a")).ttl)
    assert.are.equal(5, r:respond(fake.get("/b")).ttl)
  end)

  it("keeps the handler's other fields (cache) when it adds the route's ttl", function()
    local r = router.new()
    local shared = { body = "c", cache = "force", headers = { ["set-cookie"] = "a=1" } }
    r:get("/c", function() return shared end, { ttl = 30 })
    local res = r:respond(fake.get("/c"))
    assert.are.equal("force", res.cache)
    assert.are.equal(30, res.ttl)
    assert.are.equal("a=1", res.headers["set-cookie"])
    assert.is_nil(shared.ttl, "the handler's own table was changed")
  end)

  it("marks the statuses a route lists in cache_statuses cache = \"any-status\"", function()
    local r = router.new()
    r:get("/s/:code", function(req, p) return { status = tonumber(p.code), body = "" } end,
      { ttl = 30, cache_statuses = { 500, 302 } })
    r:get("/own", function() return { status = 500, cache = false } end, { cache_statuses = { 500 } })
    assert.are.equal("any-status", r:respond(fake.get("/s/500")).cache)
    assert.are.equal("any-status", r:respond(fake.get("/s/302")).cache)
    assert.is_nil(r:respond(fake.get("/s/503")).cache)
    assert.is_nil(r:respond(fake.get("/s/200")).cache)
    assert.are.equal(30, r:respond(fake.get("/s/503")).ttl)
    assert.are.equal(false, r:respond(fake.get("/own")).cache, "the handler's cache field was overridden")
  end)

  it("rejects a cache_statuses that is not a list of statuses", function()
    local h = function() return {} end
    for _, bad in ipairs { {}, 500, { "500" }, { 99 }, { 600 }, { 500.5 } } do
      local ok, err = pcall(function() router.new():get("/x", h, { cache_statuses = bad }) end)
      assert.is_false(ok, tostring(bad))
      assert.matches("cache_statuses", err, 1, true)
    end
  end)
end)

describe("edge.router hooks", function()
  it("app:hooks() returns the script's { cache_key, respond }", function()
    local app = router.new()
    app:get("/x/:id", function(req, p) return { status = 200, body = "x" .. p.id } end)
    local hooks = app:hooks()
    assert.is_function(hooks.cache_key)
    assert.is_function(hooks.respond)
    local req = fake.get("/x/1")
    assert.are.equal("GET localhost/x/1", hooks.cache_key(req))
    assert.are.equal("x1", hooks.respond(req).body)
  end)

  it("routes added after hooks() are served too", function()
    local app = router.new()
    local hooks = app:hooks()
    app:get("/late", tag("late"))
    assert.are.equal("late", hooks.respond(fake.get("/late")).body)
  end)

  it("works on a request without args or headers (a minimal plain table)", function()
    local app = router.new()
    app:get("/m", tag("m"))
    assert.are.equal("m", app:respond { method = "GET", path = "/m" }.body)
    assert.are.equal("GET /m", app:cache_key { method = "GET", path = "/m" })
  end)

  it("lets a handler's error through (edge reports it with file:line)", function()
    local app = router.new()
    app:get("/boom", function() error("kaboom") end)
    local ok, err = pcall(app.respond, app, fake.get("/boom"))
    assert.is_false(ok)
    assert.matches("router_spec.lua:%d+: kaboom", err)
  end)

  it("raises with the route and the handler's file:line when a handler returns no table", function()
    local app = router.new()
    app:get("/nil", function() end, { name = "nothing" })
    local ok, err = pcall(app.respond, app, fake.get("/nil"))
    assert.is_false(ok)
    assert.matches("handler of route GET /nil (nothing) (", err, 1, true)
    assert.matches("router_spec.lua:%d+%) returned nil; expected a response table", err)
  end)

  it("supports chaining", function()
    local app = router.new():get("/a", tag("a")):post("/b", tag("b"))
    assert.are.equal("a", respond(app, "GET", "/a").body)
    assert.are.equal("b", respond(app, "POST", "/b").body)
  end)
end)

describe("edge.router route errors", function()
  --- The error of fn(), which must fail.
  local function err_of(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok, "expected an error")
    return err
  end

  it("points at the caller's line", function()
    local r = router.new()
    local err = err_of(function() r:get("nope", tag("x")) end)
    assert.matches("^spec/router_spec.lua:%d+: route pattern \"nope\" must start with '/'", err)
    err = err_of(function() r:route("GET", "nope", tag("x")) end)
    assert.matches("^spec/router_spec.lua:%d+: ", err)
  end)

  it("rejects bad patterns with what is expected", function()
    local r = router.new()
    local cases = {
      { 42, "route pattern must be a string" },
      { "/a?b", "must not contain '?'" },
      { "/a//b", "empty segment" },
      { "/a/*/b", "'*' is only allowed as the last segment" },
      { "/a/:", "bad parameter" },
      { "/a/:1x", "bad parameter" },
      { "/a/:id/:id", "parameter \"id\" appears twice" },
      { "/a/:id/*id", "parameter \"id\" appears twice" },
      { "/a/x:y", "only allowed at the start of a segment" },
      { "/a/../b", "'.' and '..' segments are not allowed" },
    }
    for _, c in ipairs(cases) do
      local err = err_of(function() r:get(c[1], tag("x")) end)
      assert.truthy(err:find(c[2], 1, true), tostring(c[1]) .. ": " .. err)
    end
  end)

  it("rejects bad methods, handlers and options", function()
    local r = router.new()
    assert.matches("methods are upper%-case", err_of(function() r:route("get", "/x", tag("x")) end))
    assert.matches("non%-empty list", err_of(function() r:route({}, "/x", tag("x")) end))
    assert.matches("handler must be a function", err_of(function() r:get("/x", "hi") end))
    assert.matches("unknown option \"cahce\"", err_of(function() r:get("/x", tag("x"), { cahce = false }) end))
    assert.matches("opts.cache_key must be a function",
      err_of(function() r:get("/x", tag("x"), { cache_key = "k" }) end))
    assert.matches("contradict", err_of(function()
      r:get("/x", tag("x"), { cache = false, cache_key = function() end })
    end))
    assert.matches("opts.ttl must be a number > 0", err_of(function() r:get("/x", tag("x"), { ttl = 0 }) end))
    assert.matches("opts.not_found must be a function",
      err_of(function() router.new { not_found = 404 } end))
  end)

  it("rejects a route defined twice for a method, naming both", function()
    local r = router.new()
    r:get("/u/:id", tag("a"))
    local err = err_of(function() r:get("/u/:name", tag("b")) end)
    assert.matches("route GET /u/:name already defined (as GET /u/:id)", err, 1, true)
    -- Another method on the same pattern is fine.
    assert.has_no.errors(function() r:post("/u/:name", tag("c")) end)
  end)
end)

describe("edge.router with many routes", function()
  it("matches each of 300 static and parameter routes", function()
    local r = router.new()
    for i = 1, 150 do
      r:get("/s" .. i .. "/list", tag("s" .. i))
      r:get("/p" .. i .. "/:id/items/:item", tag("p" .. i))
    end
    for i = 1, 150 do
      assert.are.equal("s" .. i, respond(r, "GET", "/s" .. i .. "/list").body)
      local res = respond(r, "GET", "/p" .. i .. "/x" .. i .. "/items/y")
      assert.are.equal("p" .. i, res.body)
      assert.are.same({ id = "x" .. i, item = "y" }, res.params)
    end
    assert.are.equal(404, respond(r, "GET", "/s151/list").status)
  end)
end)
