#!/bin/sh
# Builds rollcall-test/bookworm-cluster-node:1 FROM rollcall-test/bookworm-node:2
# (scripts/build-node-image.sh), without a registry: a `docker run` of the
# node image that installs Debian's mariadb-server, galera-4, rsync (Galera's
# state transfer) and rabbitmq-server, then `docker commit`.
#
# Neither service is enabled nor started: tests/src/clusters.rs writes the
# Galera and RabbitMQ configuration and the Erlang cookie, then starts them.
# Debian's repository is used for the build only: the image keeps the node
# image's sources.list (the local, file-based repository), so upgrades on a
# cluster node stay offline and repeatable too.
#
# An existing image is kept (delete it to rebuild), as build-node-image.sh does.
set -eu
IMAGE=rollcall-test/bookworm-cluster-node:1
BASE=rollcall-test/bookworm-node:2
MIRROR="${ROLLCALL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$#" -ne 0 ]; then
    echo "usage: $0 (no arguments; ROLLCALL_DEBIAN_MIRROR overrides the Debian mirror)" >&2
    exit 2
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists."
    exit 0
fi
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "build-cluster-image.sh: $BASE is missing: run scripts/build-node-image.sh first" >&2
    exit 1
fi

builder="rollcall-cluster-build-$$"
log="$(mktemp)"
trap 'docker rm -f "$builder" >/dev/null 2>&1 || true; rm -f "$log"' EXIT

# The mirror goes in as an argument, never into the script text.
if ! docker run -i --name "$builder" "$BASE" sh -s "$MIRROR" >"$log" 2>&1 <<'SETUP'
set -eu
mirror="$1"
echo "deb $mirror bookworm main" >/etc/apt/sources.list.d/debian-build.list
# No service starts during the build (there is no systemd here anyway, but the
# packages' init scripts would start the daemons through invoke-rc.d).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    mariadb-server mariadb-client galera-4 rsync rabbitmq-server
# Configured and started by the tests, never at boot.
# mariadb.socket too: enabled, it would start MariaDB on the first connection
# to 3306 or the socket, and hold port 3306 against galera_recovery.
systemctl disable mariadb.service mariadb.socket rabbitmq-server.service
rm -f /usr/sbin/policy-rc.d /etc/apt/sources.list.d/debian-build.list
apt-get clean
rm -rf /var/lib/apt/lists/*
# Each node gets the cookie the test writes; none may come with the image.
rm -f /var/lib/rabbitmq/.erlang.cookie
SETUP
then
    tail -20 "$log" >&2
    echo "build-cluster-image.sh: installing the cluster packages failed (log above)" >&2
    exit 1
fi
# `docker commit` would keep the build's `sh -s` as the command: systemd again.
docker commit --change 'CMD ["/lib/systemd/systemd"]' "$builder" "$IMAGE" >/dev/null
echo "$IMAGE built."
