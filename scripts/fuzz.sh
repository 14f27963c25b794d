#!/usr/bin/env bash
# Runs edge's libFuzzer targets (spec/fuzz/README.md) for SECONDS each (default 60)
# and fails on any crash, leak, timeout, out-of-memory or sanitizer report.
#
#   scripts/fuzz.sh [SECONDS]          (make fuzz FUZZ_SECONDS=N runs this)
#
# Builds first (make fuzz-build). Each target starts from a temporary copy of
# its seed corpus (spec/fuzz/corpus/<target>/; the repository's copy is never
# modified) with its dictionary (spec/fuzz/<target>.dict). Prints per target: execs,
# exec/s, coverage (cov/ft from libFuzzer's last status line) and the result.
# Logs: build/fuzz/logs/<target>.log; reproducers: build/fuzz/artifacts/<target>/.
#
# Targets: h1 and h2 run the harness with lua/default.lua; h1-phases and
# h2-phases the same binaries with spec/fuzz/phases.lua (every phase, waits in
# coroutines the script makes, request rewrites, the log phase's tasks).
#
# Environment:
#   FUZZ_TARGETS="h1 h2 h1-phases h2-phases"   which targets
#   FUZZ_PARALLEL=1|0      run targets at the same time, as many as there are
#                          CPUs (default 1)
#   FUZZ_DICT=0            no dictionaries
#   FUZZ_ARGS="..."        extra libFuzzer flags (e.g. -seed=1 -jobs=...)
#   FUZZ_ARTIFACTS=DIR     where crash/leak/timeout inputs go
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

secs=${1:-60}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]   (a whole number of seconds >= 1)" >&2
    exit 2
fi
targets=${FUZZ_TARGETS:-"h1 h2 h1-phases h2-phases"}
parallel=${FUZZ_PARALLEL:-1}
cpus=$(nproc 2>/dev/null || echo 1)
artifacts=${FUZZ_ARTIFACTS:-build/fuzz/artifacts}
logs=build/fuzz/logs

make --no-print-directory fuzz-build || { echo "fuzz: build failed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$logs"

# Sanitizers: stop at the first report, with a stack; leaks are checked per
# input by libFuzzer and once more at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# A target is a harness (h1, h2), optionally with -phases: spec/fuzz/phases.lua as its script.
run_target() {
    local t=$1 h=${1%-phases} bin=build/fuzz/fuzz_${1%-phases}
    local corpus=$work/$t script=
    [ "$t" = "$h" ] || script=$PWD/spec/fuzz/phases.lua
    mkdir -p "$corpus" "$artifacts/$t"
    if [ -d "spec/fuzz/corpus/$h" ]; then cp spec/fuzz/corpus/"$h"/* "$corpus"/ 2>/dev/null; fi
    local dict=()
    if [ "${FUZZ_DICT:-1}" != 0 ] && [ -f "spec/fuzz/$h.dict" ]; then dict=(-dict="spec/fuzz/$h.dict"); fi
    # shellcheck disable=SC2086
    EDGE_FUZZ_SCRIPT=${script:-${EDGE_FUZZ_SCRIPT:-}} "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$t/" "${dict[@]}" ${FUZZ_ARGS:-} "$corpus" \
        >"$logs/$t.log" 2>&1
    echo $? >"$work/$t.rc"
}

echo "fuzz: ${secs}s per target ($targets), $([ "$parallel" = 1 ] && echo "in parallel" || echo "one after the other")"
if [ "$parallel" = 1 ]; then
    running=0
    for t in $targets; do
        if [ "$running" -ge "$cpus" ]; then wait -n; running=$((running - 1)); fi
        run_target "$t" &
        running=$((running + 1))
    done
    wait
else
    for t in $targets; do run_target "$t"; done
fi

# The verdict comes from the exit status and from the log: a sanitizer report
# or a harness check fails the run even if the process somehow exited 0.
verdict() {
    local log=$1 rc=$2
    if grep -q "ERROR: libFuzzer: timeout" "$log"; then echo "FAIL (timeout)"
    elif grep -q -e "ERROR: LeakSanitizer" -e "ERROR: libFuzzer: detected memory leaks" "$log"; then echo "FAIL (leak)"
    elif grep -q -e "ERROR: libFuzzer: out-of-memory" -e "ERROR: libFuzzer: malloc" "$log"; then echo "FAIL (out of memory)"
    elif grep -q "edge-fuzz: BUG" "$log"; then echo "FAIL (harness check: $(grep -m1 -o 'edge-fuzz: BUG: [^(]*' "$log" | sed 's/edge-fuzz: BUG: //; s/ *$//'))"
    elif grep -q "runtime error:" "$log"; then echo "FAIL (undefined behaviour)"
    elif grep -q -e "ERROR: AddressSanitizer" -e "ERROR: libFuzzer: deadly signal" -e "ERROR: libFuzzer:" "$log"; then echo "FAIL (crash)"
    elif [ "$rc" != 0 ]; then echo "FAIL (exit status $rc)"
    elif ! grep -q "^Done [0-9]* runs" "$log"; then echo "FAIL (did not finish)"
    else echo "ok"
    fi
}

status=0
printf '\n%-9s %12s %9s %7s %7s %7s  %s\n' target execs exec/s cov ft corpus result
for t in $targets; do
    log=$logs/$t.log
    rc=$(cat "$work/$t.rc" 2>/dev/null || echo 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    result=$(verdict "$log" "$rc")
    [ "$result" = ok ] || status=1
    printf '%-9s %12s %9s %7s %7s %7s  %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}" "$result"
done

for t in $targets; do
    log=$logs/$t.log
    [ "$(verdict "$log" "$(cat "$work/$t.rc" 2>/dev/null || echo 1)")" = ok ] && continue
    echo
    echo "==== $t: $log (last 80 lines) ===="
    tail -n 80 "$log"
    grep -h -o "Test unit written to .*" "$log" | sed 's/^/reproducer: /'
    script_env=$([ "$t" = "${t%-phases}" ] || echo "EDGE_FUZZ_SCRIPT=spec/fuzz/phases.lua ")
    echo "reproduce: ${script_env}build/fuzz/fuzz_${t%-phases} <reproducer>   (EDGE_FUZZ_DUMP=1 EDGE_FUZZ_LOG_LEVEL=debug for detail)"
done
[ "$status" = 0 ] && echo "fuzz: no findings" || echo "fuzz: FAILED" >&2
exit "$status"
