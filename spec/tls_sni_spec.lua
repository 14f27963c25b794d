-- End-to-end specs for several certificates chosen by SNI (--cert/--key
-- pairs, --cert-dir), the default certificate, wildcards, ECDSA and RSA
-- for one name, and SIGHUP re-reading the certificates.
--
-- The certificates are made here with the openssl CLI; what edge serves is
-- read with `openssl s_client -servername NAME`. Every edge is started with
-- a time limit and stopped by PID; it must exit 0 (no sanitizer report).
local socket = require "socket"
local ssl = require "ssl"
local util = require "support.util"
local proc = require "support.proc"
local client = require "support.client"
local certs = require "support.certs"

local EDGE = util.edge_bin()
local SCRIPT = "lua/default.lua"

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

--- edge's own PID: proc.spawn runs it under timeout(1), which would pass a
-- SIGHUP on twice (to edge and to its process group).
local function edge_pid(p)
  local children = util.read_file(string.format("/proc/%d/task/%d/children", p.pid, p.pid)) or ""
  return tonumber(children:match("%d+"))
end

--- Starts edge on a free loopback port with extra args (a list); returns
-- the process and the port, once edge accepts connections.
local function start(args)
  local argv = { EDGE, "-s", SCRIPT, "-l", "127.0.0.1:0", "-w", "2" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = proc.spawn(argv, { timeout = 60 })
  local port = util.wait_until(function()
    return tonumber(p:stderr():match("listening on 127%.0%.0%.1:(%d+)")) or not p:running()
  end, 10)
  if type(port) ~= "number" then
    p:kill()
    error("edge did not come up: " .. util.qall(argv) .. "\n" .. p:stderr(), 2)
  end
  return p, port
end

--- Stops p by PID; edge must exit 0 without a sanitizer report.
local function stop(p)
  local code = p:kill("TERM")
  local log = p:stderr()
  assert.are.equal(0, code, log)
  assert.is_nil(log:find("Sanitizer", 1, true), log)
  assert.is_nil(log:find("runtime error", 1, true), log)
end

--- Runs edge to completion (a start that must fail, or -t).
local function run_edge(args)
  local argv = { EDGE, "-s", SCRIPT }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return util.run(argv, { timeout = 20 })
end

--- The CN of the certificate served for name (nil: no SNI); fails the test
-- when there was no handshake.
local function cn_for(port, name, extra)
  local got, text = certs.served(port, name, extra)
  assert(got, "no certificate served for " .. tostring(name) .. ":\n" .. tostring(text))
  return got.cn, got
end

--- A TLS 1.3 connection (lua-sec) to 127.0.0.1:port asking for name;
-- returns it and the CN of the certificate it got.
local function tls_conn(port, name)
  local tcp = socket.tcp4()
  tcp:settimeout(5)
  assert(tcp:connect("127.0.0.1", port))
  local conn = assert(ssl.wrap(tcp, { mode = "client", protocol = "tlsv1_3", verify = "none", options = "all",
                                      alpn = "http/1.1" }))
  conn:settimeout(5)
  conn:sni(name)
  assert(conn:dohandshake())
  local cn
  for _, field in ipairs(conn:getpeercertificate():subject()) do
    if field.name == "commonName" then cn = field.value end
  end
  return conn, cn
end

--- One GET / on an open HTTP/1.1 connection; returns the status (the
-- body, sized by Content-Length, is read too).
local function get_status(conn)
  assert(conn:send(client.request { host = "x.test" }))
  local line = conn:receive("*l")
  local length = 0
  for _ = 1, 50 do                                  -- the header block, bounded
    local l = conn:receive("*l")
    if l == nil or l == "" then break end
    length = tonumber(l:lower():match("^content%-length:%s*(%d+)")) or length
  end
  if length > 0 then assert(conn:receive(length)) end
  return tonumber(line and line:match("^HTTP/1%.1 (%d+)"))
end

---------------------------------------------------------------------------
-- one edge, several --cert/--key pairs
---------------------------------------------------------------------------

describe("tls sni: certificates chosen by name #e2e", function()
  local dir, p, port
  local files = {}

  lazy_setup(function()
    dir = util.tmpdir("sni")
    local function make(base, opts) files[base] = { certs.make(dir, base, opts) } end
    make("default", { cn = "default-cert", san = { "default.test" } })
    make("a-ec", { cn = "a-ec", san = { "a.test", "www.a.test" } })
    make("a-rsa", { cn = "a-rsa", san = { "www.a.test", "a.test" }, type = "rsa" })   -- same names, other order
    make("wild", { cn = "b-wild", san = { "*.b.test" } })   -- before the exact name: order does not matter
    make("xb", { cn = "xb-exact", san = { "x.b.test" } })
    make("cn-only", { cn = "c.test" })                      -- no SAN: the CN is its name
    make("san-wins", { cn = "not-a-name.test", san = { "d.test" } })
    local args = {}
    for _, base in ipairs { "default", "a-ec", "a-rsa", "wild", "xb", "cn-only", "san-wins" } do
      for _, a in ipairs { "--cert", files[base][1], "--key", files[base][2] } do args[#args + 1] = a end
    end
    p, port = start(args)
  end)

  lazy_teardown(function()
    if p then stop(p) end
  end)

  it("logs one line per certificate: its file, names and key type", function()
    local log = p:stderr()
    assert.truthy(log:find("certificate " .. files["a-ec"][1] .. " (ECDSA prime256v1): a.test www.a.test", 1, true), log)
    assert.truthy(log:find("certificate " .. files["a-rsa"][1] .. " (RSA 2048): a.test www.a.test", 1, true), log)
    assert.truthy(log:find("certificate " .. files["default"][1] .. " (ECDSA prime256v1): default.test [default]", 1, true), log)
    assert.are.equal(7, util.count(log, "[notice]") - util.count(log, "listening on"), log)
  end)

  it("gives each exact name its certificate, names compared without case", function()
    local cn, got = cn_for(port, "a.test")
    assert.are.equal("a-ec", cn)
    assert.are.equal("DNS:a.test, DNS:www.a.test", got.san)
    assert.are.equal("a-ec", (cn_for(port, "WWW.A.Test")))
    assert.are.equal("default-cert", (cn_for(port, "default.test")))
    assert.are.equal("c.test", (cn_for(port, "c.test")))
  end)

  it("takes the names from the certificate: SAN entries, the CN only without a SAN", function()
    assert.are.equal("not-a-name.test", (cn_for(port, "d.test")))
    assert.are.equal("default-cert", (cn_for(port, "not-a-name.test")))
    assert.are.equal("default-cert", (cn_for(port, "san-wins")))      -- the file name is no name
  end)

  it("serves a wildcard for one label only", function()
    assert.are.equal("b-wild", (cn_for(port, "y.b.test")))
    assert.are.equal("b-wild", (cn_for(port, "Other.B.Test")))
    assert.are.equal("default-cert", (cn_for(port, "z.y.b.test")))
    assert.are.equal("default-cert", (cn_for(port, "b.test")))
  end)

  it("prefers the exact name to the wildcard", function()
    assert.are.equal("xb-exact", (cn_for(port, "x.b.test")))
  end)

  it("serves the first pair to clients without SNI and with an unknown name", function()
    assert.are.equal("default-cert", (cn_for(port, nil)))
    assert.are.equal("default-cert", (cn_for(port, "unknown.test")))
    assert.are.equal("default-cert", (cn_for(port, "127.0.0.1")))
  end)

  it("serves RSA to a client that only takes RSA signatures, ECDSA to one that takes ECDSA", function()
    local cn, got = cn_for(port, "a.test", { "-sigalgs", "rsa_pss_rsae_sha256" })   -- TLS 1.3
    assert.are.equal("a-rsa", cn, got.text)
    assert.are.equal("RSA-PSS", got.sig, got.text)
    cn = cn_for(port, "a.test", { "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256" })
    assert.are.equal("a-rsa", cn)
    cn, got = cn_for(port, "a.test", { "-sigalgs", "ecdsa_secp256r1_sha256" })
    assert.are.equal("a-ec", cn)
    assert.are.equal("ECDSA", got.sig, got.text)
    assert.are.equal("a-ec", (cn_for(port, "a.test", { "-tls1_2" })))
  end)

  it("answers HTTP on each name with a certificate that verifies for it (curl --resolve)", function()
    for name, base in pairs { ["a.test"] = "a-ec", ["x.b.test"] = "xb", ["y.b.test"] = "wild" } do
      local code, out, err = util.run({ "curl", "-s", "--max-time", "5", "-o", "/dev/null",
        "-w", "%{http_code} %{http_version}",
        "--cacert", files[base][1], "--resolve", name .. ":" .. port .. ":127.0.0.1",
        "https://" .. name .. ":" .. port .. "/" }, { timeout = 10 })
      assert.are.equal(0, code, name .. ": " .. err)
      assert.are.equal("200 2", out, name)            -- HTTP/2: ALPN works on every context
    end
  end)
end)

---------------------------------------------------------------------------
-- --cert-dir, start-up errors, -t, SIGHUP
---------------------------------------------------------------------------

describe("tls sni: --cert-dir #e2e", function()
  it("serves every NAME.crt; default.crt is the default, else the first by name", function()
    local dir = util.tmpdir("certdir")
    certs.make(dir, "zz-site", { cn = "zz", san = { "one.test" } })
    certs.make(dir, "default", { cn = "dir-default", san = { "default.test" } })
    certs.make(dir, "aa-site", { cn = "aa", san = { "two.test" } })
    local p, port = start { "--cert-dir", dir }
    local ok, err = pcall(function()
      assert.are.equal("zz", (cn_for(port, "one.test")))
      assert.are.equal("aa", (cn_for(port, "two.test")))
      assert.are.equal("dir-default", (cn_for(port, nil)))
      assert.are.equal("dir-default", (cn_for(port, "zz-site")))
    end)
    stop(p)
    assert(ok, err)

    os.remove(dir .. "/default.crt")
    os.remove(dir .. "/default.key")
    p, port = start { "--cert-dir", dir }
    ok, err = pcall(function()
      assert.are.equal("aa", (cn_for(port, nil)))
      assert.are.equal("aa", (cn_for(port, "unknown.test")))
    end)
    stop(p)
    assert(ok, err)
  end)

  it("puts a --cert pair first: it is the default, the directory's certificates serve their names", function()
    local dir, other = util.tmpdir("certdir"), util.tmpdir("pair")
    certs.make(dir, "default", { cn = "dir-default", san = { "default.test" } })
    local crt, key = certs.make(other, "main", { cn = "main", san = { "main.test" } })
    local p, port = start { "--cert", crt, "--key", key, "--cert-dir", dir }
    local ok, err = pcall(function()
      assert.are.equal("main", (cn_for(port, nil)))
      assert.are.equal("dir-default", (cn_for(port, "default.test")))
    end)
    stop(p)
    assert(ok, err)
  end)

  it("fails the start and -t when a NAME.crt has no NAME.key, naming the file", function()
    local dir = util.tmpdir("certdir")
    certs.make(dir, "default", { cn = "d", san = { "d.test" } })
    local crt = certs.make(dir, "lonely", { cn = "l", san = { "l.test" } })
    os.remove(dir .. "/lonely.key")
    for _, mode in ipairs { "-t", "serve" } do
      local args = { "--cert-dir", dir, "-l", "127.0.0.1:" .. util.free_port() }
      if mode == "-t" then table.insert(args, 1, "-t") end
      local code, out, err = run_edge(args)
      assert.are.equal(1, code, mode .. ": " .. out .. err)
      assert.truthy(err:find(crt, 1, true), mode .. ": does not name the certificate:\n" .. err)
      assert.truthy(err:find(dir .. "/lonely.key", 1, true), mode .. ": does not name the key:\n" .. err)
    end
  end)

  it("-t checks every certificate and lists what each serves", function()
    local dir = util.tmpdir("certdir")
    certs.make(dir, "default", { cn = "d", san = { "d.test" } })
    certs.make(dir, "two", { cn = "t", san = { "t.test", "*.t.test" }, type = "rsa" })
    local code, out, err = run_edge { "-t", "--cert-dir", dir, "-l", "127.0.0.1:" .. util.free_port() }
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find(dir .. "/default.crt and key " .. dir .. "/default.key are valid", 1, true), out)
    assert.truthy(out:find("(RSA 2048): *.t.test t.test", 1, true), out)

    util.write_file(dir .. "/broken.crt", "not a certificate\n")
    util.write_file(dir .. "/broken.key", util.read_file(dir .. "/two.key"))
    code, out, err = run_edge { "-t", "--cert-dir", dir, "-l", "127.0.0.1:" .. util.free_port() }
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("bad certificate " .. dir .. "/broken.crt", 1, true), err)
  end)

  it("refuses two certificates of one key type for the same names", function()
    local dir = util.tmpdir("certdir")
    certs.make(dir, "one", { cn = "one", san = { "same.test" } })
    certs.make(dir, "two", { cn = "two", san = { "same.test" } })
    local code, out, err = run_edge { "-t", "--cert-dir", dir }
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find(dir .. "/two.crt", 1, true), err)
  end)
end)

describe("tls sni: --cert and --key counts #e2e", function()
  it("exits 1 when the counts differ, saying so", function()
    local dir = util.tmpdir("pairs")
    local a_crt, a_key = certs.make(dir, "a", { cn = "a", san = { "a.test" } })
    local b_crt = certs.make(dir, "b", { cn = "b", san = { "b.test" } })
    for _, mode in ipairs { "-t", "serve" } do
      local args = { "--cert", a_crt, "--key", a_key, "--cert", b_crt, "-l", "127.0.0.1:" .. util.free_port() }
      if mode == "-t" then table.insert(args, 1, "-t") end
      local code, out, err = run_edge(args)
      assert.are.equal(1, code, mode .. ": " .. out .. err)
      assert.truthy(err:find("2 --cert but 1 --key", 1, true), mode .. ": " .. err)
    end
  end)
end)

describe("tls sni: SIGHUP re-reads the certificates #e2e", function()
  it("serves a certificate added to --cert-dir; a broken one keeps the old set and says why", function()
    local dir = util.tmpdir("reload")
    certs.make(dir, "default", { cn = "dir-default", san = { "default.test" } })
    local p, port = start { "--cert-dir", dir }
    local pid = edge_pid(p)
    local ok, err = pcall(function()
      assert(pid, "no edge process under timeout(1)")
      assert.are.equal("dir-default", (cn_for(port, "new.test")))
      certs.make(dir, "new", { cn = "new-cert", san = { "new.test" } })
      assert(os.execute("kill -HUP " .. pid))
      -- Two workers, each takes the new set on its reload wake-up.
      local served = util.wait_until(function()
        return util.count(p:stderr(), "script " .. SCRIPT .. " reloaded") >= 2
      end, 10)
      assert(served, p:stderr())
      for _ = 1, 6 do assert.are.equal("new-cert", (cn_for(port, "new.test"))) end
      assert.truthy(p:stderr():find("SIGHUP: certificate " .. dir .. "/new.crt (ECDSA prime256v1): new.test", 1, true))

      util.write_file(dir .. "/broken.crt", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
      util.write_file(dir .. "/broken.key", util.read_file(dir .. "/new.key"))
      os.remove(dir .. "/new.crt")      -- would no longer be served, were the new set taken
      assert(os.execute("kill -HUP " .. pid))
      local logged = util.wait_until(function()
        return p:stderr():match("%[error%][^\n]*SIGHUP: certificates not reloaded, the previous ones stay in force: "
          .. "bad certificate " .. dir:gsub("%p", "%%%0") .. "/broken%.crt: [^\n]+")
      end, 10)
      assert(logged, p:stderr())
      util.wait_until(function() return util.count(p:stderr(), "script " .. SCRIPT .. " reloaded") >= 4 end, 10)
      for _ = 1, 6 do assert.are.equal("new-cert", (cn_for(port, "new.test"))) end
      assert.are.equal("dir-default", (cn_for(port, nil)))
    end)
    stop(p)
    assert(ok, err)
  end)

  it("keeps a connection open across a reload on the certificates it started with", function()
    local dir = util.tmpdir("reload")
    certs.make(dir, "default", { cn = "dir-default", san = { "default.test" } })
    certs.make(dir, "old", { cn = "old-cert", san = { "old.test" } })
    local p, port = start { "--cert-dir", dir, "--keepalive-timeout", "30" }
    local pid = edge_pid(p)
    local conn
    local ok, err = pcall(function()
      local cn
      conn, cn = tls_conn(port, "old.test")
      assert.are.equal("old-cert", cn)
      assert.are.equal(200, get_status(conn))
      os.remove(dir .. "/old.crt")
      os.remove(dir .. "/old.key")
      assert(os.execute("kill -HUP " .. pid))
      assert(util.wait_until(function()
        return util.count(p:stderr(), "script " .. SCRIPT .. " reloaded") >= 2
      end, 10), p:stderr())
      for _ = 1, 4 do assert.are.equal("dir-default", (cn_for(port, "old.test"))) end
      assert.are.equal(200, get_status(conn))        -- the old set lives while this connection does
      conn:close()
      conn = nil
      -- A second reload drops the workers' last reference to the first set.
      assert(os.execute("kill -HUP " .. pid))
      assert(util.wait_until(function()
        return util.count(p:stderr(), "script " .. SCRIPT .. " reloaded") >= 4
      end, 10), p:stderr())
      assert.are.equal("dir-default", (cn_for(port, "old.test")))
    end)
    if conn then conn:close() end
    stop(p)
    assert(ok, err)
  end)

  it("resumes a session made for a named site after the certificates were reloaded", function()
    local dir = util.tmpdir("reload")
    certs.make(dir, "default", { cn = "dir-default", san = { "default.test" } })
    certs.make(dir, "site", { cn = "site-cert", san = { "site.test" } })
    local sess = dir .. "/session.pem"
    local p, port = start { "--cert-dir", dir }
    local pid = edge_pid(p)
    local ok, err = pcall(function()
      -- s_client stays until the server's ticket arrived (TLS 1.3 sends it after the handshake).
      local code, out = util.run({ "sh", "-c", "(sleep 0.5; echo) | exec openssl s_client -connect 127.0.0.1:" .. port
        .. " -servername site.test -sess_out " .. util.q(sess) }, { timeout = 10 })
      assert(code == 0 and out:find("subject=CN = site-cert", 1, true), out)
      assert(os.execute("kill -HUP " .. pid))
      assert(util.wait_until(function()
        return util.count(p:stderr(), "script " .. SCRIPT .. " reloaded") >= 2
      end, 10), p:stderr())
      local got = assert(certs.served(port, "site.test", { "-sess_in", sess }))
      assert.truthy(got.text:find("Reused, TLSv1.3", 1, true), got.text)
    end)
    stop(p)
    assert(ok, err)
  end)
end)
