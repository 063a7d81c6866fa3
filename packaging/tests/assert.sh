#!/bin/bash
# The checks the shell test suites of packaging/ share (hooks/tests/run.sh,
# gates/tests/run.sh): sourced, never run. Each check counts one pass or
# one failure; `case_name` names the case in a failure's line.
# shellcheck disable=SC2034 # passed, failed and case_name are the caller's
passed=0
failed=0
case_name=""

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    printf 'FAIL [%s] %s\n' "$case_name" "$1"
    if [ "$#" -gt 1 ]; then
        printf '%s\n' "$2" | sed 's/^/    /'
    fi
}

expect_eq() { # what expected actual
    if [ "$2" == "$3" ]; then pass; else
        fail "$1" "$(printf 'expected:\n%s\nactual:\n%s' "$2" "$3")"
    fi
}
expect_contains() { # what needle haystack
    if [[ $3 == *"$2"* ]]; then pass; else
        fail "$1: no '$2' in:" "$3"
    fi
}

# Runs shellcheck over the given files; when CI=true a missing one fails.
check_shellcheck() { # suite name, then files
    local suite=$1 out
    shift
    case_name=shellcheck
    if command -v shellcheck >/dev/null; then
        if out=$(shellcheck "$@" 2>&1); then pass; else
            fail "shellcheck found problems:" "$out"
        fi
    elif [ "${CI:-}" = true ]; then
        fail "shellcheck is not installed (required when CI=true)"
    else
        echo "$suite: shellcheck not installed, skipped (required when CI=true)"
    fi
}

# The suite's last line, and its exit status.
finish() { # suite name
    if [ "$failed" -gt 0 ]; then
        echo "$1: $failed check(s) failed, $passed passed"
        exit 1
    fi
    echo "$1: $passed checks passed"
}
