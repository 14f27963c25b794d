-- Real origins for edge.fetch specs, on ephemeral loopback ports, each
-- stopped by its PID:
--
--   local origin = require "support.origin"
--   local ngx = origin.nginx()      -- Debian's nginx, no daemon, config in a temp dir
--   ngx.port, ngx.tls_port (certs/server.crt), ngx.short_port (keepalive_timeout 1s),
--   ngx.v6_port ([::1]), ngx.more_ports (3 more plain ports: pools of their own), ngx:stop()
--   local bad = origin.bad()        -- spec/support/bad_origin.lua (its header lists the paths)
--   bad.port, bad:stop()
--   bad:requests("/delay")          -- requests for that path it has read so far (asked directly)
--   bad:wait_requests("/delay", n)  -- waits (bounded) until it has read n; returns the count
--
-- nginx answers:  /echo  "$request_method $request_uri $http_x_test" with two
-- Set-Cookie headers;  /host  the Host it got;  /reused  $ssl_session_reused;
-- /sni  $ssl_server_name;  /files/big  2 MiB;  anything else 404.
local proc = require "support.proc"
local util = require "support.util"
local socket = require "socket"

local origin = {}

local function wait_port(host, port, p, what)
  local deadline = util.now() + 10
  while util.now() < deadline do
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect(host, port)
    s:close()
    if ok then return end
    if not p:running() then break end
    util.sleep(0.05)
  end
  error(what .. " did not start on port " .. port .. ":\n" .. p:stderr())
end

local function v6_free_port()
  local s = socket.tcp6()
  if not s or not s:bind("::1", 0) then return nil end
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local CONF = [[
daemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp;
  uwsgi_temp_path %s/tmp; scgi_temp_path %s/tmp;
  keepalive_requests 100000;
  default_type text/plain;
  server {
    listen 127.0.0.1:%d;
    listen 127.0.0.1:%d ssl;
    %s
    %s
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_session_tickets on;
    location /echo { add_header Set-Cookie a=1; add_header Set-Cookie b=2;
                     return 200 "$request_method $request_uri $http_x_test"; }
    location /host { return 200 "$http_host"; }
    location /reused { return 200 "$ssl_session_reused"; }
    location /sni { return 200 "$ssl_server_name"; }
    location /files/ { alias %s/files/; }
  }
  server {
    listen 127.0.0.1:%d;
    keepalive_timeout 1s;
    location / { return 200 "short"; }
  }
}
]]

--- Starts nginx; errors (with its stderr) when it does not listen within 10 s.
function origin.nginx()
  local self = { dir = util.tmpdir("nginx") }
  local dir = self.dir
  os.execute("mkdir -p " .. util.q(dir .. "/tmp") .. " " .. util.q(dir .. "/files"))
  util.write_file(dir .. "/files/big", string.rep("0123456789abcdef", 2 * 65536))
  self.port, self.tls_port, self.short_port = util.free_port(), util.free_port(), util.free_port()
  self.v6_port = v6_free_port()
  local v6 = self.v6_port and string.format("listen [::1]:%d;", self.v6_port) or ""
  self.more_ports = { util.free_port(), util.free_port(), util.free_port() }
  local more = {}
  for _, p in ipairs(self.more_ports) do more[#more + 1] = string.format("listen 127.0.0.1:%d;", p) end
  local cwd = os.getenv("PWD")
  local conf = string.format(CONF, dir, dir, dir, dir, dir, dir, dir, self.port, self.tls_port, v6, table.concat(more, " "),
    cwd .. "/certs/server.crt", cwd .. "/certs/server.key", dir, self.short_port)
  util.write_file(dir .. "/nginx.conf", conf)
  self.proc = proc.spawn({ "nginx", "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log" },
    { timeout = 600 })
  wait_port("127.0.0.1", self.port, self.proc, "nginx")
  wait_port("127.0.0.1", self.short_port, self.proc, "nginx")
  function self:stop() return self.proc:kill() end
  return self
end

--- Starts the misbehaving origin (spec/support/bad_origin.lua).
function origin.bad()
  local self = { port = util.free_port() }
  self.proc = proc.spawn({ "lua5.4", "spec/support/bad_origin.lua", tostring(self.port) }, { timeout = 600 })
  wait_port("127.0.0.1", self.port, self.proc, "bad_origin")
  function self:stop() return self.proc:kill() end
  --- The requests for path it has read so far (its /count, asked directly, not
  -- through the edge under test), or nil when it does not answer.
  function self:requests(path)
    local c = socket.tcp()
    c:settimeout(5)
    if not c:connect("127.0.0.1", self.port) then c:close() return nil end
    c:send("GET /count?" .. path .. " HTTP/1.1\r\nHost: origin\r\n\r\n")
    local head = c:receive("*l")
    local len
    repeat
      local line = c:receive("*l")
      len = len or tonumber(line and line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
    until not line or line == ""
    local body = len and c:receive(len)
    c:close()
    return head and head:find(" 200 ", 1, true) and tonumber(body) or nil
  end
  --- Waits (at most timeout s, default 10) until it has read n requests for
  -- path: a request in flight has reached it. Returns the last count.
  function self:wait_requests(path, n, timeout)
    return util.wait_until(function()
      local got = self:requests(path)
      return got and got >= n and got
    end, timeout or 10) or self:requests(path)
  end
  return self
end

return origin
