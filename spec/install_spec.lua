-- `make install` / `make uninstall` and the rockspec (issue 10.7): edge
-- installed like a Lua module. Installs into a temporary DESTDIR with
-- PREFIX=/usr, then uses that tree alone, from unrelated directories, as a
-- system install would be used: the binary finds its Lua libraries with no
-- LUA_PATH, serves the installed default script, and plain busted finds
-- require "edge" and edge.testing through LUA_PATH/LUA_CPATH set to the
-- installed tree only (the defaults of a system Lua for PREFIX /usr).
-- Not tagged #e2e: it installs ./edge (the release build), so the ASan pass
-- has nothing to add.
local util = require "support.util"
local server = require "edge.testing.server"

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local _, out = util.run({ "pwd" })
  local cwd = out:gsub("\n$", "")
  if p == "." then return cwd end
  return cwd .. "/" .. p:gsub("^%./", "")
end

local ROOT = abspath(".")
local CERT, KEY = ROOT .. "/certs/server.crt", ROOT .. "/certs/server.key"

-- What the installed tree alone gives Lua: ";;" appends the system defaults
-- (busted itself lives there), never this checkout.
local function lua_env(tree)
  local lpath = tree .. "/usr/share/lua/5.4/?.lua;" .. tree .. "/usr/share/lua/5.4/?/init.lua;;"
  local cpath = tree .. "/usr/lib/lua/5.4/?.so;;"
  return { LUA_PATH = lpath, LUA_PATH_5_4 = lpath, LUA_CPATH = cpath, LUA_CPATH_5_4 = cpath }
end

-- The environment of a system without this checkout: Lua's default paths.
local SYSTEM_LUA = { LUA_PATH = ";;", LUA_PATH_5_4 = ";;", LUA_CPATH = ";;", LUA_CPATH_5_4 = ";;" }

--- Runs a shell command in dir with env (a table) and EDGE_BIN unset.
local function sh_in(dir, env, cmd, timeout)
  local assigns = {}
  for k, v in pairs(env) do assigns[#assigns + 1] = k .. "=" .. util.q(v) end
  table.sort(assigns)
  local full = string.format("cd %s && env -u EDGE_BIN %s %s", util.q(dir), table.concat(assigns, " "), cmd)
  return util.run({ "sh", "-c", full }, { timeout = timeout or 60 })
end

-- A user's project: a router script and its spec, which loads the script by
-- its own path and starts the server from PATH (EDGE_TEST_CERT: the
-- installed tree has no development certificate).
local APP = [[
local router = require "edge.router"
local response = require "edge.response"
local edge = require "edge"
local app = router.new()
app:get("/hello/:name", function(req, params)
  edge.sleep(0.01)
  return response.json { path = "/" .. params.name }
end, { ttl = 5 })
return app:hooks()
]]

local APP_SPEC = [[
local edge = require "edge"
local clock = require "edge.testing.clock"
local fake = require "edge.testing.request"
local server = require "edge.testing.server"
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local tree = os.getenv("INSTALL_TREE")

describe("an installed edge", function()
  it("is the one busted loads", function()
    assert.are.equal(tree .. "/usr/lib/lua/5.4/edge.so", package.searchpath("edge", package.cpath))
    assert.are.equal(tree .. "/usr/share/lua/5.4/edge/router.lua",
      package.searchpath("edge.router", package.path))
  end)

  it("runs the script's hooks in-process", function()
    local app = dofile(here .. "app.lua")
    clock.set(0)
    local res = app.respond(fake.new { path = "/hello/ada" })
    assert.are.equal(0.01, edge.now())
    assert.are.equal('{"path":"/ada"}', res.body)
  end)

  it("serves the script with the edge on PATH", function()
    local srv = server.start { script = here .. "app.lua",
                               cert = os.getenv("EDGE_TEST_CERT"), key = os.getenv("EDGE_TEST_KEY") }
    assert.are.equal(tree .. "/usr/bin/edge", srv.bin)
    local res = srv:get("/hello/bob")
    assert.are.equal(200, res.status)
    assert.are.equal('{"path":"/bob"}', res.body)
    server.stop_and_check(srv)
  end)
end)
]]

describe("make install", function()
  local tree, project, elsewhere

  lazy_setup(function()
    tree = util.tmpdir("install")
    project = util.tmpdir("project")
    elsewhere = util.tmpdir("elsewhere")
    util.write_file(project .. "/app.lua", APP)
    util.write_file(project .. "/app_spec.lua", APP_SPEC)
    local code, out, err = util.run({ "make", "--no-print-directory", "install",
      "DESTDIR=" .. tree, "PREFIX=/usr" }, { timeout = 300 })
    assert(code == 0, "make install failed:\n" .. out .. err)
  end)

  it("installs the binary, the libraries, the edge module, the default script, the man page, the unit", function()
    for _, f in ipairs { "/usr/bin/edge", "/usr/lib/lua/5.4/edge.so",
                         "/usr/share/lua/5.4/edge/router.lua", "/usr/share/lua/5.4/edge/request.lua",
                         "/usr/share/lua/5.4/edge/response.lua",
                         "/usr/share/lua/5.4/edge/testing/clock.lua",
                         "/usr/share/lua/5.4/edge/testing/request.lua",
                         "/usr/share/lua/5.4/edge/testing/server.lua",
                         "/usr/share/edge/default.lua", "/usr/share/man/man1/edge.1",
                         "/usr/lib/systemd/system/edge.service", "/etc/logrotate.d/edge" } do
      assert.is_true(util.exists(tree .. f), f .. " not installed")
    end
    local code = util.run({ "test", "-x", tree .. "/usr/bin/edge" })
    assert.are.equal(0, code, "/usr/bin/edge is not executable")
  end)

  it("writes a man page with every option of README's command-line table", function()
    local man = assert(util.read_file(tree .. "/usr/share/man/man1/edge.1"))
    assert.matches('^%.\\" Generated', man)
    assert.truthy(man:find('\n.TH EDGE 1 ', 1, true))
    local readme = assert(util.read_file("README.md"))
    local cli = readme:match("\n## Command line\n(.-)\n## ")
    local n = 0
    for opt in cli:gmatch("\n| `(%-%-[%w-]+)") do
      n = n + 1
      assert.truthy(man:find(opt:gsub("%-", "\\-"), 1, true), opt .. " missing from the man page")
    end
    assert.is_true(n >= 20, "options found in README: " .. n)
    assert.truthy(man:find("/usr/share/edge/default.lua", 1, true), "FILES does not name PREFIX")
    -- groff renders it without errors (warnings about long lines aside).
    local code, out, err = util.run({ "groff", "-man", "-Tutf8", "-z", tree .. "/usr/share/man/man1/edge.1" })
    assert.are.equal(0, code, out .. err)
    assert.is_nil(err:find("error", 1, true), err)
  end)

  it("the installed binary finds its Lua libraries with no LUA_PATH, from any directory", function()
    local code, out, err = sh_in(elsewhere, SYSTEM_LUA, util.qall {
      tree .. "/usr/bin/edge", "-t", "-s", project .. "/app.lua", "--cert", CERT, "--key", KEY })
    assert.are.equal(0, code, out .. err)
  end)

  it("the installed binary serves a request with the installed default script", function()
    local srv = server.start { bin = tree .. "/usr/bin/edge", script = tree .. "/usr/share/edge/default.lua",
                               cert = CERT, key = KEY, env = SYSTEM_LUA }
    local res = srv:get("/")
    assert.are.equal(200, res.status)
    assert.are.equal("Hello from edge!", res.body)
    local app = server.start { bin = tree .. "/usr/bin/edge", script = project .. "/app.lua",
                               cert = CERT, key = KEY, env = SYSTEM_LUA }
    assert.are.equal('{"path":"/x"}', app:get("/hello/x").body)
    server.stop_and_check(app)
    server.stop_and_check(srv)
  end)

  it("plain busted finds require \"edge\" and runs a script's spec from another directory", function()
    local env = lua_env(tree)
    env.PATH = tree .. "/usr/bin:" .. os.getenv("PATH")
    env.INSTALL_TREE, env.EDGE_TEST_CERT, env.EDGE_TEST_KEY = tree, CERT, KEY
    local code, out, err = sh_in(elsewhere, env,
      "busted --lua=lua5.4 -o plainTerminal " .. util.q(project .. "/app_spec.lua"), 120)
    assert.matches("3 successes / 0 failures / 0 errors", out, out .. err)
    assert.are.equal(0, code, out .. err)
  end)

  it("make uninstall removes every file it installed", function()
    local code, out, err = util.run({ "make", "--no-print-directory", "uninstall",
      "DESTDIR=" .. tree, "PREFIX=/usr" }, { timeout = 60 })
    assert.are.equal(0, code, out .. err)
    local _, files = util.run({ "find", tree, "-type", "f" })
    assert.are.equal("", files)
  end)
end)

describe("scripts/edge-dev-1.rockspec", function()
  it("luarocks make builds and installs the edge module and libraries into a tree", function()
    local rocks = util.tmpdir("rocks")
    local code, out, err = util.run({ "luarocks", "--lua-version=5.4", "make", "--tree=" .. rocks,
      "scripts/edge-dev-1.rockspec" }, { timeout = 300 })
    assert.are.equal(0, code, "luarocks make (scripts/install-deps.sh installs luarocks):\n" .. out .. err)
    local lpath = rocks .. "/share/lua/5.4/?.lua;;"
    local cpath = rocks .. "/lib/lua/5.4/?.so;;"
    local probe = 'local e = require "edge"; local c = require "edge.testing.clock"; '
      .. 'assert(package.searchpath("edge", package.cpath):find(os.getenv("ROCKS"), 1, true)); '
      .. 'c.set(0); e.sleep(0.25); io.write(require("edge.response").json({ t = e.now() }).body)'
    code, out, err = sh_in("/", { LUA_PATH = lpath, LUA_PATH_5_4 = lpath, LUA_CPATH = cpath,
      LUA_CPATH_5_4 = cpath, ROCKS = rocks }, "lua5.4 -e " .. util.q(probe))
    assert.are.equal(0, code, out .. err)
    assert.are.equal('{"t":0.25}', out)
  end)
end)
