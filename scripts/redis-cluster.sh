#!/usr/bin/env bash
# Runs a command against a throwaway Redis Cluster of three masters.
#
#   scripts/redis-cluster.sh COMMAND [ARGS...]
#
# Starts three `redis-server --cluster-enabled yes` processes on free
# loopback ports (bound to 127.0.0.1 only, in a temporary directory, without
# persistence), joins them into a cluster, waits until every node reports
# cluster_state:ok, exports
#
#   BYOK_TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:P1,redis://127.0.0.1:P2,redis://127.0.0.1:P3
#
# runs COMMAND, then stops the nodes and removes the directory (also on
# failure or interrupt) and exits with COMMAND's status. Installs
# redis-server with apt-get when it is missing.
#
# Example: bash scripts/redis-cluster.sh cargo test -p byok-redis --all-features

set -euo pipefail

say() { echo "redis-cluster.sh: $*" >&2; }

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    say "redis-server not found; installing it"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/byok-redis-cluster.XXXXXX")"
pids=()
ports=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whether something listens on 127.0.0.1:$1.
in_use() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# The process id reported by the Redis server on 127.0.0.1:$1, or nothing.
server_pid() {
    timeout 2 redis-cli -h 127.0.0.1 -p "$1" info server 2>/dev/null \
        | tr -d '\r' | sed -n 's/^process_id://p'
}

# Starts one node on a free port (the cluster bus takes the port + 10000)
# and appends it to pids and ports.
start_node() {
    local attempt port pid deadline
    for attempt in $(seq 1 20); do
        port=$((20000 + RANDOM % 10000))
        if in_use "$port" || in_use $((port + 10000)); then
            continue
        fi
        redis-server \
            --port "$port" --bind 127.0.0.1 --protected-mode yes \
            --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" \
            --cluster-node-timeout 5000 \
            --save "" --appendonly no --daemonize no \
            --dir "$dir" --logfile "$dir/redis-$port.log" &
        pid=$!
        # Another run may have taken the port meanwhile: then our server
        # exits (it cannot bind) while the other one answers. Only a server
        # that reports our pid counts.
        deadline=$((SECONDS + 10))
        while [ "$SECONDS" -lt "$deadline" ]; do
            kill -0 "$pid" 2>/dev/null || break
            if [ "$(server_pid "$port")" = "$pid" ]; then
                pids+=("$pid")
                ports+=("$port")
                return 0
            fi
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        say "a node on port $port did not start (attempt $attempt)"
    done
    say "could not start a Redis node"
    return 1
}

for _ in 1 2 3; do
    start_node
done

nodes=()
urls=()
for port in "${ports[@]}"; do
    nodes+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port")
done

if ! timeout 120 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
    >"$dir/create.log" 2>&1; then
    cat "$dir/create.log" >&2
    say "creating the cluster failed"
    exit 1
fi

ready=0
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
    ready=1
    for port in "${ports[@]}"; do
        case "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null)" in
            *cluster_state:ok*) ;;
            *)
                ready=0
                break
                ;;
        esac
    done
    [ "$ready" -eq 1 ] && break
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    say "the cluster did not reach cluster_state:ok within 30 s"
    exit 1
fi

BYOK_TEST_REDIS_CLUSTER_URLS="$(IFS=,; echo "${urls[*]}")"
export BYOK_TEST_REDIS_CLUSTER_URLS
say "cluster ready: $BYOK_TEST_REDIS_CLUSTER_URLS"

status=0
"$@" || status=$?
exit "$status"
