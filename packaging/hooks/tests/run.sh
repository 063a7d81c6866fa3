#!/bin/bash
# Tests the hook scripts in packaging/hooks against recording fakes of the
# openstack and ceph CLIs (fake-*-recording.sh): each case sets up a fake
# cloud, runs one hook as the agent would (argv, no shell) and asserts the
# exact CLI calls it made, its exit status and its output.
# Usage: bash packaging/hooks/tests/run.sh   (CI=true: a missing shellcheck fails)
set -u

tests=$(cd "$(dirname "$0")" && pwd)
hooks=$(dirname "$tests")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=packaging/tests/assert.sh
. "$tests/../../tests/assert.sh"
expect_lacks() { # what needle haystack
    if [[ $3 != *"$2"* ]]; then pass; else
        fail "$1: unexpected '$2' in:" "$3"
    fi
}

# A fresh fake cloud for each case: FAKE_STATE_DIR/HOST/ID per instance.
setup() { # case name, then instances as HOST/ID
    case_name=$1
    shift
    rm -rf "$work/state" "$work/calls"
    mkdir -p "$work/state"
    : >"$work/calls"
    local inst
    for inst in "$@"; do
        mkdir -p "$work/state/$(dirname "$inst")"
        : >"$work/state/$inst"
    done
}

# Runs a hook with the fakes; sets $status, $out, $err, $calls.
# Extra environment comes first as NAME=VALUE words, then the hook and its args.
run_hook() {
    local env_args=()
    while [[ $1 == *=* ]]; do
        env_args+=("$1")
        shift
    done
    local hook=$1
    shift
    env FAKE_CLI_LOG="$work/calls" FAKE_STATE_DIR="$work/state" \
        OPENSTACK_CLI="$tests/fake-openstack-recording.sh" \
        CEPH_CLI="$tests/fake-ceph-recording.sh" \
        "${env_args[@]}" \
        timeout 60 "$hooks/$hook" "$@" >"$work/out" 2>"$work/err"
    status=$?
    out=$(cat "$work/out")
    err=$(cat "$work/err")
    calls=$(cat "$work/calls")
}

remaining() { # the instances on a host, space-separated
    local file ids=()
    for file in "$work/state/$1"/*; do
        [ -e "$file" ] && ids+=("${file##*/}")
    done
    echo "${ids[*]}"
}

A=11111111-1111-4111-8111-111111111111
B=22222222-2222-4222-8222-222222222222
DISABLE="openstack compute service set --disable --disable-reason 'rollcall: patching' cmp-1 nova-compute"
LIST="openstack server list --all-projects --host cmp-1 -f value -c ID"
MIGRATE="openstack server migrate --live-migration --wait"

for hook in nova-compute-drain.sh nova-compute-undrain.sh ceph-noout-set.sh ceph-noout-unset.sh; do
    case_name="mode $hook"
    if [ -x "$hooks/$hook" ]; then pass; else fail "not executable"; fi
done

setup "drain, 2 instances" cmp-1/$A cmp-1/$B other-1/keep-me
run_hook nova-compute-drain.sh cmp-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "$DISABLE
$LIST
$MIGRATE $A
$MIGRATE $B
$LIST" "$calls"
expect_eq "instances left on cmp-1" "" "$(remaining cmp-1)"
expect_eq "other hosts untouched" "keep-me" "$(remaining other-1)"
expect_contains "stdout" "2 instance(s) to live-migrate" "$out"
expect_eq "last stdout line" "nova-compute-drain: cmp-1: drained, no instances left" "$(tail -n 1 <<<"$out")"
expect_eq "stderr" "" "$err"

setup "drain, empty host"
run_hook nova-compute-drain.sh cmp-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "$DISABLE
$LIST
$LIST" "$calls"
expect_contains "stdout" "drained" "$out"

setup "drain, a migration fails" cmp-1/$A cmp-1/$B
run_hook FAKE_MIGRATE_FAIL_ID=$A nova-compute-drain.sh cmp-1
expect_eq "exit status" 1 "$status"
expect_eq "calls stop at the failure" "$DISABLE
$LIST
$MIGRATE $A" "$calls"
expect_eq "last stderr line" \
    "nova-compute-drain: cmp-1: live migration of instance $A failed; the service stays disabled" \
    "$(tail -n 1 <<<"$err")"
expect_lacks "stdout" "drained" "$out"
expect_eq "instances left on cmp-1" "$A $B" "$(remaining cmp-1)"

setup "drain, an instance never leaves" cmp-1/$A cmp-1/$B
started=$SECONDS
run_hook FAKE_STUCK_IDS=$B ROLLCALL_DRAIN_TIMEOUT=2 ROLLCALL_POLL_SECS=1 nova-compute-drain.sh cmp-1
elapsed=$((SECONDS - started))
expect_eq "exit status" 1 "$status"
expect_eq "calls before waiting" "$DISABLE
$LIST
$MIGRATE $A
$MIGRATE $B
$LIST" "$(head -n 5 <<<"$calls")"
expect_eq "waiting only lists" "" "$(tail -n +5 <<<"$calls" | grep -vxF "$LIST")"
if [ "$(grep -cxF "$LIST" <<<"$calls")" -ge 3 ]; then pass; else
    fail "expected at least 2 checks while waiting" "$calls"
fi
if [ "$elapsed" -ge 2 ] && [ "$elapsed" -le 10 ]; then pass; else
    fail "gave up after ${elapsed}s, expected 2-10s (after more than the 2s timeout)"
fi
expect_eq "stderr" "nova-compute-drain: cmp-1: instance(s) still on the host after 2s: $B" "$err"
expect_contains "stdout" "waiting for 1 instance(s) to leave" "$out"
expect_lacks "stdout" "drained" "$out"

setup "drain, disabling fails" cmp-1/$A
run_hook FAKE_SERVICE_FAIL=1 nova-compute-drain.sh cmp-1
expect_eq "exit status" 1 "$status"
expect_eq "calls" "$DISABLE" "$calls"
expect_contains "last stderr line" "cannot disable nova-compute" "$(tail -n 1 <<<"$err")"
expect_lacks "stdout" "drained" "$out"

setup "drain, bad timeout"
run_hook ROLLCALL_DRAIN_TIMEOUT=soon nova-compute-drain.sh cmp-1
expect_eq "exit status" 2 "$status"
expect_eq "calls" "" "$calls"
expect_contains "stderr" "ROLLCALL_DRAIN_TIMEOUT" "$err"

setup "undrain"
run_hook nova-compute-undrain.sh cmp-1
expect_eq "exit status" 0 "$status"
expect_eq "calls" "openstack compute service set --enable cmp-1 nova-compute" "$calls"
expect_eq "stdout" "nova-compute-undrain: cmp-1: nova-compute enabled" "$out"

setup "undrain, default CLI found on PATH"
mkdir -p "$work/bin"
ln -sf "$tests/fake-openstack-recording.sh" "$work/bin/openstack"
FAKE_CLI_LOG="$work/calls" FAKE_STATE_DIR="$work/state" PATH="$work/bin:$PATH" \
    env -u OPENSTACK_CLI "$hooks/nova-compute-undrain.sh" cmp-1 >/dev/null 2>&1
expect_eq "exit status" 0 "$?"
expect_eq "calls" "openstack compute service set --enable cmp-1 nova-compute" "$(cat "$work/calls")"

for mode in set unset; do
    setup "ceph noout $mode"
    run_hook "ceph-noout-$mode.sh" stor-1
    expect_eq "exit status" 0 "$status"
    expect_eq "calls" "ceph osd $mode noout" "$calls"
    expect_contains "stdout" "ceph-noout-$mode: stor-1: noout ${mode}" "$out"

    setup "ceph noout $mode, no target"
    run_hook "ceph-noout-$mode.sh"
    expect_eq "exit status" 0 "$status"
    expect_eq "calls" "ceph osd $mode noout" "$calls"
done

for hook in nova-compute-drain.sh nova-compute-undrain.sh ceph-noout-set.sh ceph-noout-unset.sh; do
    # shellcheck disable=SC2016 # 'x$(id)' must reach the hook unexpanded
    for bad in "a b" "" ";rm" "-rf" "--help" 'x$(id)' "cmp-1/.."; do
        setup "$hook, target '$bad'"
        run_hook "$hook" "$bad"
        expect_eq "exit status" 2 "$status"
        expect_eq "calls" "" "$calls"
        expect_eq "stderr lines" 1 "$(wc -l <"$work/err")"
        expect_contains "stderr" "usage: " "$err"
    done
    setup "$hook, two targets"
    run_hook "$hook" cmp-1 cmp-2
    expect_eq "exit status" 2 "$status"
    expect_eq "calls" "" "$calls"
done
for hook in nova-compute-drain.sh nova-compute-undrain.sh; do
    setup "$hook, no target"
    run_hook "$hook"
    expect_eq "exit status" 2 "$status"
    expect_eq "calls" "" "$calls"
done

check_shellcheck hooks "$hooks"/*.sh "$tests"/*.sh "$tests/../../tests/assert.sh"
finish hooks
