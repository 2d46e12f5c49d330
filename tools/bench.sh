#!/bin/sh
# Benchmark gatemq against Mosquitto, side by side, on 127.0.0.1.
#
#   tools/bench.sh BUILD_DIR        (what `make bench` runs)
#
# Each broker runs alone, freshly started for every repetition of every
# scenario, so that neither inherits the other's load or the previous run's
# heap. Scenarios are gatemq-bench option sets; every figure is the median of
# BENCH_REPS repetitions. Broker CPU time comes from /proc/PID/stat (utime +
# stime) around the run, divided by the deliveries received; memory per
# connection from the VmRSS delta of BENCH_IDLE idle connections.
#
# Environment: BENCH_REPS (3), BENCH_SECONDS (3: publishing time of each
# throughput run), BENCH_IDLE (10000), BENCH_FANOUT (100), BENCH_ONLY
# ("mosquitto" or "gatemq" to run one broker).
set -u

BUILD=${1:-build}
BENCH=$BUILD/gatemq-bench
GATEMQ=$BUILD/gatemq
MOSQUITTO=/usr/sbin/mosquitto
REPS=${BENCH_REPS:-3}
IDLE=${BENCH_IDLE:-10000}
FANOUT=${BENCH_FANOUT:-100}
SECS=${BENCH_SECONDS:-3}
ONLY=${BENCH_ONLY:-}
RUN_TIMEOUT=180
HZ=$(getconf CLK_TCK)

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$BENCH" ] || die "$BENCH is missing (make B=$BUILD $BENCH)"
[ -x "$MOSQUITTO" ] || die "$MOSQUITTO is missing (apt-get install mosquitto)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gatemq-bench.XXXXXX") || die "mktemp failed"
BROKER_PID=""
cleanup() {
    exec 3>&-
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both brokers and the generator hold one descriptor per idle connection.
# (dash, Debian's sh, has ulimit -n and -H.)
# shellcheck disable=SC3045
ulimit -n "$(ulimit -Hn)" 2>/dev/null
# shellcheck disable=SC3045
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE + 100)) ] ||
    die "open file limit $(ulimit -n) is too low for $IDLE idle connections (BENCH_IDLE)"

# name|metric|gatemq-bench options. "lat" rows report latency percentiles of
# a paced run, "idle" the memory per connection, the others deliveries/s.
# Throughput runs publish for a fixed time rather than a fixed count: the
# brokers differ by an order of magnitude, and a count sized for the slower
# one gives the faster one a run too short for CPU-tick accounting. The
# generator's default bound on outstanding deliveries keeps closed-loop QoS 0
# from overflowing max_queued_messages.
SCENARIOS="one-to-one QoS 0|rate|-q 0 -P 1 -S 1 -d $SECS
one-to-one QoS 1|rate|-q 1 -P 1 -S 1 -d $SECS
one-to-one QoS 2|rate|-q 2 -P 1 -S 1 -d $SECS
fan-in 100-to-1 QoS 0|rate|-q 0 -P 100 -S 1 -d $SECS
fan-out 1-to-$FANOUT QoS 0|rate|-q 0 -P 1 -S $FANOUT -d $SECS
latency 1-to-1 QoS 1 @ 5000 msg/s|lat|-q 1 -P 1 -S 1 -r 5000 -d 5
idle connections ($IDLE)|idle|--idle $IDLE"

# ---- brokers ---------------------------------------------------------------

write_config() { # broker port file
    case $1 in
    mosquitto)
        # TCP_NODELAY: without it Nagle's algorithm and the subscriber's
        # delayed ACK add up to 40 ms to paced QoS 0 deliveries, a socket
        # default rather than a property of the broker.
        cat >"$3" <<EOF
listener $2 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
max_inflight_messages 0
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
connection_messages false
EOF
        ;;
    gatemq)
        cat >"$3" <<EOF
listener $2 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
max_inflight_messages 100
max_connections $((IDLE + 1000))
log_level warning
EOF
        ;;
    esac
}

# Start a broker on a free port; sets BROKER_PID and PORT. Returns non-zero
# (and prints the broker's log) if it does not accept an MQTT session in 5 s.
start_broker() { # broker
    PORT=$("$BENCH" --free-port) || return 1
    write_config "$1" "$PORT" "$TMP/$1.conf"
    case $1 in
    mosquitto) "$MOSQUITTO" -c "$TMP/$1.conf" >"$TMP/$1.log" 2>&1 & ;;
    gatemq) "$GATEMQ" -c "$TMP/$1.conf" >"$TMP/$1.log" 2>&1 & ;;
    esac
    BROKER_PID=$!
    i=0
    while [ $i -lt 50 ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        "$BENCH" -p "$PORT" --idle 1 -d 0 </dev/null >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "bench: $1 did not start on port $PORT; its log:" >&2
    tail -n 20 "$TMP/$1.log" >&2
    stop_broker
    return 1
}

# SIGTERM, then SIGKILL after 5 s: a broker that hangs on shutdown must not
# hang the benchmark.
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill "$BROKER_PID" 2>/dev/null
    i=0
    while kill -0 "$BROKER_PID" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "bench: broker $BROKER_PID ignored SIGTERM for 5 s; killing it" >&2
        kill -9 "$BROKER_PID" 2>/dev/null
    fi
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
}

cpu_ticks() { # utime + stime; comm is cut first since it may hold spaces
    sed 's/^.*) //' "/proc/$BROKER_PID/stat" | awk '{ print $12 + $13 }'
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$BROKER_PID/status"
}

field() { # key, from a SUMMARY line on stdin
    sed -n 's/^SUMMARY.* '"$1"'=\([^ ]*\).*/\1/p'
}

# ---- one repetition --------------------------------------------------------

# Append one line to $TMP/res.<broker>.<scenario>: "OK value [value...] cpu"
# or the failure word. A run that lost messages is never turned into a rate.
run_one() { # broker scenario-index metric options
    out=$TMP/res.$1.$2
    if ! start_broker "$1"; then
        echo "UNAVAILABLE" >>"$out"
        return 1
    fi
    case $3 in
    idle)
        # Warm the broker with one session first, so the delta counts
        # connections rather than first-use allocations.
        "$BENCH" -p "$PORT" --idle 1 -d 0 </dev/null >/dev/null 2>&1
        base=$(rss_kb)
        rm -f "$TMP/hold"
        mkfifo "$TMP/hold"
        # shellcheck disable=SC2086
        timeout $RUN_TIMEOUT "$BENCH" -p "$PORT" $4 <"$TMP/hold" >"$TMP/run.out" 2>&1 &
        gen=$!
        exec 3>"$TMP/hold"
        i=0
        while [ $i -lt 1200 ] && kill -0 $gen 2>/dev/null && ! grep -q '^ready' "$TMP/run.out"; do
            sleep 0.1
            i=$((i + 1))
        done
        if grep -q '^ready' "$TMP/run.out"; then
            sleep 0.5 # let the broker finish whatever follows its CONNACKs
            peak=$(rss_kb)
        else
            peak=""
        fi
        exec 3>&- # EOF: the generator closes its connections and exits
        wait $gen
        rc=$?
        if [ $rc -eq 0 ] && [ -n "$peak" ]; then
            conns=${4#--idle }
            echo "OK $(((peak - base) * 1024 / conns)) -" >>"$out"
        else
            echo "FAIL" >>"$out"
            sed 's/^/    /' "$TMP/run.out" >&2
        fi
        ;;
    *)
        t0=$(cpu_ticks)
        # shellcheck disable=SC2086
        timeout $RUN_TIMEOUT "$BENCH" -p "$PORT" $4 </dev/null >"$TMP/run.out" 2>&1
        rc=$?
        t1=$(cpu_ticks 2>/dev/null)
        result=$(field result <"$TMP/run.out")
        recv=$(field received <"$TMP/run.out")
        if [ -z "$t1" ]; then # the broker died: whatever the generator saw is void
            echo "bench: $1 exited during the run; its log:" >>"$TMP/run.out"
            tail -n 20 "$TMP/$1.log" >>"$TMP/run.out"
            rc=1 result=FAIL
        fi
        if [ $rc -eq 0 ] && [ "$result" = OK ] && [ "${recv:-0}" -gt 0 ]; then
            cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$recv" \
                'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            if [ "$3" = lat ]; then
                echo "OK $(field p50_us <"$TMP/run.out") $(field p99_us <"$TMP/run.out") $(field p999_us <"$TMP/run.out") $cpu" >>"$out"
            else
                echo "OK $(field deliv_rate <"$TMP/run.out") $cpu $(field gen_busy <"$TMP/run.out")" >>"$out"
            fi
        else
            case $result in
            LOST | DUPLICATES | UNACKED) echo "$result" >>"$out" ;;
            *) echo "FAIL" >>"$out" ;;
            esac
            echo "bench: $1, $(echo "$SCENARIOS" | sed -n "${2}p" | cut -d'|' -f1), rep failed:" >&2
            sed 's/^/    /' "$TMP/run.out" >&2
        fi
        ;;
    esac
    stop_broker
    return 0
}

# ---- summary ---------------------------------------------------------------

# Median of column COL over the OK lines of a result file, or the failure
# words with their counts ("LOST 1/3") when any repetition failed.
cell() { # file column
    [ -f "$1" ] || { echo "-"; return; }
    bad=$(grep -v '^OK' "$1" | sort | uniq -c | awk -v t="$(wc -l <"$1")" \
        '{ printf "%s%s %d/%d", sep, $2, $1, t; sep = ", " }')
    if [ -n "$bad" ]; then
        case $bad in UNAVAILABLE*) echo "unavailable" ;; *) echo "$bad" ;; esac
        return
    fi
    awk -v c="$2" '$1 == "OK" { print $c }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m }'
}

fmt() { # number -> rounded, or the word unchanged
    case $1 in
    '' | *[!0-9.]*) echo "$1" ;;
    *) awk -v v="$1" 'BEGIN { if (v >= 100) printf "%.0f", v; else printf "%.2f", v }' ;;
    esac
}

ratio() { # gatemq mosquitto
    case "$1$2" in
    *[!0-9.]*) echo "-" ;;
    *) awk -v g="$1" -v m="$2" 'BEGIN { if (m > 0) printf "%.2f", g / m; else print "-" }' ;;
    esac
}

row() { # scenario metric mosq gatemq mosq-cpu gatemq-cpu
    printf "%-34s %-14s %12s %12s %7s %9s %9s\n" "$1" "$2" "$(fmt "$3")" "$(fmt "$4")" \
        "$(ratio "$4" "$3")" "$(fmt "$5")" "$(fmt "$6")"
}

# ---- main ------------------------------------------------------------------

BROKERS="mosquitto gatemq"
[ -n "$ONLY" ] && BROKERS=$ONLY
gatemq_ok=1
if echo "$BROKERS" | grep -q gatemq && [ ! -x "$GATEMQ" ]; then
    echo "bench: $GATEMQ is missing; gatemq's figures are marked unavailable" >&2
    gatemq_ok=0
fi

echo "gatemq benchmark: $REPS repetition(s) per figure, median shown"
echo "  host:      $(nproc) CPU(s), $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
echo "  mosquitto: $("$MOSQUITTO" -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -n 1)"
echo

start=$(date +%s)
for broker in $BROKERS; do
    idx=0
    # fd 4, not a pipe: a pipeline would run the loop in a subshell, out of
    # reach of the EXIT trap that stops a broker left running.
    while IFS='|' read -r name metric opts <&4; do
        idx=$((idx + 1))
        if [ "$broker" = gatemq ] && [ $gatemq_ok = 0 ]; then
            echo "UNAVAILABLE" >"$TMP/res.$broker.$idx"
            continue
        fi
        printf "  %-9s %-34s" "$broker" "$name" >&2
        rep=0
        while [ $rep -lt "$REPS" ]; do
            if ! run_one "$broker" $idx "$metric" "$opts"; then
                # A broker that will not start is reported once, not per run.
                [ "$broker" = gatemq ] && gatemq_ok=0
                break
            fi
            rep=$((rep + 1))
            printf " %s" "$(tail -n 1 "$TMP/res.$broker.$idx" | cut -d' ' -f1-2)" >&2
        done
        echo >&2
    done 4<<EOF
$SCENARIOS
EOF
done
echo "  (took $(($(date +%s) - start)) s)" >&2
echo

printf "%-34s %-14s %12s %12s %7s %9s %9s\n" scenario metric mosquitto gatemq ratio \
    "mosq-cpu" "gmq-cpu"
printf "%-34s %-14s %12s %12s %7s %9s %9s\n" "" "" "" "" "g/m" "us/msg" "us/msg"
idx=0
while IFS='|' read -r name metric opts <&4; do
    idx=$((idx + 1))
    m=$TMP/res.mosquitto.$idx
    g=$TMP/res.gatemq.$idx
    case $metric in
    rate)
        row "$name" "deliveries/s" "$(cell "$m" 2)" "$(cell "$g" 2)" "$(cell "$m" 3)" "$(cell "$g" 3)"
        for br in mosquitto gatemq; do
            busy=$(cell "$TMP/res.$br.$idx" 4)
            case $busy in
            '' | *[!0-9.]*) ;;
            *) awk -v b="$busy" 'BEGIN { exit !(b > 0.9) }' &&
                echo "$br: $name: generator at $busy of a core; the broker may be faster" >>"$TMP/notes" ;;
            esac
        done
        ;;
    lat)
        row "$name" "p50 us" "$(cell "$m" 2)" "$(cell "$g" 2)" "$(cell "$m" 5)" "$(cell "$g" 5)"
        row "" "p99 us" "$(cell "$m" 3)" "$(cell "$g" 3)" "" ""
        row "" "p99.9 us" "$(cell "$m" 4)" "$(cell "$g" 4)" "" ""
        ;;
    idle) row "$name" "bytes/conn" "$(cell "$m" 2)" "$(cell "$g" 2)" "" "" ;;
    esac
done 4<<EOF
$SCENARIOS
EOF
echo
[ -f "$TMP/notes" ] && cat "$TMP/notes"
echo "ratio g/m: gatemq / mosquitto; above 1 is better for deliveries/s, below 1 for"
echo "latency, bytes/conn and CPU. CPU us/msg: broker utime+stime per delivery."
