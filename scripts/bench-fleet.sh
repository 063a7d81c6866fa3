#!/usr/bin/env bash
# Fleet-scale benchmark of rollcall-server (see BENCHMARKS.md).
#
# Builds release binaries, makes a CA, starts rollcall-server on 127.0.0.1
# with a fresh SQLite file (or PostgreSQL: STORE=postgres; under a small supervisor loop that writes its pid
# file and starts it again when it exits), and runs rollcall-loadgen (a
# separate process: N simulated agents, one mutual-TLS connection and one
# certificate each) for every N given. Each agent sends what the real agent
# sends, made from a report captured from a real agent on a kolla node
# (tests/data/report-kolla-node.json, see tests/data/README.md): a full
# report on connect and every FULL_EVERY intervals, metrics and network in
# between, and change-driven container reports. Prints one result line per N
# (and one JSON object).
#
#   scripts/bench-fleet.sh                 # N = 1000 and 10000
#   scripts/bench-fleet.sh 1000 5000 10000
#   STORM=1 scripts/bench-fleet.sh 1000    # then restart the server: reconnect storm
#   SCRAPE=1 scripts/bench-fleet.sh 10000  # and time /metrics scrapes under the load
#
# DURATION (default 60) and WARMUP (default 15) set the measured window
# and the settling time in seconds; INTERVAL (default 10) the report
# interval; FULL_EVERY (default 30, the agent's default) how often a report
# is full; CHANGES (default 2) the percent of agents per minute with a
# container restart or health change; TEMPLATE another report template
# (`rollcall-agent once --json` output). STORM=1: after the window the
# server gets SIGTERM, its supervisor starts it again on the same data, and
# the load generator measures how long until every agent, on the agent's
# backoff (500 ms doubling to 60 s, full jitter), is connected and has
# reported again. SCRAPE=1: once every agent has a session (as /metrics
# says), SCRAPES (default 20) scrapes of /metrics one second apart, as
# Prometheus asks (OpenMetrics), each timed by curl: p50 and max time, and
# bytes; PER_NODE=1 turns the per-node series on for it (per_node_max_nodes
# above N; they are off past 500 nodes by default); CAMPAIGN=1 opens a
# campaign over every node first, so the scheduler's half of a scrape has
# N runs to count. STORE=postgres: the server's store is a PostgreSQL
# cluster of Debian's PostgreSQL made for the run (initdb in the work dir,
# loopback, fsync on), one replica leading it; the result adds
# PostgreSQL's CPU (the postmaster and every backend) and its commits per
# second over the window, from pg_stat_database.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
DURATION="${DURATION:-60}"
WARMUP="${WARMUP:-15}"
INTERVAL="${INTERVAL:-10}"
FULL_EVERY="${FULL_EVERY:-30}"
CHANGES="${CHANGES:-2}"
TEMPLATE="${TEMPLATE:-tests/data/report-kolla-node.json}"
STORM="${STORM:-0}"
SCRAPE="${SCRAPE:-0}"
SCRAPES="${SCRAPES:-20}"
PER_NODE="${PER_NODE:-0}"
CAMPAIGN="${CAMPAIGN:-0}"
STORE="${STORE:-sqlite}"
PORT="${PORT:-17643}"
METRICS_PORT="${METRICS_PORT:-$((PORT + 1))}"
TARGET="${CARGO_TARGET_DIR:-target}"

[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet -p rollcall-server -p rollcall-tests --bin rollcall-server --bin rollcall-loadgen
# The server and the load generator each hold one descriptor per agent.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for n in "${COUNTS[@]}"; do
    if [ $((n + 200)) -gt "$(ulimit -n)" ]; then
        echo "error: $n agents need about $((n + 200)) file descriptors per process, but ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn))" >&2
        exit 2
    fi
done

WORK="$(mktemp -d)"
SUPERVISOR=""
stop_server() {
    [ -n "$SUPERVISOR" ] || return 0
    touch "$WORK/stop"
    [ -s "$WORK/server.pid" ] && kill "$(cat "$WORK/server.pid")" 2>/dev/null
    wait "$SUPERVISOR" 2>/dev/null || true
    SUPERVISOR=""
}
SCRAPER=""
PG_BIN=""
PG_PORT="${PG_PORT:-$((PORT + 2))}"
# As root, PostgreSQL runs as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }
stop_pg() { [ -z "$PG_BIN" ] || as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true; }
cleanup() { [ -z "$SCRAPER" ] || kill "$SCRAPER" 2>/dev/null; stop_server; stop_pg; rm -rf "$WORK"; }
trap cleanup EXIT

# Runs the server until $WORK/stop exists, starting it again whenever it
# stops cleanly (SIGTERM); its current pid is in $WORK/server.pid. A server
# that fails is not restarted: that ends the benchmark.
supervise() {
    local log=$1 status
    while [ ! -e "$WORK/stop" ]; do
        # The allocator setting of the shipped systemd unit.
        GLIBC_TUNABLES="${SERVER_GLIBC_TUNABLES-glibc.malloc.mmap_threshold=16384}" \
            ROLLCALL_LOG=warn "$TARGET/release/rollcall-server" serve --config "$WORK/server.toml" 2>>"$log" &
        echo $! > "$WORK/server.pid.new"
        mv "$WORK/server.pid.new" "$WORK/server.pid"
        status=0
        wait $! || status=$?
        if [ "$status" -ne 0 ] && [ ! -e "$WORK/stop" ]; then
            echo "error: rollcall-server exited with status $status; not starting it again:" >&2
            tail -3 "$log" >&2
            return 1
        fi
    done
}

# SCRAPE=1: waits until /metrics counts N sessions, then times $SCRAPES
# scrapes one second apart and prints one line (and one JSON object).
scrape() {
    local n=$1 url="http://127.0.0.1:$METRICS_PORT/metrics" sessions=""
    local accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    local waited=0
    while [ "${sessions%.*}" != "$n" ]; do
        sleep 1
        waited=$((waited + 1))
        if [ "$waited" -gt $((WARMUP + DURATION)) ]; then
            echo "error: /metrics never counted $n sessions (last: ${sessions:-no answer})" >&2
            return 1
        fi
        sessions=$(curl -s "$url" | awk '$1 == "rollcall_sessions" {print $2}')
    done
    local runs=0
    if [ "$CAMPAIGN" = 1 ]; then
        start_campaign || return 1
        # The scrapes wait until the scheduler's half counts every run.
        waited=0
        while [ "$runs" != "$n" ] && [ "$waited" -lt 60 ]; do
            sleep 1
            waited=$((waited + 1))
            runs=$(curl -s "$url" | awk '$1 ~ /^rollcall_campaign_nodes\{/ {s += $2} END {printf "%d", s}')
        done
    fi
    for _ in $(seq "$SCRAPES"); do
        curl -s -o /dev/null -H "Accept: $accept" -w '%{time_total} %{size_download}\n' "$url"
        sleep 1
    done > "$WORK/scrapes-$n"
    sort -n "$WORK/scrapes-$n" | awk -v n="$n" -v per_node="$PER_NODE" -v runs="$runs" '
        { t[NR] = $1 * 1000; b = $2 }
        END {
            p50 = t[int((NR + 1) / 2)]; max = t[NR]
            printf "N=%d /metrics scrape (per-node series %s, campaign runs %d): p50 %.1f ms, max %.1f ms over %d scrapes, %d bytes\n", n, per_node == 1 ? "on" : "off", runs, p50, max, NR, b
            printf "{\"agents\":%d,\"per_node\":%s,\"campaign_runs\":%d,\"scrapes\":%d,\"p50_ms\":%.1f,\"max_ms\":%.1f,\"bytes\":%d}\n", n, per_node == 1 ? "true" : "false", runs, NR, p50, max, b
        }'
}

# CAMPAIGN=1: a campaign over every node (reboot never, nothing skipped),
# so a scrape's scheduler half counts N runs. The simulated agents never
# answer its requests: one node waits in its first step, the rest pending.
start_campaign() {
    "$TARGET/release/rollcall-server" certs issue --pki "$WORK/pki" --operator bench-campaign >/dev/null
    printf 'name = "bench"\nreboot = "never"\nskip_up_to_date = false\n' > "$WORK/campaign.toml"
    ROLLCALL_SERVER="https://localhost:$PORT" ROLLCALL_CA="$WORK/pki/ca.crt" \
        ROLLCALL_CERT="$WORK/pki/operators/bench-campaign.crt" ROLLCALL_KEY="$WORK/pki/operators/bench-campaign.key" \
        "$TARGET/release/rollcall-server" campaign start --spec "$WORK/campaign.toml" >/dev/null
}

# STORE=postgres: a cluster of our own for the whole run.
start_pg() {
    PG_BIN="$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    [ -x "$PG_BIN/initdb" ] || { echo "error: STORE=postgres needs Debian's postgresql (apt-get install postgresql)" >&2; exit 2; }
    mkdir -p "$WORK/pg" && chmod 700 "$WORK/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$WORK/pg"
    as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U rollcall --auth=trust >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
        -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null
}

# PostgreSQL's CPU seconds so far: the postmaster and its children.
pg_cpu() {
    local pm pids
    pm=$(head -1 "$WORK/pg/postmaster.pid")
    pids="$pm $(cat /proc/"$pm"/task/*/children 2>/dev/null)"
    for p in $pids; do awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null; done |
        awk -v hz="$(getconf CLK_TCK)" '{s += $1} END {printf "%.2f", s / hz}'
}

pg_commits() {
    psql -h 127.0.0.1 -p "$PG_PORT" -U rollcall -d "bench$1" -Atc \
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
}

# Samples PostgreSQL over the load generator's measured window.
pg_window() {
    local n=$1 cpu0 cpu1 c0 c1
    sleep "$WARMUP"
    cpu0=$(pg_cpu); c0=$(pg_commits "$n")
    sleep "$DURATION"
    cpu1=$(pg_cpu); c1=$(pg_commits "$n")
    awk -v n="$n" -v cpu="$(echo "$cpu1 - $cpu0" | bc)" -v commits="$((c1 - c0))" -v d="$DURATION" 'BEGIN {
        printf "N=%d PostgreSQL over the window: CPU %.1f%% of a core, %.1f commits/s\n", n, 100 * cpu / d, commits / d
        printf "{\"agents\":%d,\"store\":\"postgres\",\"pg_cpu_percent\":%.1f,\"pg_commits_per_sec\":%.1f}\n", n, 100 * cpu / d, commits / d }'
}

[ "$STORE" = postgres ] && start_pg
"$TARGET/release/rollcall-server" certs init --pki "$WORK/pki" >/dev/null
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), interval ${INTERVAL}s, window ${DURATION}s, full every $FULL_EVERY, $CHANGES% container changes/min, template $TEMPLATE"
storm=()
[ "$STORM" = 1 ] && storm=(--storm)
for n in "${COUNTS[@]}"; do
    rm -rf "$WORK/data" "$WORK/stop" "$WORK/server.pid"
    cat > "$WORK/server.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
[tls]
ca = "$WORK/pki/ca.crt"
cert = "$WORK/pki/server.crt"
key = "$WORK/pki/server.key"
[agents]
report_interval_secs = $INTERVAL
[limits]
max_connections = $((n + 100))
# Every simulated agent connects from this one host: let it use every
# handshake slot, as a real fleet spread over many addresses would.
max_handshakes_per_source = 128
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
per_node_max_nodes = $([ "$PER_NODE" = 1 ] && echo $((n + 1)) || echo 500)
TOML
    if [ "$STORE" = postgres ]; then
        psql -h 127.0.0.1 -p "$PG_PORT" -U rollcall -d postgres -qc "CREATE DATABASE bench$n" >/dev/null
        printf '[store]\nurl = "postgres://rollcall@127.0.0.1:%s/bench%s"\n[replica]\nadvertise = "https://localhost:%s"\n' \
            "$PG_PORT" "$n" "$PORT" >> "$WORK/server.toml"
    fi
    # Another benchmark on this port would answer in our server's place.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "error: port $PORT is in use (another benchmark running?); set PORT=..." >&2
        exit 1
    fi
    supervise "$WORK/server-$n.log" &
    SUPERVISOR=$!
    sleep 1
    if ! kill -0 "$(cat "$WORK/server.pid")" 2>/dev/null; then
        echo "error: rollcall-server did not start; see above" >&2
        exit 1
    fi
    if [ "$SCRAPE" = 1 ]; then
        scrape "$n" &
        SCRAPER=$!
    fi
    PG_SAMPLER=""
    if [ "$STORE" = postgres ]; then
        pg_window "$n" &
        PG_SAMPLER=$!
    fi
    "$TARGET/release/rollcall-loadgen" --server "https://localhost:$PORT" --pki "$WORK/pki" \
        --agents "$n" --interval-secs "$INTERVAL" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --report-template "$TEMPLATE" --full-every "$FULL_EVERY" --container-changes-per-min "$CHANGES" \
        --server-pid-file "$WORK/server.pid" --time-cli "$TARGET/release/rollcall-server" "${storm[@]}" --json
    if [ -n "$SCRAPER" ]; then
        wait "$SCRAPER" || echo "error: the scrapes did not finish (see above)" >&2
        SCRAPER=""
    fi
    [ -z "$PG_SAMPLER" ] || wait "$PG_SAMPLER" || echo "error: PostgreSQL could not be sampled" >&2
    stop_server
    # Streams that fail as the load generator exits are expected, and so is
    # the shutdown of a storm; anything else the server warned about is shown.
    if grep -v -E "Session stream failed|Shutting down" "$WORK/server-$n.log" | grep -q -E "WARN|ERROR"; then
        echo "server warnings for N=$n:"
        grep -v -E "Session stream failed|Shutting down" "$WORK/server-$n.log" | grep -E "WARN|ERROR" | head -5
    fi
done
