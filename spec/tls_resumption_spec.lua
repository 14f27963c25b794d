-- TLS session resumption (issue 15): the session ticket keys are the
-- process's, shared by every worker; edge's own keys rotate; edge processes
-- (nodes) given the same --ticket-key-file (nginx's 48/80-byte format) resume
-- each other's sessions. The client is `openssl s_client -sess_out/-sess_in`;
-- "Reused" in its output is a resumption.
local server = require "support.server"
local admin = require "support.admin"
local proc = require "support.proc"
local socket = require "socket"
local util = require "support.util"

local SCRIPT = "spec/fixtures/echo.lua"      -- answers worker_id=N
local CERT, KEY = "certs/server.crt", "certs/server.key"
local REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- The key names (the first 16 bytes, hex) of the tickets s_client printed,
-- in order: the last is the newest.
local function ticket_names(text)
  local names = {}
  for line in text:gmatch("TLS session ticket:\n%s*0000 %- ([^\n]*)") do
    names[#names + 1] = ((line:match("^(.-)   ") or line):gsub("[^%x]", ""))
  end
  return names
end

--- One connection by openssl s_client (TLS 1.3 unless opts.tls), one GET /
-- read to the end, so that the ticket a TLS 1.3 server sends after the
-- handshake is read before s_client exits. opts.sess_out / opts.sess_in:
-- session files. Returns { reused, worker, ticket (newest key name), text }.
local function connect(port, opts)
  opts = opts or {}
  local argv = { "openssl", "s_client", "-connect", "127.0.0.1:" .. port, opts.tls or "-tls1_3",
                 "-alpn", "http/1.1", "-ign_eof" }
  for _, o in ipairs { "sess_in", "sess_out" } do
    if opts[o] then argv[#argv + 1] = "-" .. o; argv[#argv + 1] = opts[o] end
  end
  local code, out, err = util.run(argv, { stdin = REQUEST, timeout = 10 })
  local text = out .. err
  assert(code == 0, "s_client exited with " .. code .. ":\n" .. text)
  local r = { text = text, reused = text:find("\nReused, TLSv1%.[23]") ~= nil,
              worker = tonumber(text:match("worker_id=(%d+)")) }
  local names = ticket_names(text)
  r.ticket = names[#names]
  assert(r.reused or text:find("\nNew, TLSv1%.[23]"), "no handshake summary:\n" .. text)
  if not opts.any_server then assert(r.worker, "no answer from edge:\n" .. text) end
  return r
end

--- A fresh random key file of n bytes; returns its path and key name (hex).
local function key_file(dir, name, n)
  local path = dir .. "/" .. name
  local code, out, err = util.run({ "openssl", "rand", "-out", path, tostring(n or 80) })
  assert(code == 0, out .. err)
  return path, hex(util.read_file(path):sub(1, 16))
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

--- The whole ticket (bytes) of a session file, from `openssl sess_id -text`.
local function session_ticket(path)
  local code, out, err = util.run({ "openssl", "sess_id", "-in", path, "-noout", "-text" })
  assert(code == 0, out .. err)
  local parts, inside = {}, false
  for line in out:gmatch("[^\n]*") do
    if inside then
      local rest = line:match("^%s*%x%x%x%x %- (.*)$")
      if not rest then break end
      parts[#parts + 1] = (rest:sub(1, 48):gsub("[^%x]", ""))   -- 16 bytes, then their ASCII
    elseif line:find("TLS session ticket:", 1, true) then
      inside = true
    end
  end
  assert(#parts > 0, "no ticket in " .. path .. ":\n" .. out)
  return unhex(table.concat(parts))
end

--- Asserts that ticket (name, IV, AES-CBC ciphertext, HMAC-SHA256 over the
-- rest) was made with the key file's bytes laid out as nginx reads them:
-- 80 bytes name, HMAC, AES-256; 48 bytes name, AES-128, HMAC.
local function assert_nginx_layout(ticket, key, dir, who)
  local hmac_key, aes_key, cipher = key:sub(17, 48), key:sub(49, 80), "-aes-256-cbc"
  if #key == 48 then hmac_key, aes_key, cipher = key:sub(33, 48), key:sub(17, 32), "-aes-128-cbc" end
  assert.are.equal(hex(key:sub(1, 16)), hex(ticket:sub(1, 16)), who .. ": key name")
  util.write_file(dir .. "/signed", ticket:sub(1, #ticket - 32))
  local code, out, err = util.run({ "openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt",
    "hexkey:" .. hex(hmac_key), "-r", dir .. "/signed" })
  assert(code == 0, out .. err)
  assert.are.equal(hex(ticket:sub(#ticket - 31)), out:match("^(%x+)"), who .. ": HMAC")
  util.write_file(dir .. "/sealed", ticket:sub(33, #ticket - 32))
  code, out, err = util.run({ "openssl", "enc", "-d", cipher, "-K", hex(aes_key), "-iv", hex(ticket:sub(17, 32)),
    "-in", dir .. "/sealed", "-out", dir .. "/session" })
  assert(code == 0, who .. ": AES-CBC decryption failed: " .. out .. err)
  assert.are.equal(0x30, util.read_file(dir .. "/session"):byte(1), who .. ": not a DER SSL_SESSION")
end

local NGINX_CONF = [[
daemon off; master_process off; worker_processes 1;
pid {dir}/nginx.pid; error_log {dir}/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_ticket_key {ticket_key};
    location / { return 200 "nginx\n"; }
  }
}
]]

--- Debian's nginx with ssl_session_ticket_key FILE on a free port; stop
-- with :kill() (by PID). Raises with its log when it does not listen in 10 s.
local function start_nginx(dir, ticket_key)
  local _, cwd = util.run({ "pwd" })
  cwd = cwd:gsub("\n$", "")
  local port = util.free_port()
  assert(os.execute("mkdir -p " .. util.q(dir .. "/tmp")))
  local vars = { dir = dir, port = port, cert = cwd .. "/" .. CERT, key = cwd .. "/" .. KEY, ticket_key = ticket_key }
  util.write_file(dir .. "/nginx.conf", (NGINX_CONF:gsub("{([%w_]+)}", function(k) return tostring(vars[k]) end)))
  local p = proc.spawn({ "nginx", "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log" }, { timeout = 120 })
  local deadline = util.now() + 10
  while util.now() < deadline and p:running() do
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    if ok then return p, port end
    util.sleep(0.05)
  end
  p:kill()
  error("nginx did not listen on " .. port .. ":\n" .. (util.read_file(dir .. "/error.log") or ""))
end

local function start(files, opts)
  opts = opts or {}
  local args = opts.args or {}
  for _, f in ipairs(files) do args[#args + 1] = "--ticket-key-file"; args[#args + 1] = f end
  return server.start { script = SCRIPT, workers = opts.workers or 1, args = args }
end

--- Stops every server given (the first failure raised after all stopped).
local function stop_all(list)
  server.stop_and_check(table.unpack(list, 1, list.n or #list))
end

describe("TLS session resumption #e2e", function()
  local dir
  before_each(function() dir = util.tmpdir("resume") end)

  it("resumes on every worker with edge's own keys (-w 2): a session made on one worker resumes on the other",
    function()
      local aport = util.free_port()
      local srv = server.start { script = SCRIPT, workers = 2, args = { "--admin", "127.0.0.1:" .. aport } }
      local ok, err = pcall(function()
        local sess = dir .. "/s.pem"
        local first = connect(srv.port, { sess_out = sess })
        assert.is_false(first.reused, first.text)
        assert.truthy(first.ticket, "no ticket issued:\n" .. first.text)
        local before = admin.scrape(aport)
        -- Which worker accepts is the kernel's choice (SO_REUSEPORT hashes
        -- the client's port): at least 20 resumptions, and on until one
        -- landed on the other worker (at most 60; 2^-59 to miss it).
        local n, crossed = 0, 0
        while n < 60 and (n < 20 or crossed == 0) do
          local r = connect(srv.port, { sess_in = sess })
          n = n + 1
          assert.is_true(r.reused, "resumption " .. n .. " was a full handshake:\n" .. r.text)
          if r.worker ~= first.worker then crossed = crossed + 1 end
        end
        assert.is_true(crossed > 0, "no connection reached the other worker in " .. n)
        local after = admin.scrape(aport)
        local function delta(k) return admin.value(after, k) - admin.value(before, k) end
        assert.are.equal(n, delta("edge_tls_handshakes_total"))
        assert.are.equal(n, delta("edge_tls_resumed_total"))
      end)
      stop_all { srv }
      assert(ok, err)
    end)

  it("two processes with the same --ticket-key-file resume each other's sessions (TLS 1.3 and 1.2); "
    .. "another file means a full handshake that still serves", function()
    local k1, name1 = key_file(dir, "k1.key")
    local k2, name2 = key_file(dir, "k2.key")
    local a, b, c = start({ k1 }, { workers = 2 }), start({ k1 }, { workers = 2 }), start({ k2 })
    local ok, err = pcall(function()
      for _, tls in ipairs { "-tls1_3", "-tls1_2" } do
        local fa, fb = dir .. "/a" .. tls .. ".pem", dir .. "/b" .. tls .. ".pem"
        local made = connect(a.port, { tls = tls, sess_out = fa })
        assert.is_false(made.reused)
        assert.are.equal(name1, made.ticket, "the ticket is not under the file's key name")
        assert.is_true(connect(b.port, { tls = tls, sess_in = fa }).reused, tls .. ": A's session on B")
        connect(b.port, { tls = tls, sess_out = fb })
        assert.is_true(connect(a.port, { tls = tls, sess_in = fb }).reused, tls .. ": B's session on A")
        local other = connect(c.port, { tls = tls, sess_in = fa })
        assert.is_false(other.reused, tls .. ": resumed with another key file:\n" .. other.text)
        assert.are.equal(name2, other.ticket)
      end
    end)
    stop_all { a, b, c, n = 3 }
    assert(ok, err)
  end)

  it("takes 48-byte files (nginx's AES-128 format) as well", function()
    local k, name = key_file(dir, "k48.key", 48)
    local a, b = start({ k }), start({ k })
    local ok, err = pcall(function()
      local f = dir .. "/s48.pem"
      assert.are.equal(name, connect(a.port, { sess_out = f }).ticket)
      assert.is_true(connect(b.port, { sess_in = f }).reused)
    end)
    stop_all { a, b, n = 2 }
    assert(ok, err)
  end)

  it("rotates through files: with B A, a session made under A resumes and gets a ticket under B", function()
    local ka = key_file(dir, "a.key")
    local kb, name_b = key_file(dir, "b.key")
    local old = start({ ka })
    local f13, f12 = dir .. "/s13.pem", dir .. "/s12.pem"
    local ok, err = pcall(function()
      connect(old.port, { sess_out = f13 })
      connect(old.port, { tls = "-tls1_2", sess_out = f12 })
    end)
    stop_all { old }
    assert(ok, err)
    local new, only_b = start({ kb, ka }), start({ kb })
    ok, err = pcall(function()
      local r13 = connect(new.port, { sess_in = f13 })
      assert.is_true(r13.reused, r13.text)
      assert.are.equal(name_b, r13.ticket)
      -- TLS 1.2 sends a ticket on a resumption only when the callback asks
      -- for a renewal (2): a ticket under B says it did.
      local r12 = connect(new.port, { tls = "-tls1_2", sess_in = f12 })
      assert.is_true(r12.reused, r12.text)
      assert.are.equal(name_b, r12.ticket, "the TLS 1.2 ticket under A was not renewed under B")
      assert.is_false(connect(only_b.port, { tls = "-tls1_2", sess_in = f12 }).reused, "A retired, yet resumed")
      assert.is_false(connect(only_b.port, { sess_in = f13 }).reused, "A retired, yet resumed")
    end)
    stop_all { new, only_b, n = 2 }
    assert(ok, err)
  end)

  it("lays tickets out as nginx does: from the same 80- or 48-byte file, edge's and nginx's tickets "
    .. "carry its key name and verify and decrypt with its keys where nginx reads them", function()
    for _, size in ipairs { 80, 48 } do
      local file = key_file(dir, "k" .. size .. ".key", size)
      local key = util.read_file(file)
      local ngx, nport = start_nginx(util.tmpdir("nginx"), file)
      local srv = start({ file })
      local ok, err = pcall(function()
        for _, tls in ipairs { "-tls1_3", "-tls1_2" } do
          local fe, fn = dir .. "/edge.pem", dir .. "/nginx.pem"
          connect(srv.port, { tls = tls, sess_out = fe })
          local n = connect(nport, { tls = tls, sess_out = fn, any_server = true })
          assert.truthy(n.text:find("\nnginx\n", 1, true), "no answer from nginx:\n" .. n.text)
          assert_nginx_layout(session_ticket(fe), key, dir, size .. " bytes, " .. tls .. ", edge")
          assert_nginx_layout(session_ticket(fn), key, dir, size .. " bytes, " .. tls .. ", nginx")
        end
      end)
      ngx:kill()
      stop_all { srv }
      assert(ok, err)
    end
  end)

  it("refuses to start with a key file of the wrong size or a missing one (exit 1, the file named)", function()
    local bad = key_file(dir, "bad.key", 50)
    local function run(file, extra)
      local argv = { util.edge_bin(), "-s", SCRIPT, "-l", "127.0.0.1:0", "--cert", CERT, "--key", KEY,
                     "--ticket-key-file", file }
      if extra then argv[#argv + 1] = extra end
      return util.run(argv, { timeout = 20 })
    end
    for _, extra in ipairs { false, "-t" } do
      local code, out, err = run(bad, extra or nil)
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find("--ticket-key-file " .. bad .. " is 50 bytes", 1, true), err)
      assert.truthy(err:find("must be 80 bytes (AES-256) or 48 bytes (AES-128)", 1, true), err)
      code, out, err = run(dir .. "/missing.key", extra or nil)
      assert.are.equal(1, code, out .. err)
      assert.matches("cannot read %-%-ticket%-key%-file .*missing%.key: No such file", err)
    end
  end)

  it("re-reads the files on SIGHUP: a new key takes over; a bad file keeps the keys in force and says why",
    function()
      local f, name1 = key_file(dir, "live.key")
      local srv = start({ f }, { workers = 2 })
      local ok, err = pcall(function()
        local s1, s2 = dir .. "/s1.pem", dir .. "/s2.pem"
        assert.are.equal(name1, connect(srv.port, { sess_out = s1 }).ticket)
        local _, name2 = key_file(dir, "live.key")             -- the same path, new bytes
        srv:signal("HUP")
        assert.truthy(srv:wait_log("SIGHUP: session ticket keys re%-read", 5), srv:log_tail())
        local r = connect(srv.port, { sess_in = s1, sess_out = s2 })
        assert.is_false(r.reused, "the replaced key still decrypts")
        assert.are.equal(name2, r.ticket)
        key_file(dir, "live.key", 50)
        srv:signal("HUP")
        local why = srv:wait_log("SIGHUP: ([^\n]*previous session ticket keys stay in force)", 5)
        assert.truthy(why, srv:log_tail())
        assert.matches("is 50 bytes", why)
        assert.is_true(connect(srv.port, { sess_in = s2 }).reused, "the keys in force were dropped")
      end)
      stop_all { srv }
      assert(ok, err)
    end)

  it("rotates its own keys (--ticket-rotate): the previous key still resumes, with a ticket under the new one",
    function()
      local ROTATE = 4
      local srv = start({}, { workers = 2, args = { "--ticket-rotate", tostring(ROTATE) } })
      local ok, err = pcall(function()
        local f = dir .. "/s.pem"
        local first = connect(srv.port)
        assert.matches("lifetime hint: " .. ROTATE .. " %(seconds%)", first.text)
        -- The first rotation: when a new session's ticket changes key name.
        local deadline, rotated, key1 = util.now() + 3 * ROTATE, nil, nil
        repeat
          util.sleep(0.2)
          local r = connect(srv.port)
          if r.ticket ~= first.ticket then rotated, key1 = util.now(), r.ticket end
        until rotated or util.now() > deadline
        assert.truthy(rotated, "no new key in " .. 3 * ROTATE .. " s")
        -- Halfway through key1's period a session is made; past its end
        -- (before the session's lifetime is over) it resumes with key1, now
        -- the previous key, and gets a ticket under the next one.
        util.sleep(math.max(0, rotated + ROTATE / 2 - util.now()))
        assert.are.equal(key1, connect(srv.port, { sess_out = f }).ticket)
        util.sleep(math.max(0, rotated + ROTATE + 0.6 - util.now()))
        local r = connect(srv.port, { sess_in = f })
        assert.is_true(r.reused, "the previous key did not resume:\n" .. r.text)
        assert.truthy(r.ticket and r.ticket ~= key1, "no ticket under a new key:\n" .. r.text)
      end)
      stop_all { srv }
      assert(ok, err)
    end)
end)
