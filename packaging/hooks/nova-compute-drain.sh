#!/bin/sh
# rollcall hook: take a nova-compute host out of service before it is patched.
# Usage: nova-compute-drain.sh TARGET
#
# Runs on a controller (or any node with admin credentials for the cloud):
# disables TARGET's nova-compute service so the scheduler places nothing new
# there, live-migrates every instance on it, then waits until nova lists no
# instance on TARGET. Exit 0 only when the host is empty.
#
# Environment:
#   OS_CLOUD, OS_* ...        credentials for the openstack CLI (admin)
#   OPENSTACK_CLI             the openstack binary (default: openstack)
#   ROLLCALL_DRAIN_TIMEOUT    seconds to wait, after the migrations, for the
#                             host to be empty (default: 600)
#   ROLLCALL_POLL_SECS        seconds between checks while waiting (default: 10)
#
# On failure the service stays disabled: the node is half drained and an
# operator decides; nova-compute-undrain.sh enables it again.
set -eu

me="nova-compute-drain"

usage() {
    echo "usage: $me TARGET (TARGET: a host name of [A-Za-z0-9._-], not starting with '-'): $1" >&2
    exit 2
}

[ "$#" -eq 1 ] || usage "expected 1 argument, got $#"
target=$1
# Spelled out rather than [:alnum:] so that no locale widens it; a leading
# '-' would reach the CLI as an option.
case $target in
    '' | -* | *[!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-]*)
        usage "invalid TARGET '$target'" ;;
esac

os=${OPENSTACK_CLI:-openstack}
timeout=${ROLLCALL_DRAIN_TIMEOUT:-600}
poll=${ROLLCALL_POLL_SECS:-10}
case $timeout in '' | *[!0123456789]*) usage "ROLLCALL_DRAIN_TIMEOUT must be whole seconds, got '$timeout'" ;; esac
case $poll in '' | 0 | *[!0123456789]*) usage "ROLLCALL_POLL_SECS must be whole seconds above 0, got '$poll'" ;; esac

fail() {
    echo "$me: $target: $1" >&2
    exit 1
}

# Instance ids on the host, one a line; empty when none.
instances() {
    "$os" server list --all-projects --host "$target" -f value -c ID
}

"$os" compute service set --disable --disable-reason "rollcall: patching" "$target" nova-compute \
    || fail "cannot disable nova-compute (is '$target' the host name nova knows?)"
echo "$me: $target: nova-compute disabled"

ids=$(instances) || fail "cannot list the instances on the host"
count=$(printf '%s' "$ids" | grep -c . || true)
echo "$me: $target: $count instance(s) to live-migrate"

set -f # ids are split on whitespace below, never globbed
# Checked before any migration starts: a stray line must not become an
# argument, and a half-done loop is worse than none.
for id in $ids; do
    case $id in
        *[!0123456789abcdefABCDEF-]*) fail "unexpected instance id '$id' in the server list" ;;
    esac
done
for id in $ids; do
    echo "$me: $target: live-migrating $id"
    # --wait prints a progress line per poll; it would push the lines above
    # out of the output tail the operator sees, so only errors are kept.
    "$os" server migrate --live-migration --wait "$id" >/dev/null \
        || fail "live migration of instance $id failed; the service stays disabled"
done
set +f

# A live migration can end with the instance rolled back to this host while
# the CLI reports success, so only an empty host counts.
# Whole seconds from date(1): strictly more than the timeout has passed
# before giving up, never less.
started=$(date +%s)
while :; do
    left=$(instances) || fail "cannot list the instances on the host"
    [ -n "$left" ] || break
    if [ $(($(date +%s) - started)) -gt "$timeout" ]; then
        fail "instance(s) still on the host after ${timeout}s: $(printf '%s\n' "$left" | paste -s -d " " -)"
    fi
    echo "$me: $target: waiting for $(printf '%s\n' "$left" | grep -c .) instance(s) to leave"
    sleep "$poll"
done
echo "$me: $target: drained, no instances left"
