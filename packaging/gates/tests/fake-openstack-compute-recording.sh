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
# command; where the columns come from is in fixtures/README.md. nova-compute-up
# wants a recent "Updated At", so a fixture gives it relative to now:
# @AGO:N@ is replayed as the UTC time N seconds ago in the format the CLI
# prints ("2026-11-30T06:40:44.000000"), and @AGO:N:ZONE@ as that time in
# ZONE ("Z" or "+HH:MM"), with ZONE after it.
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
# shellcheck disable=SC2016 # Python source, not shell
python3 -c '
import datetime, re, sys

now = datetime.datetime.now(datetime.timezone.utc)

def render(match):
    ago, zone = int(match.group(1)), match.group(2) or ""
    shift = datetime.timedelta(0)
    if zone not in ("", "Z"):
        shift = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        shift = shift if zone[0] == "+" else -shift
    stamp = now - datetime.timedelta(seconds=ago) + shift
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + zone

sys.stdout.write(re.sub(r"@AGO:(-?[0-9]+)(?::(Z|[+-][0-9][0-9]:[0-9][0-9]))?@", render, sys.stdin.read()))
' <"$fixtures/$FAKE_OPENSTACK_SERVICES.json"
