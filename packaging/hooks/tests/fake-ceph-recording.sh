#!/bin/sh
# A RECORDING FAKE of the ceph CLI, for tests/run.sh only: it talks to no
# cluster. Every call is appended to $FAKE_CLI_LOG as one line: "ceph" and the
# arguments. It answers "osd set noout" and "osd unset noout" as ceph does;
# any other call is unexpected: exit 64.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"

printf '%s\n' "ceph $*" >>"$FAKE_CLI_LOG"

case "$*" in
    "osd set noout") echo "noout is set" >&2 ;;
    "osd unset noout") echo "noout is unset" >&2 ;;
    *)
        echo "fake ceph: unexpected call: ceph $*" >&2
        exit 64
        ;;
esac
