#!/usr/bin/env bash
# Benchmarks edge with wrk and h2load, optionally side by side with the nginx peers of ../shared/peers/.
#   scripts/bench.sh [--duration S] [--connections N] [--peer] [--static] [--rounds N] [--edge PATH]
#                    [--scenarios hot,miss,h2,streams25k,handshake,idle,fetch,proxy,proxy-hot,proxy-1g,
#                                 hit,hit-gzip,hit-br]
# Each server is pinned to CPU 0 with one worker, the load to CPU 1. Servers listen on 127.0.0.1 only,
# on free ports, and are stopped by PID on exit. Per scenario and server it prints req/s, p50, p99,
# non-2xx/socket errors, requests per server CPU-second (requests completed / user+sys CPU of the
# server over the run: the figure that survives a client-bound run) and the server's peak RSS over
# the run. With --peer, edge and the peer take turns within each scenario and the ratios edge/peer
# are printed at the end. Exits 1 if a run failed (streams25k: if a single request did not succeed).
# fetch has servers of its own: an origin nginx (plain HTTP, pinned to the load's CPU), an edge whose
# script fetches from it (scripts/bench/fetch.lua) and the nginx peers of scripts/bench/nginx-fetch.sh.
# proxy, proxy-hot and proxy-1g too: an origin nginx (scripts/bench/nginx-proxy.sh origin, pinned to the
# load's CPU), an edge running lua/proxy.lua in front of it and the peer nginx-proxy.sh proxy (proxy_pass,
# proxy_cache for proxy-hot); their config, temp files and cache live in mktemp -d directories.
# hit, hit-gzip and hit-br have one of their own: edge-text (scripts/bench/text.lua: one cached 8 KiB
# text/html body), hit without Accept-Encoding, the others served from the stored compressed copy.
# Raw load-generator outputs and server logs: bench-results/<timestamp>/ (bench-results/latest).
# shellcheck disable=SC2317  # scenario_* and cleanup are called indirectly
set -euo pipefail

usage() {
  cat <<EOF
usage: scripts/bench.sh [options]
  --duration S        seconds per run (default 10)
  --connections N     wrk connections for hot/miss (default 400)
  --scenarios LIST    comma-separated, from: $(list_scenarios) (default $DEFAULT_SCENARIOS)
  --peer              also run the nginx + Lua peer (../shared/peers/nginx.sh lua; for fetch:
                      scripts/bench/nginx-fetch.sh fetch; for proxy*: nginx's proxy_pass,
                      scripts/bench/nginx-proxy.sh proxy), alternating
  --static            also run the nginx static peer (nginx.sh static; for fetch: nginx-fetch.sh
                      proxy, a bare proxy_pass): the ceiling
  --h2o               also run h2o static (../shared/peers/h2o.sh: the greeting as a static file,
                      h2o's own HTTP/2 stack) on hot, miss, h2, streams25k: the fastest server of
                      its kind (apt-get install h2o, or scripts/install-deps.sh --peer)
  --rounds N          repeat the whole alternation N times; ratios use the medians (default 1)
  --edge PATH         edge binary (default ./edge)
  -h, --help          this text
Scenarios: hot  = one URL, wrk -t1 -cN --latency
           miss = a unique path per request (scripts/bench/unique.lua), every request pays the 2 ms
           h2   = HTTP/2 on the one URL, h2load -c\${H2_CLIENTS:-100} -m\${H2_STREAMS:-10} -D S,
                  percentiles from its per-request log
           streams25k = 25,000 concurrent HTTP/2 streams: \${STREAMS_CLIENTS:-250} connections x
                  \${STREAMS_PER_CONN:-100} streams in flight, \${STREAMS_REQUESTS:-100000} requests, each on a
                  path of its own (scripts/bench/h2fanout.sh: one h2load -c1 -m100 per connection);
                  the server is held (SIGSTOP) until all the connections wait in its accept queue
                  (at most \${STREAMS_START_TIMEOUT:-30} s), then released together (SIGCONT);
                  bounded by the request count (not --duration), killed after \${STREAMS_TIMEOUT:-180} s;
                  FAILS unless every request succeeds; reports the most requests in flight at once
           handshake = a new TLS 1.3 connection per request: wrk -t1 -c\${HANDSHAKE_CLIENTS:-50} --latency
                  -H 'Connection: close' (wrk reconnects after each response and resumes no session:
                  each request is a full handshake, ECDHE + the certificate's signature)
           idle = memory per idle TLS connection: build/test/idle_tls (make idle-tls) opens
                  \${IDLE_CONNS:-5000} TLS 1.3 connections, one HTTP/1.1 request each, and holds them;
                  \${IDLE_SETTLE:-5} s later the growth of the server's RSS (all its processes) over
                  the connections gives KiB per connection, in the req/cpu-s column (lower is better)
           fetch = every request goes to an origin (nginx-fetch.sh origin: plain HTTP on loopback, pinned
                  to the load's CPU, one worker, return 200): edge runs scripts/bench/fetch.lua
                  (edge.fetch in respond, no cache, keepalive.size 64), the peer is nginx + Lua
                  (ngx.location.capture to a proxy_pass to an upstream with keepalive 64);
                  wrk -t1 -c\${FETCH_CONNECTIONS:-64} --latency; for edge, the upstream connections
                  opened per upstream request, from /metrics (edge runs with --admin): reuse = 1 - that
           proxy, proxy-hot, proxy-1g: an origin nginx (nginx-proxy.sh origin: plain HTTP on loopback,
                  pinned to the load's CPU, one worker) behind edge-proxy (edge running \$PROXY_SCRIPT,
                  default lua/proxy.lua, EDGE_ORIGIN=the origin) and, with --peer, nginx-rproxy (nginx
                  proxy_pass to an upstream with keepalive 64, TLS, HTTP/1.1 to the origin, the request
                  headers edge.proxy adds; NGINX_PROXY_HEADERS=0: nginx's defaults)
           proxy = every request to the origin, no cache work on either side: POST with an empty body
                  (scripts/bench/post.lua; proxy.lua keys GET/HEAD only, nginx's / has no proxy_cache),
                  origin: return 200 "Hello from edge!"; wrk -t1 -c\${PROXY_CONNECTIONS:-64} --latency
                  (as many as both keep-alive pools hold); edge's upstream reuse from /metrics
           proxy-hot = one URL the origin gives Cache-Control: max-age=3600, wrk -t1 -cN --latency:
                  edge-proxy's cache, nginx's proxy_cache (proxy_cache_valid 200 1h), and edge running
                  \$EDGE_SCRIPT (the hot scenario's server) for reference: target proxy-hot >= hot
           proxy-1g = one 1 GiB download (a sparse file on the origin, Cache-Control: no-store; nginx:
                  proxy_buffering on, the default, spilling to its temp dir) with curl -o /dev/null over
                  HTTP/1.1 + TLS; not --duration but at most \${PROXY_1G_TIMEOUT:-120} s; rows give wall MB/s
                  in req/s and MB per server CPU-second in req/cpu-s (MB = 10^6 bytes)
           hit, hit-gzip, hit-br = cache hits on one 8 KiB text/html body (edge-text: edge running
                  scripts/bench/text.lua), wrk -t1 -cN --latency: hit sends no Accept-Encoding (the body
                  as stored), hit-gzip / hit-br send Accept-Encoding: gzip / br (the entry's stored
                  compressed copy); after each run one request checks X-Cache: HIT, the Content-Encoding
                  and the decoded body; with several of them, the summary gives hit's req/cpu-s over
                  each compressed one's (target <= 1.10x: a stored compressed hit costs at most 1.1x)
           Every proxy* run fails on a non-2xx response; after it, one request checks the 16-byte body
           (and for proxy-hot, X-Cache: HIT on edge-proxy and nginx-rproxy).
Peak RSS: VmHWM of the server, reset at the start of each run (/proc/PID/clear_refs), read at its
          end; nginx: master + workers summed (their shared pages counted in each).
Environment: EDGE_SCRIPT (default lua/default.lua), PEERS_DIR (default ../shared/peers next to the
             repository), START_TIMEOUT (seconds, default 15), H2_CLIENTS, H2_STREAMS,
             HANDSHAKE_CLIENTS, IDLE_CONNS, IDLE_SETTLE, STREAMS_CLIENTS, STREAMS_PER_CONN, STREAMS_REQUESTS, STREAMS_TIMEOUT, STREAMS_START_TIMEOUT,
             FETCH_CONNECTIONS, PROXY_CONNECTIONS, PROXY_SCRIPT, PROXY_1G_TIMEOUT, NGINX_PROXY_HEADERS.
Results: one line per scenario and server, a table and the edge/peer ratios at the end;
         raw outputs and server logs in bench-results/<timestamp>/ (bench-results/latest).
EOF
}

die() { echo "bench: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/scripts/bench
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
CERT=certs/server.crt KEY=certs/server.key
SCRIPT=${EDGE_SCRIPT:-lua/default.lua}   # the Lua script edge serves
PROXY_SCRIPT=${PROXY_SCRIPT:-lua/proxy.lua}   # the one edge-proxy serves (the proxy scenarios)
START_TIMEOUT=${START_TIMEOUT:-15}   # seconds for a server to answer 200
STOP_TIMEOUT=5                       # seconds for a server to exit after SIGTERM
SERVER_CPU=0 LOAD_CPU=1

# ---------------------------------------------------------------------------------------------
# Scenarios. A scenario is one function, scenario_<name> URL OUT: it runs its load generator through
# run_load (pinned to LOAD_CPU, bounded), keeps the raw output in OUT (and may add OUT.* files), and
# sets R_REQS (requests completed), R_RPS, R_P50 and R_P99 (milliseconds), R_NON2XX and R_SOCKERR.
# A scenario that ran but must count as failed (streams25k: a request did not succeed) also sets
# R_FAIL (why) and may add R_NOTE (a line for the summary). The caller measures the server's CPU and
# peak RSS around it, and divides R_WORK (if set; else R_REQS) by that CPU. Adding a scenario = adding
# one such function (and, if it needs servers of its own, a case in scenario_servers).
# ---------------------------------------------------------------------------------------------

scenario_hot() {
  run_load "$2" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$1" || return
  parse_wrk "$2"
}

scenario_miss() {
  run_load "$2" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/unique.lua" "$1" \
    -- "$RUN_ID-$RUN_SEQ" || return
  parse_wrk "$2"
}

# HTTP/2 on the one URL. h2load -D leaves the requests still in flight at the end out of its counts.
scenario_h2() {
  local log=$2.log
  run_load "$2" h2load -t1 -c"${H2_CLIENTS:-100}" -m"${H2_STREAMS:-10}" -D "$DURATION" --npn-list=h2 \
    --log-file="$log" "$1" || return
  # h2load falls back to HTTP/1.1 silently when offered it; --npn-list=h2 forbids that, and this checks.
  grep -q '^Application protocol: h2$' "$2" || { echo "bench: $1 did not negotiate h2 (see $2)" >&2; return 1; }
  R_RPS=$(awk '/^finished in/ {print $4; exit}' "$2")
  parse_h2load "$2"
  read -r R_P50 R_P99 < <(log_percentiles "$log")
  gzip -f "$log"
}

# A new TLS connection per request (see usage).
scenario_handshake() {
  run_load "$2" wrk -t1 -c"${HANDSHAKE_CLIENTS:-50}" -d"${DURATION}s" --latency -H 'Connection: close' "$1" || return
  parse_wrk "$2"
}

# Memory per idle TLS connection (see usage). idle_tls holds its connections IDLE_SETTLE + 5 s, then
# exits by itself; the RSS is read IDLE_SETTLE s after it said "open N". Sets R_PER (KiB per connection),
# which run_one reports instead of requests per CPU-second.
scenario_idle() {
  local n=${IDLE_CONNS:-5000} settle=${IDLE_SETTLE:-5} port=${1%/} r0 r1 deadline
  port=${port##*:}
  [[ -x $ROOT/build/test/idle_tls ]] || { echo "bench: build/test/idle_tls is missing (make idle-tls)" >&2; return 1; }
  r0=$(server_rss "$CUR_PID")
  LOAD_LIMIT=$((settle + 120)) load_start "$2" "$ROOT/build/test/idle_tls" "$port" "$n" h1 $((settle + 5))
  deadline=$((SECONDS + 90))
  until grep -q "^open $n" "$2" 2>/dev/null || ! alive "$LOAD_PID" || (( SECONDS > deadline )); do sleep 0.1; done
  grep -q "^open $n" "$2" || { load_wait "$2" || true; echo "bench: idle_tls did not open $n connections (see $2)" >&2; return 1; }
  sleep "$settle"
  r1=$(server_rss "$CUR_PID")
  load_wait "$2" || return
  R_REQS=$n R_RPS=$n R_NON2XX=0 R_SOCKERR=0
  R_PER=$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }')
  R_NOTE="RSS $r0 -> $r1 KiB over $n idle connections: $R_PER KiB each"
}

# 25,000 concurrent streams: STREAMS_CLIENTS connections keeping STREAMS_PER_CONN streams in flight
# each, until STREAMS_REQUESTS requests, every one on a path never used before (see h2fanout.sh for
# why that takes one h2load per connection). The start is a barrier: the server is held (SIGSTOP,
# no CPU of its own is spent meanwhile) while the h2load processes start and connect, and released
# (SIGCONT) once all the connections wait in its accept queue (or after STREAMS_START_TIMEOUT s).
# Every request must succeed.
scenario_streams25k() {
  local clients=${STREAMS_CLIENTS:-250} streams=${STREAMS_PER_CONN:-100} total=${STREAMS_REQUESTS:-100000}
  local per=$((total / clients)) dir=$2.d base=${1%/} port k f n_out=0 n_h2=0 t0 t1 peak rc=0
  local queued=0 deadline
  local -a c
  (( per * clients == total )) || die "STREAMS_REQUESTS ($total) must be a multiple of STREAMS_CLIENTS ($clients)"
  port=${base##*:}
  pause_server "$CUR_PID"
  LOAD_LIMIT=${STREAMS_TIMEOUT:-180} load_start "$2" "$BENCH_DIR/h2fanout.sh" "$dir" "$clients" "$streams" \
    "$per" "$base" "/s/$RUN_ID-$RUN_SEQ-"
  deadline=$((SECONDS + ${STREAMS_START_TIMEOUT:-30}))
  while (( SECONDS < deadline )) && alive "$LOAD_PID"; do
    queued=$(accept_queue "$port")
    (( queued >= clients )) && break
    sleep 0.05
  done
  resume_server
  load_wait "$2" || rc=$?
  # Every h2load's summary, summed: "requests: N total, N started, N done, N succeeded, N failed,
  # N errored, N timeout" and "status codes: N 2xx, N 3xx, N 4xx, N 5xx". A process that printed no
  # summary (crashed, killed by the timeout) counts all its requests as missing.
  read -r -a c < <(cat "$dir"/out.* 2>/dev/null | awk '
    /^requests:/ { n++; d += $6; s += $8; f += $10; e += $12; t += $14 }
    /^status codes:/ { x4 += $7; x5 += $9 }
    END { print n + 0, d + 0, s + 0, f + 0, e + 0, t + 0, x4 + x5 }')
  for f in "$dir"/out.*; do
    [[ -e $f ]] || continue
    n_out=$((n_out + 1))
    grep -q '^Application protocol: h2$' "$f" && n_h2=$((n_h2 + 1))
  done
  local summaries=${c[0]} n_done=${c[1]} ok=${c[2]} failed=${c[3]} errored=${c[4]} tmo=${c[5]}
  local missing=$((total - n_done)) why=()
  R_REQS=$ok R_NON2XX=${c[6]} R_SOCKERR=$((errored + missing))
  # req/s over the span of the requests themselves (first start to last end, from the logs);
  # the processes' start-up and TLS handshakes are outside it.
  cat "$dir"/log.* 2>/dev/null >"$2.log" || true
  read -r t0 t1 < <(awk -F'\t' 'NR == 1 || $1 < a { a = $1 } $1 + $3 > b { b = $1 + $3 } END { printf "%.0f %.0f\n", a, b }' "$2.log")
  R_RPS=$(awk -v n="$ok" -v a="$t0" -v b="$t1" 'BEGIN { if (b > a) printf "%.0f", n / ((b - a) / 1e6) }')
  read -r R_P50 R_P99 < <(log_percentiles "$2.log")
  # The most requests in flight at once, client side: +1 at each request's start, -1 at its end.
  peak=$(awk -F'\t' '{ printf "%.0f 1\n%.0f -1\n", $1, $1 + $3 }' "$2.log" | sort -k1,1n -k2,2n |
    awk '{ n += $2; if (n > m) m = n } END { print m + 0 }')
  gzip -f "$2.log"
  # Keep h2load's outputs in one file (out.<c> after a "== client c" line), drop the rest of the directory.
  for (( k = 1; k <= clients; k++ )); do
    [[ -e $dir/out.$k ]] && { echo "== client $k"; cat "$dir/out.$k"; }
  done >>"$2"
  rm -rf "$dir"

  (( rc == 0 )) || why+=("h2fanout exited $rc")
  (( n_out == clients )) || why+=("$((clients - n_out)) of $clients h2load outputs missing")
  (( n_h2 == n_out )) || why+=("$((n_out - n_h2)) connections did not negotiate h2")
  (( summaries == clients )) || why+=("$((clients - summaries)) h2load processes printed no summary")
  (( ok == total && failed == 0 && errored == 0 && tmo == 0 )) || why+=("not every request succeeded")
  R_NOTE="$total requests ($clients connections x $streams streams, $per each; $queued connections queued at the start): $ok succeeded, $failed failed, $errored errored, $tmo timeout, $missing missing; at most $peak in flight at once"
  if (( ${#why[@]} )); then
    R_FAIL=$(printf '%s; ' "${why[@]}") R_FAIL=${R_FAIL%; }
  fi
  # No summary at all: nothing to show in the table.
  (( summaries > 0 )) || return 1
}

# Every request goes through the server to the origin. wrk's connections (64 by default) match the
# keep-alive pools of both edge and the peer (64 idle connections): with more clients than that,
# every server keeps opening and closing upstream connections beyond its pool. For edge, the
# upstream connection reuse comes from /metrics, read before and after the run.
scenario_fetch() {
  reuse_begin
  run_load "$2" wrk -t1 -c"${FETCH_CONNECTIONS:-64}" -d"${DURATION}s" --latency "$1" || return
  parse_wrk "$2"
  reuse_end
}

# The proxy scenarios (see usage): the same origin behind edge-proxy (lua/proxy.lua) and nginx-rproxy
# (proxy_pass); edge running EDGE_SCRIPT joins proxy-hot as the reference. The URL given is the
# server's root; the origin serves / (16 bytes), /hot (the same, max-age=3600) and /1g.

# proxy: a POST with an empty body, which neither side caches: the origin's answer every time.
scenario_proxy() {
  reuse_begin
  run_load "$2" wrk -t1 -c"${PROXY_CONNECTIONS:-64}" -d"${DURATION}s" --latency -s "$BENCH_DIR/post.lua" \
    "$1" || return
  parse_wrk "$2"
  reuse_end
  proxy_verify "$2" POST "$1" ''
}

# proxy-hot: one URL, cached by every server (edge running EDGE_SCRIPT caches any GET by path).
scenario_proxy-hot() {
  local hit='^x-cache: *HIT'
  run_load "$2" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${1}hot" || return
  parse_wrk "$2"
  [[ $CUR_SRV == edge-proxy || $CUR_SRV == nginx-rproxy ]] || hit=''
  proxy_verify "$2" GET "${1}hot" "$hit"
}

# proxy-1g: one 1 GiB download through the server, bounded by PROXY_1G_TIMEOUT. The work is the MB
# moved (R_WORK: run_one divides it by the server's CPU seconds), R_RPS the wall MB/s.
scenario_proxy-1g() {
  local limit=${PROXY_1G_TIMEOUT:-120} code size secs want=$((1 << 30))
  LOAD_LIMIT=$((limit + 10)) run_load "$2" curl -sSk --http1.1 --max-time "$limit" -o /dev/null \
    -w 'result %{http_code} %{size_download} %{time_total}\n' "${1}1g" || return
  read -r code size secs < <(awk '$1 == "result" { print $2, $3, $4; exit }' "$2")
  [[ -n $secs ]] || return 1
  R_REQS=1 R_NON2XX=0 R_SOCKERR=0 R_P50='' R_P99=''
  [[ $code == 2* ]] || R_NON2XX=1
  R_WORK=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }')
  R_RPS=$(awk -v b="$size" -v t="$secs" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t }')
  R_NOTE="HTTP $code, $size bytes in $secs s: $R_RPS MB/s wall"
  (( size == want && R_NON2XX == 0 )) || R_FAIL="expected HTTP 200 and $want bytes, got HTTP $code and $size bytes"
}

# hit, hit-gzip, hit-br: the one cached text body as it is, or its stored gzip / br copy.
scenario_hit() { text_hit "$1" "$2" ''; }
scenario_hit-gzip() { text_hit "$1" "$2" gzip; }
scenario_hit-br() { text_hit "$1" "$2" br; }

# text_hit URL OUT CODING: wrk with Accept-Encoding: CODING ('' for none), then text_verify.
text_hit() {
  local -a ae=()
  [[ -n $3 ]] && ae=(-H "Accept-Encoding: $3")
  run_load "$2" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${ae[@]}" "${1}text" || return
  parse_wrk "$2"
  text_verify "$2" "${1}text" "$3"
}

# text_verify OUT URL CODING: fails the run (R_FAIL) on a non-2xx response, or unless one more request
# with the run's Accept-Encoding gets X-Cache: HIT, Content-Encoding: CODING (none for '') and, decoded
# by curl, the 8192-byte body. The response head goes to OUT.check.
text_verify() {
  local out=$1 url=$2 ce=$3 size why=() want=${3:-none} got
  local -a ae=()
  [[ -n $ce ]] && ae=(-H "Accept-Encoding: $ce" --compressed)
  (( ${R_NON2XX:-0} == 0 )) || why+=("$R_NON2XX non-2xx responses")
  size=$(curl -sk --http1.1 --max-time 5 "${ae[@]}" -D "$out.check" -o - "$url" 2>/dev/null | wc -c)
  got=$(tr -d '\r' <"$out.check" 2>/dev/null | awk -F': *' 'tolower($1) == "content-encoding" { print $2 }')
  tr -d '\r' <"$out.check" 2>/dev/null | grep -qi '^x-cache: *HIT' || why+=("check request: no X-Cache: HIT")
  [[ ${got:-none} == "$want" ]] || why+=("check request: Content-Encoding '${got:-none}', expected '$want'")
  [[ $size == 8192 ]] || why+=("check request: $size bytes decoded, expected 8192")
  if (( ${#why[@]} )); then
    R_FAIL=$(printf '%s; ' "${why[@]}") R_FAIL=${R_FAIL%; }
  fi
  return 0
}

# proxy_verify OUT METHOD URL HEADER: after a proxy* run, fails it (R_FAIL) if it had a non-2xx response
# or if one more request (HTTP/1.1; its cost is nothing next to the run's) does not get 200 and the
# origin's 16-byte body, or lacks a response header line matching HEADER (an ERE, case-insensitive; ''
# for none). The response head goes to OUT.check.
proxy_verify() {
  local out=$1 method=$2 url=$3 header=$4 code body why=()
  local -a data=()
  [[ $method == POST ]] && data=(--data-binary '')
  (( ${R_NON2XX:-0} == 0 )) || why+=("$R_NON2XX non-2xx responses")
  code=$(curl -sk --http1.1 --max-time 5 "${data[@]}" -D "$out.check" -o "$out.body" -w '%{http_code}' \
    "$url" 2>/dev/null) || code="curl failed ($?)"
  body=$(cat "$out.body" 2>/dev/null || true)
  rm -f "$out.body"
  [[ $code == 200 && $body == "Hello from edge!" ]] ||
    why+=("check request $method $url: HTTP $code, body '${body:0:40}'")
  if [[ -n $header ]] && ! tr -d '\r' <"$out.check" 2>/dev/null | grep -qiE "$header"; then
    why+=("check request $method $url: no header matching '$header' (see ${out#"$ROOT"/}.check)")
  fi
  if (( ${#why[@]} )); then
    R_FAIL=$(printf '%s; ' "${why[@]}") R_FAIL=${R_FAIL%; }
  fi
  return 0
}

# reuse_begin / reuse_end, around a run: for a server with an admin listener (SRV_ADMIN: edge-fetch,
# edge-proxy), the upstream connections opened per upstream request over the run, from /metrics:
# sets R_REUSE (1 - that, %) and R_NOTE. Nothing for the others.
reuse_begin() {
  R_M0=''
  if [[ -n ${SRV_ADMIN[$CUR_SRV]:-} ]]; then R_M0=$(upstream_counts "${SRV_ADMIN[$CUR_SRV]}") || R_M0=''; fi
  return 0
}
reuse_end() {
  local m1
  [[ -n $R_M0 ]] || return 0
  m1=$(upstream_counts "${SRV_ADMIN[$CUR_SRV]}") || { echo "bench: could not read $CUR_SRV's /metrics" >&2; return 1; }
  local opened=$(( ${m1% *} - ${R_M0% *} )) fetched=$(( ${m1#* } - ${R_M0#* } ))
  R_REUSE=$(awk -v o="$opened" -v n="$fetched" 'BEGIN { if (n > 0) printf "%.2f", 100 * (1 - o / n) }')
  R_NOTE="$fetched upstream requests, $opened upstream connections opened: reuse ${R_REUSE:-n/a} %"
}

# upstream_counts ADMIN_PORT: "OPENED REQUESTS" from edge's /metrics: edge_upstream_connections_opened_total
# and edge_upstream_requests_total summed over its codes.
upstream_counts() {
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" | awk '
    $1 == "edge_upstream_connections_opened_total" { o = $2 }
    $1 ~ /^edge_upstream_requests_total[{]/ { n += $2 }
    END { printf "%.0f %.0f\n", o, n }'
}

# parse_h2load OUT: R_REQS (succeeded), R_NON2XX (4xx + 5xx, like wrk's "Non-2xx or 3xx") and
# R_SOCKERR (errored, timeouts included) from h2load's summary.
parse_h2load() {
  # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
  R_REQS=$(awk '/^requests:/ {print $8; exit}' "$1")
  R_SOCKERR=$(awk '/^requests:/ {print $12; exit}' "$1")
  # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
  R_NON2XX=$(awk '/^status codes:/ {print $7 + $9; exit}' "$1")
}

# log_percentiles LOG: "p50 p99" in milliseconds from an h2load per-request log (column 3: microseconds).
log_percentiles() {
  cut -f3 "$1" | sort -n | awk '{v[NR] = $1}
    END { if (NR == 0) { print "", ""; exit }
          i50 = int(NR * 0.50); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
          printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

list_scenarios() { declare -F | awk '$3 ~ /^scenario_/ {sub(/^scenario_/, "", $3); print $3}' | paste -sd, -; }

# run_load OUT CMD...: runs CMD pinned to LOAD_CPU with output in OUT, killed if it overruns
# (after LOAD_LIMIT seconds if set, else --duration + 60). timeout signals its whole process group,
# so the children of CMD go too. Runs in the background so that the EXIT trap can stop it by PID.
# load_start OUT CMD... and load_wait are its two halves, for a scenario that acts while it runs.
LOAD_PID='' LOAD_CMD=''
load_start() {
  local out=$1; shift
  LOAD_CMD=$1
  timeout -k 5 "${LOAD_LIMIT:-$((DURATION + 60))}" taskset -c "$LOAD_CPU" "$@" >"$out" 2>&1 &
  LOAD_PID=$!
}
load_wait() {
  local rc=0
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=
  [[ $rc -eq 0 ]] || echo "bench: $LOAD_CMD exited $rc (see $1)" >&2
  return "$rc"
}
run_load() { load_start "$@"; load_wait "$1"; }

# Holding a server (streams25k's start barrier). PAUSED: the PIDs stopped, for the EXIT trap.
PAUSED=()
pause_server() { read -r -a PAUSED < <(server_pids "$1"); kill -STOP "${PAUSED[@]}"; }
resume_server() {
  if (( ${#PAUSED[@]} )); then kill -CONT "${PAUSED[@]}" 2>/dev/null || true; fi
  PAUSED=()
}

# accept_queue PORT: connections waiting in the accept queue(s) of the listener(s) on PORT.
accept_queue() { ss -Hltn "sport = :$1" 2>/dev/null | awk '{ n += $2 } END { print n + 0 }'; }

# wrk's "2.81ms" / "850.00us" / "1.20s" / "1.00m" -> milliseconds.
to_ms() {
  awk -v t="$1" 'BEGIN { if (t == "") exit
    n = t + 0; u = t; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0) exit
    printf "%.3f\n", n * f }'
}

parse_wrk() {
  local f=$1
  R_REQS=$(awk '/ requests in / {print $1; exit}' "$f")
  R_RPS=$(awk '/^Requests\/sec:/ {print $2; exit}' "$f")
  R_P50=$(to_ms "$(awk '$1 == "50%" {print $2; exit}' "$f")")
  R_P99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$f")")
  R_NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$f")
  R_SOCKERR=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$f")
  R_NON2XX=${R_NON2XX:-0} R_SOCKERR=${R_SOCKERR:-0}
}

# ---------------------------------------------------------------------------------------------
# Servers: started once, kept for every scenario, stopped by PID on exit.
# ---------------------------------------------------------------------------------------------
declare -A SRV_PID=() SRV_PORT=() SRV_LOG=() SRV_ADMIN=() SRV_RUN=()   # ADMIN: admin port; RUN: its temp dir
STARTED=()
USED_PORTS=" "

# server_cmd NAME PORT: the command line for NAME, in CMD. taskset and nginx.sh both exec,
# so the PID of the background job is the server's own (for nginx: the master).
server_cmd() {
  case $1 in
    edge) CMD=("$EDGE" -s "$SCRIPT" -w 1 -l "127.0.0.1:$2" --cert "$CERT" --key "$KEY" --log-level warn
               "${EDGE_EXTRA[@]}") ;;
    edge-text) CMD=("$EDGE" -s "$BENCH_DIR/text.lua" -w 1 -l "127.0.0.1:$2" --cert "$CERT" --key "$KEY"
                    --log-level warn "${EDGE_EXTRA[@]}") ;;
    nginx-lua) CMD=("$PEERS_DIR/nginx.sh" lua "$2" "$CERT" "$KEY" 1) ;;
    nginx-static) CMD=("$PEERS_DIR/nginx.sh" static "$2" "$CERT" "$KEY" 1) ;;
    h2o-static) CMD=("$PEERS_DIR/h2o.sh" "$2" "$CERT" "$KEY" 1) ;;
    # The fetch scenario's servers (env and nginx-fetch.sh exec: the PID stays the server's).
    nginx-origin) CMD=("$BENCH_DIR/nginx-fetch.sh" origin "$2" 1) ;;
    edge-fetch) pick_port || die "no free port found"
                SRV_ADMIN[$1]=$PORT
                CMD=(env "EDGE_BENCH_ORIGIN=http://127.0.0.1:${SRV_PORT[nginx-origin]}"
                     "$EDGE" -s "$BENCH_DIR/fetch.lua" -w 1 -l "127.0.0.1:$2" --cert "$CERT" --key "$KEY"
                     --log-level warn --admin "127.0.0.1:$PORT" "${EDGE_EXTRA[@]}") ;;
    nginx-fetch) CMD=("$BENCH_DIR/nginx-fetch.sh" fetch "$2" "$CERT" "$KEY" "${SRV_PORT[nginx-origin]}" 1) ;;
    nginx-proxy) CMD=("$BENCH_DIR/nginx-fetch.sh" proxy "$2" "$CERT" "$KEY" "${SRV_PORT[nginx-origin]}" 1) ;;
    # The proxy scenarios' servers; the nginx ones keep everything in a directory of their own.
    proxy-origin) SRV_RUN[$1]=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-$1.XXXXXX")
                  CMD=("$BENCH_DIR/nginx-proxy.sh" origin "${SRV_RUN[$1]}" "$2" 1) ;;
    edge-proxy) pick_port || die "no free port found"
                SRV_ADMIN[$1]=$PORT
                CMD=(env "EDGE_ORIGIN=127.0.0.1:${SRV_PORT[proxy-origin]}"
                     "$EDGE" -s "$PROXY_SCRIPT" -w 1 -l "127.0.0.1:$2" --cert "$CERT" --key "$KEY"
                     --log-level warn --admin "127.0.0.1:$PORT" "${EDGE_EXTRA[@]}") ;;
    nginx-rproxy) SRV_RUN[$1]=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-$1.XXXXXX")
                  CMD=("$BENCH_DIR/nginx-proxy.sh" proxy "${SRV_RUN[$1]}" "$2" "$CERT" "$KEY"
                       "${SRV_PORT[proxy-origin]}" 1) ;;
    *) die "unknown server $1" ;;
  esac
}

# pick_port: sets PORT to a free loopback port below the ephemeral range, so that it never collides
# with wrk's own sockets (and no SO_REUSEPORT listener of someone else shares it).
pick_port() {
  local lo p i
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  (( lo > 20000 + 2000 )) || lo=32768
  for (( i = 0; i < 100; i++ )); do
    p=$((20000 + RANDOM % (lo - 20000)))
    [[ $USED_PORTS == *" $p "* ]] && continue
    [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] || continue
    USED_PORTS+="$p " PORT=$p
    return 0
  done
  return 1
}

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

# start_server NAME: starts it pinned to SERVER_CPU (the origins: to LOAD_CPU, as a part of the
# load) and waits (bounded) until GET / answers 200.
start_server() {
  local name=$1 port pid code deadline log=$RESULTS/$1.log cpu=$SERVER_CPU scheme=https
  [[ $name == nginx-origin || $name == proxy-origin ]] && cpu=$LOAD_CPU scheme=http
  pick_port || die "no free port found"
  port=$PORT
  server_cmd "$name" "$port"
  echo "bench: starting $name on 127.0.0.1:$port: taskset -c $cpu ${CMD[*]}"
  taskset -c "$cpu" "${CMD[@]}" >"$log" 2>&1 </dev/null &
  pid=$!
  SRV_PID[$name]=$pid SRV_PORT[$name]=$port SRV_LOG[$name]=$log
  STARTED+=("$name")
  deadline=$((SECONDS + START_TIMEOUT)) code=000
  while (( SECONDS < deadline )); do
    alive "$pid" || { sed 's/^/  | /' "$log" >&2; die "$name exited during start-up (log above, $log)"; }
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://127.0.0.1:$port/" 2>/dev/null) || true
    [[ $code == 200 ]] && return 0
    sleep 0.2
  done
  sed 's/^/  | /' "$log" >&2
  die "$name did not answer 200 within ${START_TIMEOUT}s (last HTTP status: $code; log: $log)"
}

# stop_server NAME: SIGTERM to the server, bounded wait, then SIGKILL to it and its children.
stop_server() {
  local name=$1 pid=${SRV_PID[$1]} kids deadline k
  kids=$(ps --ppid "$pid" -o pid= 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while (( SECONDS < deadline )) && alive "$pid"; do sleep 0.1; done
  if alive "$pid"; then
    echo "bench: $name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for k in $kids; do
    deadline=$((SECONDS + STOP_TIMEOUT))
    while (( SECONDS < deadline )) && alive "$k"; do sleep 0.1; done
    if alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
  # nginx.sh keeps its config and logs in /tmp/edge-peer-<kind>-<port>/: keep the error log, drop the rest.
  # nginx-proxy.sh's servers: in SRV_RUN (a mktemp -d of ours).
  local run=${SRV_RUN[$name]:-/tmp/edge-peer-${name#nginx-}-${SRV_PORT[$name]}}
  if [[ ( $name == nginx-* || -n ${SRV_RUN[$name]:-} ) && -d $run ]]; then
    cp "$run/logs/error.log" "$RESULTS/$name.error.log" 2>/dev/null || true
    rm -rf "$run"
  fi
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  resume_server
  if [[ -n $LOAD_PID ]]; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  for (( i = ${#STARTED[@]} - 1; i >= 0; i-- )); do stop_server "${STARTED[i]}"; done
  exit "$rc"
}

# utime + stime (clock ticks) of PID and its direct children (nginx: master + workers; edge's
# worker threads are already in its own figure). Prints "TICKS PIDS".
server_ticks() {
  local total=0 p stat f pids
  pids="$1 $(ps --ppid "$1" -o pid= 2>/dev/null | tr -s ' \n' ' ' || true)"   # ps fails when no children
  for p in $pids; do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -r -a f <<<"${stat##*) }"   # f[0] is field 3 (state): utime = field 14, stime = field 15
    total=$((total + f[11] + f[12]))
  done
  echo "$total $(echo "$pids" | tr -s ' ' '\n' | sed '/^$/d' | sort -n | paste -sd, -)"
}

# server_pids PID: PID and its direct children (nginx: master + workers; edge: itself, threads share it).
server_pids() { echo "$1 $(ps --ppid "$1" -o pid= 2>/dev/null | tr -s ' \n' ' ' || true)"; }

# server_rss PID: the current RSS of the server's processes, summed, in KiB.
server_rss() {
  local p kb total=0
  for p in $(server_pids "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2; exit}' "/proc/$p/status" 2>/dev/null) || continue
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# rss_reset PID: restarts the peak-RSS count (VmHWM) of the server's processes at their current RSS.
# Prints 1 if that worked for all of them, 0 if not (then the peak is the one since start-up).
rss_reset() {
  local p ok=1
  for p in $(server_pids "$1"); do echo 5 2>/dev/null >"/proc/$p/clear_refs" || ok=0; done
  echo "$ok"
}

# rss_peak PID: "TOTAL_MiB DETAIL": VmHWM summed over the server's processes, and per process
# ("pid:MiB,...") for the raw summary.
rss_peak() {
  local p kb total=0 detail=()
  for p in $(server_pids "$1"); do
    kb=$(awk '/^VmHWM:/ {print $2; exit}' "/proc/$p/status" 2>/dev/null) || continue
    [[ -n $kb ]] || continue
    total=$((total + kb))
    detail+=("$p:$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')")
  done
  echo "$(awk -v k="$total" 'BEGIN { printf "%.1f", k / 1024 }') $(IFS=,; echo "${detail[*]}")"
}

# ---------------------------------------------------------------------------------------------
# One run: scenario × server, with the server's CPU read just before and just after the load.
# ---------------------------------------------------------------------------------------------
declare -A RPC=() P99=() RSS=() REUSE=() WALL=()
ROWS=() NOTES=() FAILED=0 RUN_SEQ=0
row() { printf '%-13s %-13s %9s %8s %9s %14s %7s %10s %9s %s' "$@" | sed 's/ *$//'; }

# run_one SCENARIO SERVER ROUND
run_one() {
  local sc=$1 srv=$2 pid=${SRV_PID[$2]} out=$RESULTS/$1-$2.txt label=$1 url b0 b1 a0 a1 cpu rpc line
  local reset rss rss_detail
  if (( ROUNDS > 1 )); then out=$RESULTS/$1-$2-r$3.txt label=$1/$3; fi
  url="https://127.0.0.1:${SRV_PORT[$srv]}/"
  RUN_SEQ=$((RUN_SEQ + 1))
  R_REQS='' R_RPS='' R_P50='' R_P99='' R_NON2XX='' R_SOCKERR='' R_FAIL='' R_NOTE='' R_REUSE='' R_WORK='' R_PER=''
  CUR_PID=$pid CUR_SRV=$srv
  alive "$pid" || die "$srv (pid $pid) is no longer running (log: ${SRV_LOG[$srv]})"
  reset=$(rss_reset "$pid")
  read -r b0 b1 < <(server_ticks "$pid")
  if ! "scenario_$sc" "$url" "$out" || [[ -z $R_REQS || -z $R_RPS ]]; then
    line=$(row "$label" "$srv" FAILED - - - - - - "see ${out#"$ROOT"/}")
    FAILED=1
    [[ -n $R_FAIL ]] && NOTES+=("FAIL $label $srv: $R_FAIL")
  else
    read -r a0 a1 < <(server_ticks "$pid")
    read -r rss rss_detail < <(rss_peak "$pid")
    (( reset )) || { rss="$rss*"; echo "bench: could not reset $srv's peak RSS: the figure is the peak since start-up" >&2; }
    [[ $a1 == "$b1" ]] || echo "bench: $srv's processes changed during the run ($b1 -> $a1)" >&2
    cpu=$(awk -v d=$((a0 - b0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')
    # Work per CPU-second: requests, or what the scenario counts instead (R_WORK: proxy-1g's MB).
    rpc=$(awk -v n="${R_WORK:-$R_REQS}" -v d=$((a0 - b0)) -v hz="$CLK_TCK" 'BEGIN { if (d > 0) printf "%.0f", n / (d / hz); else print "n/a" }')
    [[ -z $R_PER ]] || rpc=$R_PER      # idle: KiB per connection instead
    RPC[$sc/$srv]+="$rpc " P99[$sc/$srv]+="${R_P99:-n/a} " RSS[$sc/$srv]+="${rss%\*} " REUSE[$sc/$srv]+="$R_REUSE "
    WALL[$sc/$srv]+="$R_RPS "
    line=$(row "$label" "$srv" "$(printf '%.0f' "$R_RPS")" "${R_P50:-n/a}" "${R_P99:-n/a}" \
      "$R_NON2XX/$R_SOCKERR" "$cpu" "$rpc" "$rss" "${R_FAIL:+FAIL}")
    [[ -n $R_NOTE ]] && NOTES+=("$label $srv: $R_NOTE")
    [[ $rss_detail == *,* ]] && NOTES+=("$label $srv: peak RSS $rss MiB = sum over pid:MiB $rss_detail")
    if [[ -n $R_FAIL ]]; then
      FAILED=1
      NOTES+=("FAIL $label $srv: $R_FAIL")
      echo "bench: FAIL: $label against $srv: $R_FAIL ($R_NOTE; see ${out#"$ROOT"/})" >&2
    fi
  fi
  ROWS+=("$line")
  echo "$line"
  alive "$pid" || die "$srv (pid $pid) died during $sc (log: ${SRV_LOG[$srv]})"
}

# median LIST: the median of the numbers in a space-separated list ("n/a" and blanks skipped).
median() {
  tr ' ' '\n' <<<"$1" | grep -E '^[0-9.]+$' | sort -g |
    awk '{v[NR] = $1} END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# target_note SCENARIO PEER RATIO: "   (target >= T: met|MISSED)" for the comparisons with a target.
target_note() {
  local t=''
  case $1/$2 in
    proxy/nginx-rproxy) t=1.20 ;;
    proxy-hot/edge|proxy-1g/nginx-rproxy) t=1.00 ;;
  esac
  [[ -n $t ]] || return 0
  awk -v r="${3%x}" -v t="$t" -v p="$2" 'BEGIN {
    what = (p == "edge") ? "proxy-hot / hot " : ""
    if (r == "n/a") printf "   (target %s>= %.2fx: n/a)", what, t
    else printf "   (target %s>= %.2fx: %s)", what, t, (r + 0 >= t) ? "met" : "MISSED" }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }

# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------
DEFAULT_SCENARIOS=hot,miss,h2
ROUNDS=1 DURATION=10 CONNECTIONS=400 SCENARIO_LIST=$DEFAULT_SCENARIOS PEER=0 STATIC=0 H2O=0 EDGE=./edge
while (( $# )); do
  case $1 in
    --duration) DURATION=${2:-} ; shift 2 || die "--duration needs a value" ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --connections) CONNECTIONS=${2:-}; shift 2 || die "--connections needs a value" ;;
    --connections=*) CONNECTIONS=${1#*=}; shift ;;
    --scenarios) SCENARIO_LIST=${2:-}; shift 2 || die "--scenarios needs a value" ;;
    --scenarios=*) SCENARIO_LIST=${1#*=}; shift ;;
    --edge) EDGE=${2:-}; shift 2 || die "--edge needs a value" ;;
    --edge=*) EDGE=${1#*=}; shift ;;
    --rounds) ROUNDS=${2:-}; shift 2 || die "--rounds needs a value" ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    --peer) PEER=1; shift ;;
    --static) STATIC=1; shift ;;
    --h2o) H2O=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive whole number of seconds"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "--connections must be a positive number"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
IFS=, read -r -a SCENARIOS <<<"$SCENARIO_LIST"
(( ${#SCENARIOS[@]} )) || die "--scenarios is empty"
for sc in "${SCENARIOS[@]}"; do
  declare -F "scenario_$sc" >/dev/null || die "unknown scenario '$sc' (known: $(list_scenarios))"
done

# Resolve --edge from the caller's directory, then work from the repository root.
[[ $EDGE == */* ]] || EDGE=./$EDGE
[[ -e $EDGE ]] || die "edge binary not found at $EDGE (build it: make edge)"
[[ -x $EDGE ]] || die "$EDGE is not executable"
EDGE=$(readlink -f "$EDGE")
cd "$ROOT"

for tool in wrk taskset curl ss ps timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs the tools)"
done
H2=0
for sc in "${SCENARIOS[@]}"; do [[ $sc == h2 || $sc == streams* ]] && H2=1; done
(( H2 == 0 )) || command -v h2load >/dev/null || die "h2load not found (apt-get install nghttp2-client)"
(( $(nproc --all) >= 2 )) || die "needs 2 CPUs (server on CPU $SERVER_CPU, load on CPU $LOAD_CPU)"
[[ -s $CERT && -s $KEY ]] || die "no certificate in certs/ (make certs)"
[[ -e $SCRIPT ]] || die "$SCRIPT not found"
# scenario_servers SC: the servers SC runs on, edge's first (the ratios compare it to the others).
# proxy-hot compares edge-proxy to edge on the hot path too (its target: proxy-hot >= hot).
scenario_servers() {
  case $1 in
    fetch) echo "edge-fetch$( (( PEER )) && echo " nginx-fetch")$( (( STATIC )) && echo " nginx-proxy")" ;;
    proxy|proxy-1g) echo "edge-proxy$( (( PEER )) && echo " nginx-rproxy")" ;;
    proxy-hot) echo "edge-proxy edge$( (( PEER )) && echo " nginx-rproxy")" ;;
    hit|hit-gzip|hit-br) echo "edge-text" ;;
    *) echo "edge$( (( PEER )) && echo " nginx-lua")$( (( STATIC )) && echo " nginx-static")$( (( H2O )) && echo " h2o-static")" ;;
  esac
}
# SERVERS: every server some scenario runs on, each once. fetch also needs its origin (ORIGIN=1),
# the proxy scenarios theirs (PROXY_ORIGIN=1).
SERVERS=() ORIGIN=0 PROXY_ORIGIN=0 NGINX_PEER=0
for sc in "${SCENARIOS[@]}"; do
  [[ $sc == fetch ]] && ORIGIN=1
  [[ $sc == proxy* ]] && PROXY_ORIGIN=1
  for srv in $(scenario_servers "$sc"); do
    [[ " ${SERVERS[*]} " == *" $srv "* ]] || SERVERS+=("$srv")
    [[ $srv == nginx-lua || $srv == nginx-static || $srv == h2o-static ]] && NGINX_PEER=1
  done
done
if (( NGINX_PEER )); then
  [[ -f $PEERS_DIR/nginx.sh ]] || die "peer servers not found: $PEERS_DIR/nginx.sh is missing" \
    "(the shared folder must sit next to the repository, at $(readlink -m "$ROOT/../shared"))"
  PEERS_DIR=$(readlink -f "$PEERS_DIR")
fi
(( PROXY_ORIGIN == 0 )) || [[ -e $PROXY_SCRIPT ]] || die "$PROXY_SCRIPT not found"
if [[ " ${SERVERS[*]} " == *" h2o-static "* ]]; then
  command -v h2o >/dev/null || die "h2o not found (apt-get install h2o, or scripts/install-deps.sh --peer)"
fi
if (( PEER || STATIC || ORIGIN || PROXY_ORIGIN )); then
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ||
    die "nginx not found (scripts/install-deps.sh --peer)"
  export PATH=$PATH:/usr/sbin
fi
if [[ " ${SERVERS[*]} " == *" nginx-fetch "* ]]; then
  [[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ]] ||
    die "nginx's Lua module not found (scripts/install-deps.sh --peer)"
fi
# The peers run with access_log off; an edge that has an access log (--access-log, default stdout)
# gets it off too, so that both do the same work (and the log does not fill the disk).
EDGE_EXTRA=()
if "$EDGE" --help 2>&1 | grep -q -- '--access-log '; then EDGE_EXTRA=(--access-log off); fi
CLK_TCK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RUN_ID=$(date +%Y%m%d-%H%M%S)
RESULTS=$ROOT/bench-results/$RUN_ID
mkdir -p "$RESULTS"
ln -sfn "$RUN_ID" "$ROOT/bench-results/latest"
trap cleanup EXIT
trap 'echo "bench: unexpected failure at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# Other work on the machine skews everything: measure how busy the CPUs are right now (1 s).
busy=$( { head -1 /proc/stat; sleep 1; head -1 /proc/stat; } | awk '{idle = $5 + $6; t = 0
  for (i = 2; i <= NF; i++) t += $i; if (NR == 1) { i0 = idle; t0 = t } else printf "%.0f", 100 * (1 - (idle - i0) / (t - t0)) }')
{
  echo "edge bench $RUN_ID: $EDGE ($(date -r "$EDGE" '+built %F %T')), ${DURATION}s per run, wrk -c$CONNECTIONS$( \
    (( ORIGIN )) && echo " (fetch: -c${FETCH_CONNECTIONS:-64})")$( \
    (( PROXY_ORIGIN )) && echo " (proxy: -c${PROXY_CONNECTIONS:-64})")," \
    "scenarios ${SCENARIOS[*]}, $ROUNDS round(s)"
  echo "servers ${SERVERS[*]} on CPU $SERVER_CPU (1 worker), load on CPU $LOAD_CPU;" \
    "$(nproc --all) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), ${busy}% busy before start"
} | tee "$RESULTS/summary.txt"
(( busy < 10 )) || echo "bench: warning: the CPUs were already ${busy}% busy; figures will be noisy" >&2

(( ORIGIN == 0 )) || start_server nginx-origin
(( PROXY_ORIGIN == 0 )) || start_server proxy-origin
for srv in "${SERVERS[@]}"; do start_server "$srv"; done
# One unmeasured second of the hot path per server, so first-touch costs land in no scenario.
# With an HTTP/2 scenario, one second of h2load too.
for srv in "${SERVERS[@]}"; do
  run_load "$RESULTS/warmup-$srv.txt" wrk -t1 -c"$CONNECTIONS" -d1s "https://127.0.0.1:${SRV_PORT[$srv]}/" ||
    die "warm-up against $srv failed (see $RESULTS/warmup-$srv.txt)"
  (( H2 == 0 )) || run_load "$RESULTS/warmup-h2-$srv.txt" h2load -c10 -m10 -D 1 --npn-list=h2 \
    "https://127.0.0.1:${SRV_PORT[$srv]}/" || die "h2 warm-up against $srv failed (see $RESULTS/warmup-h2-$srv.txt)"
done

HEADER=$(row scenario server req/s "p50 ms" "p99 ms" non2xx/sockerr cpu-s req/cpu-s "RSS MiB")
echo "$HEADER"
for (( round = 1; round <= ROUNDS; round++ )); do
  for sc in "${SCENARIOS[@]}"; do
    for srv in $(scenario_servers "$sc"); do
      run_one "$sc" "$srv" "$round"
      sleep 1
    done
  done
done

{
  echo
  echo "$HEADER"
  printf '%s\n' "${ROWS[@]}"
  echo "(RSS MiB: the server's peak RSS over the run, VmHWM; nginx: master + workers summed)"
  [[ " ${SCENARIOS[*]} " != *" proxy-1g "* ]] ||
    echo "(proxy-1g rows: req/s = wall MB/s, req/cpu-s = MB per server CPU-second; MB = 10^6 bytes)"
  if (( ${#NOTES[@]} )); then
    echo
    printf '%s\n' "${NOTES[@]}"
  fi
  # Per scenario: its edge against each of its peers (fetch: edge-fetch against nginx-fetch/-proxy).
  ratio_lines=()
  for sc in "${SCENARIOS[@]}"; do
    read -r -a on < <(scenario_servers "$sc")
    for peer in "${on[@]:1}"; do
      r=$(ratio "$(median "${RPC[$sc/${on[0]}]:-}")" "$(median "${RPC[$sc/$peer]:-}")")
      unit=req/cpu-s; [[ $sc == proxy-1g ]] && unit=MB/cpu-s
      [[ $sc == idle ]] && unit='KiB/conn (lower is better)'
      ratio_lines+=("$(printf '  %-11s %-12s %s %7s   p99 %7s   peak RSS %7s%s' "$sc" "$peer" "$unit" "$r" \
        "$(ratio "$(median "${P99[$sc/${on[0]}]:-}")" "$(median "${P99[$sc/$peer]:-}")")" \
        "$(ratio "$(median "${RSS[$sc/${on[0]}]:-}")" "$(median "${RSS[$sc/$peer]:-}")")" \
        "$(target_note "$sc" "$peer" "$r")")")
    done
  done
  if (( ${#ratio_lines[@]} )); then
    echo
    echo "edge / peer$( (( ROUNDS > 1 )) && echo ", medians of $ROUNDS rounds")   (req/cpu-s: higher is better for edge; p99, peak RSS: lower is better)"
    printf '%s\n' "${ratio_lines[@]}"
  fi
  for sc in "${SCENARIOS[@]}"; do
    [[ $sc == fetch || $sc == proxy ]] || continue
    read -r -a on < <(scenario_servers "$sc")
    echo
    echo "$sc: edge's upstream connection reuse (1 - connections opened / upstream requests)$( (( ROUNDS > 1 )) && echo ", median of $ROUNDS rounds"): $(median "${REUSE[$sc/${on[0]}]:-}") %"
  done
  if [[ " ${SCENARIOS[*]} " == *" hit "* && " ${SCENARIOS[*]} " == *" hit-"* ]]; then
    echo
    echo "compressed hits: hit's req/cpu-s over each one's$( (( ROUNDS > 1 )) && echo ", medians of $ROUNDS rounds") (how much more a hit from the stored copy costs)"
    for sc in hit-gzip hit-br; do
      [[ " ${SCENARIOS[*]} " == *" $sc "* ]] || continue
      r=$(ratio "$(median "${RPC[hit/edge-text]:-}")" "$(median "${RPC[$sc/edge-text]:-}")")
      echo "  $sc: $r$(awk -v r="${r%x}" 'BEGIN { if (r == "n/a") print "   (target <= 1.10x: n/a)"
        else printf "   (target <= 1.10x: %s)\n", (r + 0 <= 1.10) ? "met" : "MISSED" }')"
    done
  fi
  if [[ " ${SCENARIOS[*]} " == *" proxy-1g "* ]]; then
    echo
    echo "proxy-1g: one 1 GiB download, curl HTTP/1.1 + TLS$( (( ROUNDS > 1 )) && echo ", medians of $ROUNDS rounds"):"
    printf '  %-13s %9s %10s %13s\n' server MB/cpu-s "wall MB/s" "peak RSS MiB"
    for srv in $(scenario_servers proxy-1g); do
      printf '  %-13s %9s %10s %13s\n' "$srv" "$(median "${RPC[proxy-1g/$srv]:-}")" \
        "$(median "${WALL[proxy-1g/$srv]:-}")" "$(median "${RSS[proxy-1g/$srv]:-}")"
    done
  fi
  if (( FAILED )); then
    echo
    echo "FAILED: at least one run failed (rows marked FAILED or FAIL above); exit status 1"
  fi
  echo
  echo "raw outputs: ${RESULTS#"$ROOT"/}/"
} | tee -a "$RESULTS/summary.txt"
exit "$FAILED"
