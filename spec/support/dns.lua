-- A tiny fake DNS server for specs: UDP on 127.0.0.1, an ephemeral port,
-- answering A / AAAA queries for configured names with a configured TTL
-- (NXDOMAIN for any other name), counting every query it receives. It runs
-- as a separate process (this file with --serve DIR), so a spec can keep
-- talking to it while the code under test waits; the spec steers it through
-- files in DIR: `records` (re-read on every query) and `mode`.
--
--   local dns = require "support.dns"
--   local d = dns.start{ ["svc.edge.test"] = { a = { "10.0.0.7" }, aaaa = { "fd00::7" }, ttl = 2 },
--                        ["quiet.edge.test"] = { silent = true } }
--   d.server               -- "127.0.0.1:PORT", for c-ares's servers option
--   d:queries(name, type)  -- queries received for name ("A", "AAAA" or nil: both)
--   d:set_mode("servfail") -- "answer" (default), "servfail" or "silent", for every name
--   d:set_records{...}     -- replaces the records (same shape as dns.start's)
--   d:stop()               -- kills the process (by its PID)
if select(1, ...) == "--serve" then package.path = "spec/?.lua;" .. package.path end
local util = require "support.util"

local dns = {}

local TYPES = { [1] = "A", [28] = "AAAA" }

-- ---------------------------------------------------------------- the files

local function records_text(records)
  local lines = {}
  for name, r in pairs(records) do
    local ttl = r.ttl or 60
    if r.silent then lines[#lines + 1] = string.format("%s %d SILENT -", name:lower(), ttl) end
    for _, ip in ipairs(r.a or {}) do lines[#lines + 1] = string.format("%s %d A %s", name:lower(), ttl, ip) end
    for _, ip in ipairs(r.aaaa or {}) do lines[#lines + 1] = string.format("%s %d AAAA %s", name:lower(), ttl, ip) end
    if not r.silent and not r.a and not r.aaaa then lines[#lines + 1] = name:lower() .. " " .. ttl .. " NONE -" end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Writes a file whole, through a rename, so the server never reads half of it.
local function replace_file(path, text)
  util.write_file(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

local parsed_text, parsed
local function parse_records(text)
  if text == parsed_text then return parsed end   -- the same file: parsed once, not per query
  local names = {}
  for name, ttl, kind, value in (text or ""):gmatch("(%S+) (%d+) (%u+) (%S+)") do
    local n = names[name] or { ttl = tonumber(ttl), A = {}, AAAA = {} }
    names[name] = n
    if kind == "SILENT" then n.silent = true
    elseif kind == "A" or kind == "AAAA" then table.insert(n[kind], value) end
  end
  parsed_text, parsed = text, names
  return names
end

-- ---------------------------------------------------------------- the wire

local function ipv4_bytes(ip)
  local a, b, c, d = ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

local function ipv6_bytes(ip)
  local head, tail = ip:match("^(.-)::(.*)$")
  local groups = {}
  local function add(part)
    for g in part:gmatch("[^:]+") do groups[#groups + 1] = tonumber(g, 16) end
  end
  if head then
    add(head)
    local left = #groups
    local right = {}
    for g in tail:gmatch("[^:]+") do right[#right + 1] = tonumber(g, 16) end
    for _ = 1, 8 - left - #right do groups[#groups + 1] = 0 end
    for _, g in ipairs(right) do groups[#groups + 1] = g end
  else
    add(ip)
  end
  local out = {}
  for i = 1, 8 do out[i] = string.pack(">I2", groups[i] or 0) end
  return table.concat(out)
end

-- Returns id, flags, name (lowercase), qtype and the question bytes, or nil.
local function parse_query(q)
  if #q < 12 then return nil end
  local id, flags, qdcount = string.unpack(">I2I2I2", q)
  if qdcount ~= 1 or flags & 0x8000 ~= 0 then return nil end
  local pos, labels = 13, {}
  while true do
    local len = q:byte(pos)
    if not len or len >= 64 then return nil end
    pos = pos + 1
    if len == 0 then break end
    labels[#labels + 1] = q:sub(pos, pos + len - 1)
    pos = pos + len
  end
  if #q < pos + 3 then return nil end
  local qtype = string.unpack(">I2", q, pos)
  return id, flags, table.concat(labels, "."):lower(), qtype, q:sub(13, pos + 3)
end

local function response(id, flags, qtype, question, rcode, answers, ttl)
  -- QR, the query's opcode and RD, AA, RA, then the rcode.
  local rflags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | rcode
  local out = { string.pack(">I2I2I2I2I2I2", id, rflags, 1, #answers, 0, 0), question }
  for _, rdata in ipairs(answers) do
    out[#out + 1] = string.pack(">I2I2I2I4s2", 0xC00C, qtype, 1, ttl, rdata)
  end
  return table.concat(out)
end

-- One query: the reply (nil: stay silent) and the log line.
local function answer(dir, q)
  local id, flags, name, qtype, question = parse_query(q)
  if not id then return nil, nil end
  local mode = (util.read_file(dir .. "/mode") or "answer"):match("%a+")
  local line = string.format("%s %s", TYPES[qtype] or tostring(qtype), name)
  if mode == "silent" then return nil, line end
  if mode == "servfail" then return response(id, flags, qtype, question, 2, {}, 0), line end
  local rec = parse_records(util.read_file(dir .. "/records"))[name]
  if not rec then return response(id, flags, qtype, question, 3, {}, 0), line end
  if rec.silent then return nil, line end
  local list, rdata = rec[TYPES[qtype] or ""] or {}, {}
  for i, ip in ipairs(list) do rdata[i] = qtype == 1 and ipv4_bytes(ip) or ipv6_bytes(ip) end
  return response(id, flags, qtype, question, 0, rdata, rec.ttl), line
end

-- The server process: bounded by `lifetime` seconds (timeout(1) too).
local function serve(dir, lifetime)
  local socket = require "socket"
  local udp = assert(socket.udp())
  assert(udp:setsockname("127.0.0.1", 0))
  udp:settimeout(0.2)
  local _, port = udp:getsockname()
  replace_file(dir .. "/port", tostring(port))
  local deadline = util.now() + lifetime
  while util.now() < deadline do
    local q, ip, from = udp:receivefrom()
    if q then
      local reply, line = answer(dir, q)
      if line then
        local f = assert(io.open(dir .. "/log", "ab"))
        f:write(line, "\n")
        f:close()
      end
      if reply then udp:sendto(reply, ip, from) end
    end
  end
  udp:close()
end

-- ---------------------------------------------------------------- the handle

local Dns = {}
Dns.__index = Dns

--- Starts a server answering `records` (see the top of this file).
function dns.start(records, opts)
  opts = opts or {}
  local proc = require "support.proc"
  local self = setmetatable({}, Dns)
  self.dir = util.tmpdir("dns")
  replace_file(self.dir .. "/records", records_text(records or {}))
  replace_file(self.dir .. "/mode", "answer\n")
  local lifetime = opts.lifetime or 120
  self.proc = proc.spawn({ "lua5.4", "spec/support/dns.lua", "--serve", self.dir, tostring(lifetime) },
    { timeout = lifetime + 5 })
  local deadline = util.now() + 5
  while not self.port and util.now() < deadline and self.proc:running() do
    self.port = tonumber(util.read_file(self.dir .. "/port") or "")
    if not self.port then util.sleep(0.02) end
  end
  assert(self.port, "fake DNS server did not start: " .. self.proc:stderr())
  self.server = "127.0.0.1:" .. self.port
  return self
end

function Dns:queries(name, qtype)
  local n = 0
  for t, q in (util.read_file(self.dir .. "/log") or ""):gmatch("(%S+) (%S+)\n") do
    if q == name:lower() and (qtype == nil or qtype == t) then n = n + 1 end
  end
  return n
end

function Dns:total_queries()
  return #util.lines(util.read_file(self.dir .. "/log") or "")
end

function Dns:set_mode(mode)
  assert(mode == "answer" or mode == "servfail" or mode == "silent", "unknown mode " .. tostring(mode))
  replace_file(self.dir .. "/mode", mode .. "\n")
end

function Dns:set_records(records)
  replace_file(self.dir .. "/records", records_text(records))
end

function Dns:stop()
  if self.proc then self.proc:kill() end
end

if select(1, ...) == "--serve" then
  serve(select(2, ...), tonumber(select(3, ...)) or 120)
end

return dns
