#!/usr/bin/env bash
# The load of bench.sh's streams25k scenario: CLIENTS HTTP/2 connections that each keep STREAMS
# requests in flight until they have made PER requests, every request on a path never used before.
#   scripts/bench/h2fanout.sh DIR CLIENTS STREAMS PER URL PREFIX
# URL is https://HOST:PORT (no path); paths are PREFIX<n>, n = 1 .. CLIENTS*PER, one per request.
#
# One h2load process per connection (h2load -c1 -mSTREAMS -nPER -i DIR/uris.<c>): h2load walks its
# -i list from the top on every connection, so a single `h2load -c250 -i LIST` sends the same paths
# on all 250 connections (each path 250 times, a cache hit after the first); a list of its own per
# connection is the only way to keep every path unique.
# Starting 250 processes takes a while, and a connection does its requests in milliseconds, so on
# their own they would hardly overlap: bench.sh holds the server (SIGSTOP) until every connection
# waits in its accept queue and then releases it (SIGCONT), so that they all start together.
#
# Writes DIR/out.<c> (h2load's output) and DIR/log.<c> (its per-request log). Exits 1 if any h2load
# exited non-zero (its output says why). bench.sh runs it pinned to the load CPU and bounded by
# `timeout`; the h2load processes inherit the CPU affinity and the process group.
set -euo pipefail
dir=${1:?dir} clients=${2:?clients} streams=${3:?streams} per=${4:?requests per client}
url=${5:?https://host:port} prefix=${6:?path prefix}

mkdir -p "$dir"
# One URI file per connection: the first line carries scheme, host and port (h2load takes them
# from the first URI only), the others are paths.
awk -v c="$clients" -v per="$per" -v url="$url" -v prefix="$prefix" -v dir="$dir" 'BEGIN {
  for (k = 1; k <= c; k++) {
    f = dir "/uris." k
    for (i = 1; i <= per; i++) printf "%s%s%d\n", (i == 1 ? url : ""), prefix, (k - 1) * per + i > f
    close(f)
  }
}'

pids=()
stop() { trap - TERM INT; kill -TERM "${pids[@]}" 2>/dev/null || true; wait; exit 143; }
trap stop TERM INT
for (( k = 1; k <= clients; k++ )); do
  h2load -c1 -m"$streams" -n"$per" --npn-list=h2 -i "$dir/uris.$k" --log-file="$dir/log.$k" \
    >"$dir/out.$k" 2>&1 &
  pids+=($!)
done

rc=0 bad=0
for p in "${pids[@]}"; do wait "$p" || { rc=$?; bad=$((bad + 1)); }; done
rm -f "$dir"/uris.*
if (( bad )); then
  echo "h2fanout: $bad of $clients h2load processes exited non-zero (last status $rc)" >&2
  exit 1
fi
