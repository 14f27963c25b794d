#!/usr/bin/env bash
# Issue 13's targets for stale serving, measured with wrk against edge running lua/proxy.lua in front
# of an origin nginx (plain HTTP on loopback, one worker, its access log on: it counts origin requests).
#   scripts/bench/stale.sh [--duration S] [--connections N] [--keys N] [--rounds N] [--edge PATH]
#
# (b) grace, first: one hot key the origin sends with `Cache-Control: max-age=TTL,
#     stale-while-revalidate=GRACE` (TTL 1, GRACE 10), wrk -t1 -cN --latency for S seconds. Every
#     TTL seconds the entry expires and exactly one background refresh should reach the origin. Per run:
#     the origin's requests for the key (its access log), edge's refreshes (edge_cache_refreshes_total),
#     the responses served stale in grace, and the smallest gap between two origin requests (two
#     requests for one expiry would show a gap near 0; one per expiry keeps it near TTL). Interleaved,
#     round by round, with the same wrk on a key that stays fresh (max-age=3600): p99 grace vs fresh.
# (a) origin down, then: N keys (`max-age=1, stale-if-error=3600`) are stored, the origin is stopped
#     (its port refuses connections), the entries expire into keep, and wrk cycles over the N keys
#     (scripts/bench/keys.lua) for S seconds: the share of 200s (target 100 %), the non-2xx and socket
#     errors, and edge's stale-if-error count (edge_cache_stale_served_total{reason="error"}) against
#     the requests wrk completed. edge runs at its default log level, so the error log's lines (one
#     per stale-if-error answer, warn) are counted too.
# edge is pinned to CPU 0 with one worker, wrk and the origin to CPU 1 (../shared/peers/README.md).
# Servers listen on 127.0.0.1 only, on free ports, and are stopped by PID on exit. Raw outputs and
# logs: bench-results/<timestamp>-stale/ (bench-results/latest-stale). Exits 1 when a target is missed.
# Needs: wrk, nginx (apt-get install nginx), curl, taskset, ss; ./edge and certs/server.* (make).
# shellcheck disable=SC2317  # cleanup is called through the EXIT trap
set -euo pipefail

usage() {
  sed -n '2,/^# Needs:/p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF
options:
  --duration S      seconds per wrk run (default 10)
  --connections N   wrk connections (default 400)
  --keys N          keys in keep for (a) (default 100)
  --rounds N        grace / fresh rounds for (b), interleaved; medians reported (default 3)
  --edge PATH       edge binary (default ./edge)
environment: TTL (default 1), GRACE (default 10), START_TIMEOUT (default 15),
             EDGE_ARGS (more edge options, split on spaces, e.g. "--log-level error")
EOF
}

die() { echo "stale.sh: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$ROOT/scripts/bench
CERT=certs/server.crt KEY=certs/server.key
SERVER_CPU=0 LOAD_CPU=1
TTL=${TTL:-1} GRACE=${GRACE:-10} START_TIMEOUT=${START_TIMEOUT:-15}
DURATION=10 CONNECTIONS=400 KEYS=100 ROUNDS=3 EDGE=./edge
while (( $# )); do
  case $1 in
    --duration) DURATION=${2:-}; shift 2 || die "--duration needs a value" ;;
    --connections) CONNECTIONS=${2:-}; shift 2 || die "--connections needs a value" ;;
    --keys) KEYS=${2:-}; shift 2 || die "--keys needs a value" ;;
    --rounds) ROUNDS=${2:-}; shift 2 || die "--rounds needs a value" ;;
    --edge) EDGE=${2:-}; shift 2 || die "--edge needs a value" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
for v in DURATION CONNECTIONS KEYS ROUNDS TTL GRACE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number (got '${!v}')"
done
[[ $EDGE == */* ]] || EDGE=./$EDGE
[[ -x $EDGE ]] || die "no edge binary at $EDGE (make edge)"
EDGE=$(readlink -f "$EDGE")
cd "$ROOT"
export PATH=$PATH:/usr/sbin
for tool in wrk nginx curl taskset ss timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs the tools)"
done
(( $(nproc --all) >= 2 )) || die "needs 2 CPUs (edge on CPU $SERVER_CPU, load and origin on CPU $LOAD_CPU)"
[[ -s $CERT && -s $KEY ]] || die "no certificate in certs/ (make certs)"

RUN_ID=$(date +%Y%m%d-%H%M%S)-stale
RESULTS=$ROOT/bench-results/$RUN_ID
mkdir -p "$RESULTS"
ln -sfn "$RUN_ID" "$ROOT/bench-results/latest-stale"
ORUN=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-stale-origin.XXXXXX")
EDGE_PID='' ORIGIN_PID='' LOAD_PID=''

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

# stop PID: SIGTERM, a bounded wait, then SIGKILL; its direct children (nginx's workers) likewise.
stop() {
  local pid=$1 kids k deadline
  [[ -n $pid ]] || return 0
  kids=$(ps --ppid "$pid" -o pid= 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while (( SECONDS < deadline )) && alive "$pid"; do sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
  return 0
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $LOAD_PID ]]; then kill -TERM "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true; fi
  stop "$EDGE_PID"
  stop "$ORIGIN_PID"
  cp "$ORUN/logs/access.log" "$RESULTS/origin.access.log" 2>/dev/null || true
  cp "$ORUN/logs/error.log" "$RESULTS/origin.error.log" 2>/dev/null || true
  rm -rf "$ORUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
# free_port: sets PORT to a free loopback port below the ephemeral range (never one of wrk's own
# sockets).
free_port() {
  local lo p i
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  (( lo > 22000 )) || lo=32768
  for (( i = 0; i < 100; i++ )); do
    p=$((20000 + RANDOM % (lo - 20000)))
    [[ $USED_PORTS == *" $p "* ]] && continue
    [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] || continue
    USED_PORTS+="$p " PORT=$p
    return 0
  done
  return 1
}

# wait_200 URL: until URL answers 200 (bounded by START_TIMEOUT), else fail.
wait_200() {
  local deadline=$((SECONDS + START_TIMEOUT)) code=000
  while (( SECONDS < deadline )); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) || true
    [[ $code == 200 ]] && return 0
    sleep 0.2
  done
  die "$1 did not answer 200 within ${START_TIMEOUT}s (last: $code)"
}

free_port || die "no free port"; OPORT=$PORT
free_port || die "no free port"; EPORT=$PORT
free_port || die "no free port"; APORT=$PORT

start_origin() {
  mkdir -p "$ORUN/logs"
  chmod 755 "$ORUN"
  # shellcheck disable=SC2034  # nginx-common.sh reads run
  local run=$ORUN
  # shellcheck source=scripts/bench/nginx-common.sh
  . "$BENCH_DIR/nginx-common.sh"   # common WORKERS, temp_paths
  { common 1; cat <<CONF
http {
    log_format stale '\$msec \$request_uri \$status';
    access_log $ORUN/logs/access.log stale;
    $temp_paths
    default_type text/plain;
    server {
        listen 127.0.0.1:$OPORT;
        keepalive_timeout 300s;
        keepalive_requests 10000000;
        location /keep/  { add_header Cache-Control "max-age=1, stale-if-error=3600"; return 200 "Hello from edge!"; }
        location = /hot  { add_header Cache-Control "max-age=$TTL, stale-while-revalidate=$GRACE"; return 200 "Hello from edge!"; }
        location = /fresh { add_header Cache-Control "max-age=3600"; return 200 "Hello from edge!"; }
    }
}
CONF
  } >"$ORUN/nginx.conf"
  taskset -c "$LOAD_CPU" nginx -p "$ORUN" -c "$ORUN/nginx.conf" -e "$ORUN/logs/error.log" \
    >"$RESULTS/origin.out" 2>&1 </dev/null &
  ORIGIN_PID=$!
  wait_200 "http://127.0.0.1:$OPORT/fresh"
}

read -r -a EXTRA <<<"${EDGE_ARGS:-}"
start_edge() {
  # taskset and env exec: the PID is edge's own.
  taskset -c "$SERVER_CPU" env "EDGE_ORIGIN=127.0.0.1:$OPORT" "$EDGE" -s lua/proxy.lua -w 1 \
    -l "127.0.0.1:$EPORT" --cert "$CERT" --key "$KEY" --admin "127.0.0.1:$APORT" --access-log off \
    "${EXTRA[@]}" >"$RESULTS/edge.out" 2>"$RESULTS/edge.log" </dev/null &
  EDGE_PID=$!
  wait_200 "https://127.0.0.1:$EPORT/fresh"
}

# metric NAME: a sample of edge's /metrics (0 when absent).
metric() {
  curl -sf --max-time 5 "http://127.0.0.1:$APORT/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { printf "%.0f\n", v }'
}

# wrk's "2.81ms" / "850.00us" / "1.20s" -> milliseconds.
to_ms() {
  awk -v t="$1" 'BEGIN { if (t == "") exit
    n = t + 0; u = t; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) exit
    printf "%.3f\n", n * f }'
}

# run_wrk OUT ARGS...: wrk pinned to LOAD_CPU, bounded; sets W_REQS W_RPS W_P50 W_P99 W_NON2XX W_SOCKERR.
run_wrk() {
  local out=$1; shift
  timeout -k 5 $((DURATION + 60)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" \
    >"$out" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID" || die "wrk failed (see $out)"
  LOAD_PID=''
  W_REQS=$(awk '/ requests in / {print $1; exit}' "$out")
  W_RPS=$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")
  W_P50=$(to_ms "$(awk '$1 == "50%" {print $2; exit}' "$out")")
  W_P99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$out")")
  W_NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$out")
  W_SOCKERR=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$out")
  W_NON2XX=${W_NON2XX:-0} W_SOCKERR=${W_SOCKERR:-0}
}

median() {
  tr ' ' '\n' <<<"$1" | grep -E '^[0-9.]+$' | sort -g |
    awk '{v[NR] = $1} END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

busy=$( { head -1 /proc/stat; sleep 1; head -1 /proc/stat; } | awk '{idle = $5 + $6; t = 0
  for (i = 2; i <= NF; i++) t += $i; if (NR == 1) { i0 = idle; t0 = t } else printf "%.0f", 100 * (1 - (idle - i0) / (t - t0)) }')
{
  echo "edge stale bench $RUN_ID: $EDGE ($(date -r "$EDGE" '+built %F %T')), wrk -t1 -c$CONNECTIONS -d${DURATION}s," \
    "(b) TTL $TTL GRACE $GRACE x $ROUNDS rounds, (a) $KEYS keys"
  echo "edge (lua/proxy.lua, 1 worker) on CPU $SERVER_CPU, wrk and the origin nginx on CPU $LOAD_CPU;" \
    "$(nproc --all) CPUs, ${busy}% busy before start"
  echo "command: ${EDGE_ARGS:+EDGE_ARGS=\"$EDGE_ARGS\" }scripts/bench/stale.sh --duration $DURATION --connections $CONNECTIONS --keys $KEYS --rounds $ROUNDS"
} | tee "$RESULTS/summary.txt"
(( busy < 10 )) || echo "stale.sh: warning: the CPUs were already ${busy}% busy; figures will be noisy" >&2

start_origin
start_edge
MISSED=0

# ---- (b) grace on one hot key, interleaved with a fresh key --------------------------------------
# Before each grace run the key is asked once, so that the run starts with an entry (between runs it
# may have passed its grace): every origin request during the run is then a refresh.
curl -sk -o /dev/null "https://127.0.0.1:$EPORT/fresh"
P99_GRACE='' P99_FRESH='' RPS_GRACE='' RPS_FRESH=''
printf '\n(b) grace: one hot key, max-age=%s, stale-while-revalidate=%s\n' "$TTL" "$GRACE" | tee -a "$RESULTS/summary.txt"
printf '%-6s %-6s %9s %8s %8s %9s %10s %10s %10s %8s %8s\n' round key req/s "p50 ms" "p99 ms" non2xx/err \
  origin-req refreshes stale-grace "min gap" "max gap" | tee -a "$RESULTS/summary.txt"
for (( r = 1; r <= ROUNDS; r++ )); do
  # grace
  curl -sk -o /dev/null "https://127.0.0.1:$EPORT/hot"
  sleep 0.3
  lines0=$(wc -l <"$ORUN/logs/access.log")
  ref0=$(metric edge_cache_refreshes_total)
  st0=$(metric 'edge_cache_stale_served_total{reason="grace"}')
  run_wrk "$RESULTS/grace-r$r.txt" "https://127.0.0.1:$EPORT/hot"
  sleep 0.5   # a refresh that started at the very end reaches the log
  ref1=$(metric edge_cache_refreshes_total)
  st1=$(metric 'edge_cache_stale_served_total{reason="grace"}')
  tail -n +$((lines0 + 1)) "$ORUN/logs/access.log" | awk '$2 == "/hot"' >"$RESULTS/grace-r$r.origin.log"
  n_origin=$(wc -l <"$RESULTS/grace-r$r.origin.log")
  read -r gmin gmax < <(awk 'NR > 1 { g = $1 - p; if (min == "" || g < min) min = g; if (g > max) max = g }
    { p = $1 } END { if (min == "") print "n/a n/a"; else printf "%.3f %.3f\n", min, max }' "$RESULTS/grace-r$r.origin.log")
  printf '%-6s %-6s %9.0f %8s %8s %10s %10s %10s %10s %8s %8s\n' "$r" grace "$W_RPS" "$W_P50" "$W_P99" \
    "$W_NON2XX/$W_SOCKERR" "$n_origin" "$((ref1 - ref0))" "$((st1 - st0))" "$gmin" "$gmax" | tee -a "$RESULTS/summary.txt"
  P99_GRACE+="$W_P99 " RPS_GRACE+="$W_RPS "
  # One origin request per expiry: as many as edge's refreshes, none closer together than ~TTL.
  if (( n_origin != ref1 - ref0 )) || awk -v g="$gmin" -v t="$TTL" 'BEGIN { exit !(g != "n/a" && g < 0.9 * t) }'; then
    echo "MISSED (b) round $r: $n_origin origin requests for $((ref1 - ref0)) refreshes, smallest gap $gmin s" |
      tee -a "$RESULTS/summary.txt"
    MISSED=1
  fi
  (( W_NON2XX == 0 && W_SOCKERR == 0 )) || { echo "MISSED (b) round $r: errors" | tee -a "$RESULTS/summary.txt"; MISSED=1; }
  sleep 1
  # fresh
  run_wrk "$RESULTS/fresh-r$r.txt" "https://127.0.0.1:$EPORT/fresh"
  printf '%-6s %-6s %9.0f %8s %8s %10s\n' "$r" fresh "$W_RPS" "$W_P50" "$W_P99" "$W_NON2XX/$W_SOCKERR" |
    tee -a "$RESULTS/summary.txt"
  P99_FRESH+="$W_P99 " RPS_FRESH+="$W_RPS "
  sleep 1
done
mg=$(median "$P99_GRACE") mf=$(median "$P99_FRESH")
{
  echo "(b) medians: p99 grace $mg ms, fresh $mf ms: ratio $(awk -v a="$mg" -v b="$mf" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }');" \
    "req/s grace $(median "$RPS_GRACE"), fresh $(median "$RPS_FRESH")"
} | tee -a "$RESULTS/summary.txt"

# ---- (a) origin down, entries in keep ------------------------------------------------------------
for (( k = 1; k <= KEYS; k++ )); do
  code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://127.0.0.1:$EPORT/keep/$k") || true
  [[ $code == 200 ]] || die "storing /keep/$k: HTTP $code"
done
stop "$ORIGIN_PID"
ORIGIN_PID=''
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$OPORT/" 2>/dev/null) || true
[[ $code == 000 ]] || die "the origin still answers ($code) after it was stopped"
sleep 1.5   # max-age=1: every entry is past its ttl, in keep
err0=$(metric 'edge_cache_stale_served_total{reason="error"}')
log0=$(wc -l <"$RESULTS/edge.log")
run_wrk "$RESULTS/keep.txt" -s "$BENCH_DIR/keys.lua" "https://127.0.0.1:$EPORT/" -- "$KEYS" /keep/
err1=$(metric 'edge_cache_stale_served_total{reason="error"}')
log1=$(wc -l <"$RESULTS/edge.log")
curl -sk -D "$RESULTS/keep.check" -o /dev/null --max-time 5 "https://127.0.0.1:$EPORT/keep/1" || true
ok=$((W_REQS - W_NON2XX))
share=$(awk -v ok="$ok" -v n="$W_REQS" -v e="$W_SOCKERR" 'BEGIN { if (n + e > 0) printf "%.3f", 100 * ok / (n + e); else print "n/a" }')
{
  echo
  echo "(a) origin down (connections refused), $KEYS keys in keep (max-age=1, stale-if-error=3600):"
  printf '  %s requests in %ss (%.0f req/s, p50 %s ms, p99 %s ms): %s answered 200 = %s %%; non-2xx %s, socket errors %s\n' \
    "$W_REQS" "$DURATION" "$W_RPS" "$W_P50" "$W_P99" "$ok" "$share" "$W_NON2XX" "$W_SOCKERR"
  echo "  edge_cache_stale_served_total{reason=\"error\"} +$((err1 - err0)); error-log lines +$((log1 - log0))" \
    "($(du -h "$RESULTS/edge.log" | cut -f1) in all)"
  echo "  check request: $(tr -d '\r' <"$RESULTS/keep.check" | grep -iE '^(HTTP|x-cache|cache-status)' | paste -sd ' ' -)"
} | tee -a "$RESULTS/summary.txt"
if [[ $share != 100.000 ]]; then
  echo "MISSED (a): $share % of the requests were answered 200" | tee -a "$RESULTS/summary.txt"
  MISSED=1
fi
echo "raw outputs: ${RESULTS#"$ROOT"/}/" | tee -a "$RESULTS/summary.txt"
exit "$MISSED"
