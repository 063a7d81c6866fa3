#!/bin/sh
# What the controller gates add to a campaign (see BENCHMARKS.md, "Gates"):
# on one fresh lab of three cluster nodes (real Galera and RabbitMQ,
# scripts/build-cluster-image.sh) and a server node, campaigns over the
# three controllers with reboot = "always", without and with the
# galera-synced and rabbitmq-healthy gates; each script's per-try wall time.
# Prints markdown tables.
#
#   scripts/bench-gates.sh
#   scripts/bench-gates.sh --tries 20 --interval-secs 2 --runs gates
#
# Needs: a Docker engine, the node and cluster images, the packages
# (scripts/package.sh). The bench removes its containers and network however
# it ends; audits and the summary go to target/bench-gates/.
set -eu
cd "$(dirname "$0")/.."
docker image inspect rollcall-test/bookworm-node:2 >/dev/null 2>&1 || scripts/build-node-image.sh
scripts/build-cluster-image.sh >/dev/null
if ! ls target/debian/rollcall-agent_*.deb target/debian/rollcall-server_*.deb >/dev/null 2>&1; then
    scripts/package.sh
fi
# The bench only drives docker and the CLIs: a debug build is enough.
cargo build --quiet -p rollcall-server --bin rollcall-server -p rollcall-tests --bin rollcall-bench-gates
exec target/debug/rollcall-bench-gates "$@"
