#!/usr/bin/env bash
# Runs a command against throwaway TLS servers: a PostgreSQL cluster with
# `ssl = on` and a MariaDB instance with its TLS options, both on free
# loopback ports, in a temporary directory, with certificates from a CA made
# for this run.
#
#   scripts/tls-servers.sh COMMAND [ARGS...]
#
# The servers accept TLS connections only (PostgreSQL: `hostssl` lines in
# pg_hba.conf; MariaDB: `require_secure_transport`), so a client that does
# not encrypt is refused. Their certificate names `127.0.0.1` (as an IP
# address) and nothing else, so a client that verifies the hostname accepts
# `127.0.0.1` and refuses `localhost`. The script exports
#
#   BYOK_TEST_TLS_CA            the CA that signed the servers' certificate (PEM)
#   BYOK_TEST_TLS_OTHER_CA      a second CA, which signed nothing (PEM)
#   BYOK_TEST_POSTGRES_TLS_URL  postgres://postgres@127.0.0.1:PORT/test
#   BYOK_TEST_MYSQL_TLS_URL     mysql://byok:byok@127.0.0.1:PORT/test
#
# (without TLS parameters: each test adds the `sslmode`/`ssl-mode` it is
# about), runs COMMAND, then stops the servers and removes the directory
# (also on failure or interrupt) and exits with COMMAND's status.
#
# It never touches the servers of scripts/services.sh: it starts its own
# `postgres` and `mariadbd` processes with binaries of the same packages,
# which it installs with apt-get when they are missing. Runs as root (it
# starts the servers as the `postgres` and `mysql` system users).
#
# Example: bash scripts/tls-servers.sh cargo test -p byok-sql --all-features --test tls

set -euo pipefail

# say, die, in_use PORT, free_port, stop_pid PID; usage without a command
. "$(dirname "$0")/lib.sh"
need_command "$@"
[ "$(id -u)" -eq 0 ] || die "run me as root (I start servers as the postgres and mysql users)"

newest_postgres_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

missing=()
[ -n "$(newest_postgres_bin)" ] || missing+=(postgresql)
if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-install-db >/dev/null 2>&1; then
    missing+=(mariadb-server)
fi
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
pgbin="$(newest_postgres_bin)"

dir="$(mktemp -d "${TMPDIR:-/tmp}/byok-tls.XXXXXX")"
chmod 755 "$dir"
pg_started=0
maria_pid=

cleanup() {
    if [ "$pg_started" -eq 1 ]; then
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$maria_pid" ]; then
        stop_pid "$maria_pid"
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# ------------------------------------------------------------ certificates

certs="$dir/certs"
mkdir -p "$certs"
(
    cd "$certs"
    for ca in ca other-ca; do
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
            -keyout "$ca.key" -out "$ca.pem" -subj "/CN=byok test $ca" \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    done
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=127.0.0.1" 2>/dev/null
    printf '%s\n' \
        'basicConstraints=CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' \
        'subjectAltName=IP:127.0.0.1' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 2 -extfile server.ext -out server.pem 2>/dev/null
)
chmod 644 "$certs"/*.pem

# ------------------------------------------------------------- PostgreSQL

mkdir -p "$dir/pg" "$dir/pg-certs"
cp "$certs/server.pem" "$certs/server.key" "$dir/pg-certs/"
chown -R postgres:postgres "$dir/pg" "$dir/pg-certs"
chmod 700 "$dir/pg"
chmod 600 "$dir/pg-certs/server.key"
runuser -u postgres -- "$pgbin/initdb" -D "$dir/pg" -U postgres -A trust \
    --no-sync >"$dir/pg-initdb.log" 2>&1 || {
    cat "$dir/pg-initdb.log" >&2
    die "initdb failed"
}
cat >>"$dir/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/pg'
ssl = on
ssl_cert_file = '$dir/pg-certs/server.pem'
ssl_key_file = '$dir/pg-certs/server.key'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
cat >"$dir/pg/pg_hba.conf" <<'EOF'
local     all all              trust
hostssl   all all 127.0.0.1/32 trust
hostnossl all all 0.0.0.0/0    reject
EOF
pg_up=0
for _ in 1 2 3 4 5; do
    pg_port="$(free_port)"
    if runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg-certs/pg.log" \
        -o "-p $pg_port" -w -t 60 start >/dev/null; then
        pg_up=1
        break
    fi
    grep -q "Address already in use" "$dir/pg-certs/pg.log" || break
    say "port $pg_port was taken meanwhile; trying another"
done
[ "$pg_up" -eq 1 ] || {
    cat "$dir/pg-certs/pg.log" >&2
    die "PostgreSQL did not start"
}
pg_started=1
runuser -u postgres -- "$pgbin/psql" -h "$dir/pg" -p "$pg_port" -q -d postgres \
    -c 'CREATE DATABASE test' >/dev/null

# ---------------------------------------------------------------- MariaDB

maria_port="$(free_port)"
mkdir -p "$dir/maria" "$dir/maria-certs"
cp "$certs/ca.pem" "$certs/server.pem" "$certs/server.key" "$dir/maria-certs/"
chown -R mysql:mysql "$dir/maria" "$dir/maria-certs"
chmod 600 "$dir/maria-certs/server.key"
mariadb-install-db --no-defaults --user=mysql --datadir="$dir/maria/data" \
    --auth-root-authentication-method=socket --skip-test-db \
    >"$dir/maria-install.log" 2>&1 || {
    cat "$dir/maria-install.log" >&2
    die "mariadb-install-db failed"
}
/usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir/maria/data" \
    --port="$maria_port" --bind-address=127.0.0.1 --socket="$dir/maria/mysqld.sock" \
    --pid-file="$dir/maria/mysqld.pid" --log-error="$dir/maria/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=16M --innodb-log-file-size=8M \
    --innodb-flush-log-at-trx-commit=0 \
    --ssl-ca="$dir/maria-certs/ca.pem" --ssl-cert="$dir/maria-certs/server.pem" \
    --ssl-key="$dir/maria-certs/server.key" \
    --require-secure-transport=ON 2>>"$dir/maria/stderr.log" &
maria_pid=$!
ready=0
for _ in $(seq 1 600); do
    kill -0 "$maria_pid" 2>/dev/null || break
    if mariadb-admin --no-defaults --socket="$dir/maria/mysqld.sock" -u root ping >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    cat "$dir/maria/error.log" >&2
    die "MariaDB did not start"
fi
mariadb --no-defaults --socket="$dir/maria/mysqld.sock" -u root <<'EOF'
CREATE DATABASE test;
CREATE USER 'byok'@'127.0.0.1' IDENTIFIED BY 'byok' REQUIRE SSL;
GRANT ALL ON test.* TO 'byok'@'127.0.0.1';
EOF

export BYOK_TEST_TLS_CA="$certs/ca.pem"
export BYOK_TEST_TLS_OTHER_CA="$certs/other-ca.pem"
export BYOK_TEST_POSTGRES_TLS_URL="postgres://postgres@127.0.0.1:$pg_port/test"
export BYOK_TEST_MYSQL_TLS_URL="mysql://byok:byok@127.0.0.1:$maria_port/test"
say "PostgreSQL (TLS only) on 127.0.0.1:$pg_port, MariaDB (TLS only) on 127.0.0.1:$maria_port"

status=0
"$@" || status=$?
exit "$status"
