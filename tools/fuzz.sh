#!/bin/sh
# Build the libFuzzer targets of tests/fuzz/ and run each for a while.
#
#   tools/fuzz.sh BUILD_DIR SECONDS [TARGET...]
#
# TARGET is a name such as fuzz_frame or frame; default: every
# tests/fuzz/fuzz_*.c. Fuzzers go to BUILD_DIR/fuzz/. Each run starts from
# BUILD_DIR/fuzz/corpus/<target>, seeded from the checked-in
# tests/fuzz/corpus/<target> (which runs never modify); inputs that find new
# coverage stay there for the next run. Crashes are written to
# BUILD_DIR/fuzz/crashes/<target>/ and the fuzzer's output to
# BUILD_DIR/fuzz/logs/<target>.log.
#
# Output: one line per target, "fuzz_<name>: N runs, C crashes" (with the
# crash file and the end of the log after a crash), then exactly one summary
# line "fuzz: P passed, F failed". Exit status 0 only if every target built
# and ran without a crash.
#
# Environment: FUZZ_CC (default clang, else clang-14), FUZZ_JOBS (targets run
# at once, default 1), FUZZ_MERGE=1 (first shrink the working corpus to the
# inputs that add coverage), FUZZ_ARGS (extra libFuzzer flags), FUZZ_CFLAGS (extra
# compiler flags, e.g. -fno-sanitize=pointer-overflow to look past a known
# finding while it awaits its fix; use a separate BUILD_DIR for that).
set -u

usage() {
    echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
build=$1
seconds=$2
shift 2
case "$seconds" in '' | *[!0-9]*) usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
out="$build/fuzz"
mkdir -p "$out/logs" || exit 2

if [ -z "${FUZZ_CC:-}" ]; then
    FUZZ_CC=clang
    command -v clang >/dev/null 2>&1 || FUZZ_CC=clang-14
fi

# Sources each target links besides itself: the parsers under test and what
# they need, compiled with the fuzzer's instrumentation.
PROTO="protocol/frame.c protocol/decode.c protocol/encode.c protocol/topic.c"
BASE="broker/alloc.c broker/readfile.c" # allocation wrapper, whole-file reader
sources() {
    case "$1" in
    fuzz_frame) echo "$PROTO" ;;
    fuzz_topic) echo "$PROTO $BASE broker/topictree.c broker/retain.c broker/levelmap.c broker/msg.c auth/acl.c" ;;
    fuzz_acl) echo "$PROTO $BASE auth/acl.c" ;;
    fuzz_config) echo "$PROTO $BASE broker/config.c broker/log.c" ;;
    fuzz_passwd) echo "$BASE auth/passwd.c" ;;
    fuzz_telemetry) echo "$PROTO $BASE broker/telemetry.c" ;;
    *) return 1 ;;
    esac
}
libs() {
    case "$1" in
    fuzz_passwd) echo "-lmbedcrypto" ;;
    fuzz_telemetry) echo "-ljson-c -lm" ;;
    fuzz_topic) echo "-lpthread" ;;
    esac
}

CFLAGS="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
-fno-omit-frame-pointer -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
-I. -Iprotocol -Itests/fuzz ${FUZZ_CFLAGS:-}"

if [ $# -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do
        set -- "$@" "$(basename "$f" .c)"
    done
fi

# Rebuild when the binary is older than any of its inputs.
build_target() {
    t=$1
    bin="$out/$t"
    src="tests/fuzz/$t.c $(sources "$t")"
    stale=1
    if [ -x "$bin" ]; then
        stale=0
        [ "$(cat "$bin.flags" 2>/dev/null)" = "$FUZZ_CC $CFLAGS" ] || stale=1
        for f in $src tests/fuzz/fuzz_util.h protocol/*.h broker/*.h auth/*.h tools/fuzz.sh; do
            [ "$f" -nt "$bin" ] && stale=1 && break
        done
    fi
    [ "$stale" -eq 0 ] && return 0
    # shellcheck disable=SC2086
    $FUZZ_CC $CFLAGS -o "$bin" $src $(libs "$t") >"$out/logs/$t.build.log" 2>&1 || return 1
    echo "$FUZZ_CC $CFLAGS" >"$bin.flags"
}

# Run one target; prints its line and returns non-zero on a crash.
run_target() {
    t=$1
    log="$out/logs/$t.log"
    corpus="$out/corpus/$t"
    crashes="$out/crashes/$t"
    mkdir -p "$corpus" "$crashes"
    if [ -d "tests/fuzz/corpus/$t" ]; then
        cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
    fi
    # The working corpus only grows; FUZZ_MERGE=1 first shrinks it to the
    # inputs that still add coverage.
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        rm -rf "$corpus.merge"
        mkdir -p "$corpus.merge"
        if "$out/$t" -merge=1 -timeout=10 "$corpus.merge" "$corpus" >"$out/logs/$t.merge.log" 2>&1; then
            rm -rf "$corpus"
            mv "$corpus.merge" "$corpus"
        else
            rm -rf "$corpus.merge"
        fi
    fi
    dict=""
    [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
    # shellcheck disable=SC2086
    "$out/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$crashes/" $dict ${FUZZ_ARGS:-} \
        "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=0
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -z "$crash" ]; then
        echo "$t: $runs runs, 0 crashes"
        return 0
    fi
    echo "$t: $runs runs, 1 crashes (exit $rc)"
    [ -n "$crash" ] && echo "$t: crash input: $crash (replay: $out/$t $crash)"
    echo "$t: log $log, last lines:"
    tail -n 25 "$log" | sed "s/^/    /"
    return 1
}

passed=0
failed=0
status="$out/status.$$"
rm -f "$status"
: >"$status"

targets="$*"
pids=""
for t in $targets; do
    t=fuzz_${t#fuzz_}
    if ! sources "$t" >/dev/null || [ ! -f "tests/fuzz/$t.c" ]; then
        echo "$t: unknown target"
        echo fail >>"$status"
        continue
    fi
    if ! build_target "$t"; then
        echo "$t: build failed ($FUZZ_CC with -fsanitize=fuzzer; log $out/logs/$t.build.log):"
        tail -n 15 "$out/logs/$t.build.log" | sed "s/^/    /"
        echo fail >>"$status"
        continue
    fi
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
        # Up to FUZZ_JOBS at once, oldest waited for first; each target's
        # lines are printed together.
        set -- $pids
        if [ $# -ge "$FUZZ_JOBS" ]; then
            wait "$1"
            shift
            pids="$*"
        fi
        (
            if run_target "$t" >"$out/logs/$t.summary"; then r=pass; else r=fail; fi
            cat "$out/logs/$t.summary"
            echo "$r" >>"$status"
        ) &
        pids="$pids $!"
    else
        if run_target "$t"; then echo pass >>"$status"; else echo fail >>"$status"; fi
    fi
done
wait

passed=$(grep -c '^pass$' "$status")
failed=$(grep -c '^fail$' "$status")
rm -f "$status"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
