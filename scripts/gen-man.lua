-- Writes edge(1), the man page, to stdout from README.md's "Command line"
-- (synopsis, options, exit status) and "Operating edge" (signals, logs,
-- metrics) sections, so the page says what the README says. Run by
-- `make man` / `make install`:
--
--   lua5.4 scripts/gen-man.lua README.md VERSION PREFIX > build/man/edge.1
--
-- A small Markdown-to-troff converter for what those sections use: paragraphs,
-- "- " lists, pipe tables (the options table becomes .TP entries), ``` blocks,
-- `code`, **bold** and [links](...). No pandoc needed.
local readme_path, version, prefix = arg[1] or "README.md", arg[2] or "", arg[3] or "/usr/local"

local f = assert(io.open(readme_path, "rb"))
local readme = f:read("a")
f:close()

--- The body of section "## title" (up to the next "## "), as a list of lines.
local function section(title)
  local lines, inside = {}, false
  for line in (readme .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^## ") then
      if inside then break end
      inside = line == "## " .. title
    elseif inside then
      lines[#lines + 1] = line
    end
  end
  assert(#lines > 0, readme_path .. ": no section '## " .. title .. "'")
  return lines
end

--- Escapes text for troff: backslashes, and a leading '.' or "'".
local function escape(s)
  s = s:gsub("\\", "\\e")
  return s
end

--- Inline Markdown to troff: `code` bold with \- for '-', **bold**, links.
local function inline(s)
  local out, pos = {}, 1
  while true do
    local a, b = s:find("`[^`]*`", pos)
    local text = s:sub(pos, (a or #s + 1) - 1)
    text = escape(text)
    text = text:gsub("%*%*(.-)%*%*", "\\fB%1\\fR")
    text = text:gsub("%[([^%]]*)%]%([^)]*%)", "%1")
    out[#out + 1] = text
    if not a then break end
    local code = escape(s:sub(a + 1, b - 1)):gsub("%-", "\\-")
    out[#out + 1] = "\\fB" .. code .. "\\fR"
    pos = b + 1
  end
  return table.concat(out)
end

--- One output line, safe from troff's control characters at its start.
local function text_line(s)
  if s:match("^[.']") then s = "\\&" .. s end
  return s
end

--- The cells of a pipe-table row ("\|" is a literal bar inside a cell).
local function cells(row)
  local list = {}
  row = row:gsub("\\|", "\1"):gsub("^%s*|", ""):gsub("|%s*$", "")
  for cell in (row .. "|"):gmatch("([^|]*)|") do
    list[#list + 1] = cell:gsub("\1", "|"):match("^%s*(.-)%s*$")
  end
  return list
end

--- Converts Markdown lines to troff lines (appended to out).
local function convert(lines, out, table_row)
  local i, para = 1, {}
  local function flush()
    if #para > 0 then
      out[#out + 1] = ".PP"
      out[#out + 1] = text_line(inline(table.concat(para, " ")))
      para = {}
    end
  end
  while i <= #lines do
    local line = lines[i]
    if line:match("^```") then
      flush()
      out[#out + 1] = ".PP"
      out[#out + 1] = ".nf"
      out[#out + 1] = ".RS 4"
      i = i + 1
      while i <= #lines and not lines[i]:match("^```") do
        out[#out + 1] = text_line(escape(lines[i]))
        i = i + 1
      end
      out[#out + 1] = ".RE"
      out[#out + 1] = ".fi"
    elseif line:match("^|") then
      flush()
      local header = true
      while i <= #lines and lines[i]:match("^|") do
        local row = cells(lines[i])
        if not header and not lines[i]:match("^|[%s|:-]+|%s*$") then table_row(row, out) end
        header = false
        i = i + 1
      end
      i = i - 1
    elseif line:match("^%- ") then
      flush()
      local item = { line:sub(3) }
      while i + 1 <= #lines and lines[i + 1]:match("^  %S") do
        i = i + 1
        item[#item + 1] = lines[i]:match("^%s*(.*)$")
      end
      out[#out + 1] = ".IP \\(bu 2"
      out[#out + 1] = text_line(inline(table.concat(item, " ")))
    elseif line:match("^%s*$") then
      flush()
    else
      para[#para + 1] = line
    end
    i = i + 1
  end
  flush()
end

--- An options-table row: | option | default | meaning |.
local function option_row(row, out)
  local opt, default, meaning = row[1], row[2] or "", row[3] or ""
  out[#out + 1] = ".TP"
  out[#out + 1] = text_line(inline(opt))
  local body = inline(meaning)
  if default:match("^%(.*%)$") then body = body .. " " .. inline(default)
  elseif default ~= "" then body = body .. " (default: " .. inline(default) .. ")" end
  out[#out + 1] = text_line(body)
end

local function plain_row(row, out)
  out[#out + 1] = ".TP"
  out[#out + 1] = text_line(inline(row[1]))
  local rest = {}
  for k = 2, #row do rest[#rest + 1] = inline(row[k]) end
  out[#out + 1] = text_line(table.concat(rest, "; "))
end

local out = {
  '.\\" Generated from README.md by scripts/gen-man.lua; do not edit.',
  string.format('.TH EDGE 1 "" "edge %s" "User Commands"', version),
  ".SH NAME",
  "edge \\- a Lua\\-scriptable HTTPS edge server",
}

-- SYNOPSIS: the code block that opens "Command line"; OPTIONS: its table;
-- EXIT STATUS: the paragraphs after the table.
local cli = section("Command line")
local synopsis, options, rest, stage = {}, {}, {}, "start"
for _, line in ipairs(cli) do
  if stage == "start" and line:match("^```") then stage = "synopsis"
  elseif stage == "synopsis" and line:match("^```") then stage = "between"
  elseif stage == "synopsis" then synopsis[#synopsis + 1] = line
  elseif (stage == "between" or stage == "options") and line:match("^|") then
    stage = "options"
    options[#options + 1] = line
  elseif stage == "options" then stage = "rest" rest[#rest + 1] = line
  elseif stage == "rest" then rest[#rest + 1] = line
  end
end
assert(#synopsis > 0 and #options > 2, "README.md's Command line section has no synopsis or options table")

out[#out + 1] = ".SH SYNOPSIS"
out[#out + 1] = ".nf"
for _, l in ipairs(synopsis) do out[#out + 1] = text_line(escape(l)) end
out[#out + 1] = ".fi"

out[#out + 1] = ".SH DESCRIPTION"
local intro = {}
for line in readme:gmatch("[^\n]*\n") do
  line = line:gsub("\n$", "")
  if line:match("^## ") then break end
  if not line:match("^# ") then intro[#intro + 1] = line end
end
convert(intro, out, plain_row)
out[#out + 1] = ".SH OPTIONS"
convert(options, out, option_row)
out[#out + 1] = ".SH EXIT STATUS"
convert(rest, out, plain_row)
out[#out + 1] = ".SH OPERATION"
convert(section("Operating edge"), out, plain_row)
out[#out + 1] = ".SH FILES"
convert({
  "- `" .. prefix .. "/share/edge/default.lua`: the default script (`edge -s " .. prefix .. "/share/edge/default.lua`).",
  "- `" .. prefix .. "/share/lua/5.4/edge/`: edge's Lua libraries (`edge.router`, `edge.request`, `edge.response`, `edge.testing.*`), which the binary `" .. prefix .. "/bin/edge` finds there.",
  "- `" .. prefix .. "/lib/lua/5.4/edge.so`: `require \"edge\"` for busted specs outside the server.",
  "- `" .. prefix .. "/lib/systemd/system/edge.service`, `/etc/logrotate.d/edge`: the systemd unit and the logrotate snippet.",
}, out, plain_row)
out[#out + 1] = ".SH SEE ALSO"
out[#out + 1] = "README.md in edge's source, which this page is generated from."

io.write(table.concat(out, "\n"), "\n")
