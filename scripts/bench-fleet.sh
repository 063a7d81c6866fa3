#!/usr/bin/env bash
# Fleet-scale benchmark of rollcall-server (see BENCHMARKS.md).
#
# Builds release binaries, makes a CA, starts rollcall-server on 127.0.0.1
# with a fresh SQLite file, and runs rollcall-loadgen (a separate process:
# N simulated agents, one mutual-TLS connection and one certificate each)
# for every N given. Prints one result line per N.
#
#   scripts/bench-fleet.sh                 # N = 1000 and 10000
#   scripts/bench-fleet.sh 1000 5000 10000
#
# DURATION (default 60) and WARMUP (default 15) set the measured window
# and the settling time in seconds; INTERVAL (default 10) the report interval.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
DURATION="${DURATION:-60}"
WARMUP="${WARMUP:-15}"
INTERVAL="${INTERVAL:-10}"
PORT="${PORT:-17643}"

cargo build --release --quiet -p rollcall-server -p rollcall-tests --bin rollcall-server --bin rollcall-loadgen
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

target/release/rollcall-server certs init --pki "$WORK/pki" >/dev/null
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), interval ${INTERVAL}s, window ${DURATION}s"
for n in "${COUNTS[@]}"; do
    rm -rf "$WORK/data"
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
TOML
    ROLLCALL_LOG=warn target/release/rollcall-server serve --config "$WORK/server.toml" 2>"$WORK/server-$n.log" &
    SERVER_PID=$!
    sleep 1
    target/release/rollcall-loadgen --server "https://localhost:$PORT" --pki "$WORK/pki" \
        --agents "$n" --interval-secs "$INTERVAL" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --server-pid "$SERVER_PID" --json
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # Streams that fail as the load generator exits are expected; anything
    # else the server warned about is shown.
    if grep -v "Session stream failed" "$WORK/server-$n.log" | grep -q -E "WARN|ERROR"; then
        echo "server warnings for N=$n:"
        grep -v "Session stream failed" "$WORK/server-$n.log" | grep -E "WARN|ERROR" | head -5
    fi
done
