#!/bin/sh
# rollcall hook: put a nova-compute host back in service after it was patched.
# Usage: nova-compute-undrain.sh TARGET
#
# Runs on a controller (or any node with admin credentials for the cloud) and
# enables TARGET's nova-compute service. Instances are not moved back: the
# scheduler fills the host again as new instances arrive.
#
# Environment:
#   OS_CLOUD, OS_* ...   credentials for the openstack CLI (admin)
#   OPENSTACK_CLI        the openstack binary (default: openstack)
set -eu

me="nova-compute-undrain"

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

if ! "$os" compute service set --enable "$target" nova-compute; then
    echo "$me: $target: cannot enable nova-compute" >&2
    exit 1
fi
echo "$me: $target: nova-compute enabled"
