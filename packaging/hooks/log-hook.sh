#!/bin/sh
# Example rollcall hook: records that it ran, with its arguments, and succeeds.
# Usage: log-hook.sh NAME [ARG...]
set -eu
name="${1:-hook}"
shift || true
logger -t rollcall-hook "hook ${name} ran on $(hostname) with arguments: $*"
echo "hook ${name} ok"
