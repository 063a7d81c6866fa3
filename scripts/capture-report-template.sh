#!/usr/bin/env bash
# Captures tests/data/report-kolla-node.json: the full report a real
# rollcall-agent (`rollcall-agent once --json`, release build) sends from a
# node that runs a kolla-style set of OpenStack service containers.
# rollcall-loadgen replays it (one copy per simulated node) so that fleet
# benchmarks feed the server real-size reports.
#
# How: builds rollcall-test/busybox:1 (scripts/build-test-images.sh), tags it
# under kolla's image names (quay.io/openstack.kolla/NAME:2024.1-ubuntu-jammy,
# local tags only, removed afterwards) and starts 46 containers from it on the
# local Docker engine, named as on a kolla-ansible controller that is also a
# compute node (haproxy, mariadb, rabbitmq, keystone, nova_compute,
# nova_libvirt, neutron_openvswitch_agent, openvswitch_vswitchd, ...). Each
# carries the labels kolla images carry (build-date, kolla_version, maintainer,
# name, org.opencontainers.image.*) and, like kolla, a restart policy of
# unless-stopped. 42 have a Docker health check printing what kolla's
# healthcheck_curl / healthcheck_port / clustercheck / virsh / ovs-appctl print;
# 2 of them fail (neutron_l3_agent, cinder_backup: unhealthy), cron, fluentd,
# kolla_toolbox and keepalived have none (as in kolla), and nova_compute
# crashed once at start (restart_count 1). One more container without the
# kolla_version label (site_backup_agent) is left out by the agent's
# `[containers] labels = ["kolla_version"]` filter. Every container sits on
# the default bridge, so the host gets one veth per container; kolla itself
# uses host networking, and the veths stand in for the tap/qvb/qvo interfaces
# a compute node has per instance. Once every health check has a result, the
# agent takes its snapshot; then the containers and tags are removed.
#
# What it contains (the committed capture, 2026-11-29, Docker 20.10.24,
# Debian 12; see tests/data/README.md): 46 containers (42 health-checked:
# 40 healthy, 2 unhealthy; 11 labels each; nova_compute restart_count 1),
# 51 network interfaces (docker0, eth0, ifb0, ifb1 and 47 veths), 1
# filesystem, 137 pending updates. The JSON is 73,641 bytes; one simulated
# node's full report, encoded as the agent sends it (an AgentMessage), is
# 39,685 bytes (± a few: the counters vary), an interval report (metrics and network) 1,641 bytes, a
# change-driven report (the containers section) 36,578 bytes.
#
#   scripts/capture-report-template.sh            # writes tests/data/report-kolla-node.json
#   OUT=/tmp/r.json scripts/capture-report-template.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-tests/data/report-kolla-node.json}"
TARGET="${CARGO_TARGET_DIR:-target}"
BASE=rollcall-test/busybox:1
REGISTRY=quay.io/openstack.kolla
TAG=2024.1-ubuntu-jammy
KOLLA_VERSION=18.1.0
BUILD_DATE=20240620
IP=10.0.0.11

# name  image  health-kind  health-argument
#   curl PORT[/PATH]   kolla healthcheck_curl: "200 IP:PORT TIME seconds"
#   port PROCESS       kolla healthcheck_port (RabbitMQ connection): silent when fine
#   listen PROCESS     kolla healthcheck_listen: silent when fine
#   portfail PROCESS   healthcheck_port failing: unhealthy
#   text WORD          a fixed output (see health_output below)
#   none -             no health check (as in kolla)
SERVICES=(
    "haproxy haproxy curl 61313"
    "keepalived keepalived none -"
    "mariadb mariadb-server text clustercheck"
    "memcached memcached listen memcached"
    "rabbitmq rabbitmq text rabbitmq"
    "keystone keystone curl 5000"
    "keystone_ssh keystone-ssh listen sshd"
    "keystone_fernet keystone-fernet text fernet"
    "glance_api glance-api curl 9292"
    "placement_api placement-api curl 8780"
    "nova_api nova-api curl 8774"
    "nova_metadata nova-api curl 8775"
    "nova_scheduler nova-scheduler port nova-scheduler"
    "nova_conductor nova-conductor port nova-conductor"
    "nova_novncproxy nova-novncproxy curl 6080/vnc_lite.html"
    "nova_compute nova-compute port nova-compute"
    "nova_libvirt nova-libvirt text libvirt"
    "nova_ssh nova-ssh listen sshd"
    "neutron_server neutron-server curl 9696"
    "neutron_openvswitch_agent neutron-openvswitch-agent port neutron-openvswitch-agent"
    "neutron_dhcp_agent neutron-dhcp-agent port neutron-dhcp-agent"
    "neutron_l3_agent neutron-l3-agent portfail neutron-l3-agent"
    "neutron_metadata_agent neutron-metadata-agent port neutron-metadata-agent"
    "openvswitch_db openvswitch-db-server text ovsdb"
    "openvswitch_vswitchd openvswitch-vswitchd text ovs"
    "heat_api heat-api curl 8004"
    "heat_api_cfn heat-api-cfn curl 8000"
    "heat_engine heat-engine port heat-engine"
    "horizon horizon curl 80"
    "cinder_api cinder-api curl 8776"
    "cinder_scheduler cinder-scheduler port cinder-scheduler"
    "cinder_volume cinder-volume port cinder-volume"
    "cinder_backup cinder-backup portfail cinder-backup"
    "iscsid iscsid listen iscsid"
    "barbican_api barbican-api curl 9311"
    "barbican_keystone_listener barbican-keystone-listener port barbican-keystone-listener"
    "barbican_worker barbican-worker port barbican-worker"
    "octavia_api octavia-api curl 9876"
    "octavia_worker octavia-worker port octavia-worker"
    "octavia_health_manager octavia-health-manager port octavia-health-manager"
    "prometheus_node_exporter prometheus-node-exporter curl 9100"
    "prometheus_cadvisor prometheus-cadvisor curl 18080"
    "prometheus_mysqld_exporter prometheus-mysqld-exporter curl 9104"
    "cron cron none -"
    "fluentd fluentd none -"
    "kolla_toolbox kolla-toolbox none -"
)

# The health command for one service (run by the image's busybox sh).
health_cmd() {
    local kind=$1 arg=$2
    case "$kind" in
        curl) printf 'echo "200 %s:%s 0.0%04d seconds"' "$IP" "${arg%%/*}" "$((RANDOM % 9000 + 1000))" ;;
        port | listen) printf 'true # healthcheck_%s %s' "$kind" "$arg" ;;
        portfail) printf 'echo "There is no %s process with opened RabbitMQ ports (5671,5672) running in the container"; exit 1' "$arg" ;;
        text)
            case "$arg" in
                clustercheck) printf 'printf "HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\nContent-Length: 32\\r\\n\\r\\nGalera cluster node is synced.\\r\\n"' ;;
                rabbitmq) printf 'echo "Checking if RabbitMQ is running on node rabbit@ctl01 ..."; echo "RabbitMQ on node rabbit@ctl01 is fully booted and running"' ;;
                fernet) printf 'echo "Fernet keys are in sync across nodes (3 keys, last rotation 2024-06-20T03:00:00Z)"' ;;
                libvirt) printf 'printf "Compiled against library: libvirt 8.0.0\\nUsing library: libvirt 8.0.0\\nUsing API: QEMU 8.0.0\\nRunning hypervisor: QEMU 6.2.0\\nRunning against daemon: 8.0.0\\n"' ;;
                ovsdb) printf 'printf "Open_vSwitch\\n_Server\\n"' ;;
                ovs) printf 'echo "ovs-vswitchd (Open vSwitch) 3.3.0"' ;;
            esac ;;
    esac
}

NAMES=()
TAGS_MADE=()
WORK="$(mktemp -d)"
cleanup() {
    [ ${#NAMES[@]} -gt 0 ] && docker rm -f "${NAMES[@]}" >/dev/null 2>&1
    [ ${#TAGS_MADE[@]} -gt 0 ] && docker rmi "${TAGS_MADE[@]}" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

scripts/build-test-images.sh
cargo build --release --quiet -p rollcall-agent --bin rollcall-agent
base_id="$(docker image inspect --format '{{.Id}}' "$BASE")"

for line in "${SERVICES[@]}" "site_backup_agent - none -"; do
    read -r name image _ _ <<<"$line"
    if docker container inspect "$name" >/dev/null 2>&1; then
        echo "error: a container named $name exists on this engine; remove it or capture elsewhere" >&2
        exit 1
    fi
    [ "$image" = - ] && continue
    ref="$REGISTRY/$image:$TAG"
    if id="$(docker image inspect --format '{{.Id}}' "$ref" 2>/dev/null)"; then
        [ "$id" = "$base_id" ] || { echo "error: $ref exists and is not $BASE; not overwriting it" >&2; exit 1; }
    else
        docker tag "$BASE" "$ref"
        TAGS_MADE+=("$ref")
    fi
done

for line in "${SERVICES[@]}"; do
    read -r name image kind arg <<<"$line"
    cmd=(sleep 2147483647)
    # nova_compute gave up once at start (no RabbitMQ yet) and was restarted.
    [ "$name" = nova_compute ] && cmd=(sh -c 'if [ ! -e /tmp/started ]; then touch /tmp/started; exit 1; fi; exec sleep 2147483647')
    health=()
    [ "$kind" = none ] || health=(--health-cmd "$(health_cmd "$kind" "$arg")" --health-interval 3s --health-timeout 3s --health-retries 3)
    docker run -d --name "$name" --restart unless-stopped "${health[@]}" \
        --label "build-date=$BUILD_DATE" \
        --label "kolla_version=$KOLLA_VERSION" \
        --label "maintainer=Kolla Project (https://launchpad.net/kolla)" \
        --label "name=$image" \
        --label "org.opencontainers.image.created=2024-06-20T04:12:31Z" \
        --label "org.opencontainers.image.ref.name=ubuntu" \
        --label "org.opencontainers.image.revision=0f6a0bd1c3e4a38e1fd0b37b7b7f3a3c2b5e8d41" \
        --label "org.opencontainers.image.source=https://opendev.org/openstack/kolla" \
        --label "org.opencontainers.image.title=$image" \
        --label "org.opencontainers.image.vendor=OpenStack Kolla" \
        --label "org.opencontainers.image.version=22.04" \
        "$REGISTRY/$image:$TAG" "${cmd[@]}" >/dev/null
    NAMES+=("$name")
done
docker run -d --name site_backup_agent --restart unless-stopped --label "vendor=example-backup" "$BASE" sleep 2147483647 >/dev/null
NAMES+=(site_backup_agent)

echo "Waiting for every health check to have a result..."
for _ in $(seq 120); do
    states="$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}}' "${NAMES[@]}")"
    if ! grep -q starting <<<"$states" && [ "$(grep -c unhealthy <<<"$states")" -eq 2 ] && grep -q ' 1$' <<<"$states"; then
        break
    fi
    sleep 1
done
grep -q starting <<<"$states" && { echo "error: health checks still starting after 120s" >&2; exit 1; }

cat > "$WORK/agent.toml" <<TOML
role = "compute"
[containers]
enabled = true
socket = "/var/run/docker.sock"
labels = ["kolla_version"]
TOML
"$TARGET/release/rollcall-agent" once --json --config "$WORK/agent.toml" > "$WORK/report.json"
mkdir -p "$(dirname "$OUT")"
mv "$WORK/report.json" "$OUT"
echo "Wrote $OUT."

# The facts above, from the captured file (and a check that it is what the
# benchmarks need).
cargo build --release --quiet -p rollcall-tests --bin rollcall-loadgen
"$TARGET/release/rollcall-loadgen" --describe-template --report-template "$OUT" --min-health-checked 40
