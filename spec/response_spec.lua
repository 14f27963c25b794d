-- Unit specs for lua/edge/response.lua: json (lua-cjson), text, redirect.
local response = require "edge.response"
local cjson = require "cjson"

-- The error specs call the builders as `local r = f() return r`: in `return
-- f()` (a tail call) Lua drops the caller's frame, so there is no line to name.
describe("edge.response.json", function()
  it("encodes with lua-cjson, 200, application/json", function()
    local res = response.json { id = 1, name = "Ada", tags = { "a", "b" } }
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    assert.are.same({ id = 1, name = "Ada", tags = { "a", "b" } }, cjson.decode(res.body))
    assert.is_nil(res.ttl)
  end)

  it("takes a status and extra headers; a header in any case replaces the default", function()
    local res = response.json({ error = "gone" }, 410, { ["X-Trace"] = "t1", ["Content-Type"] = "application/problem+json" })
    assert.are.equal(410, res.status)
    assert.are.equal("t1", res.headers["x-trace"])
    assert.are.equal("application/problem+json", res.headers["content-type"])
    assert.is_nil(res.headers["Content-Type"])
  end)

  it("encodes scalars, arrays, nested tables and cjson.null", function()
    assert.are.equal('"hi"', response.json("hi").body)
    assert.are.equal("[1,2,3]", response.json({ 1, 2, 3 }).body)
    assert.are.equal("{}", response.json({}).body)
    assert.are.equal('{"a":null}', response.json({ a = cjson.null }).body)
    assert.are.equal('{"a":{"b":[true,false]}}', response.json({ a = { b = { true, false } } }).body)
  end)

  it("escapes what JSON requires", function()
    local body = response.json({ s = 'quote " backslash \\ newline \n' }).body
    assert.are.equal('quote " backslash \\ newline \n', cjson.decode(body).s)
  end)

  it("writes '/' unescaped (application/json, not application\\/json)", function()
    assert.are.equal('{"type":"application/json"}', response.json({ type = "application/json" }).body)
    assert.are.equal('["/","//"]', response.json({ "/", "//" }).body)
  end)

  it("keeps backslashes next to '/' exact", function()
    for _, s in ipairs({ "\\/", "\\\\/", "/\\", "a\\/b\\\\//c", "\\" }) do
      local body = response.json({ [s] = s }).body
      assert.are.same({ [s] = s }, cjson.decode(body))
    end
    assert.are.equal('{"\\\\/":"\\\\/"}', response.json({ ["\\/"] = "\\/" }).body)
  end)

  it("leaves the caller's own cjson escaping '/' as it was", function()
    assert.are.equal('"a\\/b"', cjson.encode("a/b"))
    response.json("a/b")
    assert.are.equal('"a\\/b"', cjson.encode("a/b"))
  end)

  it("raises naming the caller's line for a value cjson cannot encode", function()
    local ok, err = pcall(function() local r = response.json({ f = print }) return r end)
    assert.is_false(ok)
    assert.matches("response_spec.lua:%d+: edge.response.json: cannot encode the value: ", err)
    assert.matches("function", err)
    ok, err = pcall(function() local r = response.json({ n = 0 / 0 }) return r end)
    assert.is_false(ok)
    assert.matches("NaN", err)
  end)

  it("is not affected by another cjson user's settings", function()
    cjson.encode_sparse_array(true)
    local ok = pcall(response.json, { [1] = 1, [100] = 2 })
    cjson.encode_sparse_array(false)
    assert.is_false(ok, "the private cjson instance should keep its defaults")
  end)

  it("returns a new table each time", function()
    local a, b = response.json({}), response.json({})
    assert.are_not.equal(a, b)
    assert.are_not.equal(a.headers, b.headers)
  end)
end)

describe("edge.response.text", function()
  it("answers text/plain with the body", function()
    local res = response.text("ok\n")
    assert.are.same({ status = 200, headers = { ["content-type"] = "text/plain; charset=utf-8" },
                      body = "ok\n" }, res)
  end)

  it("takes a status and headers, converts a number body", function()
    local res = response.text(42, 503, { ["Retry-After"] = "5" })
    assert.are.equal("42", res.body)
    assert.are.equal(503, res.status)
    assert.are.equal("5", res.headers["retry-after"])
  end)

  it("keeps a list value (repeated header) as a list", function()
    local res = response.text("x", 200, { ["Set-Cookie"] = { "a=1", "b=2" } })
    assert.are.same({ "a=1", "b=2" }, res.headers["set-cookie"])
  end)

  it("rejects a bad body, status or headers at the caller's line", function()
    local ok, err = pcall(function() local r = response.text({}) return r end)
    assert.is_false(ok)
    assert.matches("response_spec.lua:%d+: edge.response.text: body must be a string, got table", err)
    for _, s in ipairs { 99, 600, 200.5, "200" } do
      ok, err = pcall(function() local r = response.text("x", s) return r end)
      assert.is_false(ok, tostring(s))
      assert.matches("response_spec.lua:%d+: status must be an integer from 200 to 599", err)
    end
    ok, err = pcall(function() local r = response.text("x", 200, "x-a: 1") return r end)
    assert.matches("response_spec.lua:%d+: headers must be a table", err)
  end)
end)

describe("edge.response.redirect", function()
  it("is a 302 with Location and an empty body by default", function()
    local res = response.redirect("/new")
    assert.are.equal(302, res.status)
    assert.are.equal("/new", res.headers.location)
    assert.are.equal("", res.body)
  end)

  it("takes 301, 303, 307, 308", function()
    for _, s in ipairs { 301, 303, 307, 308 } do
      assert.are.equal(s, response.redirect("https://example.com/", s).status)
    end
  end)

  it("rejects other statuses, an empty url and control characters", function()
    local ok, err = pcall(function() local r = response.redirect("/x", 200) return r end)
    assert.is_false(ok)
    assert.matches("response_spec.lua:%d+: .*status must be 301, 302, 303, 307 or 308, got 200", err)
    ok, err = pcall(function() local r = response.redirect("") return r end)
    assert.matches("url must be a non%-empty string", err)
    ok, err = pcall(function() local r = response.redirect("/x\r\nSet-Cookie: a=1") return r end)
    assert.is_false(ok)
    assert.matches("control characters", err)
  end)
end)
