#!/usr/bin/env bash
# The nginx servers of the proxy benchmarks (scripts/bench.sh --scenarios proxy,proxy-hot,proxy-1g),
# in the foreground (exec: the PID is nginx's master). DIR is a directory of the caller's (a mktemp -d):
# config, error log, temp files, cache and the 1 GiB file all live there; no root needed.
#   nginx-proxy.sh origin DIR PORT [WORKERS]
#       the origin: plain HTTP on 127.0.0.1:PORT; it ends no kept-alive connection itself
#       (keepalive_requests unbounded), so the proxies' own limits count.
#         /     `return 200 "Hello from edge!"` (any method), no Cache-Control
#         /hot  the same with `Cache-Control: max-age=3600`
#         /1g   DIR/www/1g: a sparse 1 GiB file (truncate), `Cache-Control: no-store`, sendfile
#   nginx-proxy.sh proxy DIR PORT CERT KEY ORIGIN_PORT [WORKERS]
#       the peer: the TLS 1.3 / ALPN h2,http/1.1 settings of ../../../shared/peers/nginx.sh, and
#       `upstream origin { server 127.0.0.1:ORIGIN_PORT; keepalive 64; }` (keepalive_requests at its
#       default, 1000, as edge's keepalive.max_requests), proxy_http_version 1.1, Connection "";
#         /     proxy_pass, no cache, proxy_buffering on (the default: the 1 GiB download spills
#               into DIR/proxy when the client is slower than the origin, as nginx does by default)
#         /hot  the same with proxy_cache (keys_zone in DIR/cache, proxy_cache_valid 200 1h,
#               proxy_cache_lock on as edge coalesces misses) and X-Cache: $upstream_cache_status
#       It sends what edge.proxy sends: the client's Host, X-Forwarded-For/-Proto/-Host and Via
#       (NGINX_PROXY_HEADERS=0: nginx's defaults instead, Host = the upstream's name, none of those).
# Needs: apt-get install nginx. Stop it by its PID (kill -TERM PID); the caller removes DIR.
set -euo pipefail
kind=${1:?origin|proxy} run=${2:?directory} port=${3:?port}
[[ -d $run ]] || { echo "nginx-proxy.sh: $run is not a directory" >&2; exit 2; }
run=$(readlink -f "$run")
chmod 755 "$run"   # nginx's workers (nobody when the master is root) must reach their files
mkdir -p "$run/logs"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=scripts/bench/nginx-common.sh
. "$(dirname "$0")/nginx-common.sh"   # common WORKERS, temp_paths

case $kind in
  origin)
    workers=${4:-1}
    mkdir -p "$run/www"
    truncate -s 1G "$run/www/1g"   # sparse: no disk blocks, reads are zero pages
    { common "$workers"; cat <<CONF
http {
    access_log off;
    $temp_paths
    sendfile on;
    tcp_nopush on;
    default_type text/plain;
    server {
        listen 127.0.0.1:$port;
        keepalive_timeout 300s;
        keepalive_requests 10000000;
        root $run/www;
        location = /hot { add_header Cache-Control "max-age=3600"; return 200 "Hello from edge!"; }
        location = /1g  { add_header Cache-Control "no-store"; }
        location /      { return 200 "Hello from edge!"; }
    }
}
CONF
    } >"$run/nginx.conf" ;;
  proxy)
    cert=$(readlink -f "${4:?cert file}") key=$(readlink -f "${5:?key file}") origin=${6:?origin port}
    workers=${7:-1}
    headers=""
    # shellcheck disable=SC2016  # nginx variables, not the shell's
    if [[ ${NGINX_PROXY_HEADERS:-1} != 0 ]]; then
      headers='proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;   # as received, port included (edge.proxy)
        proxy_set_header Via "1.1 nginx";'
    fi
    { common "$workers"; cat <<CONF
http {
    access_log off;
    $temp_paths
    proxy_cache_path $run/cache levels=1:2 keys_zone=edge:10m max_size=64m inactive=1h use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$origin;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port ssl http2;
        ssl_certificate     $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.3;
        keepalive_timeout 300s;
        keepalive_requests 10000000;
        http2_max_concurrent_streams 128;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        $headers
        location / {
            proxy_pass http://origin;
        }
        location = /hot {
            proxy_pass http://origin;
            proxy_cache edge;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
CONF
    } >"$run/nginx.conf" ;;
  *) echo "nginx-proxy.sh: unknown kind '$kind' (origin or proxy)" >&2; exit 2 ;;
esac
exec nginx -p "$run" -c "$run/nginx.conf" -e "$run/logs/error.log"
