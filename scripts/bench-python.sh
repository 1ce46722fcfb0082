#!/usr/bin/env bash
# Times the Python library byok ports (cjm-fasthtml-byok 0.0.3, SQLite via
# SQLAlchemy) against byok's SqliteStorage on the same machine: set_key and
# get_key of 100-byte keys for 200 users, one call at a time.
#
#   scripts/bench-python.sh
#
# Makes a virtualenv (BYOK_BENCH_VENV, default under $TMPDIR), installs the
# library from PyPI, times it in a temporary directory, then runs the
# sqlite get_key/set_key rows of byok-bench. Needs python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${BYOK_BENCH_VENV:-${TMPDIR:-/tmp}/byok-bench-python}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "cjm-fasthtml-byok==0.0.3"

dir="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench-python.XXXXXX")"
trap 'rm -rf "$dir"' EXIT

echo "== cjm-fasthtml-byok 0.0.3, DatabaseStorage on SQLite, 1 task"
"$venv/bin/python" - "$dir" <<'PY'
import statistics, sys, time
from cjm_fasthtml_byok.core.storage import BYOKManager
from cjm_fasthtml_byok.core.types import BYOKConfig, StorageBackend

db = f"sqlite:///{sys.argv[1]}/keys.db"
config = BYOKConfig(storage_backend=StorageBackend.DATABASE, auto_cleanup=False)
manager = BYOKManager("a-long-application-secret-for-the-benchmark", db_url=db, config=config)
users = [f"user-{i:08}" for i in range(200)]
key = "sk-proj-" + "x" * 92

def timed(f, rounds=5):
    medians, samples = [], []
    for _ in range(rounds):
        round_samples = []
        for u in users:
            t = time.perf_counter_ns()
            f(u)
            round_samples.append(time.perf_counter_ns() - t)
        medians.append(statistics.median(round_samples))
        samples += round_samples
    samples.sort()
    return statistics.median(medians), samples[len(samples) // 2], samples[int(len(samples) * 0.99)]

for u in users:
    manager.set_key(None, "openai", key, user_id=u)
assert manager.get_key(None, "openai", user_id=users[0]) == key
for name, f in [
    ("set_key", lambda u: manager.set_key(None, "openai", key, user_id=u)),
    ("get_key", lambda u: manager.get_key(None, "openai", user_id=u)),
]:
    med, p50, p99 = timed(f)
    print(f"| python sqlite | {name} | 1 | {med / 1000:.2f} µs | p50 {p50 / 1000:.2f} µs | p99 {p99 / 1000:.2f} µs |")
PY

echo "== byok, SqliteStorage (byok-bench)"
cargo run --release -p byok-bench -- --backends sqlite --rows get_key,set_key --rounds 5 2>/dev/null \
    | sed -n '/The whole table/,$p'
