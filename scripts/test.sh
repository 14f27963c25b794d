#!/usr/bin/env bash
# Runs every spec with busted under Lua 5.4 (run by `make test`, which first
# builds ./edge, build/asan/edge, build/lua/edge.so and certs/server.*):
#   pass 1: all specs (unit + end-to-end) against ./edge
#   pass 2: the end-to-end specs (tag #e2e) against build/asan/edge (ASan+UBSan)
# The last line of output is exactly "N passed, N failed" (errors count as
# failed); the exit status is non-zero on any failure, or when a busted run
# crashed or counted no tests.
#   scripts/test.sh [BUSTED ARGS...]     e.g. scripts/test.sh --filter=pipelin
# Env: EDGE_BIN (pass 1 binary, default ./edge), EDGE_ASAN_BIN (default
# build/asan/edge), EDGE_TEST_PASSES ("release asan", default both).
set -uo pipefail
cd "$(dirname "$0")/.."

export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;"
export LUA_CPATH="build/lua/?.so;;"
# Lua 5.4 prefers the _5_4 variables: keep them in step.
export LUA_PATH_5_4="$LUA_PATH" LUA_CPATH_5_4="$LUA_CPATH"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=67}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-exitcode=68}"

release_bin=${EDGE_BIN:-./edge}
asan_bin=${EDGE_ASAN_BIN:-build/asan/edge}
passes=${EDGE_TEST_PASSES:-release asan}

tmp=$(mktemp -d /tmp/edge-test.XXXXXX)
export EDGE_TEST_TMPDIR=$tmp
cleanup() {
  # Servers a crashed busted run left behind: only the PIDs the spec helper
  # recorded, and only if they are still an edge process.
  if [[ -f $tmp/pids ]]; then
    while read -r pid; do
      if [[ $pid =~ ^[0-9]+$ ]] && grep -qa edge "/proc/$pid/cmdline" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done < "$tmp/pids"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0 failed=0 broken=0

# run_busted LABEL BIN [busted args...]: runs busted, adds its counts.
run_busted() {
  local label=$1 bin=$2; shift 2
  local out=$tmp/busted-$label.out
  echo "== $label: EDGE_BIN=$bin busted $*"
  if [[ ! -x $bin ]]; then
    echo "test.sh: $bin is missing or not executable" >&2
    broken=$((broken + 1)); failed=$((failed + 1))
    return
  fi
  if [[ $label == asan ]] && ! grep -qa __asan_init "$bin"; then
    echo "test.sh: $bin is not built with AddressSanitizer" >&2
    broken=$((broken + 1)); failed=$((failed + 1))
    return
  fi
  local t0=$SECONDS
  EDGE_BIN=$bin timeout -k 10 600 busted --lua=lua5.4 -o plainTerminal "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local summary
  summary=$(grep -aE '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$out" | tail -n 1)
  if [[ -z $summary ]]; then
    echo "test.sh: busted ($label) crashed or timed out (exit $rc), no summary" >&2
    broken=$((broken + 1)); failed=$((failed + 1))
    return
  fi
  local s f e p
  read -r s f e p < <(sed -E 's#^([0-9]+) success(es)? / ([0-9]+) failures? / ([0-9]+) errors? / ([0-9]+) pending.*#\1 \3 \4 \5#' <<<"$summary")
  echo "== $label: $s passed, $((f + e)) failed ($f failures, $e errors, $p pending) in $((SECONDS - t0)) s"
  if (( s + f + e == 0 )); then
    echo "test.sh: busted ($label) ran no tests" >&2
    broken=$((broken + 1)); failed=$((failed + 1))
  fi
  if (( rc != 0 && f + e == 0 )); then
    echo "test.sh: busted ($label) exited $rc with no failures counted" >&2
    broken=$((broken + 1)); failed=$((failed + 1))
  fi
  passed=$((passed + s)); failed=$((failed + f + e))
}

# Options go to busted; paths (spec files or folders) replace the default "spec".
opts=() paths=()
for a in "$@"; do
  if [[ $a == -* ]]; then opts+=("$a"); else paths+=("$a"); fi
done
(( ${#paths[@]} )) || paths=(spec)

for pass in $passes; do
  case $pass in
    release) run_busted release "$release_bin" "${opts[@]}" "${paths[@]}" ;;
    asan)    run_busted asan "$asan_bin" --tags=e2e "${opts[@]}" "${paths[@]}" ;;
    *) echo "test.sh: unknown pass '$pass'" >&2; broken=$((broken + 1)) ;;
  esac
done

# Fuzzing: each libFuzzer target for FUZZ_SECONDS (make test: 60; 0 skips),
# counted as one test per target; any crash, leak or sanitizer report fails.
fuzz_seconds=${FUZZ_SECONDS:-0}
if (( fuzz_seconds > 0 )); then
  echo "== fuzz: scripts/fuzz.sh $fuzz_seconds"
  if scripts/fuzz.sh "$fuzz_seconds"; then
    passed=$((passed + 2))
  else
    echo "test.sh: fuzzing found a problem (build/fuzz/logs/, build/fuzz/artifacts/)" >&2
    failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
(( failed == 0 && broken == 0 ))
