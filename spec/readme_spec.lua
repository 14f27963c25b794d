-- README.md's Lua examples are run, so they cannot go stale (issue 10.8).
--
-- Extraction rule (keep README examples within it):
--   * Every fenced block opened by a line that is exactly "```lua" and closed
--     by the next line that is exactly "```" is an example. Other languages
--     (```sh, plain ```) are not run.
--   * A first line "-- NAME.lua" (optionally followed by more words, as in
--     "-- api_spec.lua, beside api.lua") names the file the example is saved
--     as; all examples are saved in one directory, so a spec example can load
--     a script example by that name (relative to its own path). Names are
--     unique. Unnamed examples get readme_L<line>.lua / readme_L<line>_spec.lua.
--   * An example with a line starting "describe(" is a spec: it is run by
--     busted (Lua 5.4) from an unrelated working directory, with edge's
--     libraries, the edge module and $EDGE_BIN as absolute paths, and must
--     pass with at least one test and no failure.
--   * Otherwise an example that is named, or whose last line of code is
--     "return NAME" or "return NAME:hooks()", is a script: `edge -t -s FILE`
--     must accept it (it loads in the real server and returns its hooks).
--   * Every other example is a fragment: it must compile (load()).
--   * An example right after a line "<!-- readme_spec: skip -->" (invisible
--     once rendered) is not run at all; say in the README why it cannot be.
local util = require "support.util"

local README = "README.md"

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local _, out = util.run({ "pwd" })
  local cwd = out:gsub("\n$", "")
  if p == "." then return cwd end
  return cwd .. "/" .. p:gsub("^%./", "")
end

local ROOT = abspath(".")
local EDGE = abspath(util.edge_bin())

--- The examples of README text: { line, src, name, kind }.
local function extract(text)
  local examples, lineno, cur, prev = {}, 0, nil, ""
  for line in text:gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if cur then
      if line == "```" then
        cur.src = table.concat(cur.lines, "\n") .. "\n"
        examples[#examples + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif line == "```lua" then
      cur = { line = lineno + 1, lines = {}, skip = prev == "<!-- readme_spec: skip -->" }
    end
    if line ~= "" then prev = line end
  end
  assert(cur == nil, README .. ": a ```lua block opened at line " .. (cur and cur.line or 0) - 1
    .. " is never closed")
  for _, ex in ipairs(examples) do
    ex.name = (ex.lines[1] or ""):match("^%-%- ([%w_%-]+%.lua)%f[^%w_%-.]")
    local last = ""
    for _, l in ipairs(ex.lines) do
      if l:match("%S") and not l:match("^%s*%-%-") then last = l end
    end
    local is_spec = false
    for _, l in ipairs(ex.lines) do
      if l:match("^describe%(") then is_spec = true end
    end
    if ex.skip then ex.kind = "skip"
    elseif is_spec then ex.kind = "spec"
    elseif ex.name or last:match("^return [%a_][%w_]*%s*$") or last:match("^return [%a_][%w_]*:hooks%(%)") then
      ex.kind = "script"
    else ex.kind = "fragment" end
    if not ex.name then
      ex.name = string.format("readme_L%d%s.lua", ex.line, ex.kind == "spec" and "_spec" or "")
    end
  end
  return examples
end

local examples = extract(assert(util.read_file(README), "cannot read " .. README))

local function where(ex)
  return string.format("%s:%d (%s)", README, ex.line, ex.name)
end

describe("README.md examples #e2e", function()
  local dir

  lazy_setup(function()
    dir = util.tmpdir("readme")
    for _, ex in ipairs(examples) do
      if ex.kind ~= "skip" then util.write_file(dir .. "/" .. ex.name, ex.src) end
    end
  end)

  it("has scripts and specs to run, each name once", function()
    local count, seen = { script = 0, spec = 0, fragment = 0, skip = 0 }, {}
    for _, ex in ipairs(examples) do
      count[ex.kind] = count[ex.kind] + 1
      assert.is_nil(seen[ex.name], where(ex) .. ": the name is also used at line " .. tostring(seen[ex.name]))
      seen[ex.name] = ex.line
    end
    assert.is_true(count.script >= 2, "scripts found: " .. count.script)
    assert.is_true(count.spec >= 2, "specs found: " .. count.spec)
  end)

  for _, ex in ipairs(examples) do
    if ex.kind == "fragment" then
      it(where(ex) .. " compiles", function()
        local f, err = load(ex.src, "=" .. where(ex))
        assert(f, err)
      end)
    elseif ex.kind == "script" then
      it(where(ex) .. " is a script edge -t accepts", function()
        local code, out, err = util.run({ EDGE, "-t", "-s", dir .. "/" .. ex.name,
          "--cert", ROOT .. "/certs/server.crt", "--key", ROOT .. "/certs/server.key" },
          { timeout = 20 })
        assert.are.equal(0, code, where(ex) .. ":\n" .. out .. err)
      end)
    elseif ex.kind == "spec" then
      it(where(ex) .. " passes under busted, run from another directory", function()
        local elsewhere = util.tmpdir("readme-cwd")
        local lpath = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
        local cpath = ROOT .. "/build/lua/?.so;;"
        local cmd = string.format(
          "cd %s && LUA_PATH=%s LUA_PATH_5_4=%s LUA_CPATH=%s LUA_CPATH_5_4=%s EDGE_BIN=%s "
            .. "busted --lua=lua5.4 -o plainTerminal %s",
          util.q(elsewhere), util.q(lpath), util.q(lpath), util.q(cpath), util.q(cpath),
          util.q(EDGE), util.q(dir .. "/" .. ex.name))
        local code, out, err = util.run({ "sh", "-c", cmd }, { timeout = 120 })
        local s, f, e = out:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
        assert(s, where(ex) .. ": no busted summary (exit " .. tostring(code) .. "):\n" .. out .. err)
        assert.is_true(tonumber(s) >= 1, where(ex) .. " ran no test:\n" .. out)
        assert.are.equal(0, tonumber(f) + tonumber(e), where(ex) .. ":\n" .. out .. err)
        assert.are.equal(0, code, where(ex) .. ":\n" .. out .. err)
      end)
    end
  end
end)

describe("the README example extraction", function()
  it("classifies scripts, specs, fragments and skipped examples", function()
    local text = table.concat({
      "```lua", "-- a.lua", "return {}", "```",
      "```lua", "local app = {}", "return app:hooks()  ", "```",
      "```lua", "describe(\"x\", function() end)", "```",
      "```lua", "return { status = 200 }", "```",
      "<!-- readme_spec: skip -->", "", "```lua", "this is not Lua", "```",
      "```sh", "echo hi", "```", "",
    }, "\n")
    local ex = extract(text)
    assert.are.equal(5, #ex)
    assert.are.same({ "script", "script", "spec", "fragment", "skip" },
      { ex[1].kind, ex[2].kind, ex[3].kind, ex[4].kind, ex[5].kind })
    assert.are.same({ "a.lua", "readme_L6.lua", "readme_L10_spec.lua", "readme_L13.lua" },
      { ex[1].name, ex[2].name, ex[3].name, ex[4].name })
  end)
end)
