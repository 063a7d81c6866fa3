#!/bin/bash
# Tests the gate scripts in packaging/gates against recording fakes of the
# CLIs they ask (fake-*-recording.sh): each case picks what the fake replays,
# runs one gate as the agent would (argv, no shell, PHASE and TARGET appended,
# stdout and stderr into one log) and asserts the exact CLI calls, the exit
# status and the last line of output, which is what operators see.
#
# The mysql and rabbitmq-diagnostics fakes replay output captured from the
# real tools; the ceph and openstack fakes replay JSON in the real tools'
# formats (fixtures/README.md says where each comes from).
# Usage: bash packaging/gates/tests/run.sh   (CI=true: a missing shellcheck fails)
set -u

tests=$(cd "$(dirname "$0")" && pwd)
gates=$(dirname "$tests")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=packaging/tests/assert.sh
. "$tests/../../tests/assert.sh"
expect_match() { # what glob-pattern actual: for lines that hold a time or an age
    # shellcheck disable=SC2053 # $2 is a pattern on purpose
    if [[ $3 == $2 ]]; then pass; else
        fail "$1" "$(printf 'expected a match of:\n%s\nactual:\n%s' "$2" "$3")"
    fi
}
# Whatever a gate reads, its output never ends in (or holds) a Python
# traceback: the last line must say what is wrong in words.
expect_no_traceback() {
    if [[ $out != *Traceback* ]]; then pass; else
        fail "a Python traceback in the output:" "$out"
    fi
}

GATES=(galera-synced rabbitmq-healthy ceph-healthy nova-compute-up)
timeout_bin=$(command -v timeout)
python_bin=$(python3 -c 'import sys; print(sys.executable)')

# A bin directory that holds only what the gates and fakes need, so that a
# case can say which of docker, mysql, mariadb, rabbitmq-diagnostics exist.
bare_bin() { # the tools to add, as NAME=FAKE
    rm -rf "${work:?}/bin"
    mkdir -p "$work/bin"
    local tool
    for tool in awk sed cat grep mktemp rm dirname readlink; do
        ln -s "$(command -v "$tool")" "$work/bin/$tool"
    done
    ln -s "$python_bin" "$work/bin/python3"
    for tool in "$@"; do
        ln -s "$tests/${tool#*=}" "$work/bin/${tool%%=*}"
    done
}

setup() { # case name
    case_name=$1
    : >"$work/calls"
}

# Runs a gate with the fakes; sets $status, $out (stdout and stderr in one
# stream, as the agent keeps them), $last (its last non-empty line), $calls.
# Extra environment comes first as NAME=VALUE words, then the gate and its args.
run_gate() {
    local env_args=()
    while [[ $1 == *=* ]]; do
        env_args+=("$1")
        shift
    done
    local gate=$1
    shift
    env FAKE_CLI_LOG="$work/calls" \
        GALERA_MYSQL="$tests/fake-mysql-recording.sh" \
        RABBITMQ_DIAGNOSTICS="$tests/fake-rabbitmq-diagnostics-recording.sh" \
        CEPH_CLI="$tests/fake-ceph-status-recording.sh" \
        OPENSTACK_CLI="$tests/fake-openstack-compute-recording.sh" \
        "${env_args[@]}" \
        "$timeout_bin" 60 "$gates/$gate" "$@" >"$work/out" 2>&1
    status=$?
    out=$(cat "$work/out")
    last=$(awk 'NF { line = $0 } END { print line }' "$work/out")
    calls=$(cat "$work/calls")
}

# The exact query galera-synced sends, as the fake mysql logs it.
QUERY="'SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', 'wsrep_local_state_comment', 'wsrep_ready', 'wsrep_cluster_size')'"
MYSQL_ARGS="-N -B --connect-timeout=10 -e $QUERY"
RUNNING="rabbitmq-diagnostics -q check_running"
ALARMS="rabbitmq-diagnostics -q check_local_alarms"
CLUSTER="rabbitmq-diagnostics -q cluster_status --formatter json"
QUORUM="rabbitmq-diagnostics -q check_if_node_is_quorum_critical"
CEPH="ceph status -f json"
NOVA="openstack compute service list --host cmp-1 --service nova-compute -f json"

for gate in "${GATES[@]}"; do
    case_name="mode $gate"
    if [ -x "$gates/$gate" ]; then pass; else fail "not executable"; fi
done

# --- galera-synced: real MariaDB 10.11 + Galera 4 output -------------------

galera_case() { # capture, expected status, expected last line, then gate args
    local capture=$1 want_status=$2 want_last=$3
    shift 3
    setup "galera-synced $* on $capture"
    run_gate FAKE_MYSQL_CAPTURE="$capture" galera-synced "$@"
    expect_eq "exit status" "$want_status" "$status"
    expect_eq "last line" "$want_last" "$last"
    expect_eq "calls" "mysql $MYSQL_ARGS" "$calls"
}
for phase in before after; do
    galera_case synced3 0 "Galera Primary, Synced and ready, cluster size 3 (want at least 3)" $phase ctl-1
    galera_case size2 1 "wsrep_cluster_size is 2, want at least 3" $phase ctl-1
done
galera_case size2 0 "Galera Primary, Synced and ready, cluster size 2 (want at least 2)" --min-size 2 after ctl-1
galera_case synced3 1 "wsrep_cluster_size is 3, want at least 5" --min-size=5 after ctl-1
galera_case desynced3 1 "wsrep_local_state_comment is Donor/Desynced, want Synced" before ctl-2
galera_case non_primary 1 "wsrep_cluster_status is non-Primary, want Primary; wsrep_local_state_comment is Initialized, want Synced; wsrep_ready is OFF, want ON; wsrep_cluster_size is 1, want at least 3" after ctl-1
galera_case no_wsrep 1 "wsrep_cluster_status is Disconnected, want Primary; wsrep_local_state_comment is missing, want Synced; wsrep_ready is OFF, want ON; wsrep_cluster_size is 0, want at least 3" after ctl-1
galera_case server_down 1 "cannot query MariaDB: ERROR 2002 (HY000): Can't connect to local server through socket '/tmp/gal3/sock' (2)" after ctl-3
galera_case access_denied 1 "cannot query MariaDB: ERROR 1045 (28000): Access denied for user 'rollcall'@'localhost' (using password: YES)" after ctl-1

setup "galera-synced, GALERA_MIN_SIZE"
run_gate FAKE_MYSQL_CAPTURE=size2 GALERA_MIN_SIZE=2 galera-synced after ctl-1
expect_eq "exit status" 0 "$status"
run_gate FAKE_MYSQL_CAPTURE=size2 GALERA_MIN_SIZE=2 galera-synced --min-size 3 after ctl-1
expect_eq "--min-size wins over GALERA_MIN_SIZE" 1 "$status"

setup "galera-synced, failure reason on stderr"
FAKE_CLI_LOG="$work/calls" FAKE_MYSQL_CAPTURE=size2 GALERA_MYSQL="$tests/fake-mysql-recording.sh" \
    "$gates/galera-synced" after ctl-1 2>"$work/err" >/dev/null
expect_eq "stderr" "wsrep_cluster_size is 2, want at least 3" "$(cat "$work/err")"

setup "galera-synced, GALERA_MYSQL and GALERA_MYSQL_OPTS are words, never globbed or evaluated"
touch "$work/glob-bait"
# shellcheck disable=SC2016 # '$(id)' must reach the gate unexpanded
(cd "$work" && run_gate FAKE_MYSQL_CAPTURE=synced3 \
    GALERA_MYSQL="$tests/fake-mysql-recording.sh --protocol=socket *" \
    GALERA_MYSQL_OPTS='--defaults-extra-file=/etc/rollcall/galera.cnf  $(id)' \
    galera-synced after ctl-1 && printf '%s\n%s\n' "$status" "$calls" >"$work/result")
expect_eq "exit status" 0 "$(sed -n 1p "$work/result")"
# shellcheck disable=SC2016
expect_eq "calls" 'mysql --protocol=socket * --defaults-extra-file=/etc/rollcall/galera.cnf $(id) '"$MYSQL_ARGS" \
    "$(sed -n 2p "$work/result")"

setup "galera-synced, kolla: docker exec into the running mariadb container"
bare_bin docker=fake-docker-recording.sh
run_gate FAKE_MYSQL_CAPTURE=synced3 FAKE_DOCKER_RUNNING="rabbitmq mariadb" GALERA_MYSQL= PATH="$work/bin" \
    galera-synced before ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} mariadb
docker exec mariadb mysql $MYSQL_ARGS
mysql $MYSQL_ARGS" "$calls"
expect_contains "says how it asked" "asking MariaDB through: docker exec mariadb mysql" "$out"

setup "galera-synced, GALERA_CONTAINER names the container"
run_gate FAKE_MYSQL_CAPTURE=synced3 FAKE_DOCKER_RUNNING="galera" GALERA_CONTAINER=galera GALERA_MYSQL= PATH="$work/bin" \
    galera-synced before ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} galera
docker exec galera mysql $MYSQL_ARGS
mysql $MYSQL_ARGS" "$calls"

setup "galera-synced, docker without a mariadb container: the local mysql"
bare_bin docker=fake-docker-recording.sh mysql=fake-mysql-recording.sh mariadb=fake-mysql-recording.sh
run_gate FAKE_MYSQL_CAPTURE=synced3 FAKE_DOCKER_RUNNING="rabbitmq" GALERA_MYSQL= PATH="$work/bin" \
    galera-synced after ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} mariadb
mysql $MYSQL_ARGS" "$calls"

setup "galera-synced, no docker, only the mariadb client"
bare_bin mariadb=fake-mysql-recording.sh
run_gate FAKE_MYSQL_CAPTURE=synced3 GALERA_MYSQL= PATH="$work/bin" galera-synced after ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "mariadb $MYSQL_ARGS" "$calls"

setup "galera-synced, no client at all"
bare_bin
run_gate FAKE_MYSQL_CAPTURE=synced3 GALERA_MYSQL= PATH="$work/bin" galera-synced after ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "galera-synced: no MariaDB client: no docker, no mysql or mariadb on PATH (set GALERA_MYSQL)" "$out"

# Exit 2 tells the server that retrying cannot help: a kolla node whose
# mariadb container is still starting after the reboot must get exit 1.
setup "galera-synced, kolla: the mariadb container not running (yet) is exit 1"
bare_bin docker=fake-docker-recording.sh
run_gate FAKE_MYSQL_CAPTURE=synced3 FAKE_DOCKER_RUNNING="rabbitmq" GALERA_MYSQL= PATH="$work/bin" \
    galera-synced after ctl-1
expect_eq "exit status" 1 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} mariadb" "$calls"
expect_eq "last line" "cannot query MariaDB: no running 'mariadb' container, and no mysql or mariadb on PATH (set GALERA_CONTAINER or GALERA_MYSQL if that is not the container)" "$last"

setup "galera-synced, GALERA_MYSQL of blanks only"
run_gate GALERA_MYSQL="   " galera-synced after ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "galera-synced: GALERA_MYSQL holds no command" "$out"

setup "galera-synced, GALERA_MYSQL names no executable"
run_gate GALERA_MYSQL="/nonexistent/mysql --batch" galera-synced after ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "galera-synced: GALERA_MYSQL: '/nonexistent/mysql' is not an executable on PATH" "$out"

# --- rabbitmq-healthy: real RabbitMQ 3.10.8 output --------------------------

rabbit_case() { # expected status, expected last line, expected calls, then env and gate args
    local want_status=$1 want_last=$2 want_calls=$3
    shift 3
    setup "rabbitmq-healthy $*"
    run_gate "$@"
    expect_eq "exit status" "$want_status" "$status"
    expect_eq "last line" "$want_last" "$last"
    expect_eq "calls" "$want_calls" "$calls"
    expect_no_traceback
}
rabbit_case 0 "RabbitMQ running, no alarms, 3 of 3 nodes running (want at least 3), not quorum-critical" \
    "$RUNNING
$ALARMS
$CLUSTER
$QUORUM" rabbitmq-healthy before ctl-1
rabbit_case 0 "RabbitMQ running, no alarms, 3 of 3 nodes running (want at least 3)" \
    "$RUNNING
$ALARMS
$CLUSTER" rabbitmq-healthy after ctl-1
rabbit_case 1 "RabbitMQ is not running here: RabbitMQ on node rabbit@vm is not running or has not fully booted yet (check with is_booting)" \
    "$RUNNING" FAKE_RABBITMQ_CHECK_RUNNING=app_stopped rabbitmq-healthy after ctl-1
rabbit_case 1 "RabbitMQ is not running here: unable to perform an operation on node 'rabbit3@vm'." \
    "$RUNNING" FAKE_RABBITMQ_CHECK_RUNNING=unreachable rabbitmq-healthy after ctl-3
rabbit_case 1 "alarm: Free disk space alarm on node rabbit@vm" \
    "$RUNNING
$ALARMS" FAKE_RABBITMQ_LOCAL_ALARMS=disk_alarm rabbitmq-healthy before ctl-1
rabbit_case 1 "not running: rabbit3@vm (2 of 3 cluster members running)" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=2_of_3 rabbitmq-healthy before ctl-1
rabbit_case 1 "the cluster has 1 member(s), want at least 3" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=1_of_1 rabbitmq-healthy after ctl-1
rabbit_case 1 "disk alarm on rabbit@vm" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=disk_alarm rabbitmq-healthy after ctl-2
rabbit_case 1 "cannot read the cluster status: this command requires the 'rabbit' app to be running on the target node. Start it with 'rabbitmqctl start_app'." \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=app_stopped rabbitmq-healthy after ctl-1
# The Elixir CLI prints its locale warning on stdout even with -q
# (rabbitmq/rabbitmq-server#1572); the JSON after it is read all the same.
rabbit_case 0 "RabbitMQ running, no alarms, 3 of 3 nodes running (want at least 3)" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=latin1_warning rabbitmq-healthy after ctl-1
rabbit_case 1 "unexpected cluster_status JSON: AttributeError: 'str' object has no attribute 'get'" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=alarm_strings rabbitmq-healthy after ctl-1
rabbit_case 1 "quorum critical: queue 'q1' in vhost '/' would lose quorum if node rabbit@vm is stopped" \
    "$RUNNING
$ALARMS
$CLUSTER
$QUORUM" FAKE_RABBITMQ_QUORUM_CRITICAL=critical rabbitmq-healthy before ctl-1
rabbit_case 0 "RabbitMQ running, no alarms, 3 of 3 nodes running (want at least 3)" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_QUORUM_CRITICAL=critical rabbitmq-healthy after ctl-1
rabbit_case 0 "RabbitMQ running, no alarms, 1 of 1 nodes running (want at least 1), not quorum-critical" \
    "$RUNNING
$ALARMS
$CLUSTER
$QUORUM" FAKE_RABBITMQ_CLUSTER_STATUS=1_of_1 FAKE_RABBITMQ_QUORUM_CRITICAL=single_node \
    rabbitmq-healthy --nodes 1 before ctl-1
rabbit_case 0 "RabbitMQ running, no alarms, 1 of 1 nodes running (want at least 1)" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=1_of_1 RABBITMQ_NODES=1 rabbitmq-healthy after ctl-1
rabbit_case 1 "the cluster has 3 member(s), want at least 4" \
    "$RUNNING
$ALARMS
$CLUSTER" rabbitmq-healthy --nodes=4 after ctl-1
rabbit_case 0 "RabbitMQ running, no alarms, all 3 expected nodes running" \
    "$RUNNING
$ALARMS
$CLUSTER" rabbitmq-healthy --expect rabbit@vm,rabbit2@vm,rabbit3@vm after ctl-1
rabbit_case 1 "not running: rabbit3@vm (2 of 3 expected nodes running)" \
    "$RUNNING
$ALARMS
$CLUSTER" FAKE_RABBITMQ_CLUSTER_STATUS=2_of_3 rabbitmq-healthy --expect=rabbit@vm,rabbit2@vm,rabbit3@vm after ctl-1
rabbit_case 1 "not running: rabbit@ctl-4 (3 of 4 expected nodes running)" \
    "$RUNNING
$ALARMS
$CLUSTER" rabbitmq-healthy --expect rabbit@vm,rabbit2@vm,rabbit3@vm,rabbit@ctl-4 after ctl-1

setup "rabbitmq-healthy, kolla: docker exec into the running rabbitmq container"
bare_bin docker=fake-docker-recording.sh
run_gate FAKE_DOCKER_RUNNING="mariadb rabbitmq" RABBITMQ_DIAGNOSTICS= PATH="$work/bin" rabbitmq-healthy before ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} rabbitmq
docker exec rabbitmq rabbitmq-diagnostics -q check_running
$RUNNING
docker exec rabbitmq rabbitmq-diagnostics -q check_local_alarms
$ALARMS
docker exec rabbitmq rabbitmq-diagnostics -q cluster_status --formatter json
$CLUSTER
docker exec rabbitmq rabbitmq-diagnostics -q check_if_node_is_quorum_critical
$QUORUM" "$calls"

setup "rabbitmq-healthy, RABBITMQ_CONTAINER names the container"
run_gate FAKE_DOCKER_RUNNING="rmq" RABBITMQ_CONTAINER=rmq RABBITMQ_DIAGNOSTICS= PATH="$work/bin" rabbitmq-healthy after ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "first calls" "docker inspect --type container --format {{.State.Running}} rmq
docker exec rmq rabbitmq-diagnostics -q check_running" "$(head -n 2 <<<"$calls")"

setup "rabbitmq-healthy, no container: the local rabbitmq-diagnostics"
bare_bin docker=fake-docker-recording.sh rabbitmq-diagnostics=fake-rabbitmq-diagnostics-recording.sh
run_gate FAKE_DOCKER_RUNNING="" RABBITMQ_DIAGNOSTICS= PATH="$work/bin" rabbitmq-healthy after ctl-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} rabbitmq
$RUNNING
$ALARMS
$CLUSTER" "$calls"

setup "rabbitmq-healthy, no rabbitmq-diagnostics at all"
bare_bin
run_gate RABBITMQ_DIAGNOSTICS= PATH="$work/bin" rabbitmq-healthy after ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "rabbitmq-healthy: no rabbitmq-diagnostics: no docker and none on PATH (set RABBITMQ_DIAGNOSTICS)" "$out"

setup "rabbitmq-healthy, kolla: the rabbitmq container not running (yet) is exit 1"
bare_bin docker=fake-docker-recording.sh
run_gate FAKE_DOCKER_RUNNING="mariadb" RABBITMQ_DIAGNOSTICS= PATH="$work/bin" rabbitmq-healthy after ctl-1
expect_eq "exit status" 1 "$status"
expect_eq "calls" "docker inspect --type container --format {{.State.Running}} rabbitmq" "$calls"
expect_eq "last line" "RabbitMQ is not running here: no running 'rabbitmq' container, and no rabbitmq-diagnostics on PATH (set RABBITMQ_CONTAINER or RABBITMQ_DIAGNOSTICS if that is not the container)" "$last"

setup "rabbitmq-healthy, RABBITMQ_DIAGNOSTICS of blanks only"
run_gate RABBITMQ_DIAGNOSTICS=" " rabbitmq-healthy after ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "rabbitmq-healthy: RABBITMQ_DIAGNOSTICS holds no command" "$out"

setup "rabbitmq-healthy, failure reason on stderr"
FAKE_CLI_LOG="$work/calls" FAKE_RABBITMQ_QUORUM_CRITICAL=critical \
    RABBITMQ_DIAGNOSTICS="$tests/fake-rabbitmq-diagnostics-recording.sh" \
    "$gates/rabbitmq-healthy" before ctl-1 2>"$work/err" >/dev/null
expect_eq "stderr" "quorum critical: queue 'q1' in vhost '/' would lose quorum if node rabbit@vm is stopped" "$(cat "$work/err")"

# --- ceph-healthy: `ceph status -f json` in Ceph's format ------------------

ceph_case() { # fixture, expected status, expected last line
    setup "ceph-healthy on $1"
    run_gate FAKE_CEPH_STATUS="$1" ceph-healthy after stor-1
    expect_eq "exit status" "$2" "$status"
    expect_eq "last line" "$3" "$last"
    expect_eq "calls" "$CEPH" "$calls"
    expect_no_traceback
}
ceph_case healthy 0 "Ceph HEALTH_OK, all 97 pgs active, none degraded or undersized"
ceph_case noout 0 "Ceph HEALTH_WARN (noout set), all 97 pgs active, none degraded or undersized"
ceph_case muted-warning 0 "Ceph HEALTH_OK, all 97 pgs active, none degraded or undersized"
ceph_case recovering 1 "12 pgs degraded, 3 undersized; HEALTH_WARN: PG_DEGRADED"
expect_contains "names the check" "PG_DEGRADED: Degraded data redundancy: 1043/30129 objects degraded (3.462%), 12 pgs degraded, 3 pgs undersized" "$out"
ceph_case peering 1 "6 pgs inactive; HEALTH_OK"
ceph_case host-down-noout 1 "33 pgs degraded, 33 undersized; HEALTH_WARN: OSDMAP_FLAGS, OSD_DOWN, OSD_HOST_DOWN, PG_DEGRADED"
ceph_case other-warning 1 "no pg degraded, undersized or inactive; HEALTH_WARN: OSDMAP_FLAGS, RECENT_CRASH"
expect_contains "names the check" "RECENT_CRASH: 1 daemons have recently crashed" "$out"
ceph_case noout-norebalance 1 "no pg degraded, undersized or inactive; HEALTH_WARN: OSDMAP_FLAGS"
expect_contains "names the flags" "OSDMAP_FLAGS: noout,norebalance flag(s) set" "$out"
# Lines around the JSON (here what a cephadm wrapper may print) are skipped.
ceph_case warning-lines-healthy 0 "Ceph HEALTH_OK, all 97 pgs active, none degraded or undersized"
ceph_case checks-list 1 "unexpected ceph status JSON: AttributeError: 'list' object has no attribute 'items'"
ceph_case no-json 1 "unexpected ceph status JSON: ValueError: no JSON object in the output: Error initializing cluster client: ObjectNotFound('RADOS object not found (error calling conf_read_file)')"
ceph_case no-keyring 1 "cannot read the Ceph status: [errno 2] RADOS object not found (error connecting to the cluster)"

setup "ceph-healthy, default CLI found on PATH"
bare_bin ceph=fake-ceph-status-recording.sh
run_gate FAKE_CEPH_STATUS=healthy CEPH_CLI= PATH="$work/bin" ceph-healthy before stor-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "$CEPH" "$calls"

setup "ceph-healthy, CEPH_CLI names no executable"
run_gate CEPH_CLI=/nonexistent/ceph ceph-healthy after stor-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_eq "output" "ceph-healthy: the ceph CLI '/nonexistent/ceph' is not an executable on PATH (set CEPH_CLI)" "$out"

# --- nova-compute-up: python-openstackclient's JSON -------------------------

nova_case() { # fixture, expected status, a glob pattern of the last line, then extra environment
    setup "nova-compute-up on $1${4:+ with ${*:4}}"
    run_gate FAKE_OPENSTACK_SERVICES="$1" "${@:4}" nova-compute-up after cmp-1
    expect_eq "exit status" "$2" "$status"
    expect_match "last line" "$3" "$last"
    expect_eq "calls" "$NOVA" "$calls"
    expect_no_traceback
}
# The fake replays "Updated At" relative to now (fake-openstack-compute-recording.sh),
# so an age may be some seconds more than the fixture says on a busy machine.
nova_case up 0 "nova-compute on cmp-1 is up (enabled), reported [0-9]* s ago"
nova_case up-disabled 0 "nova-compute on cmp-1 is up (disabled), reported [0-9]* s ago"
nova_case up-utc-offset 0 "nova-compute on cmp-1 is up (disabled), reported [0-9]* s ago"
nova_case up-other-offset 0 "nova-compute on cmp-1 is up (disabled), reported [0-9]* s ago"
nova_case up-zulu 0 "nova-compute on cmp-1 is up (disabled), reported [0-9]* s ago"
nova_case warning-then-up 0 "nova-compute on cmp-1 is up (enabled), reported [0-9]* s ago"
# "up" with a last report older than NOVA_FRESH_SECS: nova (service_down_time
# raised above 90 s) still counts a report from before the reboot.
nova_case up-stale 1 "nova-compute on cmp-1 is up (disabled) but last reported 9[0-9] s ago, at 20[0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9] UTC, want within 60 s (NOVA_FRESH_SECS): no report since it came back?"
nova_case up-stale 0 "nova-compute on cmp-1 is up (disabled), reported 9[0-9] s ago" NOVA_FRESH_SECS=120
nova_case up 1 "nova-compute on cmp-1 is up (enabled) but last reported [0-9]* s ago, * want within 5 s (NOVA_FRESH_SECS): *" NOVA_FRESH_SECS=5
nova_case up-future 1 "nova-compute on cmp-1 is up (disabled) but last reported 2[89][0-9] s in the future, at * UTC: is the clock here off from the one nova uses?"
nova_case up-no-update 1 "nova-compute on cmp-1 is up (disabled) but nova gives no Updated At, so its last report cannot be dated"
nova_case bad-time 1 "unexpected compute service list JSON: ValueError: Updated At 'yesterday' is not a time"
nova_case not-a-list 1 "unexpected compute service list JSON: TypeError: a dict, want a list of services"
nova_case down 1 "nova-compute on cmp-1 is down (disabled), last update 2024-06-17T08:02:47.000000"
nova_case none 1 "nova lists no nova-compute service on host cmp-1 (is that the host name nova knows?)"
nova_case unauthorized 1 "cannot list nova-compute services: The request you have made requires authentication. (HTTP 401) (Request-ID: req-7c1f3b52-9e0a-4d2b-8f6e-3a4c5d6e7f80)"

setup "nova-compute-up, default CLI found on PATH"
bare_bin openstack=fake-openstack-compute-recording.sh
run_gate FAKE_OPENSTACK_SERVICES=up OPENSTACK_CLI= PATH="$work/bin" nova-compute-up before cmp-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "$NOVA" "$calls"

setup "nova-compute-up, OPENSTACK_CLI names no executable"
run_gate OPENSTACK_CLI=/nonexistent/openstack nova-compute-up after cmp-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"

for bad in x 0 -5 1.5 060; do
    setup "nova-compute-up, NOVA_FRESH_SECS=$bad"
    run_gate FAKE_OPENSTACK_SERVICES=up NOVA_FRESH_SECS="$bad" nova-compute-up after cmp-1
    expect_eq "exit status" 2 "$status"
    expect_eq "calls" "" "$calls"
    expect_eq "output" "nova-compute-up: NOVA_FRESH_SECS must be a whole number of seconds above 0, got '$bad'" "$out"
done

# --- usage errors: exit 2, one line, no CLI called --------------------------

usage_error() { # then gate args
    setup "$1, args:$(printf " '%s'" "${@:2}")"
    run_gate FAKE_MYSQL_CAPTURE=synced3 FAKE_CEPH_STATUS=healthy FAKE_OPENSTACK_SERVICES=up "$@"
    expect_eq "exit status" 2 "$status"
    expect_eq "calls" "" "$calls"
    expect_eq "output lines" 1 "$(wc -l <"$work/out")"
    expect_contains "output" "usage: $1 " "$out"
}
for gate in "${GATES[@]}"; do
    # shellcheck disable=SC2016 # 'x$(id)' must reach the gate unexpanded
    for bad in "a b" "" ";rm" "-rf" 'x$(id)' "cmp-1/.." "ctl 1"; do
        usage_error "$gate" before "$bad"
    done
    for bad in "" during BEFORE "before;" "-h"; do
        usage_error "$gate" "$bad" ctl-1
    done
    usage_error "$gate"
    usage_error "$gate" before
    usage_error "$gate" before ctl-1 extra
    usage_error "$gate" --help
    usage_error "$gate" --bogus before ctl-1
done
for bad in 0 -1 three "" 03; do
    usage_error galera-synced --min-size "$bad" before ctl-1
done
usage_error galera-synced before ctl-1 --min-size
usage_error galera-synced --min-size
usage_error rabbitmq-healthy --nodes 0 before ctl-1
usage_error rabbitmq-healthy --nodes=x before ctl-1
usage_error rabbitmq-healthy --nodes
usage_error rabbitmq-healthy --nodes 3 --expect rabbit@a before ctl-1
usage_error rabbitmq-healthy --expect=rabbit@a --nodes=3 before ctl-1
usage_error rabbitmq-healthy --nodes 3 --nodes 2 before ctl-1
usage_error rabbitmq-healthy --nodes "" before ctl-1
# shellcheck disable=SC2016 # 'rabbit@$(id)' must reach the gate unexpanded
for bad in "" "rabbit@a," ",rabbit@a" "rabbit@a,,rabbit@b" "rabbit@a b" 'rabbit@$(id)'; do
    usage_error rabbitmq-healthy --expect "$bad" before ctl-1
done
setup "galera-synced, GALERA_MIN_SIZE=x"
run_gate FAKE_MYSQL_CAPTURE=synced3 GALERA_MIN_SIZE=x galera-synced before ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_contains "output" "usage: galera-synced " "$out"
setup "rabbitmq-healthy, RABBITMQ_NODES=many"
run_gate RABBITMQ_NODES=many rabbitmq-healthy before ctl-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_contains "output" "usage: rabbitmq-healthy " "$out"

check_shellcheck gates "${GATES[@]/#/$gates/}" "$tests"/*.sh "$tests/../../tests/assert.sh"
finish gates
