#!/usr/bin/env bash
# Runs a command against a throwaway AWS KMS: moto's server (`moto[server]`
# from PyPI, installed with pip when missing) on a free loopback port.
#
#   scripts/kms-server.sh COMMAND [ARGS...]
#
# The script exports
#
#   BYOK_TEST_KMS_ENDPOINT   http://127.0.0.1:PORT
#
# (the tests give it to the AWS SDK as its endpoint, with dummy credentials
# and region us-east-1: no AWS account is used), runs COMMAND, then stops
# the server (also on failure or interrupt) and exits with COMMAND's status.
# moto keeps its keys in memory: each run starts empty.
#
# Example: bash scripts/kms-server.sh cargo test -p byok-kms --features aws --test aws_kms

set -euo pipefail

# say, die, in_use PORT, free_port, stop_pid PID; usage without a command
. "$(dirname "$0")/lib.sh"
need_command "$@"

if ! command -v moto_server >/dev/null 2>&1; then
    command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || {
        say "installing python3-pip"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    }
    say "installing moto[server]"
    pip=$(command -v pip3 || command -v pip)
    "$pip" install -q 'moto[server]' 2>/dev/null ||
        "$pip" install -q --break-system-packages 'moto[server]'
    hash -r
    command -v moto_server >/dev/null 2>&1 || die "moto_server is not on PATH after pip install"
fi


log="$(mktemp "${TMPDIR:-/tmp}/byok-kms.XXXXXX")"
moto_pid=
cleanup() {
    if [ -n "$moto_pid" ]; then
        stop_pid "$moto_pid"
    fi
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Another process may take the port before moto binds it: then moto exits
# and another port is tried.
ready=0
for _ in 1 2 3; do
    port="$(free_port)"
    moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    moto_pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$moto_pid" 2>/dev/null || break
        if in_use "$port"; then
            ready=1
            break
        fi
        sleep 0.1
    done
    [ "$ready" -eq 1 ] && break
    kill -KILL "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    moto_pid=
    say "moto did not start on port $port; trying another"
done
if [ "$ready" -ne 1 ]; then
    cat "$log" >&2
    die "moto did not start"
fi

export BYOK_TEST_KMS_ENDPOINT="http://127.0.0.1:$port"
say "AWS KMS (moto) on $BYOK_TEST_KMS_ENDPOINT"

status=0
"$@" || status=$?
exit "$status"
