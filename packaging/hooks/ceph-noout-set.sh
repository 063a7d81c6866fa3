#!/bin/sh
# rollcall hook: keep Ceph from rebalancing while a storage node is patched.
# Usage: ceph-noout-set.sh [TARGET]
#
# Sets the cluster-wide noout flag: OSDs that go down (the node reboots) are
# not marked out, so their data is not copied elsewhere meanwhile.
# ceph-noout-unset.sh clears it. The flag is cluster-wide, not per host:
# TARGET is only named in the output.
#
# Environment:
#   CEPH_CLI   the ceph binary (default: ceph); it needs a keyring allowed to
#              change OSD flags (client.admin on most clusters)
set -eu

me="ceph-noout-set"

usage() {
    echo "usage: $me [TARGET] (TARGET: a host name of [A-Za-z0-9._-], not starting with '-'): $1" >&2
    exit 2
}

[ "$#" -le 1 ] || usage "expected at most 1 argument, got $#"
target=cluster
if [ "$#" -eq 1 ]; then
    target=$1
    # Spelled out rather than [:alnum:] so that no locale widens it.
    case $target in
        '' | -* | *[!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-]*)
            usage "invalid TARGET '$target'" ;;
    esac
fi

ceph=${CEPH_CLI:-ceph}

if ! "$ceph" osd set noout; then
    echo "$me: $target: ceph osd set noout failed" >&2
    exit 1
fi
echo "$me: $target: noout set: the cluster will not mark down OSDs out"
