-- Unit specs for lua/edge/request.lua (header, cookies, arg, parse_args)
-- and lua/edge/testing/request.lua (plain request tables for specs).
local request = require "edge.request"
local fake = require "edge.testing.request"

describe("edge.request.header", function()
  it("finds a header whatever the case of the name asked", function()
    local req = { headers = { ["accept-language"] = "fr" } }
    assert.are.equal("fr", request.header(req, "Accept-Language"))
    assert.are.equal("fr", request.header(req, "ACCEPT-LANGUAGE"))
    assert.are.equal("fr", request.header(req, "accept-language"))
  end)

  it("finds a header a plain table spelled in another case", function()
    local req = { headers = { ["X-Token"] = "t" } }
    assert.are.equal("t", request.header(req, "x-token"))
  end)

  it("returns the first value of a repeated header", function()
    local req = { headers = { ["x-forwarded-for"] = { "1.1.1.1", "2.2.2.2" } } }
    assert.are.equal("1.1.1.1", request.header(req, "X-Forwarded-For"))
  end)

  it("returns nil for a missing header or no headers", function()
    assert.is_nil(request.header({ headers = {} }, "x"))
    assert.is_nil(request.header({}, "x"))
  end)

  it("rejects a non-string name", function()
    assert.has_error(function() request.header({ headers = {} }, 1) end,
      "request.header: name must be a string, got number")
  end)
end)

describe("edge.request.cookies", function()
  it("parses name=value pairs, trimming spaces", function()
    local req = { headers = { cookie = "a=1; b=two ;  c = 3" } }
    assert.are.same({ a = "1", b = "two", c = "3" }, request.cookies(req))
  end)

  it("merges several Cookie headers (HTTP/2 splits them)", function()
    local req = { headers = { cookie = { "a=1; b=2", "c=3" } } }
    assert.are.same({ a = "1", b = "2", c = "3" }, request.cookies(req))
  end)

  it("keeps the first of a repeated name, strips quotes, keeps '=' in values", function()
    local req = { headers = { Cookie = 'sid=first; sid=second; q="quoted"; b64=YWI=; e=' } }
    assert.are.same({ sid = "first", q = "quoted", b64 = "YWI=", e = "" }, request.cookies(req))
  end)

  it("skips pairs without '=' and does not percent-decode", function()
    local req = { headers = { cookie = "flag; x=%41; ; =v" } }
    assert.are.same({ x = "%41" }, request.cookies(req))
  end)

  it("returns an empty table without cookies", function()
    assert.are.same({}, request.cookies({ headers = {} }))
    assert.are.same({}, request.cookies({}))
  end)
end)

describe("edge.request.arg", function()
  it("reads req.args, first value of a list", function()
    local req = { args = { q = "lua", tag = { "a", "b" }, flag = true } }
    assert.are.equal("lua", request.arg(req, "q"))
    assert.are.equal("a", request.arg(req, "tag"))
    assert.is_true(request.arg(req, "flag"))
    assert.is_nil(request.arg(req, "none"))
  end)

  it("does not re-parse the query when req.args is there", function()
    local req = { query = "q=from-query", args = { q = "from-args" } }
    assert.are.equal("from-args", request.arg(req, "q"))
  end)

  it("parses req.query when a plain table has no args", function()
    assert.are.equal("a b", request.arg({ query = "q=a+b&x=1" }, "q"))
    assert.is_nil(request.arg({}, "q"))
  end)
end)

describe("edge.request.parse_args (what the server does for req.args)", function()
  it("decodes, makes lists of repeated keys, true for a key without '='", function()
    assert.are.same({ a = { "1", "2" }, b = "x y", c = true, ["d e"] = "/" },
      request.parse_args("a=1&a=2&b=x+y&c&d%20e=%2F"))
  end)

  it("skips empty pairs and '=v', keeps empty values and bad escapes", function()
    assert.are.same({ a = "", b = "%zz", c = "100%" }, request.parse_args("&a=&=v&&b=%zz&c=100%"))
  end)

  it("turns '%2B' into '+' and '+' into a space", function()
    assert.are.same({ q = "1+1 = 2" }, request.parse_args("q=1%2B1+%3D+2"))
  end)

  it("returns an empty table for nil or an empty query", function()
    assert.are.same({}, request.parse_args(nil))
    assert.are.same({}, request.parse_args(""))
  end)
end)

describe("edge.testing.request", function()
  it("builds a plain req like the server's", function()
    local req = fake.new { path = "/search?q=lua&q=c&x", headers = { ["Accept-Language"] = "fr", Host = "Example.COM:8443" } }
    assert.are.equal("GET", req.method)
    assert.are.equal("/search", req.path)
    assert.are.equal("q=lua&q=c&x", req.query)
    assert.are.same({ q = { "lua", "c" }, x = true }, req.args)
    assert.are.same({ ["accept-language"] = "fr", host = "Example.COM:8443" }, req.headers)
    assert.are.equal("example.com", req.host)
    assert.are.equal("https", req.scheme)
    assert.are.equal("1.1", req.version)
    assert.are.equal("127.0.0.1", req.remote_addr)
    assert.matches("^%x+$", req.id)
    assert.are.equal(16, #req.id)
    assert.is_nil(req.body)
  end)

  it("has no query and empty args without '?'", function()
    local req = fake.get("/x")
    assert.is_nil(req.query)
    assert.are.same({}, req.args)
  end)

  it("gives every request its own id", function()
    assert.are_not.equal(fake.get("/").id, fake.get("/").id)
  end)

  it("merges a header given in two cases into a list", function()
    local req = fake.new { headers = { Cookie = "a=1", cookie = "b=2" } }
    assert.are.equal(2, #req.headers.cookie)
  end)

  it("builds POST with a body, keeps other fields", function()
    local req = fake.post("/users", '{"name":"x"}', { ["Content-Type"] = "application/json" })
    assert.are.equal("POST", req.method)
    assert.are.equal('{"name":"x"}', req.body)
    assert.are.equal("application/json", req.headers["content-type"])
    assert.are.equal("v", fake.new { user = "v" }.user)
  end)

  it("rejects a path without '/'", function()
    assert.has_error(function() fake.get("x") end)
  end)
end)
