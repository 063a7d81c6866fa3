#!/usr/bin/env bash
# Rolling upgrade, side by side (see BENCHMARKS.md): the classic Ansible
# playbook (ansible/bench/rolling-upgrade.yml, serial: 1) against rollcall
# campaigns doing the same work, each on fresh Debian node containers.
# Prints one line per run: wall time and the ratio to the playbook's.
#
#   scripts/bench-rolling.sh
#   scripts/bench-rolling.sh --computes 6 --storage 3 --runs ansible,rollcall-per-role
#   scripts/bench-rolling.sh --report-interval 2 --tick-ms 200
#
# Needs: a Docker engine, the node image (scripts/build-node-image.sh), the
# packages (scripts/package.sh) and Ansible in .venv (scripts/test.sh
# installs it). The bench removes its containers and networks however it
# ends; logs and campaign audits go to target/bench-rolling/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ansible-playbook ] || {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'ansible>=10,<13'
}
docker image inspect rollcall-test/bookworm-node:2 >/dev/null 2>&1 || scripts/build-node-image.sh
ls target/debian/rollcall-agent_*.deb target/debian/rollcall-server_*.deb >/dev/null 2>&1 || scripts/package.sh
# The bench only drives docker and the CLIs: a debug build is enough.
cargo build --quiet -p rollcall-server --bin rollcall-server -p rollcall-tests --bin rollcall-bench-rolling
exec target/debug/rollcall-bench-rolling "$@"
