#!/usr/bin/env bash
# Issue 14's targets: what the phases cost on the hot path (one cached URL, wrk -t1 -cN --latency).
#   scripts/bench/phases.sh [--duration S] [--connections N] [--rounds N] [--edge PATH] [--baseline PATH]
# Servers, all started together, each pinned to CPU 0 with one worker (the load on CPU 1):
#   edge          ./edge running lua/default.lua (no new phase)
#   edge-access   ./edge running lua/examples/ratelimit.lua: default.lua plus an access hook doing one
#                 shared-dictionary rate-limit check per request (edge.limit.req by client address, at
#                 RATELIMIT_RATE / RATELIMIT_BURST = 1e9: a rate the load never reaches, so every request
#                 pays the check and none is delayed or refused)
#   baseline      (with --baseline) another edge binary running lua/default.lua: the build before
#                 the phases, for "a script with no new phases is unchanged"
# Each round runs wrk once on every server, in turn; the medians over the rounds of requests per
# server CPU-second (requests completed / the server's user+sys CPU over the run) and p99 are
# printed, then the ratios edge-access/edge (target >= 0.9) and edge/baseline (target >= 0.98): of the
# medians, and the median of the ratios within each round (robust to a machine that drifts).
# Servers listen on 127.0.0.1 only, on free ports, and are stopped by PID on exit.
# Needs: wrk, taskset, curl; ./edge and certs/server.* (make).
set -euo pipefail

die() { echo "phases.sh: $*" >&2; exit 1; }
DURATION=10 CONNECTIONS=400 ROUNDS=3 EDGE=./edge BASELINE=
while (( $# )); do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --edge) EDGE=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^# Needs:/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EDGE=$(readlink -f "$EDGE")
[[ -z $BASELINE ]] || BASELINE=$(readlink -f "$BASELINE")
cd "$ROOT"
for tool in wrk taskset curl; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ -x $EDGE ]] || die "no edge binary at $EDGE (make)"
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/edge-phases.XXXXXX")

declare -A PID PORT
NAMES=(edge edge-access)
[[ -z $BASELINE ]] || NAMES+=(baseline)

cleanup() {
  for n in "${!PID[@]}"; do kill "${PID[$n]}" 2>/dev/null || true; done
  for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  local name=$1 bin=$2 script=$3 port
  port=$(free_port)
  RATELIMIT_RATE=1e9 RATELIMIT_BURST=1e9 taskset -c 0 "$bin" -s "$script" -w 1 -l "127.0.0.1:$port" --cert certs/server.crt --key certs/server.key \
    --log-level warn --access-log off >"$OUT/$name.log" 2>&1 &
  PID[$name]=$! PORT[$name]=$port
  for _ in $(seq 100); do
    curl -skf -o /dev/null "https://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  die "$name did not answer on port $port: $(tail -3 "$OUT/$name.log")"
}

ticks() { local f; read -r -a f < <(sed 's/^.*) //' "/proc/$1/stat"); echo $((f[11] + f[12])); }

# run NAME ROUND: one wrk run; appends "rps_per_cpu p99_ms" to $OUT/NAME.runs
run() {
  local name=$1 t0 t1 out reqs p99
  t0=$(ticks "${PID[$name]}")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "https://127.0.0.1:${PORT[$name]}/")
  t1=$(ticks "${PID[$name]}")
  echo "$out" >"$OUT/$name.wrk.$2"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  grep -q "Non-2xx" <<<"$out" && die "$name: non-2xx answers: $out"
  awk -v r="$reqs" -v c="$((t1 - t0))" -v hz="$TICK" -v p="$p99" \
    'BEGIN { printf "%.0f %s\n", r / (c / hz), p }' >>"$OUT/$name.runs"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

start edge "$EDGE" lua/default.lua
start edge-access "$EDGE" lua/examples/ratelimit.lua
[[ -z $BASELINE ]] || start baseline "$BASELINE" lua/default.lua
# Each round starts with the next server (a rotation), so that none always runs first or last.
for r in $(seq "$ROUNDS"); do
  for i in $(seq 0 $((${#NAMES[@]} - 1))); do
    run "${NAMES[$(( (i + r) % ${#NAMES[@]} ))]}" "$r"
  done
done
printf '%-12s %16s %9s   (medians of %d rounds, %d s each, %d connections)\n' server "req/CPU-s" "p99 ms" \
  "$ROUNDS" "$DURATION" "$CONNECTIONS"
declare -A MED
for n in "${NAMES[@]}"; do
  MED[$n]=$(cut -d' ' -f1 "$OUT/$n.runs" | median)
  printf '%-12s %16s %9s   runs: %s\n' "$n" "${MED[$n]}" "$(cut -d' ' -f2 "$OUT/$n.runs" | median)" \
    "$(cut -d' ' -f1 "$OUT/$n.runs" | paste -sd' ')"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# round_ratios A B: the median of A/B within each round (the two ran minutes apart at most, so a
# machine whose speed drifts over the run moves both), and the rounds' ratios.
round_ratios() {
  local r
  r=$(paste -d' ' <(cut -d' ' -f1 "$OUT/$1.runs") <(cut -d' ' -f1 "$OUT/$2.runs") |
      awk '{ printf "%.3f\n", $1 / $2 }')
  echo "$(median <<<"$r")x per round (rounds: $(paste -sd' ' <<<"$r"))"
}
echo "edge-access / edge: $(ratio "${MED[edge-access]}" "${MED[edge]}")x of the medians, $(round_ratios edge-access edge); target >= 0.9"
[[ -z $BASELINE ]] || echo "edge / baseline:    $(ratio "${MED[edge]}" "${MED[baseline]}")x of the medians, $(round_ratios edge baseline); target >= 0.98"
echo "raw outputs: $OUT"
