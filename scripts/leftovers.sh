#!/usr/bin/env bash
# Checks that the tests left nothing behind on the shared test servers:
#
#   Redis       127.0.0.1:6379     keys matching byok* or bench*
#   PostgreSQL  database test      tables named byok_*, t_* or bench_*
#   MariaDB     database test      tables named byok_*, t_* or bench_*
#
# These are the names the tests and byok-bench give their random key
# prefixes and tables (byok_test_…, byok_cli_…, byok_connect_…,
# byok_scratch_…, bench_…_byok); no permanent table or key of the test
# servers has such a name. Lists what it finds and exits 1 when anything
# is left, 2 when a server cannot be asked; 0 when all three are clean.
#
#   bash scripts/leftovers.sh

set -uo pipefail

left=0
unreachable=0
say() { echo "leftovers.sh: $*" >&2; }

report() { # report WHERE LINES
    local where="$1" lines="$2"
    if [ -n "$lines" ]; then
        say "$where holds $(wc -l <<<"$lines") leftover(s):"
        sed 's/^/  /' <<<"$lines" | head -n 50 >&2
        left=1
    fi
}

# Redis: SCAN, never KEYS, so a large server is not blocked.
if keys=$(timeout 30 redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'byok*' 2>&1 &&
          timeout 30 redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'bench*' 2>&1); then
    report "Redis 127.0.0.1:6379" "$(sort <<<"$keys" | sed '/^$/d')"
else
    say "cannot scan Redis at 127.0.0.1:6379: $keys"
    unreachable=1
fi

# `_` is a wildcard of LIKE: escaped, so that only these prefixes match.
where="table_name LIKE 'byok\\_%' OR table_name LIKE 't\\_%' OR table_name LIKE 'bench\\_%'"

pg_query="SELECT table_schema || '.' || table_name FROM information_schema.tables
          WHERE table_catalog = 'test' AND table_schema NOT IN ('pg_catalog', 'information_schema')
          AND ($where) ORDER BY 1"
pg_user="${BYOK_LEFTOVERS_PG_USER:-postgres}"
if tables=$(PGCONNECT_TIMEOUT=10 timeout 30 psql -X -q -At -h 127.0.0.1 -p 5432 -U "$pg_user" -d test \
                -c "$pg_query" 2>&1); then
    report "PostgreSQL database test" "$tables"
else
    say "cannot list PostgreSQL's tables: $tables"
    unreachable=1
fi

my_query="SELECT table_name FROM information_schema.tables
          WHERE table_schema = 'test' AND ($where) ORDER BY 1"
if tables=$(timeout 30 mysql --connect-timeout=10 -h 127.0.0.1 -P 3306 -u root -N -B test \
                -e "$my_query" 2>&1); then
    report "MariaDB database test" "$tables"
else
    say "cannot list MariaDB's tables: $tables"
    unreachable=1
fi

if [ "$left" -ne 0 ]; then
    say "remove them by hand once the test that left them is fixed"
    exit 1
fi
if [ "$unreachable" -ne 0 ]; then
    exit 2
fi
echo "leftovers.sh: nothing left behind"
