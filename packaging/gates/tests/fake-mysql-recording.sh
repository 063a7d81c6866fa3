#!/bin/sh
# A RECORDING FAKE of the mysql (or mariadb) client, for tests/run.sh only:
# it talks to no server. Every call is appended to $FAKE_CLI_LOG as one line:
# the name it was called by ("mysql" when called by its own file name) and
# the arguments, an argument holding a space (or empty) in single quotes.
#
# It accepts any options first (those of GALERA_MYSQL and GALERA_MYSQL_OPTS)
# but insists on ending with the query galera-synced sends:
#   -N -B --connect-timeout=10 -e "SHOW GLOBAL STATUS WHERE Variable_name IN (...)"
# and replays the REAL output captured from MariaDB 10.11.19 + Galera 4
# 26.4.23 (Debian bookworm), as fixtures/galera/$FAKE_MYSQL_CAPTURE.stdout,
# .stderr and .status (see fixtures/README.md). Any other call: exit 64.
set -eu

: "${FAKE_CLI_LOG:?FAKE_CLI_LOG must name the call log}"
: "${FAKE_MYSQL_CAPTURE:?FAKE_MYSQL_CAPTURE must name a capture in fixtures/galera}"

name=${0##*/}
case $name in fake-*) name=mysql ;; esac
line=$name
for arg in "$@"; do
    case $arg in
        '' | *' '*) line="$line '$arg'" ;;
        *) line="$line $arg" ;;
    esac
done
printf '%s\n' "$line" >>"$FAKE_CLI_LOG"

query="SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', 'wsrep_local_state_comment', 'wsrep_ready', 'wsrep_cluster_size')"
while [ "$#" -gt 5 ]; do shift; done
if [ "$#" -ne 5 ] || [ "$1" != -N ] || [ "$2" != -B ] || [ "$3" != --connect-timeout=10 ] \
    || [ "$4" != -e ] || [ "$5" != "$query" ]; then
    echo "fake mysql: unexpected call: $line" >&2
    exit 64
fi
capture=$(dirname "$(readlink -f "$0")")/fixtures/galera/$FAKE_MYSQL_CAPTURE
cat "$capture.stdout"
cat "$capture.stderr" >&2
exit "$(cat "$capture.status")"
