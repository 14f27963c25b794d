-- Specs for lua/examples/vary.lua (a cache key that varies by the
-- Accept-Language header), in-process and against the real server (#e2e).
local fake = require "edge.testing.request"
local clock = require "edge.testing.clock"

local SCRIPT = "lua/examples/vary.lua"

describe("examples/vary.lua in-process", function()
  local app

  before_each(function() app = dofile(SCRIPT) end)

  local function get(lang, path)
    local req = fake.get(path or "/", lang and { ["Accept-Language"] = lang } or nil)
    return app.cache_key(req), app.respond(req)
  end

  it("negotiates the language: q-values, order, prefixes, *, q=0", function()
    local cases = {
      { nil, "en" },
      { "", "en" },
      { "fr", "fr" },
      { "fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "fr" },
      { "de;q=0.5, fr;q=0.8", "fr" },
      { "DE-at", "de" },
      { "es, it", "en" },            -- none we have: the default
      { "es, de;q=0.1", "de" },
      { "fr;q=0, de;q=0.2", "de" },  -- q=0: not acceptable
      { "*", "en" },
      { "en;q=0.5, de;q=0.5", "en" }, -- a tie: the first given
      { "garbage;;;,,", "en" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[2], app.negotiate(c[1]), tostring(c[1]))
    end
  end)

  it("keys by the negotiated language, not the raw header", function()
    assert.are.equal("GET localhost/?lang=fr", (get("fr-CH, fr;q=0.9")))
    assert.are.equal("GET localhost/?lang=fr", (get("fr")))
    assert.are.equal("GET localhost/?lang=en", (get(nil)))
    assert.are.equal("GET localhost/?lang=en", (get("en-US,en;q=0.9")))
    assert.are.equal("GET localhost/?lang=de", (get("de")))
  end)

  it("answers in the language, with Content-Language, Vary, a ttl and cache = \"force\"", function()
    local _, res = get("fr")
    assert.are.equal(200, res.status)
    assert.are.equal("Bonjour !\n", res.body)
    assert.are.equal("fr", res.headers["content-language"])
    assert.are.equal("Accept-Language", res.headers["vary"])
    assert.are.equal(60, res.ttl)
    assert.are.equal("force", res.cache)   -- edge stores it despite Vary: the key holds the language
    local _, en = get(nil)
    assert.are.equal("Hello!\n", en.body)
  end)

  it("renders on the virtual clock (edge.sleep does not really wait)", function()
    local t0 = clock.now()
    get("de")
    assert.is_true(clock.now() - t0 >= 0.002 - 1e-9)
  end)

  it("does not cache other methods; answers 404 elsewhere", function()
    assert.is_nil(app.cache_key(fake.post("/", "x")))
    local _, res = get("fr", "/other")
    assert.are.equal(404, res.status)
  end)
end)

describe("examples/vary.lua against the real server #e2e", function()
  local server = require "edge.testing.server"
  local srv

  lazy_setup(function() srv = server.start { script = SCRIPT } end)
  lazy_teardown(function() server.stop_and_check(srv) end)

  local function get(lang, http2)
    return srv:get("/", { headers = lang and { ["Accept-Language"] = lang } or nil, http2 = http2 })
  end

  it("keeps one entry per language, shared by every spelling of it", function()
    local fr = get("fr-CH, fr;q=0.9")
    assert.are.equal(200, fr.status, fr.error)
    assert.are.equal("Bonjour !\n", fr.body)
    assert.are.equal("MISS", fr.headers["x-cache"])
    assert.are.equal("fr", fr.headers["content-language"])
    assert.are.equal("Accept-Language", fr.headers["vary"])

    local fr2 = get("fr", true)
    assert.are.equal("HIT", fr2.headers["x-cache"])
    assert.are.equal("Bonjour !\n", fr2.body)

    local de = get("de-DE")
    assert.are.equal("MISS", de.headers["x-cache"])
    assert.are.equal("Hallo!\n", de.body)

    local en = get(nil)
    assert.are.equal("MISS", en.headers["x-cache"])
    assert.are.equal("Hello!\n", en.body)
    local en2 = get("es, en-GB;q=0.5", true)
    assert.are.equal("HIT", en2.headers["x-cache"])
    assert.are.equal("Hello!\n", en2.body)
  end)

  it("answers 404 for another path", function()
    assert.are.equal(404, srv:get("/x").status)
  end)
end)
