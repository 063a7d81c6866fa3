#!/bin/sh
# A RECORDING FAKE of the openstack CLI, for tests/run.sh only: it talks to no
# cloud (the OpenStack API cannot run here). Every call is appended to
# $FAKE_CLI_LOG as one line: "openstack" and the arguments. It answers only
# `openstack compute service list --host HOST --service nova-compute -f json`,
# replaying fixtures/openstack/$FAKE_OPENSTACK_SERVICES.json on stdout (exit
# 0), or, when fixtures/openstack/$FAKE_OPENSTACK_SERVICES.stderr exists, that
# on stderr (exit 1), as the real CLI does when keystone refuses it. Any other
# call is unexpected: exit 64.
#
# The fixtures are in python-openstackclient's `-f json` format for that
# command; where the columns come from is in fixtures/README.md.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"
: "${FAKE_OPENSTACK_SERVICES:?FAKE_OPENSTACK_SERVICES must name a fixture in fixtures/openstack}"

printf '%s\n' "openstack $*" >>"$FAKE_CLI_LOG"

case "$*" in
    "compute service list --host "*" --service nova-compute -f json")
        [ "$#" -eq 9 ] || {
            echo "fake openstack: unexpected call: openstack $*" >&2
            exit 64
        }
        ;;
    *)
        echo "fake openstack: unexpected call: openstack $*" >&2
        exit 64
        ;;
esac
fixtures=$(dirname "$(readlink -f "$0")")/fixtures/openstack
if [ -f "$fixtures/$FAKE_OPENSTACK_SERVICES.stderr" ]; then
    cat "$fixtures/$FAKE_OPENSTACK_SERVICES.stderr" >&2
    exit 1
fi
cat "$fixtures/$FAKE_OPENSTACK_SERVICES.json"
