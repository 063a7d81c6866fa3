#!/bin/sh
# A RECORDING FAKE of the ceph CLI, for tests/run.sh only: it talks to no
# cluster (Ceph cannot run here). Every call is appended to $FAKE_CLI_LOG as
# one line: "ceph" and the arguments. It answers only `ceph status -f json`,
# replaying fixtures/ceph/$FAKE_CEPH_STATUS.json on stdout (exit 0), or, when
# fixtures/ceph/$FAKE_CEPH_STATUS.stderr exists, that on stderr (exit 1), as
# the real CLI does when it cannot reach the cluster. Any other call is
# unexpected: exit 64.
#
# The fixtures are in the format of `ceph status -f json` (Reef); where the
# fields come from is in fixtures/README.md.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"
: "${FAKE_CEPH_STATUS:?FAKE_CEPH_STATUS must name a fixture in fixtures/ceph}"

printf '%s\n' "ceph $*" >>"$FAKE_CLI_LOG"

if [ "$*" != "status -f json" ]; then
    echo "fake ceph: unexpected call: ceph $*" >&2
    exit 64
fi
fixtures=$(dirname "$(readlink -f "$0")")/fixtures/ceph
if [ -f "$fixtures/$FAKE_CEPH_STATUS.stderr" ]; then
    cat "$fixtures/$FAKE_CEPH_STATUS.stderr" >&2
    exit 1
fi
cat "$fixtures/$FAKE_CEPH_STATUS.json"
