-- Debian's nginx as the origin of the edge.proxy specs (spec/proxy*_spec.lua),
-- on ephemeral loopback ports, with an access log the specs read and files
-- made for streaming and caching:
--
--   local proxy_nginx = require "support.proxy_nginx"
--   local ngx = proxy_nginx.start()
--   ngx.port, ngx.ports (3 more plain ports: a connection pool of their own each in edge),
--   ngx:url(path), ngx:access_log() -> list of { method, uri, status, bytes },
--   ngx:stop()
--
-- nginx answers (every response's body of /cc/* is $request_id, unique per
-- request, so a spec can tell a cached answer from a fresh one):
--   /echo              "$request_method $request_uri $http_x_test"
--   /cc/max-age...     Cache-Control: max-age=60
--   /cc/no-store...    Cache-Control: no-store
--   /cc/private...     Cache-Control: private, max-age=60
--   /cc/cookie...      Cache-Control: max-age=60 and Set-Cookie
--   /files/NAME        the file, with Content-Length (sendfile)
--   /cc/files/NAME     the same with Cache-Control: max-age=60
--   /chunked/NAME      the same through SSI: no Content-Length, chunked
--   /reval/NAME        the file with Cache-Control: max-age=1, stale-if-error=60
--                      (nginx sends ETag and Last-Modified and answers a
--                      matching If-None-Match with 304)
--   /swr/NAME          the file with Cache-Control: max-age=1, stale-while-revalidate=30
-- The access log's entries also hold the request's If-None-Match (inm).
-- Files: big (2 MiB), mid (3 MiB), both "0123456789abcdef" repeated
-- (proxy_nginx.pattern(n) rebuilds them), and huge: 1 GiB, sparse (truncate),
-- so it costs no disk.
local proc = require "support.proc"
local util = require "support.util"
local socket = require "socket"

local proxy_nginx = {}

local SIXTEEN = "0123456789abcdef"

--- n bytes of the files' pattern (n a multiple of 16).
function proxy_nginx.pattern(n)
  return SIXTEEN:rep(n // 16)
end

local CONF = [[
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events { worker_connections 512; }
http {
  log_format specs '$request_method $request_uri $status $body_bytes_sent inm=$http_if_none_match';
  access_log {dir}/access.log specs;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  keepalive_requests 100000;
  default_type text/plain;
  sendfile on;
  server {
    {listen}
    location /echo { return 200 "$request_method $request_uri $http_x_test"; }
    location /cc/max-age { add_header Cache-Control "max-age=60"; return 200 "$request_id"; }
    location /cc/no-store { add_header Cache-Control "no-store"; return 200 "$request_id"; }
    location /cc/private { add_header Cache-Control "private, max-age=60"; return 200 "$request_id"; }
    location /cc/cookie { add_header Cache-Control "max-age=60"; add_header Set-Cookie "s=1";
                          return 200 "$request_id"; }
    location /cc/files/ { alias {dir}/files/; add_header Cache-Control "max-age=60"; }
    location /files/ { alias {dir}/files/; }
    location /chunked/ { alias {dir}/files/; ssi on; ssi_types *; }
    location /reval/ { alias {dir}/files/; add_header Cache-Control "max-age=1, stale-if-error=60"; }
    location /swr/ { alias {dir}/files/; add_header Cache-Control "max-age=1, stale-while-revalidate=30"; }
  }
}
]]

local function wait_port(port, p)
  local deadline = util.now() + 10
  while util.now() < deadline do
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    if ok then return end
    if not p:running() then break end
    util.sleep(0.05)
  end
  error("nginx did not start on port " .. port .. ":\n" .. p:stderr())
end

--- Starts nginx (no daemon, its config and files in a temp dir); raises with
-- its stderr when it does not listen within 10 s.
function proxy_nginx.start()
  local self = { dir = util.tmpdir("proxy-nginx") }
  local dir = self.dir
  assert(os.execute("mkdir -p " .. util.q(dir .. "/tmp") .. " " .. util.q(dir .. "/files")))
  util.write_file(dir .. "/files/big", proxy_nginx.pattern(2 * 1024 * 1024))
  util.write_file(dir .. "/files/mid", proxy_nginx.pattern(3 * 1024 * 1024))
  assert(os.execute("truncate -s 1G " .. util.q(dir .. "/files/huge")))
  self.port = util.free_port()
  self.ports = { util.free_port(), util.free_port(), util.free_port() }
  local listen = { ("listen 127.0.0.1:%d;"):format(self.port) }
  for _, p in ipairs(self.ports) do listen[#listen + 1] = ("listen 127.0.0.1:%d;"):format(p) end
  local conf = CONF:gsub("{dir}", dir):gsub("{listen}", table.concat(listen, " "))
  util.write_file(dir .. "/nginx.conf", conf)
  self.proc = proc.spawn({ "nginx", "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log" },
    { timeout = 900 })
  wait_port(self.port, self.proc)
  for _, p in ipairs(self.ports) do wait_port(p, self.proc) end

  function self:url(path, port) return ("http://127.0.0.1:%d%s"):format(port or self.port, path or "") end
  function self:target(port) return ("http://127.0.0.1:%d"):format(port or self.port) end

  --- The access log so far: a list of { method, uri, status, bytes, inm }
  -- (inm: the request's If-None-Match, nil when it had none).
  function self:access_log()
    local out = {}
    for _, line in ipairs(util.lines(util.read_file(dir .. "/access.log"))) do
      local m, u, s, b, inm = line:match("^(%S+) (%S+) (%d+) (%d+) inm=(.*)$")
      if m then
        -- nginx writes a '"' in a logged value as \x22.
        inm = inm:gsub("\\x(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
        out[#out + 1] = { method = m, uri = u, status = tonumber(s), bytes = tonumber(b),
                          inm = inm ~= "-" and inm or nil }
      end
    end
    return out
  end

  --- Writes a file nginx serves under /files/, /cc/files/, /reval/, /swr/.
  function self:write_file(name, data)
    util.write_file(dir .. "/files/" .. name, data)
  end

  --- The access log's entries whose URI is `uri`.
  function self:requests_for(uri)
    local out = {}
    for _, r in ipairs(self:access_log()) do if r.uri == uri then out[#out + 1] = r end end
    return out
  end

  function self:stop()
    local rc = self.proc:kill()
    os.execute("rm -rf " .. util.q(dir))
    return rc
  end
  return self
end

return proxy_nginx
