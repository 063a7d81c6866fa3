#!/bin/sh
# A RECORDING FAKE of the docker CLI, for tests/run.sh only: it talks to no
# engine. Every call is appended to $FAKE_CLI_LOG as one line: "docker" and
# the arguments, an argument holding a space (or empty) in single quotes.
# It stands for a kolla node whose running containers are
# $FAKE_DOCKER_RUNNING (space-separated names):
#   inspect --type container --format {{.State.Running}} NAME
#                                              prints "true" for a running
#                                              one, else fails as docker does
#   exec NAME mysql|rabbitmq-diagnostics ARG...  runs the recording fake of
#                                              that tool with ARG...
# Any other call is unexpected: exit 64.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"

line=docker
for arg in "$@"; do
    case $arg in
        '' | *' '*) line="$line '$arg'" ;;
        *) line="$line $arg" ;;
    esac
done
printf '%s\n' "$line" >>"$FAKE_CLI_LOG"
here=$(dirname "$(readlink -f "$0")")

unexpected() {
    echo "fake docker: unexpected call: docker $*" >&2
    exit 64
}
running() {
    case " ${FAKE_DOCKER_RUNNING:-} " in *" $1 "*) return 0 ;; esac
    return 1
}

case ${1:-} in
    inspect)
        if [ "$#" -ne 6 ] || [ "$2" != --type ] || [ "$3" != container ] \
            || [ "$4" != --format ] || [ "$5" != '{{.State.Running}}' ]; then
            unexpected "$@"
        fi
        if running "$6"; then
            echo true
        else
            echo "Error response from daemon: No such container: $6" >&2
            exit 1
        fi
        ;;
    exec)
        [ "$#" -ge 3 ] || unexpected "$@"
        running "$2" || {
            echo "Error response from daemon: No such container: $2" >&2
            exit 1
        }
        tool=$3
        shift 3
        case $tool in
            mysql) exec "$here/fake-mysql-recording.sh" "$@" ;;
            rabbitmq-diagnostics) exec "$here/fake-rabbitmq-diagnostics-recording.sh" "$@" ;;
            *) unexpected exec "$tool" "$@" ;;
        esac
        ;;
    *) unexpected "$@" ;;
esac
