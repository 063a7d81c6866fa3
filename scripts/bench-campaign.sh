#!/usr/bin/env bash
# Campaign scheduler overhead (see BENCHMARKS.md): one release-built process
# with a real server and N real agents (the fleet harness), near-instant
# FakePatch actions, no reboot. Prints one result line.
#
#   scripts/bench-campaign.sh                       # 200 nodes, concurrency 20
#   scripts/bench-campaign.sh --nodes 500 --concurrency 50 --tick-ms 200
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p rollcall-tests --bin rollcall-bench-campaign
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec target/release/rollcall-bench-campaign "$@"
