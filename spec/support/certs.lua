-- Test certificates made with the openssl CLI (as scripts/gen-certs.sh makes
-- the development one), and a look at the certificate a TLS server sends
-- for a name (openssl s_client).
--
--   local certs = require "support.certs"
--   local crt, key = certs.make(dir, "site", { cn = "site-ec", san = { "a.test" }, type = "rsa" })
--   local got = certs.served(port, "a.test")      -- got.cn, got.san, got.sig, got.text
local util = require "support.util"

local certs = {}

--- Writes DIR/BASE.crt and DIR/BASE.key: a self-signed certificate with
-- subject CN opts.cn, subjectAltName DNS entries opts.san (a list; none:
-- no SAN extension at all) and an opts.type key: "ec" (P-256, default) or
-- "rsa" (2048 bits). Returns the two paths.
function certs.make(dir, base, opts)
  local crt, key = dir .. "/" .. base .. ".crt", dir .. "/" .. base .. ".key"
  local argv = { "openssl", "req", "-x509", "-nodes", "-days", "2", "-keyout", key, "-out", crt,
                 "-subj", "/CN=" .. opts.cn }
  if (opts.type or "ec") == "rsa" then
    for _, a in ipairs { "-newkey", "rsa:2048" } do argv[#argv + 1] = a end
  else
    for _, a in ipairs { "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1" } do argv[#argv + 1] = a end
  end
  if opts.san and #opts.san > 0 then
    local dns = {}
    for i, name in ipairs(opts.san) do dns[i] = "DNS:" .. name end
    argv[#argv + 1] = "-addext"
    argv[#argv + 1] = "subjectAltName=" .. table.concat(dns, ",")
  end
  local code, _, err = util.run(argv, { timeout = 30 })
  assert(code == 0, "openssl req failed: " .. err)
  return crt, key
end

--- The certificate 127.0.0.1:port sends when asked for `name` (nil: no SNI
-- at all), with extra s_client arguments (a list, e.g. { "-sigalgs",
-- "rsa_pss_rsae_sha256" }). Returns { cn = subject CN, san = "DNS:a, DNS:b"
-- or "", sig = the peer signature type ("ECDSA", "RSA-PSS"), text = all of
-- s_client's output }, or nil and that output when the handshake failed.
function certs.served(port, name, extra)
  local argv = { "openssl", "s_client", "-connect", "127.0.0.1:" .. port }
  if name then
    argv[#argv + 1] = "-servername"
    argv[#argv + 1] = name
  else
    argv[#argv + 1] = "-noservername"
  end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local _, out, err = util.run(argv, { timeout = 10 })
  local text = out .. err
  local pem = out:match("(%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-)")
  if pem == nil then return nil, text end
  local code, info = util.run({ "openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName" },
                              { stdin = pem .. "\n" })
  assert(code == 0, "openssl x509 cannot read the served certificate:\n" .. pem)
  return {
    cn = info:match("subject=CN%s*=%s*([^\n,]+)"),
    san = info:match("Subject Alternative Name:%s*\n%s*([^\n]+)") or "",
    sig = text:match("Peer signature type: (%S+)"),
    text = text,
  }
end

return certs
