#!/usr/bin/env bash
# The nginx servers of the fetch benchmark (scripts/bench.sh --scenarios fetch), in the foreground
# (exec: the PID is nginx's master). Config and logs go to /tmp/edge-peer-<kind>-<port>/.
#   nginx-fetch.sh origin PORT [WORKERS]
#       the origin: plain HTTP on 127.0.0.1:PORT, `return 200 "Hello from origin!\n"`; it ends no
#       kept-alive connection itself (keepalive_requests unbounded), so the proxies' own limits count
#   nginx-fetch.sh fetch|proxy PORT CERT KEY ORIGIN_PORT [WORKERS]
#       the peers, with the TLS 1.3 / ALPN settings of ../../../shared/peers/nginx.sh, and an
#       `upstream origin { server 127.0.0.1:ORIGIN_PORT; keepalive 64; }` (keepalive_requests at its
#       default, 1000, as edge.fetch's max_requests):
#       fetch: nginx + Lua, the OpenResty way of edge.fetch in respond: content_by_lua calls
#              ngx.location.capture to an internal location that proxy_passes to the upstream, and
#              answers with the captured status, content type and body
#       proxy: a bare proxy_pass to the upstream, no Lua: the ceiling
# Needs: apt-get install nginx libnginx-mod-http-lua (scripts/install-deps.sh --peer).
# Stop it by its PID (kill -TERM PID).
set -euo pipefail
kind=${1:?origin|fetch|proxy} port=${2:?port}
run=/tmp/edge-peer-$kind-$port
mkdir -p "$run/logs"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=scripts/bench/nginx-common.sh
. "$(dirname "$0")/nginx-common.sh"   # common WORKERS, temp_paths

case $kind in
  origin)
    workers=${3:-1}
    { common "$workers"; cat <<CONF
http {
    access_log off;
    $temp_paths
    server {
        listen 127.0.0.1:$port;
        keepalive_timeout 300s;
        keepalive_requests 10000000;
        location / { default_type text/plain; return 200 "Hello from origin!\n"; }
    }
}
CONF
    } >"$run/nginx.conf" ;;
  fetch|proxy)
    cert=$(readlink -f "${3:?cert file}") key=$(readlink -f "${4:?key file}") origin=${5:?origin port}
    workers=${6:-1}
    if [[ $kind == fetch ]]; then
      modules="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
      handler='content_by_lua_block {
                local res = ngx.location.capture("/_origin" .. ngx.var.request_uri)
                ngx.status = res.status
                ngx.header["Content-Type"] = res.header["Content-Type"]
                ngx.print(res.body)
            }'
      internal='location /_origin/ {
            internal;
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }'
    else
      modules=""
      handler='proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";'
      internal=""
    fi
    # ngx.location.capture refuses HTTP/2 requests (lua-nginx-module 0.10.23: "http2 requests not
    # supported yet"): the fetch peer offers HTTP/1.1 only. The scenario is HTTP/1.1 (wrk) anyway.
    http2=" http2"
    [[ $kind == fetch ]] && http2=""

    { echo "$modules"; common "$workers"; cat <<CONF
http {
    access_log off;
    $temp_paths
    upstream origin {
        server 127.0.0.1:$origin;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port ssl$http2;
        ssl_certificate     $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.3;
        keepalive_timeout 300s;
        keepalive_requests 10000000;
        location / {
            $handler
        }
        $internal
    }
}
CONF
    } >"$run/nginx.conf" ;;
  *) echo "nginx-fetch.sh: unknown kind '$kind' (origin, fetch or proxy)" >&2; exit 2 ;;
esac
exec nginx -p "$run" -c "$run/nginx.conf" -e "$run/logs/error.log"
