#!/usr/bin/env bash
# Does purging 100,000 entries by tag stall the workers? (issue 13, point 4)
#   scripts/bench/purge.sh [ENTRIES [SECONDS]]          defaults: 100000 10
# Env: EDGE_BIN (default ./edge), WORKERS (2), CONNECTIONS (50), THREADS (1), ROUNDS (3),
#      SOFT (1: a soft purge, &soft=1, instead of a hard one).
#
# Starts edge and nothing else: a cleartext listener, --admin, a 1 GiB cache and
# scripts/bench/purge_app.lua. Each round:
#   1. fills ENTRIES entries /bench/1.. that share the tag "bench" (the app's /fill:
#      edge.cache.set in a loop, 20,000 per request: the same C store as a response's,
#      without 100,000 round trips), and checks edge_cache_entries on /metrics;
#   2. baseline: wrk --latency for SECONDS on /hit, a cached hit; no purge;
#   3. refills (step 1), then the same wrk run with PURGE /cache?tag=bench sent to the
#      admin listener SECONDS/2 into it (a soft purge leaves the entries stale, held:
#      the next fill replaces them).
# Prints per run wrk's requests/s, p99 and max latency, and the purge's count and
# duration (edge's own log line, and curl's total time for the admin request); then the
# medians over the rounds (baseline and purge runs alternate, so load from elsewhere on
# the machine falls on both). A purge that stalled the workers would show as a max
# latency of about the purge's duration in every purge run.
set -euo pipefail
cd "$(dirname "$0")/../.."
entries=${1:-100000} secs=${2:-10}
edge=${EDGE_BIN:-./edge} workers=${WORKERS:-2} conns=${CONNECTIONS:-50} threads=${THREADS:-1}
rounds=${ROUNDS:-3} kind=hard query=
[[ ${SOFT:-0} == 1 ]] && kind=soft query="&soft=1"
for tool in wrk curl awk; do
  command -v "$tool" >/dev/null || { echo "purge.sh: $tool is needed" >&2; exit 1; }
done
[[ -x $edge ]] || { echo "purge.sh: no edge binary at $edge (make edge)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/edge-purge-bench.XXXXXX)
edge_pid=
cleanup() {
  if [[ -n $edge_pid ]]; then kill -TERM "$edge_pid" 2>/dev/null || true; wait "$edge_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$edge" -s scripts/bench/purge_app.lua --listen-plain 127.0.0.1:0 --admin 127.0.0.1:0 -w "$workers" \
  --cache-size 1g --access-log off --lua-budget 100000000 2>"$tmp/edge.log" &
edge_pid=$!
port= aport=
for _ in $(seq 100); do       # the ports edge picked, from its log (at most 10 s)
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) cleartext.*/\1/p' "$tmp/edge.log" | head -1)
  aport=$(sed -n 's|.*admin listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/edge.log" | head -1)
  [[ -n $port && -n $aport ]] && break
  kill -0 "$edge_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $port || -z $aport ]]; then
  echo "purge.sh: edge did not come up:" >&2; cat "$tmp/edge.log" >&2; exit 1
fi
base=http://127.0.0.1:$port admin=http://127.0.0.1:$aport

metric() { curl -sf "$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

fill() {
  local from=1 stored=0 n got t0=$SECONDS
  while (( from <= entries )); do
    n=$(( entries - from + 1 < 20000 ? entries - from + 1 : 20000 ))
    got=$(curl -sf --max-time 60 "$base/fill?from=$from&n=$n&tag=bench")
    stored=$((stored + got)) from=$((from + n))
  done
  (( stored == entries )) || { echo "purge.sh: stored $stored of $entries entries" >&2; exit 1; }
  echo "  filled $entries entries tagged \"bench\" in $((SECONDS - t0)) s; edge_cache_entries $(metric edge_cache_entries)"
}

# wrk's requests/s, p99 and max latency (in ms) from its --latency output: "RPS P99 MAX".
numbers() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000
                        return v }
       $1 == "Latency" && max == "" { max = ms($4) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
       END { printf "%.0f %.2f %.2f\n", rps, p99, max }' "$1"
}
summary() { numbers "$1" | awk '{ printf "req/s %s  p99 %s ms  max %s ms", $1, $2, $3 }'; }
# The median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

wrk_run() { wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$base/hit" >"$1" 2>&1; }

echo "edge -w $workers on $base (admin $admin); wrk -t$threads -c$conns -d${secs}s --latency $base/hit"
curl -sf -o /dev/null "$base/hit"                  # stored: every wrk request is a hit
for (( r = 1; r <= rounds; r++ )); do
  echo "round $r"
  fill
  wrk_run "$tmp/wrk-base"
  echo "  baseline (no purge):   $(summary "$tmp/wrk-base")"
  numbers "$tmp/wrk-base" >>"$tmp/all-base"
  fill
  wrk_run "$tmp/wrk-purge" &
  wrk_pid=$!
  sleep "$(awk -v s="$secs" 'BEGIN { print s / 2 }')"
  curl_time=$(curl -s --max-time 120 -o "$tmp/purge.json" -w '%{time_total}' -X PURGE "$admin/cache?tag=bench$query")
  wait "$wrk_pid"
  echo "  with the purge:        $(summary "$tmp/wrk-purge")"
  numbers "$tmp/wrk-purge" >>"$tmp/all-purge"
  echo "  purge: $(cat "$tmp/purge.json" | tr -d '\n') in ${curl_time} s (curl); edge: $(grep "admin: $kind purge by tag" "$tmp/edge.log" | tail -1 | sed 's/.*admin: //')"
  grep "admin: $kind purge by tag" "$tmp/edge.log" | tail -1 | sed 's/.* in \([0-9.]*\) ms$/\1/' >>"$tmp/all-ms"
  echo "  edge_cache_entries after: $(metric edge_cache_entries)"
done
if (( rounds > 1 )); then
  col() { awk -v c="$1" '{ print $c }' "$2" | median; }
  echo "medians of $rounds rounds:"
  echo "  baseline:       req/s $(col 1 "$tmp/all-base")  p99 $(col 2 "$tmp/all-base") ms  max $(col 3 "$tmp/all-base") ms"
  echo "  with the purge: req/s $(col 1 "$tmp/all-purge")  p99 $(col 2 "$tmp/all-purge") ms  max $(col 3 "$tmp/all-purge") ms"
  echo "  purge of $entries entries by tag: $(median <"$tmp/all-ms") ms (edge's log)"
fi
