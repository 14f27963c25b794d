#!/usr/bin/env bash
# Installs the Debian packages edge needs to build, test and benchmark.
# A no-op when every package is already present. apt-get as root, sudo otherwise.
#   scripts/install-deps.sh          build + test dependencies
#   scripts/install-deps.sh --peer   also the peers of `scripts/bench.sh --peer` (nginx + Lua) and --h2o
set -euo pipefail

pkgs=(build-essential pkg-config liblua5.4-dev lua5.4 libssl-dev libnghttp2-dev libev-dev libc-ares-dev
      zlib1g-dev libbrotli-dev              # compression (src/compress*.c): gzip and brotli
      node-llhttp lua-busted lua-socket lua-sec lua-cjson curl nghttp2-client wrk openssl
      prometheus clang libclang-rt-14-dev   # promtool checks /metrics; clang + runtime: libFuzzer
      luarocks                              # spec/install_spec.lua: luarocks make scripts/edge-dev-1.rockspec
      systemd logrotate                     # spec/packaging_spec.lua: systemd-analyze verify, logrotate -f
      nginx                                 # spec/upstream_fetch_spec.lua: a real origin for edge.fetch
      websocketd python3-websockets)        # spec/websocket_spec.lua: WebSocket origin and client
[[ ${1:-} == --peer ]] && pkgs+=(libnginx-mod-http-lua lua-resty-core lua-resty-lrucache h2o)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
