#!/usr/bin/env bash
# Failover as a benchmark (issue 16; see BENCHMARKS.md, "Failover"): two or
# three real rollcall-server replicas on one PostgreSQL database (a cluster
# of Debian's postgresql made for the run, removed after it), the eight real
# agents of the chaos cloud given every replica's URL, and N kill -9s of the
# leader. For each: the time until another replica won the lease, until it
# serves, and until every agent has a session with it again; the killed one
# comes back as a follower before the next kill. Prints a line per kill,
# p50 and max, and one JSON line.
#
#   scripts/bench-failover.sh                          # 20 kills, 3 replicas, default lease (10 s) and poll (1 s)
#   scripts/bench-failover.sh --kills 30 --replicas 2 --lease-ms 4000 --poll-ms 500
#   scripts/bench-failover.sh --campaign               # a rolling campaign runs meanwhile, judged at the end
#
# Needs Debian's postgresql (apt-get install postgresql; scripts/test.sh
# installs it). The run's files stay in target/bench-failover/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p rollcall-server --bin rollcall-server \
    -p rollcall-agent --bin rollcall-agent -p rollcall-tests --bin rollcall-bench-failover
exec target/release/rollcall-bench-failover --bin-dir target/release --out target/bench-failover "$@"
