#!/usr/bin/env bash
# Makes sure the servers that the backend tests use are installed and
# running on loopback, and that the tests' default URLs log in:
#
#   PostgreSQL  postgres://postgres@127.0.0.1:5432/test
#   MariaDB     mysql://root@127.0.0.1:3306/test
#   Redis       redis://127.0.0.1:6379 (standalone)
#
# It also installs Chromium and chromedriver (Debian's chromium and
# chromium-driver) for the browser test of byok-axum, which starts them
# itself, and age (Debian's age) for the test of a keyring decrypted by a
# command at load.
#
# Idempotent: it installs only what is missing (one `apt-get update` first),
# starts only what is stopped, and prints what it did. Runs as root, with or
# without systemd. Every probe of a server is bounded by a timeout, so a
# hung server fails the script instead of stalling it.
#
# When a test login fails, the script opens it as below only on a server it
# installed (or whose cluster or data directory it created) in this same
# run, or when BYOK_SERVICES_CONFIGURE=1 is set. On a server that was
# already there (a developer's own installation) it changes nothing: it
# stops with a message that says which change the tests need, so that a
# real installation is never weakened behind its owner's back.
#
# Logins, chosen for throwaway test servers on loopback, never for
# production:
# * PostgreSQL: `trust` for user postgres on database test from 127.0.0.1
#   and ::1, put first in pg_hba.conf. A password would have to travel in
#   the URL, and this script cannot export a variable to the tests that run
#   after it, so the testkit's password-less default URL is kept instead.
#   Fresh Debian installs ask host connections for scram-sha-256.
# * MariaDB: root may log in over TCP from loopback with an empty password
#   (Debian's root@localhost otherwise accepts only the unix socket of the
#   OS user root, which TCP clients such as sqlx cannot use). Socket login
#   keeps working.
set -euo pipefail

log() { printf 'services: %s\n' "$*"; }

# Whether the login changes below may be made on a server that this run did
# not install.
configure=0
case "${BYOK_SERVICES_CONFIGURE:-}" in
1 | true | yes) configure=1 ;;
esac
die() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root (I install packages and start servers)"

# wait_for NAME SECONDS COMMAND...: runs COMMAND every half second until it
# succeeds, for at most SECONDS.
wait_for() {
  local name=$1 seconds=$2
  shift 2
  local tries=$((seconds * 2))
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
      die "$name did not answer within ${seconds}s"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- install

newest_postgres() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "$dir" ] || return 1
  basename "$(dirname "$(dirname "$dir")")"
}

missing=()
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! newest_postgres >/dev/null; then
  missing+=(postgresql)
fi
if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-admin >/dev/null 2>&1; then
  missing+=(mariadb-server)
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  missing+=(redis-server)
fi
# Builds with every feature (tls-native-tls) link against OpenSSL.
if ! pkg-config --exists openssl >/dev/null 2>&1; then
  missing+=(libssl-dev pkg-config)
fi
# Not a server: the headless browser and WebDriver of byok-axum's browser test.
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v chromedriver >/dev/null 2>&1; then
  missing+=(chromium-driver)
fi
# Not a server: the keyring custody by command is tested with `age -d`.
if ! command -v age >/dev/null 2>&1 || ! command -v age-keygen >/dev/null 2>&1; then
  missing+=(age)
fi
# Servers installed in this run are throwaway test servers whose logins the
# script may open; see the header.
fresh_postgres=0
fresh_mariadb=0
for package in "${missing[@]}"; do
  case "$package" in
  postgresql) fresh_postgres=1 ;;
  mariadb-server) fresh_mariadb=1 ;;
  esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
else
  log "PostgreSQL, MariaDB, Redis, the OpenSSL headers and Chromium with chromedriver are installed"
fi

# ------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -t 2 -h 127.0.0.1 -p 5432; }

pg_version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1) || true
if [ -z "$pg_version" ] || [ ! -d "/etc/postgresql/$pg_version/main" ]; then
  pg_version=$(newest_postgres) || die "no PostgreSQL server binary after installing"
  log "creating PostgreSQL $pg_version cluster main"
  pg_createcluster "$pg_version" main
  fresh_postgres=1
fi
pg_ctl() { pg_ctlcluster --skip-systemctl-redirect "$pg_version" main "$@"; }

if pg_ready; then
  log "PostgreSQL $pg_version is running"
else
  log "starting PostgreSQL $pg_version"
  pg_ctl start || pg_ready || die "PostgreSQL $pg_version did not start"
  wait_for PostgreSQL 60 pg_ready
fi

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

has_test_db=$(as_postgres timeout 10 psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'") ||
  die "PostgreSQL $pg_version did not answer a query from the OS user postgres within 10s"
if [ "$has_test_db" != 1 ]; then
  log "creating PostgreSQL database test"
  as_postgres timeout 30 createdb test
fi

pg_login() { PGCONNECT_TIMEOUT=2 timeout 10 psql -w -h 127.0.0.1 -p 5432 -U postgres -d test -tAc 'SELECT 1'; }
hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
if pg_login >/dev/null 2>&1; then
  log "PostgreSQL login postgres@127.0.0.1/test works"
elif [ "$fresh_postgres" = 0 ] && [ "$configure" = 0 ]; then
  die "PostgreSQL login postgres@127.0.0.1/test without a password fails, and this server was not installed by this run, so its logins are left alone.
  The tests need, first in $hba:
    host test postgres 127.0.0.1/32 trust
    host test postgres ::1/128 trust
  and a reload; or point BYOK_TEST_POSTGRES_URL at a login that works.
  Set BYOK_SERVICES_CONFIGURE=1 to let this script make that change."
else
  log "allowing postgres@127.0.0.1/test without a password in $hba"
  # First match wins, so these go before the scram-sha-256 host lines.
  sed -i '1i # Added by scripts/services.sh of byok: the test database on loopback.\nhost test postgres 127.0.0.1/32 trust\nhost test postgres ::1/128 trust' "$hba"
  pg_ctl reload
  wait_for "PostgreSQL login" 10 pg_login
fi

# ---------------------------------------------------------------- MariaDB

maria_ready() { timeout 10 mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping; }
maria_socket() { timeout 30 mariadb --protocol=socket -u root --connect-timeout=2 "$@"; }
maria_login() { timeout 10 mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 -e 'SELECT 1' test; }

# `mariadb-admin ping` succeeds as soon as the server answers, even when it
# refuses the login.
if maria_ready >/dev/null 2>&1; then
  log "MariaDB is running"
else
  install -d -o mysql -g mysql -m 755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "initializing the MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fresh_mariadb=1
  fi
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
    --user=mysql --bind-address=127.0.0.1 --port=3306
  wait_for MariaDB 60 maria_ready
fi

maria_socket -e 'CREATE DATABASE IF NOT EXISTS test' 2>/dev/null ||
  timeout 10 mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 \
    -e 'CREATE DATABASE IF NOT EXISTS test' ||
  die "cannot create the MariaDB database test"

if maria_login >/dev/null 2>&1; then
  log "MariaDB login root@127.0.0.1/test works"
elif [ "$fresh_mariadb" = 0 ] && [ "$configure" = 0 ]; then
  die "MariaDB login root@127.0.0.1/test without a password fails, and this server was not installed by this run, so its logins are left alone.
  The tests need root to log in over TCP from 127.0.0.1 and ::1 with an empty password
  (for example root@127.0.0.1 and root@::1 IDENTIFIED VIA mysql_native_password USING PASSWORD('')),
  or BYOK_TEST_MYSQL_URL pointed at a login that works.
  Set BYOK_SERVICES_CONFIGURE=1 to let this script make that change."
else
  log "letting root log in to MariaDB over TCP from loopback without a password"
  maria_socket <<'SQL'
ALTER USER 'root'@'localhost'
  IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'
  IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1'
  IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  wait_for "MariaDB login" 10 maria_login
fi

# ------------------------------------------------------------------ Redis

redis_ready() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if redis_ready; then
  log "Redis is running"
else
  log "starting Redis (standalone, no persistence)"
  install -d /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 30 redis_ready
fi

log "ready: PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306, Redis 127.0.0.1:6379"
