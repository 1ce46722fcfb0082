# Helpers of the scripts that start throwaway servers around a command
# (tls-servers.sh, kms-server.sh), sourced by them.

say() { echo "$(basename "$0"): $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Exits with the usage line unless the script was given a command.
need_command() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 COMMAND [ARGS...]" >&2
        exit 2
    fi
}

# Whether something listens on 127.0.0.1:$1.
in_use() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# A port that nothing listens on now, below the kernel's range of
# ephemeral ports (32768 and up by default), where the local end of some
# other program's connection could hold it without listening. Another
# process may still take it before a server binds: the caller then starts
# its server again on another port.
free_port() {
    local port low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 20100 ] 2>/dev/null || low=32768
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % (low - 20000)))
        if ! in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# Stops the process $1: TERM, up to 10 s to end, then KILL.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
