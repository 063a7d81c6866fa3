#!/usr/bin/env bash
# Starts a demo fleet on this machine and shows it:
#   fresh certificates (a CA, the server's, an agent's, an operator's),
#   rollcall-server on embedded SQLite, listening on 127.0.0.1,
#   rollcall-agent for this host, reporting over mutual TLS.
# Everything lives in .demo/. The fleet keeps running after the script ends.
#
#   scripts/demo.sh          start (or restart) the demo and show the fleet
#   scripts/demo.sh stop     stop it
#
# ROLLCALL_DEMO_PORT picks the port (default 7443).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="$PWD/.demo"
PORT="${ROLLCALL_DEMO_PORT:-7443}"
BIN="$PWD/target/debug"

stop() {
    for pidfile in "$DEMO"/*.pid; do
        [ -e "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

if [ "${1:-}" = "stop" ]; then
    stop
    echo "Demo stopped."
    exit 0
fi

echo "Building rollcall (first build takes a few minutes)..."
cargo build --workspace --bins --quiet

stop
rm -rf "$DEMO"
mkdir -p "$DEMO"
NODE="$(hostname -s | tr -c 'A-Za-z0-9._\n-' '-')"

"$BIN/rollcall-server" certs init --pki "$DEMO/pki" >/dev/null
"$BIN/rollcall-server" certs issue --pki "$DEMO/pki" --agent "$NODE" >/dev/null
"$BIN/rollcall-server" certs issue --pki "$DEMO/pki" --operator demo >/dev/null

cat > "$DEMO/server.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$DEMO/data"
[tls]
ca = "$DEMO/pki/ca.crt"
cert = "$DEMO/pki/server.crt"
key = "$DEMO/pki/server.key"
[agents]
report_interval_secs = 5
TOML

cat > "$DEMO/agent.toml" <<TOML
server = "https://localhost:$PORT"
role = "compute"
[labels]
demo = "yes"
[tls]
ca = "$DEMO/pki/ca.crt"
cert = "$DEMO/pki/agents/$NODE.crt"
key = "$DEMO/pki/agents/$NODE.key"
TOML

cat > "$DEMO/env" <<ENV
export ROLLCALL_SERVER=https://localhost:$PORT
export ROLLCALL_CA=$DEMO/pki/ca.crt
export ROLLCALL_CERT=$DEMO/pki/operators/demo.crt
export ROLLCALL_KEY=$DEMO/pki/operators/demo.key
export PATH=$BIN:\$PATH
ENV
# shellcheck source=/dev/null
. "$DEMO/env"

nohup "$BIN/rollcall-server" serve --config "$DEMO/server.toml" >"$DEMO/server.log" 2>&1 &
echo $! >"$DEMO/server.pid"
nohup "$BIN/rollcall-agent" run --config "$DEMO/agent.toml" >"$DEMO/agent.log" 2>&1 &
echo $! >"$DEMO/agent.pid"

for _ in $(seq 1 50); do
    if rollcall-server nodes list --online --json 2>/dev/null | grep -q "\"$NODE\""; then
        break
    fi
    sleep 0.2
done

echo
echo "\$ rollcall-server nodes list"
rollcall-server nodes list
echo
echo "\$ rollcall-server nodes show $NODE"
rollcall-server nodes show "$NODE"
cat <<TEXT

The demo fleet is running (logs in .demo/*.log). To look around:
  . .demo/env
  rollcall-server nodes list --json
  rollcall-server nodes watch
  grpcurl -cacert .demo/pki/ca.crt -cert .demo/pki/operators/demo.crt -key .demo/pki/operators/demo.key localhost:$PORT list
Stop it with: scripts/demo.sh stop
TEXT
