#!/usr/bin/env bash
# Builds rollcall-test/bookworm-node:2, a Debian bookworm node image for the
# Ansible and campaign suites, without a registry:
#   debootstrap (minbase + systemd + python3 for Ansible) → docker import.
# It runs systemd as PID 1 and carries a local, file-based apt repository
# (/srv/rollcall-repo) holding rollcall-demo-kernel 1.1, a newer version of
# the installed 1.0, whose postinst writes /var/run/reboot-required: so
# `apt-get upgrade` on a node produces a real reboot-required state.
#
# The debootstrap tree is cached in $ROLLCALL_CACHE (default
# /var/cache/rollcall-test); an existing image is kept (delete it to rebuild).
set -euo pipefail
IMAGE=rollcall-test/bookworm-node:2
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists."
    exit 0
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
CACHE="${ROLLCALL_CACHE:-/var/cache/rollcall-test}"
BASE="$CACHE/bookworm-base.tar"
mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ ! -s "$BASE" ]; then
    echo "debootstrap bookworm (a few minutes, once)..."
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,procps,iproute2,util-linux,adduser,libcap2-bin \
        bookworm "$WORK/root" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/lib/apt/lists/"*
    tar -C "$WORK/root" -cf "$BASE.tmp" .
    mv "$BASE.tmp" "$BASE"
    rm -rf "$WORK/root"
fi
mkdir "$WORK/root"
tar -C "$WORK/root" -xf "$BASE"
ROOT="$WORK/root"

# Units that have nothing to do in a container and would only fail.
for unit in systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount getty@tty1.service \
    systemd-remount-fs.service console-getty.service systemd-firstboot.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
echo "rollcall-node" >"$ROOT/etc/hostname"

# A container's /proc/sys/kernel/random/boot_id is the host's and survives a
# container restart. The campaign suite restarts a node container in place
# of a reboot, so each container start writes a boot id of its own, which
# the agent reads (host.boot_id_path = "/run/rollcall/boot_id").
cat >"$ROOT/etc/systemd/system/rollcall-boot-id.service" <<'UNIT'
[Unit]
Description=A boot id of this container's own (rollcall test nodes)
DefaultDependencies=no
Before=rollcall-agent.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /run/rollcall && cat /proc/sys/kernel/random/uuid > /run/rollcall/boot_id'

[Install]
WantedBy=sysinit.target
UNIT
ln -sf /etc/systemd/system/rollcall-boot-id.service "$ROOT/etc/systemd/system/sysinit.target.wants/rollcall-boot-id.service"
: >"$ROOT/etc/machine-id"

# The demo package, version 1.0 installed and 1.1 in the local repository.
make_pkg() {
    local version="$1" dir="$WORK/pkg-$1"
    mkdir -p "$dir/DEBIAN" "$dir/usr/share/rollcall-demo"
    echo "$version" >"$dir/usr/share/rollcall-demo/version"
    cat >"$dir/DEBIAN/control" <<CONTROL
Package: rollcall-demo-kernel
Version: $version
Architecture: all
Maintainer: rollcall developers <rollcall@example.org>
Description: rollcall test package standing in for a kernel update
 Its postinst asks for a reboot the way Debian's kernel packages do.
CONTROL
    cat >"$dir/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = "configure" ] && [ -n "$2" ]; then
    # An upgrade (not the first install): ask for a reboot, as kernels do.
    touch /var/run/reboot-required
    echo rollcall-demo-kernel >>/var/run/reboot-required.pkgs
fi
POSTINST
    chmod 755 "$dir/DEBIAN/postinst"
    dpkg-deb --root-owner-group --build "$dir" "$WORK/rollcall-demo-kernel_${version}_all.deb" >/dev/null
}
make_pkg 1.0
make_pkg 1.1
mkdir -p "$ROOT/srv/rollcall-repo"
cp "$WORK/rollcall-demo-kernel_1.1_all.deb" "$ROOT/srv/rollcall-repo/"
(cd "$ROOT/srv/rollcall-repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
cp "$WORK/rollcall-demo-kernel_1.0_all.deb" "$ROOT/tmp/"
chroot "$ROOT" dpkg -i /tmp/rollcall-demo-kernel_1.0_all.deb >/dev/null
rm "$ROOT/tmp/rollcall-demo-kernel_1.0_all.deb"
# Only the local repository: upgrades on the nodes are offline and repeatable.
echo "deb [trusted=yes] file:/srv/rollcall-repo ./" >"$ROOT/etc/apt/sources.list"
rm -f "$ROOT/etc/apt/sources.list.d/"*

tar -C "$ROOT" -c . | docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    - "$IMAGE" >/dev/null
echo "$IMAGE built."
