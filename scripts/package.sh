#!/usr/bin/env bash
# Builds the release binaries and the packages:
#   target/debian/rollcall-{agent,server}_VERSION-1_amd64.deb      (cargo-deb)
#   target/generate-rpm/rollcall-{agent,server}-VERSION-1.x86_64.rpm (cargo-generate-rpm)
# Installs cargo-deb and cargo-generate-rpm first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb@3.8.0
command -v cargo-generate-rpm >/dev/null || cargo install --locked --quiet cargo-generate-rpm@0.21.1
cargo build --release --locked -p rollcall-agent -p rollcall-server
for pkg in rollcall-agent rollcall-server; do
    cargo deb --no-build --locked -p "$pkg" --quiet
    cargo generate-rpm -p "${pkg#rollcall-}"
done
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
