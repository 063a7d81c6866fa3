#!/bin/sh
# A RECORDING FAKE of the openstack CLI, for tests/run.sh only: it talks to no
# cloud. Every call is appended to $FAKE_CLI_LOG as one line: "openstack" and
# the arguments, an argument holding a space (or empty) in single quotes.
#
# The cloud it pretends to be lives in $FAKE_STATE_DIR: one directory per host,
# one empty file per instance on it (the file's name is the instance id).
#   server list --all-projects --host H -f value -c ID   lists H's files
#   server migrate --live-migration --wait ID            moves ID's file to
#                                                        the host "elsewhere"
# Knobs:
#   FAKE_MIGRATE_FAIL_ID   migrating this id fails (exit 1, nothing moves)
#   FAKE_STUCK_IDS         ids (space-separated) whose migration "succeeds"
#                          but which stay where they are, as after a rollback
#   FAKE_SERVICE_FAIL=1    "compute service set" fails
# Any other call is unexpected: exit 64.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"
: "${FAKE_STATE_DIR:?FAKE_STATE_DIR must name the fake cloud state}"

line=openstack
for arg in "$@"; do
    case $arg in
        '' | *' '*) line="$line '$arg'" ;;
        *) line="$line $arg" ;;
    esac
done
printf '%s\n' "$line" >>"$FAKE_CLI_LOG"

unexpected() {
    echo "fake openstack: unexpected call: $line" >&2
    exit 64
}

case "$*" in
    "compute service set "*)
        if [ "${FAKE_SERVICE_FAIL:-}" = 1 ]; then
            echo "Failed to set service status (fake)" >&2
            exit 1
        fi
        ;;
    "server list --all-projects --host "*" -f value -c ID")
        [ "$#" -eq 9 ] || unexpected
        host=$5
        if [ -d "$FAKE_STATE_DIR/$host" ]; then
            ls "$FAKE_STATE_DIR/$host"
        fi
        ;;
    "server migrate --live-migration --wait "*)
        [ "$#" -eq 5 ] || unexpected
        id=$5
        if [ "$id" = "${FAKE_MIGRATE_FAIL_ID:-}" ]; then
            echo "Error migrating server: $id (fake)" >&2
            exit 1
        fi
        case " ${FAKE_STUCK_IDS:-} " in
            *" $id "*) exit 0 ;;
        esac
        for file in "$FAKE_STATE_DIR"/*/"$id"; do
            [ -e "$file" ] || unexpected
            mkdir -p "$FAKE_STATE_DIR/elsewhere"
            mv "$file" "$FAKE_STATE_DIR/elsewhere/"
        done
        ;;
    *) unexpected ;;
esac
