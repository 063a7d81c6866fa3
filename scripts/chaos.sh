#!/usr/bin/env bash
# Fault injection as a benchmark (issue 11; see BENCHMARKS.md): RUNS runs,
# each a real rollcall-server and eight real rollcall-agents (3 controllers,
# 4 computes, 1 storage) as processes under supervisors, one rolling
# campaign with a patch and a reboot per node, and one kind of fault per run:
# kill -9 of the server or of agents, SIGSTOP, lost requests, a compute or a
# controller that never returns from its reboot, a full disk under the
# server. Prints a line per run and a markdown table per fault kind.
#
#   scripts/chaos.sh 100
#   scripts/chaos.sh 1 --seed 1234                # run 1234 of a session again (same --kind flags)
#   scripts/chaos.sh 10 --kind kill-server --kind lost-requests
#
# Needs root for the full-disk runs (a 64 MiB tmpfs under the server's data
# directory); without it those runs say "NOT RUN" with the reason. Files of
# runs with a finding stay in target/chaos/run-SEED/ (verdict.txt first).
# Exit status 1 if a node was patched or rebooted twice, a campaign did not
# end or a run could not be made.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p rollcall-server --bin rollcall-server \
    -p rollcall-agent --bin rollcall-agent -p rollcall-tests --bin rollcall-chaos
exec target/release/rollcall-chaos --bin-dir target/release --out target/chaos "$@"
