#!/bin/sh
# Benchmark gatemq against Mosquitto, side by side, on 127.0.0.1.
#
#   tools/bench.sh BUILD_DIR        (what `make bench` runs)
#
# Each broker runs alone, freshly started for every repetition of every
# scenario, so that neither inherits the other's load or the previous run's
# heap. Scenarios are gatemq-bench option sets; every figure is the median of
# BENCH_REPS repetitions. Broker CPU time comes from /proc/PID/stat (utime +
# stime) around the run, divided by the deliveries received (publishes
# acknowledged, handshakes completed); memory per connection from the VmRSS
# delta of BENCH_IDLE idle connections. Handshake rows also show the broker's
# cores used: its CPU seconds over the seconds of the handshakes.
#
# Scenario groups (BENCH_GROUPS, all by default):
#   plain     plain TCP throughput, fan-out to BENCH_FANOUT and BENCH_FANOUT_BIG,
#             latency at 1k, 10k and 50k msg/s, BENCH_IDLE idle connections
#   tls       TLS 1.2: one-to-one QoS 0, full and resumed handshakes,
#             BENCH_TLS_IDLE idle TLS connections (a CA and server
#             certificate from gatemq-cert)
#   idle      BENCH_IDLE_BIG idle TCP and BENCH_TLS_IDLE_BIG idle TLS
#             connections (rows whose connections exceed the open file
#             limit say "skipped")
#   storm     BENCH_STORM TLS clients connecting at once, full handshakes:
#             time from the first connect to the last CONNACK
#   durable   QoS 1 retained publishes acknowledged per second, in memory and
#             persisted (gatemq persistence_sync normal and full; Mosquitto
#             persistence with a snapshot after every change)
#   startup   time from process start to the first SUBACK with
#             BENCH_RETAINED retained messages in the persistence file
#   acl       one-to-one QoS 0 and 1 of password users, without and with an
#             ACL file of 10,000 rules (1000 companies x 10)
#   telemetry gatemq only (Mosquitto has no telemetry hook): QoS 1 publishes
#             acknowledged per second of one TLS device, JSON readings, to a
#             plain topic and to a telemetry topic with the outbox draining to
#             a file and to InfluxDB (a private influxd); backlog and drain
#             time of the sink
#
# Environment: BENCH_REPS (5), BENCH_SECONDS (3: publishing time of each
# throughput run), BENCH_LAT_SECONDS (5: of the 1k and 10k msg/s latency
# runs; the 50k one takes 2 s), BENCH_FANOUT (100), BENCH_FANOUT_BIG (1000,
# publishing for 1 s), BENCH_IDLE (10000), BENCH_IDLE_BIG (50000),
# BENCH_TLS_IDLE (10000), BENCH_TLS_IDLE_BIG (50000), BENCH_ONLY
# ("mosquitto" or "gatemq" to run one broker), BENCH_GROUPS (see above),
# BENCH_HANDSHAKES (500 full; resumed: 20 times as many), BENCH_STORM (5000),
# BENCH_HS_PROCS (2: generator processes of the handshake and storm rows),
# BENCH_RETAINED (200000), BENCH_RETAIN_TOPICS (1000: topics the durable
# publisher cycles over), INFLUXD (/usr/bin/influxd, for the telemetry
# group's InfluxDB sink; the row says "unavailable" without it).
set -u

BUILD=${1:-build}
BENCH=$BUILD/gatemq-bench
GATEMQ=$BUILD/gatemq
MOSQUITTO=/usr/sbin/mosquitto
REPS=${BENCH_REPS:-5}
IDLE=${BENCH_IDLE:-10000}
IDLE_BIG=${BENCH_IDLE_BIG:-50000}
FANOUT=${BENCH_FANOUT:-100}
FANOUT_BIG=${BENCH_FANOUT_BIG:-1000}
SECS=${BENCH_SECONDS:-3}
LAT_SECS=${BENCH_LAT_SECONDS:-5}
ONLY=${BENCH_ONLY:-}
BGROUPS=${BENCH_GROUPS:-plain tls idle storm durable startup acl telemetry}
TLS_IDLE=${BENCH_TLS_IDLE:-10000}
TLS_IDLE_BIG=${BENCH_TLS_IDLE_BIG:-50000}
HANDSHAKES=${BENCH_HANDSHAKES:-500}
STORM=${BENCH_STORM:-5000}
HS_PROCS=${BENCH_HS_PROCS:-2}
RETAINED=${BENCH_RETAINED:-200000}
RETAIN_TOPICS=${BENCH_RETAIN_TOPICS:-1000}
INFLUXD=${INFLUXD:-/usr/bin/influxd}
DRAIN_TIMEOUT=60 # seconds the telemetry sink gets to empty the outbox
PASSWD_TOOL=$BUILD/gatemq-passwd
CERT_TOOL=$(dirname "$0")/gatemq-cert
RUN_TIMEOUT=180
STOP_WAIT=50 # tenths of a second a broker gets to exit after SIGTERM
HZ=$(getconf CLK_TCK)

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$BENCH" ] || die "$BENCH is missing (make B=$BUILD $BENCH)"
in_groups() { case " $BGROUPS " in *" $1 "*) return 0 ;; esac; return 1; }
for g in $BGROUPS; do
    case $g in plain | tls | idle | storm | durable | startup | acl | telemetry) ;; *) die "unknown group '$g' in BENCH_GROUPS" ;; esac
done
if in_groups acl; then
    [ -x "$PASSWD_TOOL" ] || die "$PASSWD_TOOL is missing (make B=$BUILD $PASSWD_TOOL), or leave acl out of BENCH_GROUPS"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gatemq-bench.XXXXXX") || die "mktemp failed"
BROKER_PID=""
IX_PID=""
cleanup() {
    exec 3>&-
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    [ -n "$IX_PID" ] && kill "$IX_PID" 2>/dev/null && wait "$IX_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both brokers and the generator hold one descriptor per idle connection:
# raise the hard limit to the largest row's need where that is allowed
# (root with CAP_SYS_RESOURCE), then the soft limit to the hard one. A row
# that needs more than the limit then says "skipped" (run_one). (dash,
# Debian's sh, has ulimit -n and -H.)
MAXCONN=$IDLE
for n in $IDLE_BIG $TLS_IDLE $TLS_IDLE_BIG $STORM $FANOUT_BIG; do
    [ "$n" -gt "$MAXCONN" ] && MAXCONN=$n
done
# shellcheck disable=SC3045
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $((MAXCONN + 100)) ]; then
    # shellcheck disable=SC3045
    ulimit -Hn $((MAXCONN + 100)) 2>/dev/null
fi
# shellcheck disable=SC3045
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# name|metric|variant|gatemq-bench options. "lat" rows report latency
# percentiles of a paced run, "idle" the memory per connection, "rate"
# deliveries/s, "pub" acknowledged publishes/s, "hs" handshakes/s, "storm"
# the time from the first connect to the last CONNACK, "startup" the time to
# the first SUBACK. The variant selects the broker configuration
# (write_config) and the group the scenario belongs to.
# Throughput runs publish for a fixed time rather than a fixed count: the
# brokers differ by an order of magnitude, and a count sized for the slower
# one gives the faster one a run too short for CPU-tick accounting. The
# generator's default bound on outstanding deliveries keeps closed-loop QoS 0
# from overflowing max_queued_messages.
PKI=$TMP/pki
DB=$TMP/db
TLS="--tls --cafile $PKI/ca.crt --servername localhost"
USER_OPTS="-u bench --password bench-password -t bench/acl"
# Telemetry: one device of company acme (certificate CN gw-0001, so client id
# gw-0001), JSON readings, QoS 1, window 64, cycling over 1000 topics under
# its prefix: InfluxDB keeps one point per series (tags company, device,
# topic) and millisecond, so one topic at tens of thousands of points/s
# would collapse most points into one; 1000 topics keep every point apart
# up to 1M msg/s and make the count in the database a loss check. Only the
# publisher side is measured (-S 0): the hook sits between PUBLISH and
# PUBACK, and the sink's count, not a subscriber, checks that every
# acknowledged reading became a point.
DEV_OPTS="--tls --cafile $PKI/ca.crt --servername localhost --cert $PKI/device.crt --key $PKI/device.key --client-id gw-0001 --json-payload -q 1 -w 64 -P 1 -S 0 --topics 1000 -d $SECS"
ALL_SCENARIOS="one-to-one QoS 0|rate|plain|-q 0 -P 1 -S 1 -d $SECS
one-to-one QoS 1|rate|plain|-q 1 -P 1 -S 1 -d $SECS
one-to-one QoS 2|rate|plain|-q 2 -P 1 -S 1 -d $SECS
fan-in 100-to-1 QoS 0|rate|plain|-q 0 -P 100 -S 1 -d $SECS
fan-out 1-to-$FANOUT QoS 0|rate|plain|-q 0 -P 1 -S $FANOUT -d $SECS
fan-out 1-to-$FANOUT_BIG QoS 0|rate|plain|-q 0 -P 1 -S $FANOUT_BIG -d 1
latency 1-to-1 QoS 1 @ 1000 msg/s|lat|plain|-q 1 -P 1 -S 1 -r 1000 -d $LAT_SECS
latency 1-to-1 QoS 1 @ 10000 msg/s|lat|plain|-q 1 -P 1 -S 1 -r 10000 -d $LAT_SECS
latency 1-to-1 QoS 1 @ 50000 msg/s|lat|plain|-q 1 -P 1 -S 1 -r 50000 -d 2
idle connections ($IDLE)|idle|plain|--idle $IDLE
TLS one-to-one QoS 0|rate|tls|-q 0 -P 1 -S 1 -d $SECS $TLS
TLS full handshake+CONNECT|hs|tls|--handshakes $HANDSHAKES -c 16 --procs $HS_PROCS $TLS
TLS resumed handshake+CONNECT|hs|tls|--handshakes $((HANDSHAKES * 20)) -c 16 --procs $HS_PROCS --resume $TLS
idle TLS connections ($TLS_IDLE)|idle|tls|--idle $TLS_IDLE --resume $TLS
idle connections ($IDLE_BIG)|idle|idle-plain|--idle $IDLE_BIG
idle TLS connections ($TLS_IDLE_BIG)|idle|idle-tls|--idle $TLS_IDLE_BIG --resume $TLS
reconnect storm, $STORM TLS clients|storm|storm|--handshakes $STORM -c $STORM --procs $HS_PROCS -T $RUN_TIMEOUT $TLS
retained QoS 1, in memory|pub|plain|-q 1 -P 1 -S 0 --retain --topics $RETAIN_TOPICS -d $SECS
retained QoS 1, durable (normal)|pub|durable-normal|-q 1 -P 1 -S 0 --retain --topics $RETAIN_TOPICS -d $SECS
retained QoS 1, durable (full)|pub|durable-full|-q 1 -P 1 -S 0 --retain --topics $RETAIN_TOPICS -d $SECS
start with $RETAINED retained|startup|startup|--startup 120
users, no ACL, QoS 0|rate|users|-q 0 -P 1 -S 1 -d $SECS $USER_OPTS
users, 10k-rule ACL, QoS 0|rate|acl|-q 0 -P 1 -S 1 -d $SECS $USER_OPTS
users, no ACL, QoS 1|rate|users|-q 1 -P 1 -S 1 -d $SECS $USER_OPTS
users, 10k-rule ACL, QoS 1|rate|acl|-q 1 -P 1 -S 1 -d $SECS $USER_OPTS
(a) QoS 1 to bench/, hook idle|tele|tele-off|$DEV_OPTS -t bench/gw-0001
(b) telemetry/, file sink|tele|tele-file|$DEV_OPTS -t telemetry/gw-0001
(c) telemetry/, InfluxDB sink|tele|tele-influx|$DEV_OPTS -t telemetry/gw-0001
(d) sink down, then file|tele|tele-down-file|$DEV_OPTS -t telemetry/gw-0001
(e) sink down, then InfluxDB|tele|tele-down-influx|$DEV_OPTS -t telemetry/gw-0001
(r) retained to bench/ (reference)|tele|tele-retained|$DEV_OPTS -t bench/gw-0001 --retain"

group_of() { # variant
    case $1 in
    idle-*) echo idle ;;
    durable-*) echo durable ;;
    users | acl) echo acl ;;
    tele-*) echo telemetry ;;
    *) echo "$1" ;;
    esac
}

# The scenarios of the groups asked for, in order.
SCENARIOS=$(echo "$ALL_SCENARIOS" | while IFS='|' read -r name metric variant opts; do
    in_groups "$(group_of "$variant")" && echo "$name|$metric|$variant|$opts"
done)
[ -n "$SCENARIOS" ] || die "BENCH_GROUPS '$BGROUPS' selects no scenario"
# Scenarios for both brokers; the telemetry ones are gatemq's alone.
if echo "$SCENARIOS" | grep -qv '|tele-'; then
    [ -x "$MOSQUITTO" ] || die "$MOSQUITTO is missing (apt-get install mosquitto)"
    BOTH=1
else
    BOTH=0
fi

# ---- material: certificates, users, ACL files -----------------------------

# One CA and a server certificate for localhost (EC P-256, gatemq-cert's
# default), used by both brokers. Mosquitto reads its key after it dropped
# root for the mosquitto user, hence the readable copies.
make_pki() {
    sh "$CERT_TOOL" ca "$PKI/ca" >/dev/null &&
        sh "$CERT_TOOL" server "$PKI/ca" localhost --ip 127.0.0.1 >/dev/null || return 1
    cp "$PKI/ca/ca.crt" "$PKI/ca/server.crt" "$PKI/ca/server.key" "$PKI/"
    chmod 0644 "$PKI/server.key"
}

# The telemetry group's device: company acme (subject O), device gw-0001 (CN).
make_device() {
    sh "$CERT_TOOL" device "$PKI/ca" acme gw-0001 >/dev/null || return 1
    cp "$PKI/ca/devices/acme/gw-0001.crt" "$PKI/device.crt" &&
        cp "$PKI/ca/devices/acme/gw-0001.key" "$PKI/device.key"
}

# Password user "bench" (both brokers read the $7$ format) and, for the ACL
# runs, 10,000 rules in 1000 companies: every company's devices get ten rules,
# and user bench, in the last company, has ten rules of which the tenth
# allows its topics: each check scans the user's section to its end. The
# Mosquitto file has the same shape: 1000 users of ten rules, then bench.
make_acl() {
    "$PASSWD_TOOL" -c -b "$TMP/passwd" bench bench-password >/dev/null || return 1
    awk 'BEGIN {
        for (c = 0; c < 1000; c++) {
            printf "company c%04d\n  devices\n", c
            printf "    read   config/%%d/#\n    read   firmware/%%d/#\n"
            printf "    write  telemetry/%%d/#\n    write  status/%%d\n"
            printf "    read   config/line-%d/#\n    deny   write telemetry/%%d/locked/#\n", c
            printf "    read   broadcast/c%04d/#\n    read   time/#\n", c
            printf "    write  events/%%d/#\n    readwrite shared/c%04d/%%d/#\n", c
            if (c == 999) {
                printf "  user bench\n"
                for (r = 0; r < 9; r++)
                    printf "    readwrite bench/other-%d/#\n", r
                printf "    readwrite bench/#\n"
            }
        }
    }' >"$TMP/gatemq.acl"
    awk 'BEGIN {
        for (c = 0; c < 1000; c++) {
            printf "user dev-c%04d\n", c
            printf "topic read config/dev-c%04d/#\ntopic read firmware/dev-c%04d/#\n", c, c
            printf "topic write telemetry/dev-c%04d/#\ntopic write status/dev-c%04d\n", c, c
            printf "topic read config/line-%d/#\ntopic deny telemetry/dev-c%04d/locked/#\n", c, c
            printf "topic read broadcast/c%04d/#\ntopic read time/#\n", c
            printf "topic write events/dev-c%04d/#\ntopic readwrite shared/c%04d/#\n\n", c, c
        }
        printf "user bench\n"
        for (r = 0; r < 9; r++)
            printf "topic readwrite bench/other-%d/#\n", r
        printf "topic readwrite bench/#\n"
    }' >"$TMP/mosquitto.acl"
}

# ---- brokers ---------------------------------------------------------------

write_config() { # broker port file variant
    write_base_config "$@"
    # The idle and storm groups' variants configure the broker as plain or tls.
    v=$4
    case $4 in
    idle-plain) v=plain ;;
    idle-tls | storm) v=tls ;;
    esac
    set -- "$1" "$2" "$3" "$v"
    case $1/$4 in
    mosquitto/plain) ;;
    mosquitto/*)
        # Running as root, Mosquitto would switch to the mosquitto user, which
        # can read neither this script's temporary directory nor its files.
        [ "$(id -u)" = 0 ] && echo "user root" >>"$3"
        ;;
    esac
    case $1/$4 in
    mosquitto/tls)
        # Listener options: they belong to the listener line written first.
        cat >>"$3" <<EOF
certfile $PKI/server.crt
keyfile $PKI/server.key
tls_version tlsv1.2
require_certificate false
EOF
        ;;
    gatemq/tls)
        cat >>"$3" <<EOF
certfile $PKI/server.crt
keyfile $PKI/server.key
EOF
        ;;
    mosquitto/durable-*)
        # As durable as Mosquitto gets: a snapshot of the whole database
        # after every change (checked once per pass of its event loop).
        cat >>"$3" <<EOF
persistence true
persistence_location $DB/
persistence_file mosquitto.db
autosave_interval 1
autosave_on_changes true
EOF
        ;;
    gatemq/durable-*)
        cat >>"$3" <<EOF
persistence_file $DB/gatemq.db
persistence_sync ${4#durable-}
EOF
        ;;
    mosquitto/startup)
        # Default autosave (every 30 min); the database is saved at exit.
        cat >>"$3" <<EOF
persistence true
persistence_location $DB/
persistence_file mosquitto-startup.db
EOF
        ;;
    gatemq/startup)
        echo "persistence_file $DB/gatemq-startup.db" >>"$3"
        ;;
    gatemq/tele-*)
        # Certificates make the publisher a device; anonymous TLS clients
        # (start_broker's probe) are still let in. Every telemetry variant,
        # the reference rows too, has the hook and a sink configured: only
        # the topic differs between (a) and (b).
        cat >>"$3" <<EOF
certfile $PKI/server.crt
keyfile $PKI/server.key
cafile $PKI/ca.crt
require_certificate false
persistence_file $DB/gatemq.db
telemetry_topic telemetry/#
EOF
        case $4 in
        tele-influx) echo "sink influxdb $IX_URL $IX_DB" >>"$3" ;;
        tele-down) echo "sink influxdb http://127.0.0.1:$DEAD_PORT/ down" >>"$3" ;;
        *) echo "sink file $TMP/points.lp" >>"$3" ;;
        esac
        ;;
    */users | */acl)
        echo "password_file $TMP/passwd" >>"$3"
        [ "$4" = acl ] && echo "acl_file $TMP/$1.acl" >>"$3"
        ;;
    esac
}

write_base_config() { # broker port file variant
    case $1 in
    mosquitto)
        # TCP_NODELAY: without it Nagle's algorithm and the subscriber's
        # delayed ACK add up to 40 ms to paced QoS 0 deliveries, a socket
        # default rather than a property of the broker.
        cat >"$3" <<EOF
listener $2 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 1000000
max_inflight_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
connection_messages false
EOF
        case $4 in durable-* | startup) ;; *) echo "persistence false" >>"$3" ;; esac
        ;;
    gatemq)
        # Handshake and CONNECT timeouts far above the defaults (10 s): a
        # storm whose last handshakes wait longer than that is measured, not
        # cut short.
        cat >"$3" <<EOF
listener $2 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
max_inflight_messages 100
max_connections $((MAXCONN + 1000))
tls_handshake_timeout 600
connect_timeout 600
log_level warning
EOF
        ;;
    esac
}

# Options of a client of a broker in this variant: TLS or not.
client_opts() { # variant
    case $1 in tls | idle-tls | storm | tele-*) echo "$TLS" ;; *) echo "" ;; esac
}

# Start a broker on a free port, without waiting; sets BROKER_PID and PORT.
launch_broker() { # broker variant
    PORT=$("$BENCH" --free-port) || return 1
    write_config "$1" "$PORT" "$TMP/$1.conf" "$2"
    case $1 in
    mosquitto) "$MOSQUITTO" -c "$TMP/$1.conf" >"$TMP/$1.log" 2>&1 & ;;
    gatemq) "$GATEMQ" -c "$TMP/$1.conf" >"$TMP/$1.log" 2>&1 & ;;
    esac
    BROKER_PID=$!
}

# Start a broker on a free port; sets BROKER_PID and PORT. Returns non-zero
# (and prints the broker's log) if it does not accept an MQTT session in 5 s.
start_broker() { # broker variant
    launch_broker "$1" "$2" || return 1
    i=0
    while [ $i -lt 50 ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        # shellcheck disable=SC2046
        "$BENCH" -p "$PORT" --idle 1 -d 0 $(client_opts "$2") </dev/null >/dev/null 2>&1 && return 0
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
    while kill -0 "$BROKER_PID" 2>/dev/null && [ $i -lt "$STOP_WAIT" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "bench: broker $BROKER_PID ignored SIGTERM for $((STOP_WAIT / 10)) s; killing it" >&2
        kill -9 "$BROKER_PID" 2>/dev/null
    fi
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
}

cpu_ticks() { # utime + stime; comm is cut first since it may hold spaces
    sed 's/^.*) //' "/proc/$BROKER_PID/stat" | awk '{ print $12 + $13 }'
}

# Connections the kernel dropped because a listen queue was full (all
# listeners of this network namespace; nothing else here connects in bulk).
listen_overflows() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 }
        else print $n["ListenOverflows"] }' /proc/net/netstat
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$BROKER_PID/status"
}

field() { # key, from a SUMMARY line on stdin
    sed -n 's/^SUMMARY.* '"$1"'=\([^ ]*\).*/\1/p'
}

# ---- one repetition --------------------------------------------------------

# Fill the startup variant's database with RETAINED retained messages, through
# the broker: one QoS 1 publisher, 1000 in flight, one topic per message. A
# PUBACK from gatemq means committed; Mosquitto writes its snapshot at exit.
# The populated database serves every repetition of this broker.
populate() { # broker
    [ -f "$TMP/populated.$1" ] && return 0
    start_broker "$1" startup || return 1
    t0=$(date +%s.%N)
    timeout 600 "$BENCH" -p "$PORT" -q 1 -P 1 -S 0 --retain --topics "$RETAINED" -n "$RETAINED" \
        -w 1000 -t retained </dev/null >"$TMP/populate.out" 2>&1
    rc=$?
    STOP_WAIT=1200 stop_broker
    t1=$(date +%s.%N)
    if [ $rc -ne 0 ]; then
        echo "bench: $1: populating $RETAINED retained messages failed:" >&2
        sed 's/^/    /' "$TMP/populate.out" >&2
        return 1
    fi
    echo "$1: $RETAINED retained messages stored through the broker in $(awk -v a="$t0" -v b="$t1" \
        'BEGIN { printf "%.1f", b - a }') s (publish, then stop), database $(du -sk "$DB" | cut -f1) KiB" \
        >>"$TMP/notes"
    touch "$TMP/populated.$1"
}

# Append one line to $TMP/res.<broker>.<scenario>: "OK value [value...] cpu"
# or the failure word. A run that lost messages is never turned into a rate.
run_one() { # broker scenario-index metric variant options
    out=$TMP/res.$1.$2
    case $4 in
    durable-*) rm -f "$DB"/gatemq.db* "$DB"/mosquitto.db* ;; # every repetition starts empty
    tele-*)
        run_tele "$@"
        return $?
        ;;
    esac
    if [ "$3" = startup ]; then
        run_startup "$@"
        return $?
    fi
    # The generator holds one descriptor per connection, the broker as many.
    need=$(echo "$5" | sed -n 's/.*--idle \([0-9]*\).*/\1/p; s/.*--handshakes [0-9]* -c \([0-9]*\).*/\1/p')
    # shellcheck disable=SC3045
    lim=$(ulimit -n)
    if [ -n "$need" ] && [ "$lim" != unlimited ] && [ "$lim" -lt $((need + 100)) ]; then
        echo "SKIPPED" >>"$out"
        note="$(echo "$SCENARIOS" | sed -n "${2}p" | cut -d'|' -f1): skipped: $need connections need more descriptors than the open file limit $lim (raise the hard limit: ulimit -Hn, which needs CAP_SYS_RESOURCE)"
        grep -qF "$note" "$TMP/notes" 2>/dev/null || echo "$note" >>"$TMP/notes"
        return 0
    fi
    if ! start_broker "$1" "$4"; then
        echo "UNAVAILABLE" >>"$out"
        return 1
    fi
    case $3 in
    idle)
        # Warm the broker with one session first, so the delta counts
        # connections rather than first-use allocations.
        # shellcheck disable=SC2046
        "$BENCH" -p "$PORT" --idle 1 -d 0 $(client_opts "$4") </dev/null >/dev/null 2>&1
        base=$(rss_kb)
        rm -f "$TMP/hold"
        mkfifo "$TMP/hold"
        # Set-up time grows with the count (TLS: a resumed handshake each).
        tmo=$((RUN_TIMEOUT + need / 100))
        # shellcheck disable=SC2086
        timeout $tmo "$BENCH" -p "$PORT" $5 <"$TMP/hold" >"$TMP/run.out" 2>&1 &
        gen=$!
        exec 3>"$TMP/hold"
        i=0
        while [ $i -lt $((tmo * 10)) ] && kill -0 $gen 2>/dev/null && ! grep -q '^ready' "$TMP/run.out"; do
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
            echo "OK $(((peak - base) * 1024 / need)) -" >>"$out"
        else
            echo "FAIL" >>"$out"
            sed 's/^/    /' "$TMP/run.out" >&2
        fi
        ;;
    *)
        lo0=$(listen_overflows)
        t0=$(cpu_ticks)
        # shellcheck disable=SC2086
        timeout $RUN_TIMEOUT "$BENCH" -p "$PORT" $5 </dev/null >"$TMP/run.out" 2>&1
        rc=$?
        t1=$(cpu_ticks 2>/dev/null)
        lo1=$(listen_overflows)
        result=$(field result <"$TMP/run.out")
        case $3 in
        pub) recv=$(field published <"$TMP/run.out") ;;
        hs | storm) recv=$(field 'done' <"$TMP/run.out") ;;
        *) recv=$(field received <"$TMP/run.out") ;;
        esac
        if [ -z "$t1" ]; then # the broker died: whatever the generator saw is void
            echo "bench: $1 exited during the run; its log:" >>"$TMP/run.out"
            tail -n 20 "$TMP/$1.log" >>"$TMP/run.out"
            rc=1 result=FAIL
        fi
        if [ $rc -eq 0 ] && [ "$result" = OK ] && [ "${recv:-0}" -gt 0 ]; then
            cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$recv" \
                'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            case $3 in
            lat) echo "OK $(field p50_us <"$TMP/run.out") $(field p99_us <"$TMP/run.out") $(field p999_us <"$TMP/run.out") $cpu $(field pub_rate <"$TMP/run.out") $(field behind <"$TMP/run.out")" >>"$out" ;;
            pub) echo "OK $(field pub_rate <"$TMP/run.out") $cpu $(field gen_busy <"$TMP/run.out")" >>"$out" ;;
            hs | storm)
                # Broker cores used: its CPU seconds over the seconds from
                # the first connect to the last CONNACK.
                secs=$(field seconds <"$TMP/run.out")
                cores=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$secs" \
                    'BEGIN { if (s > 0) printf "%.2f", d / hz / s; else print "-" }')
                echo "OK $(field rate <"$TMP/run.out") $cpu $(field gen_busy <"$TMP/run.out") $(field resumed <"$TMP/run.out") $recv $cores $secs $((${lo1:-0} - ${lo0:-0}))" >>"$out"
                ;;
            *) echo "OK $(field deliv_rate <"$TMP/run.out") $cpu $(field gen_busy <"$TMP/run.out")" >>"$out" ;;
            esac
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

# Time from the broker's process start to its first TCP accept, CONNACK and
# SUBACK, with the populated database; then ask $SYS how many retained
# messages it holds, which must be at least RETAINED. The probe starts right
# after the broker (a fork and exec later) and retries every 2 ms.
run_startup() { # broker scenario-index metric variant options
    out=$TMP/res.$1.$2
    if ! populate "$1"; then
        echo "FAIL" >>"$out"
        return 0
    fi
    sync # the page cache stays warm: this measures loading, not the disk
    launch_broker "$1" "$4" || { echo "UNAVAILABLE" >>"$out"; return 1; }
    # shellcheck disable=SC2086
    "$BENCH" -p "$PORT" $5 </dev/null >"$TMP/run.out" 2>&1
    rc=$?
    count=""
    if [ $rc -eq 0 ]; then
        # shellcheck disable=SC2016 # $SYS is a topic, not a variable
        count=$(timeout 20 mosquitto_sub -p "$PORT" -C 1 -W 15 -t '$SYS/broker/retained messages/count' 2>/dev/null)
    fi
    STOP_WAIT=1200 stop_broker
    if [ $rc -eq 0 ] && [ "${count:-0}" -ge "$RETAINED" ] 2>/dev/null; then
        echo "OK $(field suback_s <"$TMP/run.out") - $(field listen_s <"$TMP/run.out") $count" >>"$out"
    else
        echo "FAIL" >>"$out"
        echo "bench: $1: start with $RETAINED retained failed (retained count '${count}'):" >&2
        sed 's/^/    /' "$TMP/run.out" >&2
        tail -n 5 "$TMP/$1.log" | sed 's/^/    /' >&2
    fi
    return 0
}

# ---- telemetry -------------------------------------------------------------

now_s() { date +%s.%N; }

# A private influxd for the InfluxDB sink: its own directory under $TMP,
# HTTP and RPC on free loopback ports, no reporting, monitor store or query
# log (the configuration of the integration tests). Sets IX_PID and IX_URL;
# on failure leaves IX_URL empty and says why in the notes.
start_influxd() {
    IX_URL=""
    if [ ! -x "$INFLUXD" ] || ! command -v curl >/dev/null; then
        echo "gatemq: InfluxDB sink row unavailable: needs $INFLUXD (apt-get install influxdb) and curl" >>"$TMP/notes"
        return 1
    fi
    ix=$TMP/influxd
    mkdir -p "$ix"
    http=$("$BENCH" --free-port) && rpc=$("$BENCH" --free-port) || return 1
    cat >"$ix/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$ix/meta"
  logging-enabled = false
[data]
  dir = "$ix/data"
  wal-dir = "$ix/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$http"
  auth-enabled = false
  log-enabled = false
  unix-socket-enabled = false
EOF
    "$INFLUXD" run -config "$ix/influxdb.conf" >"$ix/log" 2>&1 &
    IX_PID=$!
    i=0
    while [ $i -lt 150 ] && kill -0 "$IX_PID" 2>/dev/null; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/ping")" = 204 ]; then
            IX_URL=http://127.0.0.1:$http
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "gatemq: InfluxDB sink row unavailable: influxd did not answer /ping in 15 s; its log:" >>"$TMP/notes"
    tail -n 5 "$ix/log" | sed 's/^/    /' >>"$TMP/notes"
    stop_influxd
    return 1
}

stop_influxd() {
    [ -n "$IX_PID" ] || return 0
    kill "$IX_PID" 2>/dev/null
    i=0
    while kill -0 "$IX_PID" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -9 "$IX_PID" 2>/dev/null
    wait "$IX_PID" 2>/dev/null
    IX_PID=""
}

influx_query() { # database ("" for none) query -> JSON on stdout
    if [ -n "$1" ]; then
        curl -s -m 30 -XPOST "$IX_URL/query" --data-urlencode "db=$1" --data-urlencode "q=$2"
    else
        curl -s -m 30 -XPOST "$IX_URL/query" --data-urlencode "q=$2"
    fi
}

# Points influxd has accepted over HTTP since it started (all databases),
# from its own counters: cheap enough to poll, unlike a count(). Empty if
# influxd does not answer.
influx_written() {
    curl -s -m 5 -G "$IX_URL/query" --data-urlencode "q=SHOW STATS FOR 'httpd'" | awk '{
        c = $0; sub(/.*"columns":\[/, "", c); sub(/\].*/, "", c)
        v = $0; sub(/.*"values":\[\[/, "", v); sub(/\]\].*/, "", v)
        n = split(c, cn, ","); split(v, vv, ",")
        for (i = 1; i <= n; i++) if (cn[i] == "\"pointsWrittenOK\"") print vv[i] }'
}

ix_ticks() {
    sed 's/^.*) //' "/proc/$IX_PID/stat" | awk '{ print $12 + $13 }'
}

# Points the sink has taken so far: lines in the file, or points influxd
# accepted beyond IX_BASE.
sunk() { # variant
    case $1 in
    tele-influx)
        w=$(influx_written)
        [ -n "$w" ] && echo $((w - IX_BASE))
        ;;
    *) if [ -f "$TMP/points.lp" ]; then wc -l <"$TMP/points.lp"; else echo 0; fi ;;
    esac
}

# One telemetry repetition, on a fresh database (and InfluxDB database): the
# device publishes for BENCH_SECONDS. Rows with a live sink then measure the
# backlog (acknowledged points not yet in the sink) and the time until the
# sink holds every point, polling it every 50 ms. tele-down-* rows publish
# while the sink is down (a closed port: the outbox only grows), stop the
# broker, start it again with the working sink and time the drain of the
# whole outbox from that start. Appends "OK rate cpu-publishing gen-busy
# cpu-to-drained backlog drain-s drain-points/s influxd-cpu-per-point" ("-"
# where a figure does not apply), or the failure word.
run_tele() { # broker scenario-index metric variant options
    out=$TMP/res.$1.$2
    rm -f "$DB"/gatemq.db* "$TMP/points.lp"
    case $4 in
    tele-file | tele-influx) mode=live sinkv=$4 pubv=$4 ;;
    tele-down-*) mode=later sinkv=tele-${4#tele-down-} pubv=tele-down ;;
    *) mode=none sinkv=$4 pubv=$4 ;;
    esac
    if [ "$sinkv" = tele-influx ]; then
        if [ -z "${IX_URL:-}" ]; then
            echo "UNAVAILABLE" >>"$out"
            return 0
        fi
        IX_RUN=$((${IX_RUN:-0} + 1))
        IX_DB=bench$IX_RUN
        if ! influx_query "" "CREATE DATABASE $IX_DB" | grep -q '"statement_id":0}'; then
            echo "bench: cannot create InfluxDB database $IX_DB" >&2
            echo "FAIL" >>"$out"
            return 0
        fi
        IX_BASE=$(influx_written)
        IX_BASE=${IX_BASE:-0}
        ix0=$(ix_ticks)
    fi
    if [ $mode = later ]; then
        DEAD_PORT=$("$BENCH" --free-port) || return 1 # nothing listens there
    fi
    if ! start_broker "$1" "$pubv"; then
        echo "UNAVAILABLE" >>"$out"
        return 1
    fi
    t0=$(cpu_ticks)
    # shellcheck disable=SC2086
    timeout $RUN_TIMEOUT "$BENCH" -p "$PORT" $5 </dev/null >"$TMP/run.out" 2>&1
    rc=$?
    t1=$(cpu_ticks 2>/dev/null)
    tp=$(now_s)
    result=$(field result <"$TMP/run.out")
    published=$(field published <"$TMP/run.out")
    published=${published:-0}
    n=$(sunk "$sinkv")
    backlog=$((published - ${n:-0}))
    cpu_before=0 # CPU of an earlier broker process of this repetition
    why=""
    if [ -z "$t1" ]; then
        why="gatemq exited during the run"
    elif [ $rc -ne 0 ] || [ "$result" != OK ] || [ "$published" -eq 0 ]; then
        why="the generator failed"
    elif [ $mode = later ]; then
        [ "$backlog" = "$published" ] || why="$((published - backlog)) points reached a sink that was down"
        stop_broker
        cpu_before=$((t1 - t0)) t0=0
        tp=$(now_s)
        start_broker "$1" "$sinkv" || why="gatemq did not start again on its database"
    elif [ $mode = none ]; then
        sleep 0.5 # > sink_batch_delay: a point would have reached the sink by now
        [ "$(sunk "$sinkv")" = 0 ] || why="$(sunk "$sinkv") points reached the sink from a non-telemetry topic"
    fi
    td=$tp
    if [ -z "$why" ] && [ $mode != none ]; then
        td=""
        while [ -z "$td" ]; do
            n=$(sunk "$sinkv")
            t=$(now_s)
            if [ "${n:-0}" -ge "$published" ]; then
                td=$t
            elif awk -v a="$tp" -v b="$t" -v m=$DRAIN_TIMEOUT 'BEGIN { exit !(b - a > m) }'; then
                why="the sink took ${n:-?} of $published points in $DRAIN_TIMEOUT s"
                break
            else
                sleep 0.05
            fi
        done
        if [ -z "$why" ] && [ "$sinkv" = tele-influx ]; then
            # The loss check proper: every acknowledged reading is a point.
            count=$(influx_query "$IX_DB" "SELECT count(v) FROM telemetry" |
                sed -n 's/.*"values":\[\[[^,]*,\([0-9]*\)\]\].*/\1/p')
            [ "${count:-0}" = "$published" ] ||
                why="InfluxDB holds ${count:-no} points of $published acknowledged"
        fi
        n=$(sunk "$sinkv")
        [ -z "$why" ] && [ "$n" != "$published" ] &&
            why="the sink holds $n points of $published acknowledged"
    fi
    t2=$(cpu_ticks 2>/dev/null)
    ixcpu="-"
    if [ "$sinkv" = tele-influx ] && [ -z "$why" ]; then
        ixcpu=$(awk -v d=$(($(ix_ticks) - ix0)) -v hz="$HZ" -v n="$published" \
            'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
        influx_query "" "DROP DATABASE $IX_DB" >/dev/null
    fi
    if [ -n "$why" ]; then
        echo "FAIL" >>"$out"
        echo "bench: gatemq, $(echo "$SCENARIOS" | sed -n "${2}p" | cut -d'|' -f1), rep failed: $why" >&2
        sed 's/^/    /' "$TMP/run.out" >&2
        tail -n 5 "$TMP/$1.log" | sed 's/^/    /' >&2
    else
        # drain points/s only where the backlog is the whole outbox: a live
        # sink's few leftover points measure its batch delay, not a rate.
        awk -v r="$(field pub_rate <"$TMP/run.out")" -v gb="$(field gen_busy <"$TMP/run.out")" \
            -v a="$t0" -v b="$t1" -v c="${t2:-$t1}" -v e="$cpu_before" -v hz="$HZ" \
            -v n="$published" -v k="$backlog" -v m=$mode -v tp="$tp" -v td="$td" -v ix="$ixcpu" \
            'BEGIN {
                if (m == "later") b = a + e # the first process: publishing only
                printf "OK %s %.2f %s %.2f ", r, (b - a) * 1e6 / hz / n, gb,
                    (c - a + e) * 1e6 / hz / n
                d = td - tp
                if (m == "none") printf "- - -"
                else printf "%d %.2f %s", k, d, (m == "later" && d > 0) ? sprintf("%.0f", k / d) : "-"
                printf " %s\n", ix
            }' >>"$out"
    fi
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
        case $bad in
        UNAVAILABLE*) echo "unavailable" ;;
        SKIPPED*) echo "skipped" ;;
        *) echo "$bad" ;;
        esac
        return
    fi
    awk -v c="$2" '$1 == "OK" && $c != "-" { print $c }' "$1" | sort -g |
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
    printf "%-34s %-17s %12s %12s %7s %9s %9s\n" "$1" "$2" "$(fmt "$3")" "$(fmt "$4")" \
        "$(ratio "$4" "$3")" "$(fmt "$5")" "$(fmt "$6")"
}

# ---- main ------------------------------------------------------------------

BROKERS="mosquitto gatemq"
[ $BOTH = 0 ] && BROKERS=gatemq
[ -n "$ONLY" ] && BROKERS=$ONLY
gatemq_ok=1
if echo "$BROKERS" | grep -q gatemq && [ ! -x "$GATEMQ" ]; then
    echo "bench: $GATEMQ is missing; gatemq's figures are marked unavailable" >&2
    gatemq_ok=0
fi
mkdir -p "$PKI" "$DB"
if in_groups tls || in_groups idle || in_groups storm || in_groups telemetry; then
    make_pki || die "cannot make the test certificates with $CERT_TOOL"
fi
if in_groups telemetry; then
    make_device || die "cannot make the device certificate with $CERT_TOOL"
    if echo "$BROKERS" | grep -q gatemq && echo "$SCENARIOS" | grep -q '|tele-influx|'; then
        start_influxd
    fi
fi
if in_groups acl; then
    make_acl || die "cannot write the password and ACL files"
fi
if in_groups startup; then
    command -v mosquitto_sub >/dev/null || die "mosquitto_sub is missing (apt-get install mosquitto-clients), or leave startup out of BENCH_GROUPS"
fi

echo "gatemq benchmark: $REPS repetition(s) per figure, median shown"
echo "  host:      $(nproc) CPU(s), $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
[ $BOTH = 1 ] && echo "  mosquitto: $("$MOSQUITTO" -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -n 1)"
[ -n "${IX_URL:-}" ] && echo "  influxd:   $("$INFLUXD" version 2>/dev/null | head -n 1)"
echo "  groups:    $BGROUPS"
echo

start=$(date +%s)
for broker in $BROKERS; do
    idx=0
    # fd 4, not a pipe: a pipeline would run the loop in a subshell, out of
    # reach of the EXIT trap that stops a broker left running.
    while IFS='|' read -r name metric variant opts <&4; do
        idx=$((idx + 1))
        if [ "$broker" = gatemq ] && [ $gatemq_ok = 0 ]; then
            echo "UNAVAILABLE" >"$TMP/res.$broker.$idx"
            continue
        fi
        case $variant in tele-*) continue ;; esac # gatemq only, interleaved below
        printf "  %-9s %-34s" "$broker" "$name" >&2
        rep=0
        while [ $rep -lt "$REPS" ]; do
            if ! run_one "$broker" $idx "$metric" "$variant" "$opts"; then
                # A broker that will not start is reported once, not per run.
                [ "$broker" = gatemq ] && gatemq_ok=0
                break
            fi
            rep=$((rep + 1))
            printf " %s" "$(tail -n 1 "$TMP/res.$broker.$idx" | cut -d' ' -f1-2)" >&2
            [ "$(tail -n 1 "$TMP/res.$broker.$idx")" = SKIPPED ] && break
        done
        echo >&2
    done 4<<EOF
$SCENARIOS
EOF
done
# Telemetry: gatemq only (Mosquitto has no such hook). Each figure is a ratio
# to row (a), so the repetitions are interleaved (every scenario once per
# round) rather than run back to back: load from elsewhere on the machine
# then weighs on all rows of a round alike.
if echo "$SCENARIOS" | grep -q '|tele|' && echo "$BROKERS" | grep -q gatemq; then
    rep=0
    while [ $rep -lt "$REPS" ] && [ $gatemq_ok = 1 ]; do
        rep=$((rep + 1))
        printf "  %-9s %-34s" gatemq "telemetry, round $rep of $REPS:" >&2
        idx=0
        while IFS='|' read -r name metric variant opts <&4; do
            idx=$((idx + 1))
            [ "$metric" = tele ] || continue
            if ! run_one gatemq $idx "$metric" "$variant" "$opts"; then
                gatemq_ok=0
                break
            fi
            printf " %s %s" "${name%% *}" "$(tail -n 1 "$TMP/res.gatemq.$idx" | cut -d' ' -f1-2)" >&2
        done 4<<EOF
$SCENARIOS
EOF
        echo >&2
    done
fi
echo "  (took $(($(date +%s) - start)) s)" >&2
echo
stop_influxd

if [ $BOTH = 1 ]; then
printf "%-34s %-17s %12s %12s %7s %9s %9s\n" scenario metric mosquitto gatemq ratio \
    "mosq-cpu" "gmq-cpu"
printf "%-34s %-17s %12s %12s %7s %9s %9s\n" "" "" "" "" "g/m" "us/op" "us/op"
fi
idx=0
while IFS='|' read -r name metric variant opts <&4; do
    idx=$((idx + 1))
    m=$TMP/res.mosquitto.$idx
    g=$TMP/res.gatemq.$idx
    case $metric in
    rate | pub | hs)
        case $metric in
        rate) unit=deliveries/s ;;
        pub) unit="acked msg/s" ;;
        hs) unit=handshakes/s ;;
        esac
        row "$name" "$unit" "$(cell "$m" 2)" "$(cell "$g" 2)" "$(cell "$m" 3)" "$(cell "$g" 3)"
        [ "$metric" = hs ] && row "" "broker cores" "$(cell "$m" 7)" "$(cell "$g" 7)" "" ""
        for br in mosquitto gatemq; do
            busy=$(cell "$TMP/res.$br.$idx" 4)
            case $busy in
            '' | *[!0-9.]*) ;;
            *) awk -v b="$busy" 'BEGIN { exit !(b > 0.9) }' &&
                echo "$br: $name: generator at $busy of a core; the broker may be faster" >>"$TMP/notes" ;;
            esac
            if [ "$metric" = hs ] && echo "$opts" | grep -q -- --resume; then
                resumed=$(cell "$TMP/res.$br.$idx" 5)
                done_=$(cell "$TMP/res.$br.$idx" 6)
                [ "$resumed" = "$done_" ] ||
                    echo "$br: $name: only $resumed of $done_ handshakes were resumed" >>"$TMP/notes"
            fi
        done
        case $variant in
        users) eval "base_m_${name##* }=\$(cell \"\$m\" 2) base_g_${name##* }=\$(cell \"\$g\" 2)" ;;
        acl)
            bm="" bg=""
            eval "bm=\${base_m_${name##* }:-} bg=\${base_g_${name##* }:-}"
            echo "ACL cost, QoS ${name##* }: with / without the 10k-rule ACL: mosquitto $(ratio "$(cell "$m" 2)" "$bm"), gatemq $(ratio "$(cell "$g" 2)" "$bg")" >>"$TMP/aclnotes"
            ;;
        esac
        ;;
    lat)
        row "$name" "p50 us" "$(cell "$m" 2)" "$(cell "$g" 2)" "$(cell "$m" 5)" "$(cell "$g" 5)"
        row "" "p99 us" "$(cell "$m" 3)" "$(cell "$g" 3)" "" ""
        row "" "p99.9 us" "$(cell "$m" 4)" "$(cell "$g" 4)" "" ""
        for br in mosquitto gatemq; do
            # A publisher that fell behind the pace sent catch-up bursts:
            # those latencies measure its backlog, not the broker at the rate.
            [ -f "$TMP/res.$br.$idx" ] || continue
            behind=$(awk '$1 == "OK" && $7 == 1' "$TMP/res.$br.$idx" | wc -l)
            [ "$behind" -gt 0 ] &&
                echo "$br: $name: the publisher fell behind in $behind of $(grep -c '^OK' "$TMP/res.$br.$idx") runs (median $(fmt "$(cell "$TMP/res.$br.$idx" 6)") msg/s): latencies include its catch-up" >>"$TMP/notes"
        done
        ;;
    storm)
        row "$name" "s to last CONNACK" "$(cell "$m" 8)" "$(cell "$g" 8)" "" ""
        row "" "connections/s" "$(cell "$m" 2)" "$(cell "$g" 2)" "$(cell "$m" 3)" "$(cell "$g" 3)"
        row "" "broker cores" "$(cell "$m" 7)" "$(cell "$g" 7)" "" ""
        # SYNs dropped by the broker's full listen queue: each costs its
        # client a TCP retransmission timeout (1 s, then 3 s, 7 s, ...).
        row "" "listen overflows" "$(cell "$m" 9)" "$(cell "$g" 9)" "" ""
        for br in mosquitto gatemq; do
            busy=$(cell "$TMP/res.$br.$idx" 4)
            case $busy in
            '' | *[!0-9.]*) ;;
            *) awk -v b="$busy" 'BEGIN { exit !(b > 0.9) }' &&
                echo "$br: $name: generator processes at $busy of a core each; the broker may be faster" >>"$TMP/notes" ;;
            esac
        done
        ;;
    idle) row "$name" "bytes/conn" "$(cell "$m" 2)" "$(cell "$g" 2)" "" "" ;;
    tele) ;; # their own table below
    startup)
        row "$name" "s to SUBACK" "$(cell "$m" 2)" "$(cell "$g" 2)" "" ""
        row "" "s to accept" "$(cell "$m" 4)" "$(cell "$g" 4)" "" ""
        row "" "retained count" "$(cell "$m" 5)" "$(cell "$g" 5)" "" ""
        ;;
    esac
done 4<<EOF
$SCENARIOS
EOF
[ $BOTH = 1 ] && echo
[ -f "$TMP/aclnotes" ] && cat "$TMP/aclnotes"

# Telemetry: gatemq alone, each row against (a), the same device and load
# on a topic the hook ignores.
if echo "$SCENARIOS" | grep -q '|tele|' && echo "$BROKERS" | grep -q gatemq; then
    echo "telemetry (gatemq only: Mosquitto has no telemetry hook), one TLS device, QoS 1, window 64"
    printf "%-34s %11s %6s %8s %8s %8s %7s %9s %8s\n" scenario "acked msg/s" "vs (a)" \
        "cpu pub" "cpu all" backlog "drain s" "drain p/s" "influxd"
    printf "%-34s %11s %6s %8s %8s %8s %7s %9s %8s\n" "" "" "" "us/msg" "us/msg" points "" "" "us/pt"
    base=""
    idx=0
    while IFS='|' read -r name metric variant opts <&4; do
        idx=$((idx + 1))
        [ "$metric" = tele ] || continue
        g=$TMP/res.gatemq.$idx
        rate=$(cell "$g" 2)
        [ "$variant" = tele-off ] && base=$rate
        printf "%-34s %11s %6s %8s %8s %8s %7s %9s %8s\n" "$name" "$(fmt "$rate")" \
            "$(ratio "$rate" "$base")" "$(fmt "$(cell "$g" 3)")" "$(fmt "$(cell "$g" 5)")" \
            "$(fmt "$(cell "$g" 6)")" "$(fmt "$(cell "$g" 7)")" "$(fmt "$(cell "$g" 8)")" \
            "$(fmt "$(cell "$g" 9)")"
        busy=$(cell "$g" 4)
        case $busy in
        '' | *[!0-9.]*) ;;
        *) awk -v b="$busy" 'BEGIN { exit !(b > 0.9) }' &&
            echo "gatemq: $name: generator at $busy of a core; the broker may be faster" >>"$TMP/notes" ;;
        esac
    done 4<<EOF
$SCENARIOS
EOF
    echo "cpu pub: broker CPU per acked publish while publishing; cpu all: until the sink"
    echo "held every point. backlog: acked points not yet in the sink when the publisher"
    echo "finished; drain s: time until the sink held them all (polled every 50 ms)."
    echo
fi
[ -f "$TMP/notes" ] && cat "$TMP/notes"
if [ $BOTH = 1 ]; then
echo "ratio g/m: gatemq / mosquitto; above 1 is better for deliveries/s, msg/s,"
echo "handshakes/s and connections/s, below 1 for latency, bytes/conn, seconds and CPU."
echo "CPU us/op: broker utime+stime per delivery (per acknowledged publish, per"
echo "handshake). broker cores: its CPU seconds over the seconds from the first"
echo "connect to the last CONNACK."
fi
