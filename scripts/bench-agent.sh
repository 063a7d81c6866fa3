#!/usr/bin/env bash
# Agent footprint beside prometheus-node-exporter (see BENCHMARKS.md).
#
# On this machine, with CONTAINERS (default 50) busybox containers running
# (each with a health check), measures:
#   - rollcall-agent (release): RSS and CPU time per report cycle, with the
#     server asking for a report every second for DURATION seconds;
#   - prometheus-node-exporter (Debian package, default collectors): RSS and
#     CPU time per scrape, scraped once a second for DURATION seconds;
#   - the agent's bytes on the wire: full and partial report sizes, and what
#     that makes per agent per hour at the default 10 s interval.
# CPU is utime+stime from /proc/PID/stat over the window.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTAINERS="${CONTAINERS:-50}"
DURATION="${DURATION:-60}"
PORT="${PORT:-17743}"
NE_PORT="${NE_PORT:-19100}"
TICK=$(getconf CLK_TCK)

command -v prometheus-node-exporter >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus-node-exporter >/dev/null
}
scripts/build-test-images.sh >/dev/null
cargo build --release --quiet -p rollcall-server -p rollcall-agent

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    docker ps -aq --filter label=rollcall.bench=yes | xargs -r docker rm -f >/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

echo "Starting $CONTAINERS containers..."
for i in $(seq 1 "$CONTAINERS"); do
    docker run -d --label rollcall.bench=yes --name "rc-bench-$i" \
        --health-cmd 'test -f /tmp/healthy' --health-interval 10s \
        rollcall-test/busybox:1 sh -c 'touch /tmp/healthy; exec sleep 86400' >/dev/null
done

target/release/rollcall-server certs init --pki "$WORK/pki" >/dev/null
target/release/rollcall-server certs issue --pki "$WORK/pki" --agent bench1 >/dev/null
cat > "$WORK/server.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
[tls]
ca = "$WORK/pki/ca.crt"
cert = "$WORK/pki/server.crt"
key = "$WORK/pki/server.key"
[agents]
report_interval_secs = 1
TOML
cat > "$WORK/agent.toml" <<TOML
server = "https://localhost:$PORT"
role = "compute"
[tls]
ca = "$WORK/pki/ca.crt"
cert = "$WORK/pki/agents/bench1.crt"
key = "$WORK/pki/agents/bench1.key"
TOML
ROLLCALL_LOG=warn target/release/rollcall-server serve --config "$WORK/server.toml" 2>"$WORK/server.log" &
PIDS+=($!)
sleep 1
ROLLCALL_LOG=info target/release/rollcall-agent run --config "$WORK/agent.toml" 2>"$WORK/agent.log" &
AGENT=$!
PIDS+=("$AGENT")
# Settle: first full report, the first pending-updates check (within 30 s).
sleep 35
a0=$(cpu_ticks "$AGENT")
sleep "$DURATION"
a1=$(cpu_ticks "$AGENT")
agent_rss=$(rss_kib "$AGENT"); agent_hwm=$(hwm_kib "$AGENT")
kill -TERM "$AGENT"; wait "$AGENT" 2>/dev/null || true
stats=$(grep "Session statistics" "$WORK/agent.log" | tail -1)

prometheus-node-exporter --web.listen-address="127.0.0.1:$NE_PORT" 2>"$WORK/ne.log" &
NE=$!
PIDS+=("$NE")
sleep 2
for _ in 1 2 3; do curl -s "http://127.0.0.1:$NE_PORT/metrics" >/dev/null; done
n0=$(cpu_ticks "$NE")
for _ in $(seq 1 "$DURATION"); do
    curl -s "http://127.0.0.1:$NE_PORT/metrics" >/dev/null
    sleep 1
done
n1=$(cpu_ticks "$NE")
ne_rss=$(rss_kib "$NE"); ne_hwm=$(hwm_kib "$NE")
metrics_bytes=$(curl -s "http://127.0.0.1:$NE_PORT/metrics" | wc -c)

python3 - "$stats" <<PY
import re, sys
stats = dict(re.findall(r'(\w+)=(\d+)', sys.argv[1]))
reports, full = int(stats['reports']), int(stats['full_reports'])
byts, full_bytes = int(stats['bytes']), int(stats['full_bytes'])
partial = reports - full
tick = $TICK
agent_ms = ($a1 - $a0) * 1000 / tick / $DURATION
ne_ms = ($n1 - $n0) * 1000 / tick / $DURATION
f_avg = full_bytes / max(full, 1)
p_avg = (byts - full_bytes) / max(partial, 1)
# Default cadence: a report every 10 s, every 30th full -> per hour 12 full + 348 partial.
per_hour = 12 * f_avg + 348 * p_avg
print(f"containers={$CONTAINERS} window={$DURATION}s (one report / one scrape per second)")
print(f"rollcall-agent:           RSS {$agent_rss/1024:.1f} MiB (peak {$agent_hwm/1024:.1f}), CPU {agent_ms:.2f} ms per report cycle")
print(f"prometheus-node-exporter: RSS {$ne_rss/1024:.1f} MiB (peak {$ne_hwm/1024:.1f}), CPU {ne_ms:.2f} ms per scrape ({$metrics_bytes} bytes per scrape)")
print(f"agent wire: full report {f_avg:.0f} B, partial report {p_avg:.0f} B; at 10 s: {per_hour/1024:.1f} KiB per agent per hour (all-full would be {360*f_avg/1024:.1f} KiB)")
PY
