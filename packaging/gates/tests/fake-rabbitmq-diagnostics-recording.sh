#!/bin/sh
# A RECORDING FAKE of rabbitmq-diagnostics, for tests/run.sh only: it talks to
# no broker. Every call is appended to $FAKE_CLI_LOG as one line:
# "rabbitmq-diagnostics" and the arguments.
#
# It answers the four commands rabbitmq-healthy sends, each with -q, by
# replaying REAL output captured from RabbitMQ 3.10.8 on Erlang 25.2.3
# (Debian bookworm's rabbitmq-server), fixtures/rabbitmq/COMMAND-CASE.stdout,
# .stderr and .status (see fixtures/README.md). CASE comes from:
#   FAKE_RABBITMQ_CHECK_RUNNING      check_running                    (default ok)
#   FAKE_RABBITMQ_LOCAL_ALARMS       check_local_alarms               (default ok)
#   FAKE_RABBITMQ_CLUSTER_STATUS     cluster_status --formatter json  (default 3_running)
#   FAKE_RABBITMQ_QUORUM_CRITICAL    check_if_node_is_quorum_critical (default ok)
# Any other call is unexpected: exit 64.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"

printf '%s\n' "rabbitmq-diagnostics $*" >>"$FAKE_CLI_LOG"

case "$*" in
    "-q check_running") capture=check_running-${FAKE_RABBITMQ_CHECK_RUNNING:-ok} ;;
    "-q check_local_alarms") capture=check_local_alarms-${FAKE_RABBITMQ_LOCAL_ALARMS:-ok} ;;
    "-q cluster_status --formatter json") capture=cluster_status-${FAKE_RABBITMQ_CLUSTER_STATUS:-3_running} ;;
    "-q check_if_node_is_quorum_critical")
        capture=check_if_node_is_quorum_critical-${FAKE_RABBITMQ_QUORUM_CRITICAL:-ok} ;;
    *)
        echo "fake rabbitmq-diagnostics: unexpected call: rabbitmq-diagnostics $*" >&2
        exit 64
        ;;
esac
capture=$(dirname "$(readlink -f "$0")")/fixtures/rabbitmq/$capture
cat "$capture.stdout"
cat "$capture.stderr" >&2
exit "$(cat "$capture.status")"
