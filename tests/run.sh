#!/bin/sh
# Run every test binary of one or more build directories and print one summary.
#   tests/run.sh [--unit|--integration] BUILD_DIR...
# Each binary is a cmocka program; its "[  PASSED  ] N" / "[  FAILED  ] N"
# lines are added up. A binary that dies without a cmocka summary counts as
# one failure. Integration tests find the broker through GATEMQ_BIN.
kind="test_ it_"
case "$1" in
    --unit) kind="test_"; shift ;;
    --integration) kind="it_"; shift ;;
esac
[ $# -gt 0 ] || set -- build
passed=0; failed=0; failures=""
log=$(mktemp)
for dir in "$@"; do
    for prefix in $kind; do
        for t in "$dir"/tests/"$prefix"*; do
            [ -x "$t" ] || continue
            echo "== $t"
            GATEMQ_BIN="$dir/gatemq" GATEMQ_BUILD="$dir" "$t" >"$log" 2>&1
            rc=$?
            cat "$log"
            p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
            f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
            if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
                f=1
            fi
            passed=$((passed + p)); failed=$((failed + f))
            [ "$f" -gt 0 ] && failures="$failures $t"
        done
    done
done
rm -f "$log"
[ -n "$failures" ] && echo "failing:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
